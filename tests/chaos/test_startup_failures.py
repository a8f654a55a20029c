"""A start-up that fails exits 1 with one clear line: no traceback, no token, no hang, no orphan.

Each case runs the real `clawgate run` (real Docker, the real vault subprocess) against a
channel that will not let it in — the fake Bot API refusing a token, a Bot API port
nobody listens on, the fake Slack refusing the bot or the app token — and checks the
host afterwards: the exit code, every byte of stderr, every file in the data dir (the
logs included) for the token, /proc for a vault of this data dir, and a second start
that must fail the same way instead of "already running".
"""

from __future__ import annotations

import asyncio
import os
import socket
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy.secrets import SecretStore
from tests.e2e.test_crash_recovery import start
from tests.fakes.slack_api import FakeSlack
from tests.fakes.telegram_api import FakeBotApi

BAD_TELEGRAM_TOKEN = "987654321:AAwrong-token-SHOULD-never-be-printed"
SLACK_BOT, SLACK_APP = "xoxb-right-bot-token-1", "xapp-right-app-token-1"
WRONG_SLACK = "xoxb-wrong-bot-token-SHOULD-never-be-printed"
WRONG_SLACK_APP = "xapp-wrong-app-token-SHOULD-never-be-printed"
HANG_BOUND_S = 120  # far above a failing start's few seconds: hitting it means the process hung


def write_config(config_dir: Path, model_server, image: str, channel: str) -> None:  # type: ignore[no-untyped-def]
    (config_dir / "config.toml").write_text(
        f"""
assistant_name = "Andy"
[model]
provider = "anthropic"
name = "fake-model"
base_url = "{model_server.url}"
[sandbox]
image = "{image}"
[vault]
allow_private_upstreams = ["{model_server.host_port}"]
[console]
enabled = false
{channel}
"""
    )
    SecretStore(config_dir).add("anthropic", "sk-ant-startup", model_server.host_port, "x-api-key", "{value}")


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def bot_api():  # type: ignore[no-untyped-def]
    fake = FakeBotApi().start()
    yield fake
    fake.stop()


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack(bot_token=SLACK_BOT, app_token=SLACK_APP)
    await fake.start()
    yield fake
    await fake.stop()


def vaults_of(data_dir: Path) -> list[int]:
    """Live `python -m proxy` processes whose state dir is this data dir's vault."""
    state = str(data_dir / "vault").encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"-m" in argv and b"proxy" in argv and state in argv and status != "Z":
            found.append(int(entry.name))
    return found


def files_containing(root: Path, needles: list[bytes]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        hits += [f"{path}: {needle!r}" for needle in needles if needle in data]
    return hits


async def failed_start(data_dir: Path) -> str:
    """Run `clawgate run`; it must exit 1 on its own. Returns stderr."""
    proc = await start(dict(os.environ))
    try:
        _, err = await asyncio.wait_for(proc.communicate(b""), HANG_BOUND_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"the failed start-up hung (still running after {HANG_BOUND_S}s)")
    text = err.decode(errors="replace")
    assert proc.returncode == 1, f"exit code {proc.returncode}: {text}"
    return text


async def check_refusal(data_dir: Path, secret: str, expected: str) -> None:
    forms = [secret, urllib.parse.quote(secret, safe="")]
    for attempt in ("first", "second"):
        text = await failed_start(data_dir)
        lines = text.splitlines()
        assert len(lines) == 1, f"{attempt} start: stderr is not one line:\n{text}"
        assert lines[0].startswith("Error: cannot start: "), text
        assert expected in lines[0], text
        assert "Traceback" not in text and "already running" not in text, text
        assert not any(form in text for form in forms), f"the token was printed: {text}"
        assert not files_containing(data_dir, [f.encode() for f in forms]), "the token reached a file"
        assert (data_dir / "logs" / "gateway.log").exists(), "the log file is part of what is checked"
        assert not vaults_of(data_dir), "a vault outlived the failed start-up"
        assert not (data_dir / "vault" / "vault.pid").exists(), "the vault's pid file was left"


async def test_a_bot_token_the_bot_api_refuses_is_one_line_without_the_token(
    bot_api, dirs, model_server, sandbox_image
) -> None:
    config_dir, data_dir = dirs
    telegram = f'[telegram]\nenabled = true\ntoken = "{BAD_TELEGRAM_TOKEN}"\nbase_url = "{bot_api.base_url}"'
    write_config(config_dir, model_server, sandbox_image, telegram)
    await check_refusal(data_dir, BAD_TELEGRAM_TOKEN, "telegram: the Bot API at")
    assert "getMe" in bot_api.unauthorized, "the fake Bot API never saw the wrong token"


async def test_an_unreachable_bot_api_is_one_line_without_the_token(
    dirs, model_server, sandbox_image
) -> None:
    config_dir, data_dir = dirs
    url = f"http://127.0.0.1:{closed_port()}"
    telegram = f'[telegram]\nenabled = true\ntoken = "{BAD_TELEGRAM_TOKEN}"\nbase_url = "{url}"'
    write_config(config_dir, model_server, sandbox_image, telegram)
    await check_refusal(data_dir, BAD_TELEGRAM_TOKEN, f"telegram: cannot reach the Bot API at {url}")


@pytest.mark.parametrize(
    ("bot_token", "app_token", "expected"),
    [
        (WRONG_SLACK, SLACK_APP, "slack: Slack refused auth.test: invalid_auth"),
        (SLACK_BOT, WRONG_SLACK_APP, "slack: Slack refused apps.connections.open: invalid_auth"),
    ],
    ids=["bot-token", "app-token"],
)
async def test_a_slack_token_slack_refuses_is_one_line_without_the_token(
    bot_token, app_token, expected, slack, dirs, model_server, sandbox_image
) -> None:
    config_dir, data_dir = dirs
    section = (
        f'[slack]\nenabled = true\nbot_token = "{bot_token}"\napp_token = "{app_token}"\n'
        f'base_url = "{slack.base_url}"'
    )
    write_config(config_dir, model_server, sandbox_image, section)
    wrong = bot_token if bot_token == WRONG_SLACK else app_token
    await check_refusal(data_dir, wrong, expected)
    assert slack.refused, "the fake Slack never saw the wrong token"
