"""Shared pieces of the NEAR wallet acceptance tests (tests/integration/test_wallet_telegram.py).

* `WalletAgentScript` — the scripted model: it turns "send N NEAR to X" / "sign the message M
  for R" into a `near_*` tool call, and answers the tool result by quoting what the gateway
  returned (the transaction hash, the signature, or the refusal). The hash therefore reaches
  the team chat only if it went through the real agent runtime in the container: gateway →
  IPC → tool result → next model request → reply.
* `WalletEnv` — a real Gateway whose main chat is a Telegram supergroup on the fake Bot API,
  with a generated wallet key in its config dir and a `FakeNearRpc` as the NEAR node.
* `SecretForms` / `scan_*` — every spelling a leaked ed25519 private key could take, and
  scanners for bytes, files, directory trees and a running container's whole filesystem
  (streamed out with `tar`, searched on the host so the secret never enters the container).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.app import Gateway
from gateway.ipc_protocol import Caller
from gateway.wallet.base58 import b58decode, b58encode
from gateway.wallet.keyinfo import KeyInfo
from gateway.wallet.keystore import KeyStore
from proxy.secrets import SecretStore
from tests.fakes.model_server import FakeModelServer, Recorded, anthropic_text, last_user_text
from tests.fakes.near_rpc import FakeNearRpc
from tests.fakes.telegram_api import FakeBotApi, check_html
from tests.integration.test_gateway_docker import config_for
from tests.integration.test_telegram_approvals import telegram_main_chat_toml
from tests.waits import prompt_posted

MAIN = -1009000000001  # the owner's main chat (a supergroup)
TEAM = -1009000000002  # a registered, non-main group whose agent asks for money
ADMIN = {"id": 4242, "is_bot": False, "first_name": "Alice"}
STRANGER = {"id": 5151, "is_bot": False, "first_name": "Mallory"}
MEMBER = {"id": 6161, "is_bot": False, "first_name": "Bob"}  # a team member (not an admin)
KEY_NAME = "hot"
OWNER_ACCOUNT = "owner.testnet"
RECEIVER = "bob.testnet"
YOCTO = 10**24
START_BALANCE = 1000 * YOCTO

_SEND = re.compile(r"send ([0-9]+(?:\.[0-9]+)?) NEAR to ([a-z0-9._-]+)")
_SIGN = re.compile(r"sign the message (\S+) for ([a-z0-9._-]+)")
_HASH = re.compile(r'"transaction_hash":\s*"([1-9A-HJ-NP-Za-km-z]{32,44})"')
_SIGNATURE = re.compile(r'"signature":\s*"([A-Za-z0-9+/]{80,}={0,2})"')  # NEP-413: base64


# -- the scripted model ---------------------------------------------------------------------


def tool_use(name: str, args: dict[str, Any], tool_id: str) -> dict[str, Any]:
    return {
        "id": f"msg_{tool_id}",
        "type": "message",
        "role": "assistant",
        "model": "fake",
        "content": [{"type": "tool_use", "id": tool_id, "name": name, "input": args}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }


def tool_result_text(body: dict[str, Any]) -> str | None:
    """The tool result the agent sent back in this request (its last message), if any."""
    messages = body.get("messages") or []
    if not messages or not isinstance(messages[-1].get("content"), list):
        return None
    for block in messages[-1]["content"]:
        if isinstance(block, dict) and block.get("type") == "tool_result":
            content = block.get("content")
            if isinstance(content, list):
                return "".join(b.get("text", "") for b in content if isinstance(b, dict))
            return str(content)
    return None


class WalletAgentScript:
    """A model that uses the wallet tools the way a cooperative LLM would, deterministically."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.tool_results: list[str] = []  # every tool result the agent reported back
        self.lock = threading.Lock()

    def __call__(self, record: Recorded) -> tuple[int, dict[str, Any]]:
        result = tool_result_text(record.body)
        if result is not None:
            with self.lock:
                self.tool_results.append(result)
            return 200, anthropic_text(self._report(result))
        text = last_user_text(record.body)
        tool_id = f"toolu_wallet_{next(self._ids)}"
        if match := _SEND.search(text):
            args = {"receiver_id": match.group(2), "amount": match.group(1)}
            return 200, tool_use("near_transfer", args, tool_id)
        if match := _SIGN.search(text):
            args = {"message": match.group(1), "recipient": match.group(2)}
            return 200, tool_use("near_sign_message", args, tool_id)
        return FakeModelServer._echo(record)

    @staticmethod
    def _report(result: str) -> str:
        if match := _HASH.search(result):
            return f"Done. Transaction hash: {match.group(1)}"
        if match := _SIGNATURE.search(result):
            return f"Signed. Signature: {match.group(1)}"
        return "It did not go through: " + " ".join(result.split())[:1500]


