"""Held requests through the real vault process (proxy/holds.py, invariant 14).

The vault runs as in production (`python -m proxy`); the gateway's control socket is a
scripted stand-in here that records each question and answers when the test says so, so
every vault-side path can be driven exactly: approve, deny, expiry, the gateway hanging up,
the client hanging up, a body condition, the allowance, and other flows while one is held.
The whole loop with the real gateway and the Telegram fake is
tests/integration/test_http_approvals_telegram.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from proxy.audit import read_entries
from proxy.process import VaultProcess
from proxy.rules import make_rule
from proxy.secrets import SecretStore
from tests.vault.test_vault_e2e import read_response

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET = "tok-REAL-held-e2e-31337"


class RecordingUpstream:
    """Loopback HTTP server recording method, path, headers and body of every request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        rec = self.requests

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                rec.append(
                    {"method": self.command, "path": self.path, "body": body}
                    | {k.lower(): v for k, v in self.headers.items()}
                )
                out = b"done"
                self.send_response(200)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_DELETE = _serve  # noqa: N815 - http.server API

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ScriptedGateway:
    """The gateway's control socket: records questions; the test answers (or hangs up)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.notices: list[dict[str, Any]] = []
        self.questions: asyncio.Queue[tuple[dict[str, Any], asyncio.StreamWriter, asyncio.Event]] = (
            asyncio.Queue()
        )

    async def start(self) -> None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            question = json.loads(await reader.readline())
            if question.get("op") != "http_approval":  # a leak notice (proxy/leaks.py)
                self.notices.append(question)
                await self.answer(writer, {"ok": True})
                return
            hung_up = asyncio.Event()
            await self.questions.put((question, writer, hung_up))
            await reader.read()  # EOF: the vault closed its side (its client gave up)
            hung_up.set()

        self.server = await asyncio.start_unix_server(serve, path=str(self.path))

    async def next(self, timeout: float = 15) -> tuple[dict[str, Any], asyncio.StreamWriter, asyncio.Event]:
        return await asyncio.wait_for(self.questions.get(), timeout)

    @staticmethod
    async def answer(writer: asyncio.StreamWriter, reply: dict[str, Any]) -> None:
        writer.write(json.dumps(reply).encode() + b"\n")
        await writer.drain()
        writer.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("hold")
    d = {k: base / k for k in ("cfg", "state", "grp")}
    for p in d.values():
        p.mkdir(mode=0o700)
    d["gw"] = base / "gw.sock"
    return d


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(env: dict[str, Path]) -> AsyncIterator[tuple[RecordingUpstream, ScriptedGateway]]:
    up = RecordingUpstream()
    gw = ScriptedGateway(env["gw"])
    await gw.start()
    hp = f"127.0.0.1:{up.port}"
    (env["cfg"] / "config.toml").write_text(
        f'[vault]\nallow_private_upstreams = ["{hp}"]\n'
        '[vault.egress]\nteam = ["*"]\n'
        "[vault.approval]\ntimeout_s = 3\n"
        # a policy entry with a body condition: only transfers to "mallory" need the owner
        f'[[vault.policy]]\nhost = "{hp}"\npath = "/pay"\nmethods = ["POST"]\napprove = true\n'
        'body = { pointer = "/to", equals = "mallory" }\n'
    )
    SecretStore(env["cfg"]).add(
        "tok",
        SECRET,
        rules=[make_rule(hp, "/admin/*", [], "set_header", "x-token", "{value}", approve=True)],
        groups=["team"],
    )
    vp = VaultProcess(env["cfg"], env["state"], allow_private=[hp], gateway_socket=env["gw"])
    await vp.start(timeout=30)
    await vp.open_group("team", env["grp"] / "vault.sock")
    yield up, gw
    await vp.stop()
    gw.server.close()
    up.close()


async def open_request(
    env: dict[str, Path], port: int, method: str, path: str, body: bytes = b""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_unix_connection(str(env["grp"] / "vault.sock"))
    writer.write(
        f"{method} http://127.0.0.1:{port}{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"x-token: placeholder\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    return reader, writer


async def send(env: dict[str, Path], port: int, method: str, path: str, body: bytes = b"") -> bytes:
    reader, writer = await open_request(env, port, method, path, body)
    try:
        return await asyncio.wait_for(read_response(reader), 30)
    finally:
        writer.close()


def body_of(response: bytes) -> dict[str, Any]:
    return dict(json.loads(response.split(b"\r\n\r\n", 1)[1]))


async def test_approved_request_waits_and_is_forwarded_once_with_the_credential(setup, env) -> None:
    up, gw = setup
    before = len(up.requests)
    reader, writer = await open_request(env, up.port, "DELETE", "/admin/users/7?force=yes")
    question, answer_to, _ = await gw.next()
    assert question["op"] == "http_approval" and question["group"] == "team"
    assert (question["method"], question["path"]) == ("DELETE", "/admin/users/7?force=")  # no query values
    assert "secret tok" in question["rule"] and SECRET not in json.dumps(question)
    await asyncio.sleep(0.5)
    assert len(up.requests) == before  # held: nothing reached the upstream
    await gw.answer(answer_to, {"ok": True, "decision": "approved", "by": "tg:4242"})
    response = await asyncio.wait_for(read_response(reader), 15)
    writer.close()
    assert response.startswith(b"HTTP/1.1 200"), response
    [sent] = up.requests[before:]
    assert sent["method"] == "DELETE" and sent["x-token"] == SECRET


async def test_denied_and_expired_requests_get_403_and_forward_nothing(setup, env) -> None:
    up, gw = setup
    before = len(up.requests)
    task = asyncio.create_task(send(env, up.port, "GET", "/admin/keys"))
    _, answer_to, _ = await gw.next()
    await gw.answer(answer_to, {"ok": True, "decision": "denied", "by": "tg:4242"})
    response = await task
    assert response.startswith(b"HTTP/1.1 403"), response
    refusal = body_of(response)
    assert refusal["error"] == "approval_required" and "the owner denied it" in refusal["message"]

    task = asyncio.create_task(send(env, up.port, "GET", "/admin/keys"))
    _, answer_to, _ = await gw.next()
    await gw.answer(answer_to, {"ok": True, "decision": "expired", "by": ""})
    assert "did not decide in time" in body_of(await task)["message"]
    assert len(up.requests) == before


async def test_gateway_hanging_up_means_403_at_once(setup, env) -> None:
    up, gw = setup
    before = len(up.requests)
    task = asyncio.create_task(send(env, up.port, "GET", "/admin/keys"))
    _, answer_to, _ = await gw.next()
    answer_to.close()  # the gateway restarted: nobody waits for this decision any more
    response = await asyncio.wait_for(task, 10)
    assert response.startswith(b"HTTP/1.1 403") and "could not be asked" in body_of(response)["message"]
    assert len(up.requests) == before


async def test_client_hanging_up_withdraws_the_question(setup, env) -> None:
    up, gw = setup
    before = len(up.requests)
    _reader, writer = await open_request(env, up.port, "GET", "/admin/keys")
    _, answer_to, hung_up = await gw.next()
    writer.close()  # the agent's HTTP client gave up
    await asyncio.wait_for(hung_up.wait(), 10)  # the vault closed its question
    with pytest.raises(OSError):  # an answer now reaches nobody …
        for _ in range(20):
            await gw.answer(answer_to, {"ok": True, "decision": "approved", "by": "tg:4242"})
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    assert len(up.requests) == before  # … and forwards nothing


async def test_other_flows_keep_flowing_while_one_is_held(setup, env) -> None:
    up, gw = setup
    reader, writer = await open_request(env, up.port, "GET", "/admin/held")
    _, answer_to, _ = await gw.next()
    for _ in range(3):  # not named by any approval rule
        assert (await send(env, up.port, "GET", "/public")).startswith(b"HTTP/1.1 200")
    assert not [r for r in up.requests if r["path"] == "/admin/held"]
    await gw.answer(answer_to, {"ok": True, "decision": "approved", "by": "tg:4242"})
    assert (await asyncio.wait_for(read_response(reader), 15)).startswith(b"HTTP/1.1 200")
    writer.close()


async def test_body_condition_holds_only_matching_bodies_and_the_prompt_sees_a_redacted_summary(
    setup, env
) -> None:
    up, gw = setup
    ok = await send(env, up.port, "POST", "/pay", b'{"to": "bob", "amount": 5}')
    assert ok.startswith(b"HTTP/1.1 200") and gw.questions.empty()  # condition not met: no hold
    payload = b'{"to": "mallory", "amount": 500, "note": "\x1b[2Jhi ghp_' + b"a" * 36 + b'"}'
    leak = await send(env, up.port, "POST", "/pay", payload)
    assert leak.startswith(b"HTTP/1.1 403")  # a credential format in the body: refused before any hold
    await asyncio.sleep(0.3)
    assert gw.questions.empty() and gw.notices[-1]["op"] == "leak"
    task = asyncio.create_task(send(env, up.port, "POST", "/pay", b'{"to": "mallory", "note": "\x1b[2J"}'))
    question, answer_to, _ = await gw.next()
    assert "mallory" in question["body"] and "\x1b" not in question["body"] and "\\x1b" in question["body"]
    assert 'body/to == "mallory"' in question["rule"]
    await gw.answer(answer_to, {"ok": True, "decision": "denied", "by": "tg:4242"})
    assert (await task).startswith(b"HTTP/1.1 403")
    assert [json.loads(r["body"])["to"] for r in up.requests if r["path"] == "/pay"] == ["bob"]


async def test_allowance_lets_the_same_rule_through_for_a_while(setup, env) -> None:
    up, gw = setup
    task = asyncio.create_task(send(env, up.port, "GET", "/admin/allow"))
    _, answer_to, _ = await gw.next()
    await gw.answer(answer_to, {"ok": True, "decision": "approved", "by": "tg:4242", "allow_for_s": 2})
    assert (await task).startswith(b"HTTP/1.1 200")
    for _ in range(2):  # within the allowance: no question, sent with the credential
        assert (await send(env, up.port, "GET", "/admin/allow")).startswith(b"HTTP/1.1 200")
    assert gw.questions.empty()
    assert [r["x-token"] for r in up.requests if r["path"] == "/admin/allow"] == [SECRET] * 3
    await asyncio.sleep(2.2)  # the allowance is over: asked again
    task = asyncio.create_task(send(env, up.port, "GET", "/admin/allow"))
    _, answer_to, _ = await gw.next()
    await gw.answer(answer_to, {"ok": True, "decision": "denied", "by": "tg:4242"})
    assert (await task).startswith(b"HTTP/1.1 403")
    assert len([r for r in up.requests if r["path"] == "/admin/allow"]) == 3


async def test_outcomes_are_in_the_audit_log(setup, env) -> None:
    for _ in range(100):  # the audit log is flushed every 0.5 s; the last outcome must be in
        entries = list(read_entries(env["state"]))
        if [e.get("approval") for e in entries].count(
            "allowed (an owner's allowance for this rule is active)"
        ) == 2:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.6)
    entries = list(read_entries(env["state"]))
    outcomes = [e.get("approval") for e in entries]
    held = [e for e in entries if e.get("approval") == "held"]
    assert held and all(e["status"] is None for e in held)  # a line as soon as a hold starts
    decided = len([o for o in outcomes if o not in (None, "held") and not o.startswith("allowed")])
    assert len(held) == decided  # … and one with the outcome for each
    assert "approved by tg:4242" in outcomes
    assert "denied by tg:4242" in outcomes
    assert "expired" in outcomes
    assert "withdrawn: the client disconnected" in outcomes
    assert "refused: gateway unavailable" in outcomes
    assert "approved by tg:4242 (and allowed for 2 s)" in outcomes
    assert outcomes.count("allowed (an owner's allowance for this rule is active)") == 2
    assert SECRET not in json.dumps(list(read_entries(env["state"])))
    # Every line names the group, also those written after the client had gone (withdrawn).
    assert {e["group"] for e in entries} == {"team"}, [e for e in entries if e["group"] != "team"]
