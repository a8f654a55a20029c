"""Encrypted wallet backups: real Argon2id + AES-GCM, real files, tampering and restore rules."""

from __future__ import annotations

import base64
import json
import stat
import unicodedata
from pathlib import Path

import pytest

from gateway.passphrase_crypto import ARGON2_ITERATIONS, ARGON2_LANES, ARGON2_MEMORY_KIB
from gateway.wallet.backup import (
    WRONG_PASSPHRASE,
    BackupError,
    KdfParams,
    export_backup,
    read_backup_header,
    restore_backup,
)
from gateway.wallet.keyinfo import KeyPermission, WalletError
from gateway.wallet.keys import KeyPair
from gateway.wallet.keystore import KEYS_FILE, KeyStore

FAST = KdfParams(memory_kib=8192, iterations=1, lanes=1)
PASS = "correct horse battery"


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    s = KeyStore(tmp_path / "src")
    s.generate("main", network="mainnet", account_id="alice.near", label="primary")
    s.generate("bot", network="testnet", permission=KeyPermission("function_call", "app.testnet", ("go",)))
    return s


def _secrets(store: KeyStore) -> list[str]:
    return [r["secret_key"] for r in store.export_records()]


def _edit(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def test_round_trip_with_default_parameters(store: KeyStore, tmp_path: Path) -> None:
    path = tmp_path / "backup.json"
    assert export_backup(store, path, PASS) == 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    for secret in _secrets(store):
        assert secret.split(":")[1] not in text
    doc = json.loads(text)
    assert doc["format"] == "clawgate-wallet-backup" and doc["version"] == 1
    assert doc["cipher"] == "aes-256-gcm" and doc["keys"] == 2
    assert doc["kdf"]["name"] == "argon2id"
    assert (doc["kdf"]["memory_kib"], doc["kdf"]["iterations"], doc["kdf"]["lanes"]) == (65536, 3, 4)
    assert (ARGON2_MEMORY_KIB, ARGON2_ITERATIONS, ARGON2_LANES) == (65536, 3, 4)
    assert len(base64.b64decode(doc["kdf"]["salt"])) == 16 and len(base64.b64decode(doc["nonce"])) == 12
    assert read_backup_header(path)["keys"] == 2

    target = KeyStore(tmp_path / "dst")  # a different master key: the backup does not depend on it
    restored = restore_backup(target, path, PASS)
    assert restored == store.list() == target.list()
    for name in ("main", "bot"):
        with store.signer(name) as a, target.signer(name) as b:
            assert a.sign(b"tx") == b.sign(b"tx")


def test_subset_and_unknown_names(store: KeyStore, tmp_path: Path) -> None:
    path = tmp_path / "one.json"
    assert export_backup(store, path, PASS, ["bot"], params=FAST) == 1
    target = KeyStore(tmp_path / "dst")
    assert [i.name for i in restore_backup(target, path, PASS)] == ["bot"]
    with pytest.raises(WalletError, match="nope"):
        export_backup(store, tmp_path / "two.json", PASS, ["nope"], params=FAST)
    assert not (tmp_path / "two.json").exists()


def test_wrong_passphrase_writes_nothing(store: KeyStore, tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    export_backup(store, path, PASS, params=FAST)
    target = KeyStore(tmp_path / "dst")
    target.generate("existing", network="testnet")
    before = (tmp_path / "dst" / KEYS_FILE).read_bytes()
    with pytest.raises(BackupError) as excinfo:
        restore_backup(target, path, "wrong passphrase!")
    assert str(excinfo.value) == WRONG_PASSPHRASE
    assert (tmp_path / "dst" / KEYS_FILE).read_bytes() == before


def test_passphrase_is_nfc_normalized(store: KeyStore, tmp_path: Path) -> None:
    composed = "pass-\u00e9-phrase"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    path = tmp_path / "b.json"
    export_backup(store, path, composed, params=FAST)
    assert len(restore_backup(KeyStore(tmp_path / "dst"), path, decomposed)) == 2


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(keys=1),
        lambda d: d.update(created_at="2000-01-01T00:00:00+00:00"),
        lambda d: d["kdf"].update(iterations=2),
        lambda d: d["kdf"].update(memory_kib=16384),
        lambda d: d["kdf"].update(salt=base64.b64encode(b"\0" * 16).decode()),
        lambda d: d.update(nonce=base64.b64encode(b"\0" * 12).decode()),
        lambda d: d.update(extra="field"),
        lambda d: d.update(
            ciphertext=base64.b64encode(
                bytes([base64.b64decode(d["ciphertext"])[0] ^ 1]) + base64.b64decode(d["ciphertext"])[1:]
            ).decode()
        ),
    ],
    ids=["count", "created_at", "iterations", "memory", "salt", "nonce", "extra-field", "ciphertext"],
)
def test_tampering_is_detected(store: KeyStore, tmp_path: Path, change) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "b.json"
    export_backup(store, path, PASS, params=FAST)
    _edit(path, change)
    target = KeyStore(tmp_path / "dst")
    with pytest.raises(BackupError, match=WRONG_PASSPHRASE):
        restore_backup(target, path, PASS)
    assert target.list() == [] and not (tmp_path / "dst" / KEYS_FILE).exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["kdf"].update(memory_kib=2 * 1024 * 1024), "memory"),
        (lambda d: d["kdf"].update(iterations=21), "iterations"),
        (lambda d: d["kdf"].update(lanes=0), "lanes"),
        (lambda d: d["kdf"].update(iterations="3"), "integers"),
        (lambda d: d["kdf"].update(name="scrypt"), "key derivation"),
        (lambda d: d.update(cipher="chacha20"), "cipher"),
        (lambda d: d.update(format="something-else"), "not a clawgate wallet backup"),
        (lambda d: d.update(version=2), "version 2"),
        (lambda d: d.update(keys=0), "key count"),
        (lambda d: d.update(ciphertext="!!"), "base64"),
    ],
)
def test_bad_headers_are_refused_before_any_work(
    store: KeyStore,
    tmp_path: Path,
    change,  # type: ignore[no-untyped-def]
    message: str,
) -> None:
    path = tmp_path / "b.json"
    export_backup(store, path, PASS, params=FAST)
    _edit(path, change)
    with pytest.raises(BackupError, match=message):
        restore_backup(KeyStore(tmp_path / "dst"), path, PASS)