# -- the gateway under test -----------------------------------------------------------------


@dataclass
class WalletCall:
    """One `near_*` IPC request as the wallet served it: the response or the error text."""

    folder: str
    method: str
    params: dict[str, Any]
    result: dict[str, Any] | None = None
    error: str | None = None


class RecordingWallet:
    """Wraps the gateway's WalletService as the IPC layer calls it, keeping every response/error.

    The IPC layer sends exactly these dicts (or these errors) down the socket to the agent, so
    a leak scan over them is a scan over every wallet IPC response.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[WalletCall] = []

    async def handle(self, caller: Caller, method: str, params: dict[str, Any]) -> dict[str, Any]:
        call = WalletCall(caller.folder, method, dict(params))
        self.calls.append(call)
        try:
            call.result = await self.inner.handle(caller, method, params)
        except BaseException as exc:
            call.error = f"{type(exc).__name__}: {exc!r} {exc}"
            raise
        return call.result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass
class WalletEnv:
    gw: Gateway
    api: FakeBotApi
    model: FakeModelServer
    near: FakeNearRpc
    script: WalletAgentScript
    key: KeyInfo
    config_dir: Path
    data_dir: Path
    wallet: RecordingWallet
    _stopped: bool = field(default=False)

    async def stop(self) -> None:
        """Stop the gateway once (tests that scan files after shutdown call it early)."""
        if not self._stopped:
            self._stopped = True
            await self.gw.stop(grace_s=5)

    async def api_wait(self, predicate: Callable[[], Any], timeout: float = 30) -> Any:
        return await asyncio.to_thread(self.api.wait_for, predicate, timeout)

    def say_in_team(self, text: str, user: dict[str, Any] | None = None) -> None:
        self.api.push_message(TEAM, text, user=user or MEMBER, title="Team")

    def main_prompts(self) -> list[dict[str, Any]]:
        return [m for m in self.api.sent if m["chat"]["id"] == MAIN and m.get("reply_markup")]

    async def prompt(self, index: int = 0, timeout: float = 120) -> tuple[dict[str, Any], str, str]:
        """The `index`-th approval prompt in the main chat, its approval id and its plain text."""
        prompts = await self.api_wait(
            lambda: len(self.main_prompts()) > index and self.main_prompts(), timeout
        )
        message = prompts[index]
        buttons = message["reply_markup"]["inline_keyboard"][0]
        approve, deny = (b["callback_data"] for b in buttons)
        match = re.fullmatch(r"ap:([A-Za-z0-9_-]+):a", approve)
        assert match is not None and deny == f"ap:{match.group(1)}:d", buttons
        await prompt_posted(self.gw, match.group(1))  # so a stop that follows cannot cut the post
        return message, match.group(1), plain(message)

    async def click(self, message: dict[str, Any], data: str, user: dict[str, Any]) -> str:
        """Press a button on `message` as `user`; returns the toast text."""
        current = dict(self.api.messages[(message["chat"]["id"], message["message_id"])])
        current["reply_markup"] = message["reply_markup"]  # the keyboard as the clicker saw it
        query_id = self.api.push_callback(current, data, user=user)
        [answer] = await self.api_wait(
            lambda: [a for a in self.api.answers if a["callback_query_id"] == query_id]
        )
        return str(answer.get("text", ""))

    async def edited(self, message: dict[str, Any]) -> str:
        """The prompt's plain text once the gateway edited it (buttons removed)."""
        key = (message["chat"]["id"], message["message_id"])
        edited = await self.api_wait(lambda: "edit_date" in self.api.messages[key] and self.api.messages[key])
        assert "reply_markup" not in edited
        return plain(edited)

    def texts_in(self, chat: int) -> list[str]:
        """Plain text of every message the bot sent into `chat` (prompts included)."""
        return [plain(m) for m in self.api.sent if m["chat"]["id"] == chat]

    async def text_in(self, chat: int, needle: str, timeout: float = 120) -> str:
        """The first message the bot sent into `chat` that contains `needle`."""
        found = await self.api_wait(lambda: [t for t in self.texts_in(chat) if needle in t], timeout)
        return found[0]

    async def model_saw(self, needle: str, timeout: float = 60) -> Recorded:
        """The first request the agent sent to the model whose body contains `needle`."""

        def hit() -> list[Recorded]:
            return [r for r in list(self.model.requests) if needle in json.dumps(r.body, ensure_ascii=False)]

        deadline = asyncio.get_running_loop().time() + timeout
        while not (found := hit()):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"the model never received {needle!r}")
            await asyncio.sleep(0.1)
        return found[0]


