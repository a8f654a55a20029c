"""`clawgate wallet …` through click's CliRunner (and real subprocesses for concurrency)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gateway.wallet.cli import PASSPHRASE_ENV, wallet_cli
from gateway.wallet.keys import KeyPair
from gateway.wallet.keystore import KeyStore

ROOT = Path(__file__).resolve().parents[2]
PASS = "a long enough passphrase"


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cfg"
    monkeypatch.setenv("CLAWGATE_CONFIG_DIR", str(path))
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    return path


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(wallet_cli, list(args), input=input, env=env)


def _all_secrets(cfg: Path) -> list[str]:
    return [r["secret_key"].split(":")[1] for r in KeyStore(cfg).export_records()]


def _assert_no_secret(cfg: Path, *results: Result) -> None:
    secrets = _all_secrets(cfg)
    assert secrets
    for result in results:
        for secret in secrets:
            assert secret not in result.output


def test_registered_on_main_cli(cfg: Path) -> None:
    from gateway.cli import main

    result = CliRunner().invoke(main, ["wallet", "--help"])
    assert result.exit_code == 0, result.output
    for command in ("generate", "import", "list", "info", "remove", "export", "restore"):
        assert command in result.output


@pytest.mark.parametrize("command", ["generate", "import", "list", "info", "remove", "export", "restore"])
def test_help_everywhere(command: str) -> None:
    result = run(command, "--help")
    assert result.exit_code == 0 and "Usage" in result.output


def test_generate_list_info(cfg: Path) -> None:
    gen = run("generate", "main", "--network", "testnet", "--label", "hot")
    assert gen.exit_code == 0, gen.output
    info = KeyStore(cfg).get("main")
    assert info is not None and info.network == "testnet" and info.label == "hot"
    assert str(info.public_key) in gen.output and "send NEAR to" in gen.output
    listing = run("list")
    assert listing.exit_code == 0
    header, row = listing.output.splitlines()
    assert header.split()[:3] == ["NAME", "ACCOUNT", "NETWORK"]
    assert row.startswith("main") and info.account_id in row and "full access" in row and row.endswith("hot")
    shown = run("info", "main")
    assert shown.exit_code == 0 and f"implicit:    {info.implicit_account_id}" in shown.output
    assert "NEAR-implicit" in shown.output
    _assert_no_secret(cfg, gen, listing, shown)


def test_network_defaults_to_config(cfg: Path) -> None:
    cfg.mkdir(parents=True)
    (cfg / "config.toml").write_text('[wallet]\nnetwork = "mainnet"\n')
    assert run("generate", "k").exit_code == 0
    assert KeyStore(cfg).get("k").network == "mainnet"  # type: ignore[union-attr]
    (cfg / "config.toml").write_text('[wallet]\nnetwork = "nope"\n')
    result = run("generate", "k2")
    assert result.exit_code != 0 and "--network" in result.output


def test_function_call_options(cfg: Path) -> None:
    result = run(
        "generate", "fc", "--network", "mainnet", "--account", "bob.near",
        "--function-call", "app.near", "--method", "a", "--method", "b", "--allowance", "0.25",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "function call to app.near (a, b), allowance 0.25 NEAR" in result.output
    assert "add the public key to bob.near" in result.output
    assert "function call to app.near" in run("list").output
    bad = run("generate", "x", "--network", "testnet", "--method", "a")
    assert bad.exit_code != 0 and "--function-call" in bad.output
    bad = run("generate", "x", "--network", "testnet", "--function-call", "app.near", "--allowance", "-1")
    assert bad.exit_code != 0 and "--allowance" in bad.output


def test_import_from_stdin_never_echoes_the_secret(cfg: Path) -> None:
    kp = KeyPair.generate()
    secret = kp.export_secret()
    result = run("import", "alice", "--network", "testnet", "--account", "alice.testnet", input=secret + "\n")
    assert result.exit_code == 0, result.output
    assert secret.split(":")[1] not in result.output
    assert KeyStore(cfg).get("alice").public_key == kp.public_key  # type: ignore[union-attr]
    again = run("import", "alice", "--network", "testnet", "--secret-stdin", input=secret)
    assert again.exit_code != 0 and "already exists" in again.output
    replaced = run("import", "alice", "--network", "testnet", "--replace", input=secret)
    assert replaced.exit_code == 0
    bad_secret = secret[:-4] + "1111"
    bad = run("import", "bob", "--network", "testnet", input=bad_secret)
    assert bad.exit_code != 0 and "invalid secret key" in bad.output
    assert bad_secret.split(":")[1] not in bad.output
    empty = run("import", "bob", "--network", "testnet", input="")
    assert empty.exit_code != 0 and "no secret key" in empty.output


def test_secret_is_not_an_argument() -> None:
    result = run("import", "k", "ed25519:abc")
    assert result.exit_code != 0 and "unexpected extra argument" in result.output.lower()


def test_info_and_remove(cfg: Path) -> None:
    assert run("info", "nope").exit_code != 0
    run("generate", "k", "--network", "testnet")
    declined = run("remove", "k", input="n\n")
    assert declined.exit_code != 0 and KeyStore(cfg).get("k") is not None
    removed = run("remove", "k", "--yes")
    assert removed.exit_code == 0 and KeyStore(cfg).get("k") is None
    missing = run("remove", "k", "--yes")
    assert missing.exit_code != 0 and "no wallet key" in missing.output
    assert "no wallet keys" in run("list").output


def test_export_without_passphrase_and_no_tty_fails(cfg: Path, tmp_path: Path) -> None:
    run("generate", "k", "--network", "testnet")
    result = run("export", str(tmp_path / "b.json"))
    assert result.exit_code != 0 and PASSPHRASE_ENV in result.output
    assert not (tmp_path / "b.json").exists()


def test_export_restore_via_cli(cfg: Path, tmp_path: Path) -> None:
    run("generate", "a", "--network", "testnet")
    run("generate", "b", "--network", "mainnet", "--account", "bob.near")
    path = tmp_path / "backup.json"
    env = {PASSPHRASE_ENV: PASS}
    exported = run("export", str(path), env=env)  # default Argon2id cost, as users get it
    assert exported.exit_code == 0, exported.output
    assert "2 key(s)" in exported.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["keys"] == 2
    again = run("export", str(path), env=env)
    assert again.exit_code != 0 and "already exists" in again.output
    assert run("export", str(path), "--force", "--name", "a", env=env).exit_code == 0
    assert json.loads(path.read_text())["keys"] == 1
    short = run("export", str(tmp_path / "s.json"), env={PASSPHRASE_ENV: "short"})
    assert short.exit_code != 0 and "at least 8" in short.output

    original = KeyStore(cfg).export_records(["a"])[0]
    other = tmp_path / "other"
    other_env = {"CLAWGATE_CONFIG_DIR": str(other)}
    wrong = run("restore", str(path), env=other_env | {PASSPHRASE_ENV: "not the passphrase"})
    assert wrong.exit_code != 0 and "wrong passphrase or corrupted backup" in wrong.output
    assert not (other / "wallet-keys.json").exists()
    restored = run("restore", str(path), env=other_env | env)
    assert restored.exit_code == 0 and "restored 1 key(s): a" in restored.output
    assert KeyStore(other).export_records(["a"])[0] == original
    collision = run("restore", str(path), env=other_env | env)
    assert collision.exit_code != 0 and "already exists" in collision.output
    assert run("restore", str(path), "--replace", env=other_env | env).exit_code == 0
    _assert_no_secret(cfg, exported, restored, wrong, collision)


def test_concurrent_cli_processes_lose_nothing(cfg: Path) -> None:
    code = "from gateway.wallet.cli import wallet_cli; wallet_cli()"
    env = os.environ | {"CLAWGATE_CONFIG_DIR": str(cfg)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, "generate", f"k{n}", "--network", "testnet"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for n in range(8)
    ]
    outputs = [p.communicate(timeout=60)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert {i.name for i in KeyStore(cfg).list()} == {f"k{n}" for n in range(8)}
    secrets = _all_secrets(cfg)
    assert not any(s in out for s in secrets for out in outputs)