def test_not_json_and_missing(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("hello")
    with pytest.raises(BackupError, match="not JSON"):
        restore_backup(KeyStore(tmp_path / "dst"), tmp_path / "x.json", PASS)
    with pytest.raises(BackupError, match="does not exist"):
        restore_backup(KeyStore(tmp_path / "dst"), tmp_path / "missing.json", PASS)


def test_restore_collision_refused_then_replace(store: KeyStore, tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    export_backup(store, path, PASS, params=FAST)
    target = KeyStore(tmp_path / "dst")
    target.generate("main", network="testnet")
    target.generate("bot", network="testnet")
    target.generate("keep", network="testnet")
    before = (tmp_path / "dst" / KEYS_FILE).read_bytes()
    with pytest.raises(BackupError, match="bot, main"):
        restore_backup(target, path, PASS)
    assert (tmp_path / "dst" / KEYS_FILE).read_bytes() == before
    restore_backup(target, path, PASS, replace=True)
    assert [i.name for i in target.list()] == ["bot", "keep", "main"]
    assert target.get("main") == store.get("main")


def test_export_refuses_overwrite_short_passphrase_and_empty_store(store: KeyStore, tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text("older backup")
    with pytest.raises(BackupError, match="already exists"):
        export_backup(store, path, PASS, params=FAST)
    assert path.read_text() == "older backup"
    assert export_backup(store, path, PASS, params=FAST, force=True) == 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(BackupError, match="at least 8"):
        export_backup(store, tmp_path / "c.json", "short", params=FAST)
    with pytest.raises(BackupError, match="no wallet keys"):
        export_backup(KeyStore(tmp_path / "empty"), tmp_path / "d.json", PASS, params=FAST)
    with pytest.raises(BackupError, match="iterations"):
        export_backup(store, tmp_path / "e.json", PASS, params=KdfParams(iterations=50))


def test_backup_is_independent_of_the_master_key(store: KeyStore, tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    export_backup(store, path, PASS, params=FAST)
    secrets = _secrets(store)
    (tmp_path / "src" / "master.key").unlink()
    (tmp_path / "src" / KEYS_FILE).unlink()
    fresh = KeyStore(tmp_path / "src")  # the machine was lost: new master key, empty store
    restore_backup(fresh, path, PASS)
    assert sorted(_secrets(fresh)) == sorted(secrets)
    assert KeyPair.from_string(secrets[0]).public_key in {i.public_key for i in fresh.list()}