def plain(message: dict[str, Any]) -> str:
    """A Bot API message's text as the user reads it (HTML parse mode unescaped)."""
    text = str(message.get("text", ""))
    mode = message.get("parse_mode", "HTML")  # stored messages (after an edit) keep no parse mode
    return check_html(text) if str(mode).upper() == "HTML" else text


def wallet_toml(rpc_url: str, approval_timeout_s: float = 600, sign_messages: str = "approval") -> str:
    return (
        f'[wallet]\nnetwork = "testnet"\nrpc_url = "{rpc_url}"\napproval_timeout_s = {approval_timeout_s}\n'
        f'default_key = "{KEY_NAME}"\nrpc_retries = 1\n'
        '[wallet.policy]\nauto_approve_max = "1"\ndaily_limit = "100"\n'
        f'sign_messages = "{sign_messages}"\nkey_groups = {{ {KEY_NAME} = ["main", "team"] }}\n'
    )


@contextlib.asynccontextmanager
async def wallet_gateway(
    dirs: tuple[Path, Path],
    model: FakeModelServer,
    image: str,
    *,
    approval_timeout_s: float = 600,
    sign_messages: str = "approval",
    script: Callable[[Recorded], tuple[int, dict[str, Any]]] | None = None,
    extra_toml: str = "",
    model_key: str | None = None,
) -> Any:
    """A started Gateway (Telegram main chat, team group, wallet key, fake NEAR node); stopped after."""
    from channels.telegram import TelegramChannel
    from core.models import Group

    config_dir, data_dir = dirs
    near = FakeNearRpc().start()
    api = FakeBotApi().start()
    gw: Gateway | None = None
    try:
        # The key must exist before start(): the gateway builds its KeyStore from the config dir.
        key = KeyStore(config_dir).generate(KEY_NAME, network="testnet", account_id=OWNER_ACCOUNT)
        near.add_account(OWNER_ACCOUNT, START_BALANCE, keys=[key.public_key])
        near.add_account(RECEIVER, 0)
        if model_key is not None:  # scoped to the groups the tests register
            SecretStore(config_dir).add(
                "anthropic", model_key, model.host_port, "x-api-key", "{value}", groups=["main", "team"]
            )
        wallet_script = WalletAgentScript()
        model.default = script or wallet_script
        extra = (
            telegram_main_chat_toml(config_dir, api)
            + wallet_toml(near.url, approval_timeout_s, sign_messages)
            + extra_toml
        )
        config = config_for(model, image, extra=extra, top=f'main_chat = "tg:{MAIN}"')
        gw = Gateway(config, config_dir, data_dir)
        await gw.start()
        [channel] = gw.channels
        assert isinstance(channel, TelegramChannel) and channel.connected
        await gw.registry.register(Group("team", f"tg:{TEAM}", "team", "@Andy"))
        wallet = RecordingWallet(gw.services.wallet)
        gw.services.wallet = wallet
        env = WalletEnv(gw, api, model, near, wallet_script, key, config_dir, data_dir, wallet)
        try:
            yield env
        finally:
            await env.stop()
    finally:
        if gw is not None and not gw._started:  # start() failed half-way: release what it took
            with contextlib.suppress(Exception):
                await gw.stop(grace_s=5)
        api.stop()
        near.stop()


