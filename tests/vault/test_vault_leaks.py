"""Leak scanner (proxy/leaks.py): stored values, known formats, lossy binary and URL-encoded forms."""

from __future__ import annotations

import hashlib
import os
from urllib.parse import quote

import pytest

from gateway.runs import _redacted
from proxy.leaks import LeakScanner, b58decode_len, redact

B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = B58[r] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


# Fixed bytes, not os.urandom: parametrized ids must be the same in every pytest-xdist worker.
NEAR_SECRET = "ed25519:" + b58encode(hashlib.sha512(b"leak-test near secret").digest())
NEAR_PUBLIC = "ed25519:" + b58encode(hashlib.sha256(b"leak-test near public").digest())
STORED = "tg-bot-7731:AAHf9d-REAL"

KNOWN = {
    "Anthropic API key": "sk-ant-api03-" + "Ab3_" * 10,
    "OpenAI-style API key": "sk-proj-" + "Zx9" * 12,
    "GitHub token": "ghp_" + "a1B2" * 9,
    "Slack token": "xoxb-1234567890-0987654321-abcDEF",
    "AWS access key id": "AKIAIOSFODNN7EXAMPLE",
    "AWS secret access key": "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "NEAR ed25519 secret key": NEAR_SECRET,
}


@pytest.fixture
def scanner() -> LeakScanner:
    return LeakScanner([("telegram", STORED), ("tiny", "abc")])


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_known_formats_are_named_never_valued(scanner: LeakScanner, name: str) -> None:
    value = KNOWN[name]
    found = scanner.scan_text(f"some text {value} more")
    assert found == name
    assert value not in found


@pytest.mark.parametrize(
    "text",
    [
        "placeholder",
        "Authorization: Bearer placeholder",
        "x-api-key: placeholder",
        NEAR_PUBLIC,  # a public key is not a secret
        "task-skip-this-very-long-identifier-name",
        "desk-ant-eater-and-other-long-words-here",
        "the AKIA prefix alone",
        "abc",  # stored values shorter than 8 characters are ignored
    ],
)
def test_innocent_text_passes(scanner: LeakScanner, text: str) -> None:
    assert scanner.scan_text(text) is None


def test_near_key_lengths() -> None:
    assert b58decode_len(NEAR_SECRET.split(":")[1]) == 64
    assert b58decode_len(NEAR_PUBLIC.split(":")[1]) == 32


def test_stored_value_in_binary_body(scanner: LeakScanner) -> None:
    body = os.urandom(4096) + STORED.encode() + os.urandom(4096)
    assert scanner.scan_bytes(body) == "stored secret telegram"
    assert scanner.scan_bytes(STORED.encode("utf-16-le")) == "stored secret telegram"


def test_stored_value_url_encoded(scanner: LeakScanner) -> None:
    url = "/upload?x=1&t=" + quote(STORED, safe="")
    assert "%3A" in url
    assert scanner.scan_request(url, [("accept", "*/*")]) == "stored secret telegram"
    form = ("a=1&token=" + quote(STORED, safe="")).encode()
    assert scanner.scan_request("/", [], form) == "stored secret telegram"


def test_headers_are_scanned(scanner: LeakScanner) -> None:
    assert scanner.scan_request("/", [("x-note", KNOWN["GitHub token"])]) == "GitHub token"
    assert scanner.scan_request("/", [("x-api-key", "placeholder")], b"hello") is None


def test_redact_agent_text() -> None:
    text = f"here: {KNOWN['Anthropic API key']} and {NEAR_SECRET}."
    clean, names = redact(text)
    assert clean == "here: [redacted: Anthropic API key] and [redacted: NEAR ed25519 secret key]."
    assert names == ["Anthropic API key", "NEAR ed25519 secret key"]
    assert redact(f"pubkey {NEAR_PUBLIC}")[1] == []
    assert _redacted("nothing to see", "main") == "nothing to see"


async def test_agent_messages_are_redacted_before_the_outbox(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from core.config import Config
    from gateway.runs import RunExecutor

    posted: list[str] = []

    class Outbox:
        async def post(self, run_id, seq, chat_id, text) -> None:  # type: ignore[no-untyped-def]
            posted.append(text)

    async def notify(text: str) -> None:
        pass

    executor = RunExecutor(Config(), None, None, Outbox(), lambda f: None, lambda f: None, notify)  # type: ignore[arg-type]
    await executor.send_from_agent(None, "console:main", f"token {KNOWN['Slack token']} ok")
    assert posted == ["token [redacted: Slack token] ok"]


async def test_gateway_leak_op_notifies_main_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from core.config import Config
    from gateway.app import Gateway

    gw = Gateway(Config(), tmp_path / "cfg", tmp_path / "data")
    told: list[str] = []

    async def notify(text: str) -> None:
        told.append(text)

    gw.notify_main = notify  # type: ignore[method-assign]
    for _ in range(3):
        assert await gw._control({"op": "leak", "group": "family", "pattern": "GitHub token"}) == {"ok": True}
    await gw._control({"op": "leak", "group": "family", "pattern": "AWS access key id"})
    assert told == [
        "⚠️ blocked a request from group family: it contained GitHub token",
        "⚠️ blocked a request from group family: it contained AWS access key id",
    ]
