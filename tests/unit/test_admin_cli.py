"""`clawgate groups register|unregister`, `clawgate dlq …`, `clawgate status` on a real SQLite store."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from core.models import Group, InboundMessage
from gateway.cli import main
from gateway.scheduler import Scheduler
from gateway.store import Store
from tests.fakes.control import serve_control

NOT_RUNNING = "no running gateway answered"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cg-admin-", dir="/tmp"))  # short: unix socket paths are limited
    monkeypatch.setenv("CLAWGATE_DATA_DIR", str(path))
    monkeypatch.setenv("CLAWGATE_CONFIG_DIR", str(tmp_path / "config"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def db[T](data_dir: Path, action: Callable[[Store], Awaitable[T]]) -> T:
    async def go() -> T:
        store = await Store.open(data_dir / "clawgate.db")
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(go())


def groups(data_dir: Path) -> dict[str, tuple[str, str, bool]]:
    rows = db(data_dir, lambda s: s.groups())
    return {g.folder: (g.chat_id, g.trigger, g.requires_trigger) for g in rows}


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


MAIN = Group("main", "console:main", "main", "@Andy", False, True)


def seed_main(data_dir: Path) -> None:
    db(data_dir, lambda s: s.register_group(MAIN))


def seed_dead_run(data_dir: Path, text: str = "unanswered") -> int:
    async def go(store: Store) -> int:
        message = InboundMessage("console:main", f"x-{text}", "console:owner", "owner", text, 1.0, "console")
        await store.ingest(message, "pending")
        return await store.dead_letter_pending(MAIN, f"model failed for {text}")

    return db(data_dir, go)


def message_status(data_dir: Path, text: str) -> str:
    rows = db(data_dir, lambda s: s.messages_for_chat("console:main"))
    return next(m.status for m in rows if m.text == text)


# -- groups -----------------------------------------------------------------------------------------


def test_groups_register_list_and_unregister(data_dir: Path) -> None:
    seed_main(data_dir)
    result = invoke("groups", "register", "tg:-100", "team")
    assert result.exit_code == 0, result.output
    assert "registered team for tg:-100 (trigger @Andy)" in result.output and NOT_RUNNING in result.output
    assert invoke("groups", "register", "tg:-200", "ops", "--trigger", "@Bob").exit_code == 0
    assert invoke("groups", "register", "tg:-300", "free", "--no-trigger").exit_code == 0
    assert groups(data_dir) == {
        "main": ("console:main", "@Andy", False),
        "team": ("tg:-100", "@Andy", True),
        "ops": ("tg:-200", "@Bob", True),
        "free": ("tg:-300", "@Andy", False),
    }
    listed = invoke("groups", "list").output
    assert "team" in listed and "tg:-200" in listed and "(no trigger)" in listed

    result = invoke("groups", "unregister", "ops")
    assert result.exit_code == 0 and "unregistered ops" in result.output and NOT_RUNNING in result.output
    assert "ops" not in groups(data_dir)
    assert "ops" not in invoke("groups", "list").output
    # `mounts` is still there next to the new subcommands.
    assert invoke("groups", "mounts", "--help").exit_code == 0


def test_assistant_name_from_config_is_the_default_trigger(data_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.toml").write_text('assistant_name = "Zed"\n')
    assert invoke("groups", "register", "tg:-1", "team").exit_code == 0
    assert groups(data_dir)["team"] == ("tg:-1", "@Zed", True)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["tg:-1", "../evil"], "invalid group folder '../evil'"),
        (["tg:-1", "Team"], "invalid group folder 'Team'"),
        (["tg:-1", "global"], "invalid group folder 'global'"),
        (["tg:-1", "x", "--trigger", "Bob"], "invalid trigger 'Bob'"),
        (["tg:-1", "x", "--trigger", "@"], "invalid trigger '@'"),
        (["tg:-1", "x", "--trigger", "@a b"], "invalid trigger '@a b'"),
        (["tg: 1", "x"], "invalid chat id 'tg: 1'"),
        (["", "x"], "invalid chat id ''"),
        (["console:main", "x"], "chat 'console:main' is already registered"),
        (["tg:-9", "main"], "a group with folder 'main' is already registered"),
    ],
)
def test_groups_register_rejects_bad_arguments_in_one_line(
    data_dir: Path, args: list[str], error: str
) -> None:
    seed_main(data_dir)
    result = invoke("groups", "register", *args)
    assert result.exit_code == 1, result.output
    assert result.output.strip() == f"Error: {error}" or (
        result.output.startswith(f"Error: {error}") and len(result.output.strip().splitlines()) == 1
    ), result.output
    assert set(groups(data_dir)) == {"main"}


def test_groups_register_missing_argument_is_a_usage_error(data_dir: Path) -> None:
    result = invoke("groups", "register", "tg:-1")
    assert result.exit_code == 2 and "Missing argument 'NAME'" in result.output


def test_groups_unregister_refuses_main_and_unknown(data_dir: Path) -> None:
    seed_main(data_dir)
    result = invoke("groups", "unregister", "main")
    assert result.exit_code == 1 and "Error: the main group cannot be unregistered" in result.output
    result = invoke("groups", "unregister", "nosuch")
    assert result.exit_code == 1 and "Error: no registered group 'nosuch'" in result.output
    assert set(groups(data_dir)) == {"main"}


def test_bad_config_is_reported_when_it_is_needed(data_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.toml").write_text("assistant_name = 5\n")
    result = invoke("groups", "register", "tg:-1", "team")
    assert result.exit_code == 1 and "assistant_name" in result.output
    # The default sender policy is read from the config too, so that needs it as well.
    result = invoke("groups", "register", "tg:-1", "team", "--trigger", "@Me")
    assert result.exit_code == 1 and "assistant_name" in result.output
    assert (
        invoke("groups", "register", "tg:-1", "team", "--trigger", "@Me", "--senders", "open").exit_code == 0
    )


# -- dead letters ------------------------------------------------------------------------------------


def test_dlq_list_retry_and_drop(data_dir: Path) -> None:
    assert invoke("dlq", "list").output.strip() == "no dead letters"
    seed_main(data_dir)
    first = seed_dead_run(data_dir, "first")
    second = seed_dead_run(data_dir, "second")
    listed = invoke("dlq", "list").output.splitlines()
    assert len(listed) == 2
    assert listed[0].startswith(f"#{first}") and "run" in listed[0] and "model failed for first" in listed[0]

    result = invoke("dlq", "retry", str(first))
    assert result.exit_code == 0, result.output
    assert f"dead letter #{first} queued again: 1 message(s) of main will be answered again" in result.output
    assert NOT_RUNNING in result.output
    assert message_status(data_dir, "first") == "pending"  # the gateway answers it (now or at start)
    assert message_status(data_dir, "second") == "dead"

    result = invoke("dlq", "drop", f"#{second}")
    assert result.exit_code == 0 and f"dropped dead letter #{second}" in result.output
    assert message_status(data_dir, "second") == "dead"  # kept in the history, not answered
    assert invoke("dlq", "list").output.strip() == "no dead letters"

    for action in ("retry", "drop"):
        missing = invoke("dlq", action, str(second))
        assert missing.exit_code == 1 and f"Error: no dead letter #{second}" in missing.output
        bad = invoke("dlq", action, "abc")
        assert bad.exit_code == 1 and "Error: invalid dead-letter id 'abc'" in bad.output
        assert invoke("dlq", action, "0").exit_code == 1
        assert invoke("dlq", action).exit_code == 2


def test_dlq_retry_of_an_undelivered_reply(data_dir: Path) -> None:
    async def go(store: Store) -> tuple[int, int]:
        entry = await store.enqueue_reply(None, 0, "tg:-100", "hello team")
        assert entry is not None
        return entry, await store.dead_letter_reply(entry, "telegram timed out")

    entry, letter = db(data_dir, go)
    assert "reply" in invoke("dlq", "list").output
    result = invoke("dlq", "retry", str(letter))
    assert result.exit_code == 0 and f"reply {entry} will be sent again" in result.output
    pending = db(data_dir, lambda s: s.pending_outbox())
    assert [(e.id, e.text, e.attempts) for e in pending] == [(entry, "hello team", 0)]
    assert db(data_dir, lambda s: s.dead_letters()) == []


# -- status --------------------------------------------------------------------------------------------


def test_status_without_a_gateway_reads_the_database_and_exits_1(data_dir: Path) -> None:
    result = invoke("status")
    assert result.exit_code == 1  # monitoring can test `clawgate status`
    assert "the gateway is not running" in result.output and "no database yet" in result.output
    assert not (data_dir / "clawgate.db").exists()  # asking did not create one

    seed_main(data_dir)
    seed_dead_run(data_dir, "lost")
    db(data_dir, lambda s: Scheduler(s).schedule("main", "report", every_s=7200, created_by="main"))
    result = invoke("status")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == "the gateway is not running (no answer on its control socket)"
    assert "groups: 1 (main)" in lines
    assert "dead letters: 1" in lines and "messages pending: 0" in lines and "active tasks: 1" in lines
    assert any(line.startswith("next task 1 (main) in 1h") for line in lines)


# -- a running gateway ----------------------------------------------------------------------------------


@pytest.fixture
def running_gateway(data_dir: Path) -> Iterator[list[dict[str, object]]]:
    """A control socket served on a background loop, answering like the gateway; yields its requests."""
    with serve_control(data_dir, status_text="up 5m\nvault: healthy\ndead letters: 0") as received:
        yield received


def test_changes_are_announced_to_the_running_gateway(data_dir: Path, running_gateway: list) -> None:
    seed_main(data_dir)
    letter = seed_dead_run(data_dir)
    other = seed_dead_run(data_dir, "other")
    steps = [
        (["groups", "register", "tg:-1", "team"], {"op": "reload", "what": "groups"}),
        (["groups", "unregister", "team"], {"op": "reload", "what": "groups"}),
        (["dlq", "retry", str(letter)], {"op": "reload", "what": "dlq"}),
        (["dlq", "drop", str(other)], {"op": "reload", "what": "dlq"}),
        (["status"], {"op": "status"}),
    ]
    for args, sent in steps:
        result = invoke(*args)
        assert result.exit_code == 0, result.output
        assert running_gateway[-1] == sent, args
        if args[0] != "status":
            assert "the running gateway picked up the change" in result.output
    assert len(running_gateway) == len(steps)
    result = invoke("status")
    assert result.exit_code == 0
    status = result.output
    assert status == "up 5m\nvault: healthy\ndead letters: 0\n"  # the gateway's own words, nothing else
    # Failed changes are not announced.
    assert invoke("groups", "unregister", "team").exit_code == 1
    assert invoke("dlq", "drop", "999").exit_code == 1
    assert json.dumps(running_gateway[-1]) == json.dumps({"op": "status"})


def test_a_group_chooses_its_agent_runtime_and_unknown_ones_are_refused(data_dir: Path) -> None:
    seed_main(data_dir)
    assert invoke("groups", "register", "tg:-100", "team", "--runtime", "claude").exit_code == 0
    assert invoke("groups", "register", "tg:-200", "ops").exit_code == 0
    runtimes = {g.folder: g.runtime for g in db(data_dir, lambda s: s.groups())}
    assert runtimes == {"main": None, "team": "claude", "ops": None}
    assert "claude" in invoke("groups", "list").output

    result = invoke("groups", "set", "ops", "--runtime", "claude")
    assert result.exit_code == 0 and "ops: runtime claude" in result.output and NOT_RUNNING in result.output
    assert invoke("groups", "set", "team", "--runtime", "default").exit_code == 0
    runtimes = {g.folder: g.runtime for g in db(data_dir, lambda s: s.groups())}
    assert runtimes == {"main": None, "team": None, "ops": "claude"}

    bad = invoke("groups", "register", "tg:-300", "x", "--runtime", "codex")
    assert bad.exit_code != 0 and "codex" in bad.output
    assert invoke("groups", "set", "ops", "--runtime", "codex").exit_code != 0
    missing = invoke("groups", "set", "nobody", "--runtime", "claude")
    assert missing.exit_code != 0 and "no registered group 'nobody'" in missing.output
    assert {g.folder: g.runtime for g in db(data_dir, lambda s: s.groups())}["ops"] == "claude"


# -- who may talk to the assistant (gateway.senders_cli) ----------------------------------------------


def test_sender_policies_and_lists_from_the_cli(data_dir: Path, running_gateway: list) -> None:
    seed_main(data_dir)
    result = invoke("groups", "register", "tg:-1", "team", "--members", "tg:5, tg:6")
    assert result.exit_code == 0, result.output
    assert "registered team for tg:-1 (trigger @Andy, senders members: tg:5, tg:6)" in result.output
    assert running_gateway[-1] == {"op": "reload", "what": "groups"}
    assert invoke("groups", "block", "team", "tg:6").output.startswith("team: tg:6 is blocked")
    assert invoke("groups", "allow", "team", "slack:U0ABC").exit_code == 0
    assert running_gateway[-1] == {"op": "reload", "what": "groups"} and len(running_gateway) == 3
    shown = invoke("groups", "senders", "team").output.splitlines()
    assert shown == ["team: senders members", "  slack:U0ABC allowed", "  tg:5 allowed", "  tg:6 blocked"]
    result = invoke("groups", "set", "team", "--senders", "approval")
    assert result.exit_code == 0 and "team: senders approval" in result.output
    assert "approval" in invoke("groups", "list").output

    async def hold(store: Store) -> None:  # unknown senders' triggers, held for the owner
        for n, sender in enumerate(["tg:8", "tg:7", "tg:8"]):
            message = InboundMessage("tg:-1", f"x{n}", sender, "someone", f"@Andy {n}", 1.0 + n, "telegram")
            await store.ingest(message, "held")

    db(data_dir, hold)
    assert invoke("groups", "senders", "team").output.splitlines()[-3:] == [
        "  held, waiting for a decision (oldest first):",
        "    tg:8: 2 held messages",
        "    tg:7: 1 held message",
    ]
    assert invoke("groups", "senders", "main").output.strip() == "main: admins only ([admin] users)"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["groups", "allow", "team", "alice"], "invalid sender id 'alice'"),
        (["groups", "block", "team", "tg:1 "], "invalid sender id 'tg:1 '"),
        (["groups", "allow", "nosuch", "tg:1"], "no registered group 'nosuch'"),
        (["groups", "allow", "main", "tg:1"], "the main chat is always limited to admins"),
        (["groups", "set", "main", "--senders", "open"], "the main chat is always limited to admins"),
        (["groups", "register", "tg:-2", "ops", "--members", "tg:1,@bob"], "invalid sender id '@bob'"),
        (["groups", "register", "tg:-2", "ops", "--members", ","], "an empty sender list"),
        (["groups", "senders", "nosuch"], "no registered group 'nosuch'"),
    ],
)
def test_sender_commands_refuse_bad_input_in_one_line(data_dir: Path, args: list[str], error: str) -> None:
    seed_main(data_dir)
    assert invoke("groups", "register", "tg:-1", "team", "--senders", "open").exit_code == 0
    result = invoke(*args)
    assert result.exit_code == 1 and result.output.startswith(f"Error: {error}"), result.output
    assert len(result.output.strip().splitlines()) == 1
    assert set(groups(data_dir)) == {"main", "team"}
    assert db(data_dir, lambda s: s.group_senders()) == {}


def test_groups_set_needs_something_to_change(data_dir: Path) -> None:
    seed_main(data_dir)
    result = invoke("groups", "set", "main")
    assert result.exit_code == 2 and "give --runtime and/or --senders" in result.output
    result = invoke("groups", "set", "team", "--senders", "everyone")
    assert result.exit_code == 2 and "'everyone' is not one of" in result.output