# -- leak scanning --------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretForms:
    """One ed25519 private key in every spelling that could leak: text encodings and raw bytes."""

    needles: dict[str, bytes]

    @classmethod
    def of(cls, secret: str) -> SecretForms:
        """`secret` is `ed25519:<base58 of seed || public key>` as `KeyPair.export_secret()` writes it."""
        prefix, _, body = secret.partition(":")
        assert prefix == "ed25519" and body, "not an ed25519 secret key string"
        raw = b58decode(body)
        assert len(raw) == 64
        seed = raw[:32]
        text = {
            "secret string": secret,
            "secret base58 body": body,
            "secret hex": raw.hex(),
            "secret base64": base64.b64encode(raw).decode().rstrip("="),
            "seed hex": seed.hex(),
            "seed HEX": seed.hex().upper(),
            "seed base58": b58encode(seed),
            "seed base64": base64.b64encode(seed).decode().rstrip("="),
            "seed base64url": base64.urlsafe_b64encode(seed).decode().rstrip("="),
            "secret base64url": base64.urlsafe_b64encode(raw).decode().rstrip("="),
        }
        needles = {name: value.encode("ascii") for name, value in text.items()}
        needles["seed raw bytes"] = seed
        # A JSON/bytes-repr dump of the seed ("\\x12\\x34…") would hide it from the raw check.
        needles["seed bytes repr"] = repr(seed)[2:-1].encode("ascii")[:48]
        return cls(needles)

    @property
    def longest(self) -> int:
        return max(len(v) for v in self.needles.values())

    def find(self, data: bytes | str) -> list[str]:
        """Names of the forms that occur in `data` (str is checked as UTF-8)."""
        blob = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
        return [name for name, needle in self.needles.items() if needle in blob]


@dataclass
class LeakReport:
    forms: SecretForms
    findings: list[tuple[str, list[str]]] = field(default_factory=list)
    scanned: list[str] = field(default_factory=list)

    def check(self, where: str, data: bytes | str) -> None:
        self.scanned.append(where)
        found = self.forms.find(data)
        if found:
            self.findings.append((where, found))

    def check_stream(self, where: str, chunks: Iterable[bytes]) -> int:
        """Scan a byte stream chunk by chunk (with overlap so a needle across chunks is seen)."""
        overlap = self.forms.longest
        tail = b""
        total = 0
        hits: set[str] = set()
        for chunk in chunks:
            total += len(chunk)
            window = tail + chunk
            hits.update(self.forms.find(window))
            tail = window[-overlap:]
        self.scanned.append(where)
        if hits:
            self.findings.append((where, sorted(hits)))
        return total

    def check_tree(self, root: Path, *, skip: Callable[[Path], bool] = lambda p: False) -> int:
        """Every regular file under `root` (database, WAL, logs, history, sockets skipped)."""
        count = 0
        for path in sorted(root.rglob("*")):
            if skip(path) or not path.is_file() or path.is_symlink():
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue
            self.check(str(path), data)
            count += 1
        return count


def container_users(container: Any) -> list[str]:
    """Who to read the container as: root and the agent's own user.

    The sandbox drops every capability (a privileged exec is refused too), so root cannot read
    the agent's 0700 workspace and the agent cannot read root's 0600 files: each pass sees
    what the other cannot. Together they cover what any process in the container can read.
    """
    agent = container.client.api.inspect_container(container.id)["Config"].get("User") or "0"
    return ["0"] if agent in ("0", "root") else ["0", agent]


def container_tar_stream(container: Any, user: str) -> Iterator[bytes]:
    """The container's whole filesystem as `user` sees it (bind mounts and tmpfs included,
    /proc /sys /dev excluded), streamed to the host; unreadable files are skipped by tar.

    Nothing about the secret is passed into the container, so the scan cannot itself plant
    what it looks for.
    """
    exec_id = container.client.api.exec_create(
        container.id,
        ["tar", "-c", "-f", "-", "--exclude=./proc", "--exclude=./sys", "--exclude=./dev", "-C", "/", "."],
        user=user,
        stdout=True,
        stderr=False,
    )["Id"]
    yield from container.client.api.exec_start(exec_id, stream=True, demux=False)


def proc_dump(container: Any, user: str) -> bytes:
    """Environment and argv of every process in the container `user` may read, plus `env`."""
    script = 'env; for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do cat "$f"; echo; done 2>/dev/null'
    result = container.exec_run(["sh", "-c", script], user=user)
    return bytes(result.output)


def log_records_text(records: Iterable[logging.LogRecord]) -> str:
    """Messages, raw args and formatted exceptions of captured log records."""
    formatter = logging.Formatter()
    parts = []
    for record in records:
        parts.append(record.getMessage())
        parts.append(repr(record.args))
        if record.exc_info:
            parts.append(formatter.formatException(record.exc_info))
        if record.exc_text:
            parts.append(record.exc_text)
        if record.stack_info:
            parts.append(record.stack_info)
    return "\n".join(parts)
