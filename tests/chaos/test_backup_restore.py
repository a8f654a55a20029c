"""`clawgate backup` against a real running gateway (`clawgate run`, real Docker, real vault).

The archive is made while the gateway answers messages, then restored into empty dirs with
the real CLI; the checks are on the restored files: the database passes quick_check and holds
the conversation, and the vault secret decrypts with the restored master key. A wrong
passphrase, a tampered archive and a restore into a running gateway's data dir all refuse and
leave the target exactly as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from pathlib import Path

from proxy.secrets import SecretStore
from tests.chaos.support import wait_ready
from tests.chaos.test_instance_and_orphans import setup
from tests.e2e.test_console import read_reply
from tests.e2e.test_crash_recovery import CLAWGATE, ROOT, start

PASSPHRASE = "correct horse battery staple"


async def cli(env: dict[str, str], *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        CLAWGATE,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 120)
    return proc.returncode or 0, out.decode(), err.decode()


def tree(root: Path) -> dict[str, bytes]:
    """Every file below root with its contents (the lock file's PID aside)."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "clawgate.lock"
    }


async def test_backup_made_while_running_restores_into_empty_dirs(
    dirs, model_server, sandbox_image, tmp_path: Path, short_tmp: Path
) -> None:
    data_dir = setup(dirs, model_server, sandbox_image)
    env = dict(os.environ)
    gateway = await start(env)
    archive = tmp_path / "clawgate.backup"
    try:
        await wait_ready(gateway)
        assert gateway.stdin and gateway.stdout
        for n in range(3):
            gateway.stdin.write(f"message number {n}\n".encode())
            await gateway.stdin.drain()
            assert (await read_reply(gateway.stdout, 90)).startswith("Andy:")

        code, out, err = await cli(env, "backup", "create", str(archive), stdin=f"{PASSPHRASE}\n".encode())
        assert code == 0, err
        assert "wrote" in out
        assert archive.stat().st_mode & 0o777 == 0o600
        assert b"sk-ant-chaos" not in archive.read_bytes()  # the secret stays encrypted

        # restoring over the running gateway's data dir is refused, naming its PID
        code, _, err = await cli(
            env, "backup", "restore", "--force", str(archive), stdin=f"{PASSPHRASE}\n".encode()
        )
        assert code != 0 and f"pid {gateway.pid}" in err and "Traceback" not in err, err

        # the gateway keeps answering after the backup
        gateway.stdin.write(b"after the backup\n")
        await gateway.stdin.drain()
        assert (await read_reply(gateway.stdout, 90)).startswith("Andy:")
    finally:
        with contextlib.suppress(ProcessLookupError):
            gateway.kill()
        await gateway.wait()

    new_config, new_data = tmp_path / "restored-config", short_tmp / "restored-data"  # holds sockets
    new_env = dict(env, CLAWGATE_CONFIG_DIR=str(new_config), CLAWGATE_DATA_DIR=str(new_data))

    # a wrong passphrase: a clear error and nothing written
    code, _, err = await cli(new_env, "backup", "restore", str(archive), stdin=b"not the passphrase\n")
    assert code != 0 and "wrong passphrase" in err and "Traceback" not in err, err
    assert not new_config.exists() and tree(new_data) == {}

    # a tampered archive (one byte of the payload flipped) is refused, nothing written
    tampered = tmp_path / "tampered.backup"
    raw = bytearray(archive.read_bytes())
    raw[-100] ^= 0x01
    tampered.write_bytes(bytes(raw))
    code, _, err = await cli(new_env, "backup", "restore", str(tampered), stdin=f"{PASSPHRASE}\n".encode())
    assert code != 0 and "tampered" in err, err
    assert not new_config.exists() and tree(new_data) == {}

    code, out, err = await cli(new_env, "backup", "restore", str(archive), stdin=f"{PASSPHRASE}\n".encode())
    assert code == 0, err
    db = sqlite3.connect(new_data / "clawgate.db")
    try:
        assert db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        texts = {row[0] for row in db.execute("SELECT text FROM messages")}
    finally:
        db.close()
    assert {f"message number {n}" for n in range(3)} <= texts
    assert (new_config / "config.toml").read_bytes() == (dirs[0] / "config.toml").read_bytes()
    assert (new_config / "master.key").read_bytes() == (dirs[0] / "master.key").read_bytes()
    assert (new_config / "master.key").stat().st_mode & 0o777 == 0o600
    [(info, value)] = SecretStore(new_config).load_all()
    assert (info.name, value) == ("anthropic", "sk-ant-chaos")
    assert data_dir != new_data

    # and a gateway starts from the restored dirs and answers
    restored = await start(new_env)
    try:
        await wait_ready(restored)
        assert restored.stdin and restored.stdout
        restored.stdin.write(b"back again\n")
        await restored.stdin.drain()
        assert (await read_reply(restored.stdout, 90)).startswith("Andy:")
    finally:
        with contextlib.suppress(ProcessLookupError):
            restored.kill()
        await restored.wait()
