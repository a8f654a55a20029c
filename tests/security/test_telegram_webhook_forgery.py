"""Attack: forge Telegram webhook updates from the network (issue 11, break 3).

The attacker knows the webhook URL but not the secret Telegram echoes in
`X-Telegram-Bot-Api-Secret-Token`. They POST updates that claim to come from the owner in the
main chat: an admin command, a text `/approve`, and a press of the Approve button of a pending
prompt. A real Gateway (Docker sandbox, vault, SQLite) runs in webhook mode with NO
`webhook_secret_token` configured — the case that used to accept anything — and the real
TelegramChannel talks to the fake Bot API on loopback. Forged requests (no header, an empty
one, a wrong one, the right one cut short) must get 401/403 and leave no stored message, no
admin action and no approval decision; the same updates with the secret Telegram was given
are accepted, which shows the forged ones were refused by the check and not by accident.
"""

from __future__ import annotations

import asyncio
import re
import socket
import stat
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from channels.telegram import TelegramChannel
from channels.telegram_webhook import HEADER, SECRET_FILE
from core.config import parse
from gateway.app import Gateway
from tests.fakes.telegram_api import FakeBotApi
from tests.integration.test_gateway_docker import config_for
from tests.integration.test_telegram_approvals import ADMIN, MAIN, telegram_main_chat_toml

WEBHOOK_URL = "https://bot.example.org/clawgate-telegram"
FORGED_GROUP = "tg:-1009000000099"
GENUINE_GROUP = "tg:-1009000000098"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Webhook:
    def __init__(self, gw: Gateway, api: FakeBotApi, url: str, secret_file: Path) -> None:
        self.gw, self.api, self.url, self.secret_file = gw, api, url, secret_file
        self._ids = iter(range(10_000, 100_000))

    def message(self, text: str, user: dict[str, Any] = ADMIN) -> dict[str, Any]:
        return {
            "update_id": next(self._ids),
            "message": {
                "message_id": next(self._ids),
                "date": int(time.time()),
                "chat": {"id": MAIN, "type": "supergroup", "title": "main"},
                "from": user,
                "text": text,
            },
        }

    def click(self, prompt: dict[str, Any], data: str) -> dict[str, Any]:
        query_id = f"forge{next(self._ids)}"
        return {
            "update_id": next(self._ids),
            "callback_query": {
                "id": query_id,
                "from": ADMIN,
                "message": prompt,
                "chat_instance": "ci1",
                "data": data,
            },
        }

    async def post(self, update: dict[str, Any], token: str | None) -> int:
        headers = {HEADER: token} if token is not None else {}
        async with httpx.AsyncClient() as client:
            response = await client.post(self.url, json=update, headers=headers, timeout=10)
        return response.status_code

    async def until(self, predicate: Callable[[], Any], timeout: float = 15) -> Any:
        deadline = time.monotonic() + timeout
        while not (result := await _maybe_await(predicate())):
            assert time.monotonic() < deadline, "condition not reached"
            await asyncio.sleep(0.05)
        return result


async def _maybe_await(value: Any) -> Any:
    return await value if asyncio.iscoroutine(value) else value


@pytest.fixture
async def webhook(dirs, model_server, sandbox_image, docker_client) -> AsyncIterator[Webhook]:  # type: ignore[no-untyped-def]
    config_dir, data_dir = dirs
    api = FakeBotApi().start()
    port = free_port()
    extra = telegram_main_chat_toml(config_dir, api) + (
        f'mode = "webhook"\nwebhook_url = "{WEBHOOK_URL}"\n'
        f'webhook_listen = "127.0.0.1"\nwebhook_port = {port}\n'  # and no webhook_secret_token
    )
    config = config_for(model_server, sandbox_image, extra=extra, top=f'main_chat = "tg:{MAIN}"')
    assert config.telegram.webhook_secret_token is None
    gw = Gateway(config, config_dir, data_dir)
    await gw.start()
    try:
        [channel] = gw.channels
        assert isinstance(channel, TelegramChannel) and channel.webhook_port == port
        yield Webhook(gw, api, f"http://127.0.0.1:{port}/clawgate-telegram", config_dir / SECRET_FILE)
    finally:
        await gw.stop(grace_s=5)
        api.stop()


