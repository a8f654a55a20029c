"""What `clawgate run` as a service is made of: reload plan, console mode, systemd unit, log rotation.

The end-to-end behaviour (signals on the real process) is in tests/chaos/test_service.py;
these pin the rules themselves on real files, descriptors and systemd's own verifier.
"""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from core.config import parse
from core.logfile import RotatingStream
from gateway import console_mode, reload
from gateway.cli import main
from gateway.service_unit import UNIT_NAME, ServiceError, UnitSpec, install, render


def cfg(text: str = ""):  # type: ignore[no-untyped-def]
    return parse(text, Path("config.toml"))


# -- SIGHUP: what is applied live ---------------------------------------------------------------


def test_reload_applies_only_the_live_keys_and_names_the_rest() -> None:
    old = cfg('[telegram]\nenabled = true\ntoken = "1:a"\n')
    new = cfg(
        'context_messages = 9\n[admin]\nusers = ["tg:1"]\n[retry]\nmax_attempts = 7\n'
        '[sandbox]\nmemory_mb = 512\n[telegram]\nenabled = true\ntoken = "1:b"\n'
        '[groups]\ndefault_sender_policy = "members"\n'
    )
    plan = reload.plan(old, new)
    assert plan.applied == [
        "admin.users",
        "context_messages",
        "groups.default_sender_policy",
        "retry.max_attempts",
    ]
    assert plan.config.groups.default_sender_policy == "members"
    assert plan.needs_restart == ["sandbox.memory_mb", "telegram.token"]  # a changed secret, by name only
    assert plan.config.context_messages == 9 and plan.config.retry.max_attempts == 7
    assert plan.config.admin.users == ["tg:1"]
    assert plan.config.sandbox.memory_mb == 1024  # still what the running sandboxes were made with
    assert plan.config.telegram.token is not None and plan.config.telegram.token.get_secret_value() == "1:a"


def test_reload_applies_budget_changes_live() -> None:
    old = cfg("[budget.groups.team]\ndaily_usd = 2\n")
    new = cfg(
        '[budget]\ntimezone = "Europe/Berlin"\n'
        "[budget.groups.team]\ndaily_usd = 5\n[budget.global]\ndaily_tokens = 9\n"
    )
    plan = reload.plan(old, new)
    assert plan.applied == ["budget.global.daily_tokens", "budget.groups.team.daily_usd", "budget.timezone"]
    assert plan.needs_restart == []
    assert plan.config.budget == new.budget  # gateway/app.py hands it to the guard, which pushes it


def test_reload_of_an_unchanged_file_changes_nothing() -> None:
    plan = reload.plan(cfg("context_messages = 3\n"), cfg("context_messages = 3\n"))
    assert plan.applied == [] and plan.needs_restart == []


# -- console mode ---------------------------------------------------------------------------------


def test_stdin_kind_on_real_descriptors(tmp_path: Path) -> None:
    read, write = os.pipe()
    null = os.open(os.devnull, os.O_RDONLY)
    regular = tmp_path / "script.txt"
    regular.write_text("hi\n")
    file_fd = os.open(regular, os.O_RDONLY)
    leader, follower = pty.openpty()
    try:
        assert console_mode.stdin_kind(read) == "stream"
        assert console_mode.stdin_kind(file_fd) == "stream"
        assert console_mode.stdin_kind(null) == "none"  # systemd, nohup, docker run without -i
        assert console_mode.stdin_kind(follower) == "tty"
    finally:
        for fd in (read, write, null, file_fd, leader, follower):
            os.close(fd)
    assert console_mode.stdin_kind(read) == "none"  # closed


@pytest.mark.parametrize(
    ("text", "kind", "mode"),
    [
        ("", "tty", "interactive"),
        ("", "stream", "scripted"),  # printf 'hi\n' | clawgate run
        ("", "none", "daemon"),
        ('[console]\nmain_chat = "console:x"\n', "none", "daemon"),  # the section without `enabled`
        ("[console]\nenabled = true\n", "none", "scripted"),  # asked for: EOF at once, as before
        ("[console]\nenabled = false\n", "tty", "off"),
        ("[console]\nenabled = false\n", "stream", "off"),
    ],
)
def test_console_mode_rule(text: str, kind: console_mode.StdinKind, mode: str) -> None:
    assert console_mode.decide(cfg(text), kind) == mode


