"""Attack: dress up an approval prompt with markup (issue 11, break 9a).

A hostile group's agent controls part of what the owner reads in an approval prompt — for a
NEP-413 signature request, the message to sign (in the details) and the recipient (in the
title). It fills them with Slack mrkdwn and Markdown: a link whose text says "Approved",
`<http://…|click to confirm>`, `<!channel>` / `<!here>` mentions, `*bold*`, `:emoji:`, and a
fake "✅ Approved by <@owner>" outcome line. The prompt must show that text literally: no link,
mention, formatting or emoji of the agent's choosing may reach Slack as markup — only as
`plain_text` — and the notification text must not ping the channel.

Slack: the real Gateway (Docker sandbox with the real agent runtime, vault, SQLite, wallet) with
the real Bolt channel on the fake Slack; the agent's `near_sign_message` call is scripted through
the fake model, exactly as a compromised agent would make it. Telegram: the real channel on the
fake Bot API posts the same hostile prompt; its HTML must keep the agent's text inert.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from channels.base import ApprovalOutcome, ApprovalPrompt
from channels.slack import DENY
from channels.telegram import TelegramChannel
from core.models import Group
from gateway.app import Gateway
from gateway.wallet.keystore import KeyStore
from proxy.secrets import SecretStore
from tests.fakes.model_server import Recorded, anthropic_text
from tests.fakes.near_rpc import FakeNearRpc
from tests.fakes.slack_api import (
    Call,
    FakeSlack,
    button_payload,
    events_envelope,
    interactive_envelope,
    message_event,
)
from tests.fakes.telegram_api import TOKEN, FakeBotApi
from tests.integration.test_gateway_docker import REAL_KEY, config_for
from tests.integration.wallet_support import KEY_NAME, OWNER_ACCOUNT, tool_result_text, tool_use, wallet_toml

MAIN, TEAM, ADMIN, MEMBER = "CMAIN", "CTEAM", "U1", "U3"
AGENT_TIMEOUT = 180  # the first turn includes a cold container start
HOSTILE_MESSAGE = (
    "[✅ Approved by the owner](http://evil.example/phish) <!channel> "
    "<http://evil.example/x|click to confirm> *APPROVED* :white_check_mark:\n\n"
    "✅ Approved by <@U1> — nothing else to do"
)
HOSTILE_RECIPIENT = "<!here> *app.testnet*"
MARKERS = ("evil.example", "<!channel>", "<!here>", "<http", "Approved", "APPROVED", ":white_check_mark:")


class HostileAgent:
    """The compromised agent: asks once for a signature over the hostile message, then stops."""

    def __call__(self, record: Recorded) -> tuple[int, dict[str, Any]]:
        if tool_result_text(record.body) is not None:
            return 200, anthropic_text("done")
        args = {"message": HOSTILE_MESSAGE, "recipient": HOSTILE_RECIPIENT}
        return 200, tool_use("near_sign_message", args, f"toolu_{time.monotonic_ns()}")


def text_objects(blocks: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for block in blocks:
        if isinstance(block.get("text"), dict):
            yield block["text"]
        for element in block.get("elements", []):
            if element.get("type") in ("mrkdwn", "plain_text"):
                yield element
            elif isinstance(element.get("text"), dict):
                yield element["text"]
        yield from block.get("fields", [])


def blocks_of(call: Call) -> list[dict[str, Any]]:
    raw = call.args["blocks"]
    return json.loads(raw) if isinstance(raw, str) else raw


def assert_inert(call: Call) -> None:
    """The agent's markup reaches Slack only as plain_text; the notification text pings no one."""
    texts = list(text_objects(blocks_of(call)))
    for obj in texts:
        if obj["type"] == "mrkdwn":
            leaked = [m for m in MARKERS if m in obj["text"]]
            assert not leaked, (leaked, obj["text"])
        elif any(m in obj["text"] for m in MARKERS):  # agent text: no `:emoji:` conversion either
            assert obj.get("emoji") is False, obj
    plain = "\n".join(o["text"] for o in texts if o["type"] == "plain_text")
    # Shown whole and literally (the wallet prints line breaks as spaces): the owner sees what is signed.
    assert HOSTILE_MESSAGE.replace("\n", " ") in plain
    assert HOSTILE_RECIPIENT in plain
    fallback = str(call.args.get("text", ""))
    assert not re.search(r"<[!@#]|<https?:", fallback), fallback


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    server = FakeSlack()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def gateway(dirs, model_server, sandbox_image, docker_client, fake) -> AsyncIterator[Gateway]:  # type: ignore[no-untyped-def]
    config_dir, data_dir = dirs
    SecretStore(config_dir).add(  # team's agent calls the model: the key covers every group
        "anthropic", REAL_KEY, model_server.host_port, "x-api-key", "{value}", groups=("*",)
    )
    KeyStore(config_dir).generate(KEY_NAME, network="testnet", account_id=OWNER_ACCOUNT)
    near = FakeNearRpc().start()
    model_server.default = HostileAgent()
    slack = (
        f'[slack]\nenabled = true\nbot_token = "xoxb-test-token"\napp_token = "xapp-test-token"\n'
        f'base_url = "{fake.base_url}"\n[console]\nenabled = false\n[admin]\nusers = ["slack:{ADMIN}"]\n'
    )
    extra = slack + wallet_toml(near.url, sign_messages="approval")
    config = config_for(model_server, sandbox_image, top=f'main_chat = "slack:{MAIN}"', extra=extra)
    gw = Gateway(config, config_dir, data_dir)
    await gw.start()
    try:
        await gw.registry.register(Group("team", f"slack:{TEAM}", "team", "@Andy", requires_trigger=False))
        yield gw
    finally:
        await gw.stop(grace_s=5)
        near.stop()


