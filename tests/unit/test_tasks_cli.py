"""`clawgate tasks …` on the shared database, and the reload notice to a running gateway."""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.control_client import control_socket, notify_gateway
from gateway.scheduler import Scheduler
from gateway.store import Store
from tests.fakes.control import serve_control


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = Path(tempfile.mkdtemp(prefix="cg-cli-", dir="/tmp"))  # short: unix socket paths are limited
    monkeypatch.setenv("CLAWGATE_DATA_DIR", str(path))
    monkeypatch.setenv("CLAWGATE_CONFIG_DIR", str(tmp_path / "config"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def seed(data_dir: Path) -> int:
    async def go() -> int:
        store = await Store.open(data_dir / "clawgate.db")
        try:
            task = await Scheduler(store).schedule(
                "team", "nightly report", cron="0 2 * * *", created_by="team"
            )
            return int(task["id"])
        finally:
            await store.close()

    return asyncio.run(go())


def status(data_dir: Path, task_id: int) -> str:
    async def go() -> str:
        store = await Store.open(data_dir / "clawgate.db")
        try:
            task = await store.task(task_id)
            assert task is not None
            return task.status
        finally:
            await store.close()

    return asyncio.run(go())


@pytest.fixture
def running_gateway(data_dir: Path) -> Iterator[list[dict[str, object]]]:
    """The gateway's control socket, served on a background loop; yields the requests it got."""
    with serve_control(data_dir) as received:
        yield received


def test_list_pause_resume_cancel_without_a_gateway(data_dir: Path) -> None:
    task_id = seed(data_dir)
    runner = CliRunner()
    listed = runner.invoke(main, ["tasks", "list"])
    assert listed.exit_code == 0 and "nightly report" in listed.output and "active" in listed.output
    assert "no tasks" in runner.invoke(main, ["tasks", "list", "other"]).output
    for action, expected in (("pause", "paused"), ("resume", "active"), ("cancel", "cancelled")):
        result = runner.invoke(main, ["tasks", action, str(task_id)])
        assert result.exit_code == 0, result.output
        assert expected in result.output and "no running gateway" in result.output
        assert status(data_dir, task_id) == expected
    assert "nightly report" not in runner.invoke(main, ["tasks", "list"]).output
    assert "cancelled" in runner.invoke(main, ["tasks", "list", "--all"]).output
    refused = runner.invoke(main, ["tasks", "resume", str(task_id)])
    assert refused.exit_code != 0 and "only a paused task can be resumed" in refused.output
    missing = runner.invoke(main, ["tasks", "pause", "999"])
    assert missing.exit_code != 0 and "no task" in missing.output


def test_a_change_is_announced_to_the_running_gateway(data_dir: Path, running_gateway: list) -> None:
    task_id = seed(data_dir)
    result = CliRunner().invoke(main, ["tasks", "pause", str(task_id)])
    assert result.exit_code == 0, result.output
    assert "running gateway picked up the change" in result.output
    assert running_gateway == [{"op": "reload", "what": "tasks"}]


def test_notify_gateway_is_quietly_false_when_nothing_listens(data_dir: Path) -> None:
    assert notify_gateway("tasks") is False  # no socket file at all
    path = control_socket(data_dir)
    path.parent.mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # a socket file left behind by a crashed gateway
    stale.close()
    assert notify_gateway("tasks") is False