def test_daemon_mode_switches_the_console_off_and_nothing_else() -> None:
    config = cfg("context_messages = 4\n")
    daemon = console_mode.effective(config, "daemon")
    assert daemon.console.enabled is False and daemon.context_messages == 4
    assert console_mode.effective(config, "scripted") is config


# -- systemd unit ---------------------------------------------------------------------------------


def spec(tmp_path: Path, **kw: object) -> UnitSpec:
    values: dict[str, object] = {
        "executable": Path("/opt/claw gate/bin/clawgate"),
        "config_dir": tmp_path / "config",
        "data_dir": tmp_path / "data",
        "user_unit": False,
        "user": "alice",
        "backend": "docker",
    }
    values.update(kw)
    return UnitSpec(**values)  # type: ignore[arg-type]


def test_unit_names_the_absolute_executable_dirs_and_restart_policy(tmp_path: Path) -> None:
    text = render(spec(tmp_path))
    assert 'ExecStart="/opt/claw gate/bin/clawgate" run --grace 30' in text
    assert f"Environment=CLAWGATE_CONFIG_DIR={tmp_path / 'config'}" in text
    assert f"Environment=CLAWGATE_DATA_DIR={tmp_path / 'data'}" in text
    assert "Restart=on-failure" in text and "User=alice" in text and "WantedBy=multi-user.target" in text
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text
    for breaks_sandboxes in ("PrivateTmp=", "ProtectHome=", "ProtectKernelTunables=", "RestrictNamespaces="):
        assert f"\n{breaks_sandboxes}" not in text
    user = render(spec(tmp_path, user_unit=True))
    assert "User=" not in user and "WantedBy=default.target" in user and "docker.service" not in user


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    exe = tmp_path / "bin" / "clawgate"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    path = install(tmp_path / "units", render(spec(tmp_path, executable=exe, user="root")), force=False)
    result = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Unknown key" not in result.stderr and "Ignoring" not in result.stderr, result.stderr


def test_install_refuses_to_overwrite_a_different_unit_without_force(tmp_path: Path) -> None:
    units = tmp_path / "units"
    path = install(units, "first\n", force=False)
    assert install(units, "first\n", force=False) == path  # the same content: fine
    with pytest.raises(ServiceError, match="--force"):
        install(units, "second\n", force=False)
    assert path.read_text() == "first\n"
    install(units, "second\n", force=True)
    assert path.read_text() == "second\n"


def test_service_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAWGATE_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("CLAWGATE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CLAWGATE_TELEGRAM_TOKEN", "123:secret-token")
    units = tmp_path / "units"
    result = CliRunner().invoke(main, ["service", "install", "--user", "--unit-dir", str(units)])
    assert result.exit_code == 0, result.output
    assert "systemctl --user daemon-reload && systemctl --user enable --now clawgate" in result.output
    text = (units / UNIT_NAME).read_text()
    assert "secret-token" not in text  # tokens never land in a world-readable unit
    assert "service.env" in result.output
    (units / UNIT_NAME).write_text(text + "# local edit\n")
    again = CliRunner().invoke(main, ["service", "install", "--user", "--unit-dir", str(units)])
    assert again.exit_code == 1 and "--force" in again.output
    assert (units / UNIT_NAME).read_text().endswith("# local edit\n")


# -- vault.log rotation ---------------------------------------------------------------------------


def test_rotating_stream_keeps_at_most_the_backups(tmp_path: Path) -> None:
    path = tmp_path / "vault.log"
    stream = RotatingStream(path, max_bytes=100, backups=2)
    for n in range(30):
        print(f"line {n:02d} " + "x" * 20, file=stream)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vault.log", "vault.log.1", "vault.log.2"]
    assert all(p.stat().st_size <= 100 for p in tmp_path.iterdir())
    assert "line 29" in path.read_text()
    assert "line 00" not in "".join(p.read_text() for p in tmp_path.iterdir())  # oldest dropped