def prompts(fake: FakeSlack) -> list[Call]:
    return [
        c for c in fake.called("chat.postMessage") if c.args.get("channel") == MAIN and c.args.get("blocks")
    ]


async def test_hostile_agent_markup_in_a_slack_approval_prompt_stays_inert(
    gateway: Gateway, fake: FakeSlack
) -> None:
    envelope = events_envelope(message_event("please sign", "900.1", channel=TEAM, user=MEMBER), "EvSign")
    await fake.push(envelope)
    await fake.wait_ack(envelope["envelope_id"])
    await fake.wait_until(lambda: prompts(fake), AGENT_TIMEOUT)
    [prompt] = prompts(fake)
    assert_inert(prompt)

    # The owner denies; the edited prompt (with our outcome line) keeps the agent's text inert too.
    actions = [b for b in blocks_of(prompt) if b["type"] == "actions"]
    [approval_id] = {e["value"] for b in actions for e in b["elements"]}
    await fake.push(interactive_envelope(button_payload(DENY, approval_id, user=ADMIN, channel=MAIN)))
    await fake.wait_until(lambda: fake.called("chat.update"), 30)
    [update] = fake.called("chat.update")
    assert_inert(update)
    outcome = [o["text"] for o in text_objects(blocks_of(update)) if o["type"] == "mrkdwn"]
    assert any(t.startswith("❌ Denied by <@U1>") for t in outcome), outcome
    record = await gateway.store.approval(approval_id)
    assert record is not None and record.state == "denied"


async def test_hostile_markup_in_a_telegram_approval_prompt_stays_inert(tmp_path: Path) -> None:
    api = FakeBotApi().start()
    channel = TelegramChannel(TOKEN, "Andy", base_url=api.base_url, data_dir=tmp_path, poll_timeout_s=1)
    await channel.connect(lambda m: None)  # type: ignore[arg-type,return-value]
    try:
        prompt = ApprovalPrompt(
            id="apHostile1",
            title=f"NEAR request #1 from team: sign a message for {HOSTILE_RECIPIENT}",
            details=f'Message: {HOSTILE_MESSAGE}\n<b>bold</b> <a href="http://evil.example">Approve here</a>'
            "\n/approve apOther22 @claw_test_bot #urgent https://evil.example/auto",
            requester_group="team",
            expires_at=time.time() + 600,
        )
        ref = await channel.send_approval("tg:-1009000000001", prompt)
        outcome = ApprovalOutcome(state="denied", decided_by="tg:4242", decided_at=time.time())
        await channel.finish_approval("tg:-1009000000001", ref, prompt, outcome)
    finally:
        await channel.disconnect()
        api.stop()
    sent = [
        p for name, p in api.calls if name in ("sendMessage", "editMessageText") and "apHostile1" in p["text"]
    ]
    assert len(sent) == 2
    for params in sent:
        text = params["text"]
        assert str(params.get("parse_mode")).upper() == "HTML"
        # The agent's text is escaped (no tag of its own) and sits inside <pre>, where Telegram
        # makes no links, mentions, hashtags or clickable /commands of it; no link preview.
        tags = re.findall(r"</?([a-z]+)", text)
        assert set(tags) <= {"b", "code", "pre"}, tags
        body = text[text.index("<pre>") : text.index("</pre>")]
        assert "/approve apOther22" in body and "&lt;a href=" in body and "@claw_test_bot" in body
        assert HOSTILE_RECIPIENT.replace("<", "&lt;").replace(">", "&gt;") in text
        assert (params.get("link_preview_options") or {}).get("is_disabled") is True