async def test_forged_webhook_updates_without_the_secret_are_refused_and_change_nothing(
    webhook: Webhook,
) -> None:
    gw, api = webhook.gw, webhook.api
    # The gateway made a secret, kept it privately, and gave it to Telegram with setWebhook.
    secret = webhook.secret_file.read_text().strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]{32,256}", secret)
    assert stat.S_IMODE(webhook.secret_file.stat().st_mode) == 0o600
    assert api.webhook["url"] == WEBHOOK_URL and api.webhook["secret_token"] == secret

    approval = asyncio.create_task(gw.approvals.request_approval("Send 5 NEAR", "to bob.near", "team"))
    [prompt] = await asyncio.to_thread(api.wait_for, lambda: [m for m in api.sent if m.get("reply_markup")])
    approval_id = re.fullmatch(r"ap:(.+):a", prompt["reply_markup"]["inline_keyboard"][0][0]["callback_data"])
    assert approval_id is not None
    approve = f"ap:{approval_id.group(1)}:a"

    forgeries = [
        webhook.message(f"/register {FORGED_GROUP} attacker"),
        webhook.message(f"/approve {approval_id.group(1)}"),
        webhook.click(prompt, approve),
    ]
    guesses = [None, "", "nope", secret[:-1], secret[:-1] + ("A" if secret[-1] != "A" else "B"), secret + "x"]
    for update in forgeries:
        for guess in guesses:
            assert await webhook.post(update, guess) == (401 if guess is None else 403), guess

    # The genuine sender (who has the secret) gets through the very same path, in order after
    # the forgeries: had any forgery been queued, it would have been handled before these.
    assert await webhook.post(webhook.message(f"/register {GENUINE_GROUP} legit"), secret) == 200
    await webhook.until(lambda: gw.registry.for_chat(GENUINE_GROUP))
    genuine_click = webhook.click(prompt, approve)
    assert await webhook.post(genuine_click, secret) == 200
    assert await asyncio.wait_for(approval, 15) == "approved"

    assert gw.registry.for_chat(FORGED_GROUP) is None
    stored = [m.text for m in await gw.store.messages_for_chat(f"tg:{MAIN}")]
    assert stored == [f"/register {GENUINE_GROUP} legit"]
    decided = await gw.store.approval(approval_id.group(1))
    assert decided is not None and decided.state == "approved"
    [answer] = await asyncio.to_thread(api.wait_for, lambda: list(api.answers))  # the genuine toast only
    assert answer["callback_query_id"] == genuine_click["callback_query"]["id"]
    assert answer["text"] == "Approved: Send 5 NEAR"


async def test_webhook_secret_is_generated_once_private_and_reused_across_restarts(tmp_path: Path) -> None:
    """Telegram keeps the secret from the last setWebhook: a restart must present the same one."""
    config_dir = tmp_path / "config"
    api = FakeBotApi().start()
    config = parse(
        f'[telegram]\nenabled = true\ntoken = "{api.token}"\nbase_url = "{api.base_url}"\n'
        f'mode = "webhook"\nwebhook_url = "{WEBHOOK_URL}"\nwebhook_port = {free_port()}\n',
        Path("c.toml"),
    )
    seen: list[str] = []
    try:
        for _ in range(2):
            channel = TelegramChannel.from_config(config.telegram, "Andy", tmp_path, config_dir=config_dir)
            await channel.connect(lambda m: asyncio.sleep(0))
            try:
                seen.append(api.webhook["secret_token"])
            finally:
                await channel.disconnect()
    finally:
        api.stop()
    assert seen[0] == seen[1] == (config_dir / SECRET_FILE).read_text().strip()
    assert stat.S_IMODE((config_dir / SECRET_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(config_dir.stat().st_mode) == 0o700
