"""Attack: forge Slack HTTP-mode requests (issue 11, break 3's review of every inbound endpoint).

Slack signs each request with the app's signing secret (HMAC-SHA256 over `v0:<timestamp>:<body>`)
and Bolt checks it in constant time and refuses timestamps more than five minutes off. The
attacker here has no secret: they press the Approve button by POSTing a `block_actions` payload
unsigned, signed with a guessed key, signed with an EMPTY key, or replaying an old signature.
Nothing may reach the approval handler. An empty signing secret (which would make the
empty-key forgery valid) is refused by the config and by the channel itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from channels.base import ButtonPress
from channels.slack import APPROVE, SlackChannel
from core.config import ConfigError, SlackConfig, parse
from tests.fakes.slack_api import FakeSlack, button_payload

SECRET = "0c7d2b1e9a4f46f1b2d3c4e5f6a7b8c9"


def signature(body: str, key: str, timestamp: int) -> dict[str, str]:
    digest = hmac.new(key.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": str(timestamp),
        "X-Slack-Signature": f"v0={digest}",
    }


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    server = FakeSlack()
    await server.start()
    yield server
    await server.stop()


async def test_forged_approve_clicks_over_slack_http_never_reach_the_approval_handler(
    fake: FakeSlack,
) -> None:
    presses: list[ButtonPress] = []

    async def on_button(press: ButtonPress) -> str:
        presses.append(press)
        return "Approved: test"

    config = SlackConfig(
        enabled=True,
        mode="http",
        bot_token="xoxb-test-token",
        signing_secret=SECRET,
        base_url=fake.base_url,
        http_port=0,
    )
    channel = SlackChannel(config, "Andy")

    async def no_messages(message: object) -> None:
        raise AssertionError("no message expected")

    await channel.connect(no_messages, on_button)
    try:
        url = f"http://127.0.0.1:{channel.http_port}/slack/events"
        body = "payload=" + urllib.parse.quote(json.dumps(button_payload(APPROVE, "apXYZ")))
        now = int(time.time())
        forgeries = {
            "unsigned": {"Content-Type": "application/x-www-form-urlencoded"},
            "guessed key": signature(body, "guess", now),
            "empty key": signature(body, "", now),
            "stale replay": signature(body, SECRET, now - 600),
            "future timestamp": signature(body, SECRET, now + 600),
            "garbage timestamp": {**signature(body, SECRET, now), "X-Slack-Request-Timestamp": "soon"},
        }
        async with aiohttp.ClientSession() as http:
            for name, headers in forgeries.items():
                async with http.post(url, data=body, headers=headers) as response:
                    assert response.status == 401, name
            # The real Slack (holding the secret) is heard on the same endpoint.
            async with http.post(url, data=body, headers=signature(body, SECRET, now)) as response:
                assert response.status == 200
        await fake.wait_until(lambda: fake.called("chat.postEphemeral"))
    finally:
        await channel.disconnect()
    assert [(p.approval_id, p.decision, p.user_id) for p in presses] == [("apXYZ", "approve", "slack:U1")]


def test_an_empty_signing_secret_is_a_config_error_and_the_channel_refuses_it() -> None:
    toml = '[slack]\nenabled = true\nmode = "http"\nbot_token = "xoxb-x"\nsigning_secret = "{}"\n'
    for empty in ("", "   "):
        with pytest.raises(ConfigError, match="slack.signing_secret is required"):
            parse(toml.format(empty), Path("c.toml"))
    with pytest.raises(ConfigError, match="slack.signing_secret is required"):
        parse(toml.replace('signing_secret = "{}"\n', ""), Path("c.toml"))
    unchecked = SlackConfig.model_construct(
        enabled=True, mode="http", bot_token=SecretStr("xoxb-x"), signing_secret=SecretStr("")
    )
    with pytest.raises(ValueError, match="signing_secret is required in http mode"):
        SlackChannel(unchecked, "Andy")
