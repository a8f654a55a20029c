"""Break 1: a hostile agent plants links, FIFOs and hard links in its own folder, then makes
the host write or delete there (a Telegram attachment, `/reset`). Afterwards the host is
checked: nothing written or removed outside the group's own trees, another group's history
intact, and the gateway (its event loop) still answering other chats.

Every test runs on each sandbox tier (`tier` fixture): the agent's shell tool, scripted by the
fake model, runs the attacker's commands inside the real sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import stat
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core.models import Group
from gateway.app import Gateway
from tests.fakes.model_server import FakeModelServer
from tests.fakes.telegram_api import TOKEN, FakeBotApi, check_html
from tests.security.conftest import MAIN_CHAT, Attacker, Tier, add_model_key, tool_result, wait_until

MAIN = -1007000000001
HOSTILE_TG = -1007000000002
ADMIN = {"id": 4242, "is_bot": False, "first_name": "Alice"}
MEMBER = {"id": 6161, "is_bot": False, "first_name": "Mallory"}
FIRST_IDS = range(1000, 1400)  # the fake Bot API numbers messages from 1000: the attacker covers them all


def shell_call(command: str, tool_id: str, timeout_s: int = 120) -> dict[str, Any]:
    return {
        "id": f"msg_{tool_id}",
        "type": "message",
        "role": "assistant",
        "model": "fake",
        "content": [
            {
                "type": "tool_use",
                "id": tool_id,
                "name": "shell",
                "input": {"command": command, "timeout_s": timeout_s},
            }
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }


@dataclass
class TgEnv:
    gw: Gateway
    api: FakeBotApi
    model: FakeModelServer
    data_dir: Path
    ids: Any = None

    def texts_in(self, chat: int) -> list[str]:
        return [check_html(str(m.get("text", ""))) for m in self.api.sent if m["chat"]["id"] == chat]

    async def reply_in(self, chat: int, before: int, timeout: float = 180) -> str:
        found = await asyncio.to_thread(
            self.api.wait_for, lambda: len(self.texts_in(chat)) > before and self.texts_in(chat), timeout
        )
        return found[before]

    async def shell(self, command: str, timeout_s: int = 120) -> str:
        """The hostile agent runs `command` with its shell tool; returns the tool's output."""
        await self.gw.drain()  # no other turn may take the scripted response
        tool_id = f"toolu_tg_{next(self.ids)}"
        self.model.responses.append((200, shell_call(command, tool_id, timeout_s)))
        self.api.push_message(HOSTILE_TG, f"@Andy run {tool_id}", user=MEMBER, title="Hostile")
        deadline = time.monotonic() + timeout_s + 120
        while True:
            for record in reversed(list(self.model.requests)):
                result = tool_result(record.body, tool_id)
                if result is not None:
                    await self.gw.drain()
                    return result
            assert time.monotonic() < deadline, f"no tool result for {tool_id}"
            await asyncio.sleep(0.1)

    async def model_saw(self, needle: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not any(needle in str(r.body) for r in list(self.model.requests)):
            assert time.monotonic() < deadline, f"the agent never got {needle!r}"
            await asyncio.sleep(0.1)


@pytest.fixture
async def tg_env(tier: Tier, dirs: tuple[Path, Path], model_server: FakeModelServer) -> AsyncIterator[TgEnv]:
    """A real gateway on `tier` whose channel is Telegram (fake Bot API on loopback): main chat
    MAIN (admin tg:4242) and the registered hostile group HOSTILE_TG."""
    config_dir, data_dir = dirs
    tier.prepare(data_dir)
    add_model_key(config_dir, model_server)
    api = FakeBotApi().start()
    extra = (
        '[console]\nenabled = false\n[admin]\nusers = ["tg:4242"]\n'
        f'[telegram]\nenabled = true\ntoken = "{TOKEN}"\nbase_url = "{api.base_url}"\n'
    )
    gw = Gateway(tier.config(model_server, extra=extra, top=f'main_chat = "tg:{MAIN}"'), config_dir, data_dir)
    try:
        await gw.start()
        await gw.registry.register(
            Group("hostile", f"tg:{HOSTILE_TG}", "hostile", "@Andy", requires_trigger=False)
        )
        yield TgEnv(gw, api, model_server, data_dir, itertools.count(1))
    finally:
        with contextlib.suppress(Exception):
            await gw.stop(grace_s=5)
        api.stop()


def snapshot(path: Path) -> dict[str, Any]:
    """Every entry below `path` with its type, content and inode (to see writes and removals)."""
    out: dict[str, Any] = {}
    for p in sorted(path.rglob("*")):
        st = p.lstat()
        data = p.read_bytes() if stat.S_ISREG(st.st_mode) else os.readlink(p) if p.is_symlink() else None
        out[str(p.relative_to(path))] = (stat.S_IFMT(st.st_mode), st.st_ino, data)
    return out


def push_document(env: TgEnv, file_id: str, content: bytes, name: str = "report.txt") -> dict[str, Any]:
    env.api.files[file_id] = content
    document = {
        "file_id": file_id,
        "file_unique_id": f"u-{file_id}",
        "file_name": name,
        "file_size": len(content),
    }
    return env.api.push_message(
        HOSTILE_TG, None, user=MEMBER, title="Hostile", extra={"document": document, "caption": "@Andy look"}
    )


async def test_attachment_never_follows_an_inbox_symlink_planted_by_the_agent(
    tg_env: TgEnv, tier: Tier, tmp_path: Path
) -> None:
    env = tg_env
    host_dir = tmp_path / "host-dir"  # stands for /etc/cron.d, the venv's site-packages, …
    host_dir.mkdir()
    victim = tmp_path / "config.toml"  # stands for the gateway's own config
    victim.write_text("[model]\nname = 'mine'\n")
    before = {"dir": snapshot(host_dir), "victim": victim.read_bytes()}

    # 1. `inbox` in the group folder is a symlink to a host directory.
    out = await env.shell(
        f"ln -sfn {host_dir} /workspace/group/inbox && find /workspace/group -maxdepth 1 -printf '%p %l\\n'; "
        "echo planted"
    )
    assert "planted" in out, out
    first = push_document(env, "doc1", b"payload one")
    name1 = f"{first['message_id']}-report.txt"
    await env.model_saw(f"{name1}]")  # the agent was told where the attachment is

    # 2. `inbox` is a real directory full of `<next message id>-report.txt` links to a host file.
    out = await env.shell(
        "rm -f /workspace/group/inbox && mkdir -p /workspace/group/inbox && "
        f"for i in $(seq {FIRST_IDS.start} {FIRST_IDS.stop}); do "
        f"ln -sf {victim} /workspace/group/inbox/$i-report.txt; done; "
        "echo planted-$(find /workspace/group/inbox/ -mindepth 1 -maxdepth 1 | wc -l)"
    )
    assert "planted-" in out and "planted-0" not in out, out
    second = push_document(env, "doc2", b"payload two")
    name2 = f"{second['message_id']}-report.txt"
    await env.model_saw(f"{name2}]")

    # The host: nothing written through either link …
    assert snapshot(host_dir) == before["dir"]
    assert victim.read_bytes() == before["victim"]
    # … the files are in the host-owned inbox, outside the writable tree …
    await env.model_saw(f"[attachment saved: /workspace/inbox/{name2}]")
    inbox = env.data_dir / "inbox" / "hostile"
    assert (inbox / name1).read_bytes() == b"payload one"
    assert (inbox / name2).read_bytes() == b"payload two"
    # … which the agent can read but not change.
    out = await env.shell(
        f"cat /workspace/inbox/{name2}; echo; touch /workspace/inbox/x 2>&1; "
        f"ln -s /etc /workspace/inbox/{int(second['message_id']) + 5}-report.txt 2>&1; "
        f"rm -f /workspace/inbox/{name1} 2>&1; echo done"
    )
    assert "payload two" in out and "done" in out, out
    # the host kernel names the read-only mount first; gVisor checks the directory's mode first
    refusals = out.count("Read-only file system") + out.count("Permission denied")
    assert refusals >= 3 and (tier.name == "runsc" or out.count("Read-only file system") >= 3), out
    assert sorted(p.name for p in inbox.iterdir()) == sorted([name1, name2])


async def test_fifo_at_the_attachment_target_does_not_freeze_the_gateway(tg_env: TgEnv) -> None:
    """A FIFO where the host would write blocked `open()` on the event loop: every chat froze."""
    env = tg_env
    out = await env.shell(
        "mkdir -p /workspace/group/inbox /workspace/group/.clawgate && "
        f"for i in $(seq {FIRST_IDS.start} {FIRST_IDS.stop}); do "
        "mkfifo /workspace/group/inbox/$i-report.txt; done; "
        "rm -f /workspace/group/.clawgate/history.json; mkfifo /workspace/group/.clawgate/history.json.x; "
        "echo fifos-$(find /workspace/group -type p | wc -l)"
    )
    assert "fifos-" in out and "fifos-0" not in out, out

    # A watchdog outside the event loop: if the loop stops ticking, it records the freeze and
    # opens the FIFOs' read ends so the blocked writer (and this test) can go on and fail.
    beat = [time.monotonic()]
    frozen = threading.Event()
    done = threading.Event()
    fifo_dir = env.data_dir / "groups" / "hostile" / "inbox"

    async def heartbeat() -> None:
        while True:
            beat[0] = time.monotonic()
            await asyncio.sleep(0.05)

    def watchdog() -> None:
        held: list[int] = []
        while not done.wait(0.2):
            if time.monotonic() - beat[0] > 10 and not frozen.is_set():
                frozen.set()
                for fifo in fifo_dir.iterdir():
                    with contextlib.suppress(OSError):
                        held.append(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        for fd in held:
            os.close(fd)

    ticker = asyncio.create_task(heartbeat())
    guard = threading.Thread(target=watchdog, daemon=True)
    guard.start()
    try:
        message = push_document(env, "doc-fifo", b"into the fifo")
        name = f"{message['message_id']}-report.txt"
        await env.model_saw("[attachment")  # saved or refused: the message got through
        # The main chat is still served while (and after) the hostile group's attachment lands.
        before = len(env.texts_in(MAIN))
        env.api.push_message(MAIN, "/status", user=ADMIN, title="Main")
        status = await env.reply_in(MAIN, before, 60)
        assert "uptime" in status.lower() or "containers" in status.lower(), status
        before = len(env.texts_in(MAIN))
        env.api.push_message(MAIN, "/reset hostile", user=ADMIN, title="Main")
        assert await env.reply_in(MAIN, before, 60) == "cleared the agent session of hostile"
    finally:
        done.set()
        ticker.cancel()
        guard.join(5)
    assert not frozen.is_set(), "the gateway's event loop froze on a FIFO planted by the agent"
    assert (env.data_dir / "inbox" / "hostile" / name).read_bytes() == b"into the fifo"
    assert not (env.data_dir / "groups" / "hostile" / ".clawgate").exists()


async def test_reset_does_not_follow_a_symlinked_clawgate_into_another_group(
    tier: Tier, attacker: Attacker, hostile_gateway: Gateway
) -> None:
    """`/reset hostile` once deleted `<hostile>/.clawgate/history.json` through a planted
    `.clawgate -> ../victim/.clawgate`: the other group's history was gone."""
    gw = hostile_gateway
    await gw.registry.register(Group("victim", "console:victim", "victim", "@Andy"))
    groups = gw.data_dir / "groups"
    victim_state = groups / "victim" / ".clawgate"
    victim_state.mkdir(parents=True)
    (victim_state / "history.json").write_text('{"the victim": "history"}')
    (victim_state / "notes").mkdir()
    (victim_state / "notes" / "keep.txt").write_text("keep me")
    before = snapshot(groups / "victim")

    # Planted after the turn (a detached process), so the agent's own history save cannot undo it.
    out = await attacker.shell(
        "setsid sh -c 'sleep 2; cd /workspace/group && rm -rf .clawgate && "
        "ln -s ../victim/.clawgate .clawgate' >/dev/null 2>&1 & sleep 1; echo scheduled"
    )
    assert "scheduled" in out, out
    planted = groups / "hostile" / ".clawgate"
    await wait_until(lambda: planted.is_symlink(), 60)

    channel = gw.test_channel  # type: ignore[attr-defined]
    sent = len(channel.sent)
    await gw.ingest(channel.message("/reset hostile", chat_id=MAIN_CHAT))
    await channel.wait_for(sent + 1, 60)
    assert channel.sent[sent] == (MAIN_CHAT, "cleared the agent session of hostile")

    assert snapshot(groups / "victim") == before, "the other group's state was touched"
    assert not planted.is_symlink() and not planted.exists()
    # The hostile group still works, with a fresh session.
    assert "[exit code 0]" in await attacker.shell("true")


async def test_hard_links_cannot_reach_foreign_files_and_reset_only_unlinks_names(
    tier: Tier, attacker: Attacker, hostile_gateway: Gateway
) -> None:
    gw = hostile_gateway
    out = await attacker.shell(
        "cd /workspace/group; "
        "ln /run/clawgate/ca.pem ca-link 2>&1; ln /workspace/global/x global-link 2>&1; "
        "ln /etc/passwd passwd-link 2>&1; "
        "echo 'keep me' > MEMORY.md; mkdir -p .clawgate; ln MEMORY.md .clawgate/memory-hardlink; "
        "python3 -c 'import os; print(os.stat(\"MEMORY.md\").st_nlink)'"
    )
    lines = out.splitlines()
    assert not any((gw.data_dir / "groups" / "hostile" / n).exists() for n in ("ca-link", "passwd-link")), out
    assert any("cross-device" in line or "Operation not permitted" in line for line in lines), out
    assert "2" in lines, out  # the in-folder hard link exists

    channel = gw.test_channel  # type: ignore[attr-defined]
    sent = len(channel.sent)
    await gw.ingest(channel.message("/reset hostile", chat_id=MAIN_CHAT))
    await channel.wait_for(sent + 1, 60)
    assert channel.sent[sent] == (MAIN_CHAT, "cleared the agent session of hostile")
    memory = gw.data_dir / "groups" / "hostile" / "MEMORY.md"
    assert memory.read_text() == "keep me\n" and memory.stat().st_nlink == 1
    assert not (gw.data_dir / "groups" / "hostile" / ".clawgate").exists()
