"""Owner approval of chosen HTTP requests, end to end (issue 15 acceptance, invariant 14).

Real processes: the Gateway (SQLite, the vault child process, the real TelegramChannel
talking to the fake Bot API on loopback) and a recording upstream on loopback. A group's
request goes into its vault.sock as an agent's would; a secret rule with `approve = true`
makes the vault hold it and the gateway post a prompt in the main chat. Buttons are pressed
by pushing `callback_query` updates. What reached the upstream, and with which credential,
is the upstream's own record.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from channels.telegram import TelegramChannel
from gateway.app import Gateway
from gateway.approvals import REFUSE_CHAT, REFUSE_USER
from gateway.http_approvals import WITHDRAWN_BY
from proxy.audit import read_entries
from proxy.rules import make_rule
from proxy.secrets import SecretStore
from tests.fakes.telegram_api import FakeBotApi
from tests.integration.test_gateway_docker import config_for
from tests.integration.test_telegram_approvals import (
    ADMIN,
    MAIN,
    STRANGER,
    TEAM,
    Env,
    telegram_main_chat_toml,
)
from tests.vault.test_vault_e2e import read_response
from tests.vault.test_vault_holds_e2e import RecordingUpstream
from tests.waits import prompt_posted

SECRET = "ghx-REAL-approval-e2e-424242"
TIMEOUT_S = 6.0
ALLOW_MINUTES = 0.05  # 3 s: the "Allow for N minutes" button, short enough to see it end


class HeldEnv(Env):
    def __init__(self, gw: Gateway, api: FakeBotApi, model: Any, up: RecordingUpstream, sock: Path) -> None:
        super().__init__(gw, api, model)
        self.up, self.sock = up, sock
        self._writers: list[asyncio.StreamWriter] = []

    async def open(self, path: str, method: str = "POST", body: bytes = b"{}") -> asyncio.StreamReader:
        reader, writer = await asyncio.open_unix_connection(str(self.sock))
        writer.write(
            f"{method} http://127.0.0.1:{self.up.port}{path} HTTP/1.1\r\nHost: 127.0.0.1:{self.up.port}\r\n"
            f"Authorization: Bearer placeholder\r\nContent-Length: {len(body)}\r\n"
            "Content-Type: application/json\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        self._writers.append(writer)
        return reader

    def sent(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.up.requests if r["path"] == path]

    async def held_prompt(self, path: str) -> tuple[dict[str, Any], str]:
        sent = await self.api_wait(
            lambda: [m for m in self.api.sent if m.get("reply_markup") and path in m["text"]]
        )
        [message] = sent
        rows = message["reply_markup"]["inline_keyboard"]
        match = re.fullmatch(r"ap:([A-Za-z0-9_-]+):a", rows[0][0]["callback_data"])
        assert match is not None
        approval_id = match.group(1)
        assert rows[1][0]["callback_data"] == f"ap:{approval_id}:f" and "Allow for 3 s" in rows[1][0]["text"]
        return message, approval_id


@pytest.fixture
async def env(dirs, model_server, sandbox_image, docker_client) -> AsyncIterator[HeldEnv]:  # type: ignore[no-untyped-def]
    from core.models import Group

    config_dir, data_dir = dirs
    api = FakeBotApi().start()
    up = RecordingUpstream()
    hp = f"127.0.0.1:{up.port}"
    extra = telegram_main_chat_toml(config_dir, api) + (
        f"[vault.approval]\ntimeout_s = {TIMEOUT_S}\nallow_for_minutes = {ALLOW_MINUTES}\n"
    )
    config = config_for(model_server, sandbox_image, extra=extra, top=f'main_chat = "tg:{MAIN}"')
    vault = config.vault.model_copy(
        update={"allow_private_upstreams": [*config.vault.allow_private_upstreams, hp]}
    )
    config = config.model_copy(update={"vault": vault})
    SecretStore(config_dir).add(
        "deploy",
        SECRET,
        rules=[make_rule(hp, "/deploy/*", ["POST"], "set_header", "Authorization", approve=True)],
        groups=["team"],
    )
    gw = Gateway(config, config_dir, data_dir)
    await gw.start()
    held: HeldEnv | None = None
    try:
        [channel] = gw.channels
        assert isinstance(channel, TelegramChannel) and channel.connected
        await gw.registry.register(Group("team", f"tg:{TEAM}", "team", "@Andy"))
        sock = data_dir / "team-vault.sock"
        await gw.vault.open_group("team", sock)
        held = HeldEnv(gw, api, model_server, up, sock)
        yield held
        for writer in held._writers:
            writer.close()
        held._writers.clear()
    finally:
        await (held.gw if held is not None else gw).stop(grace_s=5)  # a test may have restarted it
        api.stop()
        up.close()


async def test_request_waits_for_the_admins_approve_and_is_forwarded_once(env: HeldEnv) -> None:
    reader = await env.open("/deploy/prod", body=b'{"ref": "v1.2"}')
    prompt, approval_id = await env.held_prompt("/deploy/prod")
    assert prompt["chat"]["id"] == MAIN
    assert "POST 127.0.0.1" in prompt["text"] and "team" in prompt["text"] and "v1.2" in prompt["text"]
    assert SECRET not in prompt["text"]
    approve, deny = f"ap:{approval_id}:a", f"ap:{approval_id}:d"

    # A non-admin, and the admin clicking from another chat: nothing decided, nothing sent.
    assert await env.click(prompt, approve, STRANGER) == REFUSE_USER
    team_chat = {"id": TEAM, "type": "supergroup", "title": "Team"}
    assert await env.click(prompt, approve, ADMIN, chat=team_chat) == REFUSE_CHAT
    await asyncio.sleep(0.5)
    assert env.sent("/deploy/prod") == []

    assert (await env.click(prompt, approve, ADMIN)).startswith("Approved: HTTP POST")
    response = await asyncio.wait_for(read_response(reader), 15)
    assert response.startswith(b"HTTP/1.1 200"), response
    [sent] = env.sent("/deploy/prod")
    assert sent["authorization"] == f"Bearer {SECRET}" and json.loads(sent["body"]) == {"ref": "v1.2"}
    edited = await env.edited(prompt)
    assert "reply_markup" not in edited and "Approved by tg:4242" in edited["text"]

    # A double click (and a late Deny) forwards nothing more.
    assert (await env.click(prompt, approve, ADMIN)).startswith("already decided: approved by tg:4242")
    assert (await env.click(prompt, deny, ADMIN)).startswith("already decided: approved by tg:4242")
    await asyncio.sleep(0.5)
    assert len(env.sent("/deploy/prod")) == 1

    def logged() -> list[dict[str, Any]]:  # the vault's audit log is flushed every 0.5 s
        return [e for e in read_entries(env.gw.data_dir / "vault") if e["path"] == "/deploy/prod"]

    for _ in range(100):
        if len(logged()) >= 2:
            break
        await asyncio.sleep(0.1)
    entries = logged()
    assert [(e["approval"], e["status"]) for e in entries] == [("held", None), ("approved by tg:4242", 200)]


async def test_deny_and_expiry_forward_nothing(env: HeldEnv) -> None:
    reader = await env.open("/deploy/deny")
    prompt, approval_id = await env.held_prompt("/deploy/deny")
    assert (await env.click(prompt, f"ap:{approval_id}:d", ADMIN)).startswith("Denied: HTTP POST")
    response = await asyncio.wait_for(read_response(reader), 15)
    assert response.startswith(b"HTTP/1.1 403")
    assert "the owner denied it" in json.loads(response.split(b"\r\n\r\n", 1)[1])["message"]

    reader = await env.open("/deploy/late")
    prompt, approval_id = await env.held_prompt("/deploy/late")
    response = await asyncio.wait_for(read_response(reader), TIMEOUT_S + 15)  # nobody clicks
    assert response.startswith(b"HTTP/1.1 403")
    assert "did not decide in time" in json.loads(response.split(b"\r\n\r\n", 1)[1])["message"]
    edited = await env.edited(prompt)
    assert "Expired at" in edited["text"]
    toast = await env.click(prompt, f"ap:{approval_id}:a", ADMIN)  # a late click revives nothing
    assert toast.startswith("already decided: expired")
    await asyncio.sleep(0.5)
    assert env.sent("/deploy/deny") == [] and env.sent("/deploy/late") == []


async def test_allow_for_n_minutes_lets_the_next_request_through_until_it_ends(env: HeldEnv) -> None:
    reader = await env.open("/deploy/a")
    prompt, approval_id = await env.held_prompt("/deploy/a")
    toast = await env.click(prompt, f"ap:{approval_id}:f", ADMIN)
    assert toast.startswith("Approved (allow for 3 s)"), toast
    assert (await asyncio.wait_for(read_response(reader), 15)).startswith(b"HTTP/1.1 200")
    edited = await env.edited(prompt)
    assert "Approved by tg:4242" in edited["text"] and "(allow for 3 s)" in edited["text"]

    # The same rule, within the allowance: no prompt, sent with the credential.
    prompts_before = len([m for m in env.api.sent if m.get("reply_markup")])
    reader = await env.open("/deploy/b")
    assert (await asyncio.wait_for(read_response(reader), 15)).startswith(b"HTTP/1.1 200")
    assert env.sent("/deploy/b")[0]["authorization"] == f"Bearer {SECRET}"
    assert len([m for m in env.api.sent if m.get("reply_markup")]) == prompts_before

    await asyncio.sleep(ALLOW_MINUTES * 60 + 0.5)  # over: the next one is held again
    reader = await env.open("/deploy/c")
    prompt, approval_id = await env.held_prompt("/deploy/c")
    assert env.sent("/deploy/c") == []
    assert (await env.click(prompt, f"ap:{approval_id}:d", ADMIN)).startswith("Denied")
    assert (await asyncio.wait_for(read_response(reader), 15)).startswith(b"HTTP/1.1 403")
    assert env.sent("/deploy/c") == []


async def test_client_hanging_up_withdraws_the_prompt_and_other_flows_keep_flowing(env: HeldEnv) -> None:
    await env.open("/deploy/gone")
    prompt, approval_id = await env.held_prompt("/deploy/gone")
    # While it is held, other requests of the same group pass through the vault.
    for _ in range(3):
        reader = await env.open("/status", method="GET", body=b"")
        assert (await asyncio.wait_for(read_response(reader), 15)).startswith(b"HTTP/1.1 200")
    for writer in env._writers:  # the agent's HTTP client gives up
        writer.close()
    edited = await env.edited(prompt)
    assert "Denied by the vault (the requester hung up)" in edited["text"], edited["text"]
    toast = await env.click(prompt, f"ap:{approval_id}:a", ADMIN)
    assert toast.startswith("already decided: denied")
    await asyncio.sleep(0.5)
    assert env.sent("/deploy/gone") == []


async def test_a_gateway_restart_while_held_forwards_nothing_and_expires_the_prompt(env: HeldEnv) -> None:
    reader = await env.open("/deploy/restart")
    prompt, approval_id = await env.held_prompt("/deploy/restart")
    old = env.gw
    # The fake shows the prompt before its answer reaches the gateway; a stop in between cuts the
    # post, and a prompt the gateway cannot know it posted is denied (fail closed), not recovered.
    await prompt_posted(old, approval_id)
    await old.stop(grace_s=5)  # the vault goes with it: nobody waits for this decision any more
    answer = await asyncio.wait_for(reader.read(), 15)
    assert not answer.startswith(b"HTTP/1.1 200")
    # Settled by the next start's recovery (expired) — or withdrawn, if the old gateway saw its
    # vault hang up before it knew it was stopping; never approved, never by a person.
    record = await _approval_after_restart(env, approval_id)
    assert record in ("expired None", f"denied {WITHDRAWN_BY}"), record
    edited = await env.edited(prompt)
    assert "reply_markup" not in edited
    assert "Expired at" in edited["text"] or "Denied by the vault" in edited["text"], edited["text"]
    toast = await env.click(prompt, f"ap:{approval_id}:a", ADMIN)  # Telegram held it: still nothing
    assert toast.startswith(("already decided: expired", "already decided: denied"))
    await asyncio.sleep(0.5)
    assert env.sent("/deploy/restart") == []


async def _approval_after_restart(env: HeldEnv, approval_id: str) -> str:
    """Start a new gateway on the same dirs (it recovers the previous run's approvals)."""
    gw = Gateway(env.gw.config, env.gw.config_dir, env.gw.data_dir)
    await gw.start()
    env.gw = gw
    record = await gw.store.approval(approval_id)
    assert record is not None
    return f"{record.state} {record.decided_by}"
