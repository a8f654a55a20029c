"""KeyStore: real files, real AES-GCM, real ed25519 — round trips, tampering, locking, wiping."""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from core.wallet.accounts import implicit_account_id
from core.wallet.amounts import parse_near
from gateway.wallet.keyinfo import KeyInfo, KeyPermission, WalletError
from gateway.wallet.keys import KeyPair
from gateway.wallet.keystore import KEYS_FILE, KeyStore


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    return tmp_path / "cfg"


@pytest.fixture
def store(cfg: Path) -> KeyStore:
    return KeyStore(cfg)


def _doc(cfg: Path) -> dict:
    return json.loads((cfg / KEYS_FILE).read_text())


def _save(cfg: Path, doc: dict) -> None:
    (cfg / KEYS_FILE).write_text(json.dumps(doc))


def _secret_body(secret: str) -> str:
    return secret.split(":", 1)[1]


# --- round trips --------------------------------------------------------------------------------


def test_generate_uses_implicit_account_and_lists(store: KeyStore, cfg: Path) -> None:
    info = store.generate("main", network="testnet", label="hot wallet")
    assert isinstance(info, KeyInfo)
    assert info.account_id == implicit_account_id(info.public_key.data) == info.implicit_account_id
    assert len(info.account_id) == 64
    assert info.permission == KeyPermission()
    assert info.created_at.endswith("+00:00")
    assert store.list() == [info]
    assert store.get("main") == info
    assert store.get("other") is None
    assert KeyStore(cfg).get("main") == info  # a fresh instance reads the same file


def test_import_round_trip_signs_like_the_original(store: KeyStore) -> None:
    original = KeyPair.generate()
    secret = original.export_secret()
    info = store.import_key("alice", secret, network="mainnet", account_id="alice.near")
    assert info.public_key == original.public_key and info.account_id == "alice.near"
    with store.signer("alice") as kp:
        assert kp.public_key == original.public_key
        assert kp.sign(b"tx") == original.sign(b"tx")
    exported = store.export_records(["alice"])
    assert exported[0]["secret_key"] == secret


def test_list_sorted_and_remove(store: KeyStore) -> None:
    for name in ("b", "a", "c"):
        store.generate(name, network="testnet")
    assert [i.name for i in store.list()] == ["a", "b", "c"]
    assert store.remove("b") is True
    assert store.remove("b") is False
    assert [i.name for i in store.list()] == ["a", "c"]


def test_file_is_private_versioned_and_holds_no_secret(store: KeyStore, cfg: Path) -> None:
    secret = KeyPair.generate().export_secret()
    store.import_key("k", secret, network="testnet")
    path = cfg / KEYS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert _secret_body(secret) not in text
    doc = json.loads(text)
    assert doc["version"] == 1 and [r["name"] for r in doc["keys"]] == ["k"]
    assert set(doc["keys"][0]) >= {"nonce", "ciphertext", "public_key", "account_id", "network"}


def test_function_call_permission_persists_and_describes(store: KeyStore, cfg: Path) -> None:
    perm = KeyPermission("function_call", "app.near", ("a", "b"), parse_near("0.25"))
    store.generate("fc", network="mainnet", account_id="bob.near", permission=perm)
    got = KeyStore(cfg).get("fc")
    assert got is not None and got.permission == perm
    assert perm.describe() == "function call to app.near (a, b), allowance 0.25 NEAR"
    assert KeyPermission().describe() == "full access"
    assert "any method" in KeyPermission("function_call", "app.near").describe()
    assert _doc(cfg)["keys"][0]["permission"]["allowance"] == str(parse_near("0.25"))


def test_name_collision_refused_unless_replace(store: KeyStore) -> None:
    first = store.generate("main", network="testnet")
    with pytest.raises(WalletError, match="already exists"):
        store.generate("main", network="testnet")
    other = KeyPair.generate()
    with pytest.raises(WalletError, match="already exists"):
        store.import_key("main", other.export_secret(), network="testnet")
    assert store.get("main") == first
    replaced = store.import_key("main", other.export_secret(), network="testnet", replace=True)
    assert replaced.public_key == other.public_key and store.get("main") == replaced


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "bad name"}, "invalid key name"),
        ({"name": "x" * 65}, "invalid key name"),
        ({"name": ""}, "invalid key name"),
        ({"network": "betanet"}, "invalid network"),
        ({"account_id": "Alice.near"}, "invalid NEAR account id"),
        ({"label": "x" * 201}, "label"),
        ({"label": "line\nbreak"}, "label"),
    ],
)
def test_generate_validation(store: KeyStore, kwargs: dict, message: str) -> None:
    args = {"name": "ok", "network": "testnet"} | kwargs
    name = args.pop("name")
    with pytest.raises(WalletError, match=message):
        store.generate(name, **args)
    assert store.list() == []


def test_permission_validation() -> None:
    with pytest.raises(WalletError, match="receiver"):
        KeyPermission("function_call")
    with pytest.raises(WalletError, match="invalid receiver"):
        KeyPermission("function_call", "NOT VALID")
    with pytest.raises(WalletError, match="full-access"):
        KeyPermission("full_access", allowance=1)
    with pytest.raises(WalletError, match="allowance"):
        KeyPermission("function_call", "a.near", allowance=0)
    with pytest.raises(WalletError, match="method"):
        KeyPermission("function_call", "a.near", ("has space",))
    with pytest.raises(WalletError, match="repeat"):
        KeyPermission("function_call", "a.near", ("a", "a"))
    with pytest.raises(WalletError, match="invalid key permission"):
        KeyPermission("owner")  # type: ignore[arg-type]


def test_bad_secret_is_refused_without_echoing_it(store: KeyStore) -> None:
    secret = KeyPair.generate().export_secret()
    broken = secret[:-3] + ("1" if secret[-3] != "1" else "2") + secret[-2:]
    for bad in (broken, secret[:-5], "ed25519:" + "0OIl" * 10, "not-a-key"):
        with pytest.raises(WalletError) as excinfo:
            store.import_key("k", bad, network="testnet")
        assert _secret_body(bad) not in str(excinfo.value) if ":" in bad else bad not in str(excinfo.value)
    assert store.list() == []


# --- signer -------------------------------------------------------------------------------------


def test_signer_wipes_after_block_and_on_error(store: KeyStore) -> None:
    store.generate("k", network="testnet")
    with store.signer("k") as kp:
        assert not kp.wiped
        kp.sign(b"x")
    assert kp.wiped
    with pytest.raises(RuntimeError, match="boom"), store.signer("k") as kp2:
        raise RuntimeError("boom")
    assert kp2.wiped
    with pytest.raises(RuntimeError):
        kp2.sign(b"x")


def test_signer_unknown_key(store: KeyStore) -> None:
    with pytest.raises(WalletError, match="no wallet key named 'nope'"), store.signer("nope"):
        pass


def test_signer_is_fast(store: KeyStore) -> None:
    """Regression guard for the hot path (the real target is ~30 µs; this bound is loose for CI)."""
    store.generate("k", network="testnet")
    with store.signer("k"):
        pass
    n = 300
    start = time.perf_counter()
    for _ in range(n):
        with store.signer("k"):
            pass
    assert (time.perf_counter() - start) / n < 0.002


def test_cache_notices_other_writers(cfg: Path) -> None:
    a, b = KeyStore(cfg), KeyStore(cfg)
    a.generate("one", network="testnet")
    assert [i.name for i in b.list()] == ["one"]
    b.generate("two", network="testnet")
    assert [i.name for i in a.list()] == ["one", "two"]
    with a.signer("two") as kp:
        assert kp.public_key == b.get("two").public_key  # type: ignore[union-attr]
    b.remove("two")
    with pytest.raises(WalletError, match="no wallet key"), a.signer("two"):
        pass


# --- tampering ----------------------------------------------------------------------------------


def test_flipped_ciphertext_byte_is_detected(store: KeyStore, cfg: Path) -> None:
    store.generate("victim", network="testnet")
    doc = _doc(cfg)
    raw = bytearray(base64.b64decode(doc["keys"][0]["ciphertext"]))
    raw[5] ^= 0x01
    doc["keys"][0]["ciphertext"] = base64.b64encode(bytes(raw)).decode()
    _save(cfg, doc)
    with pytest.raises(WalletError) as excinfo, store.signer("victim"):
        pass
    message = str(excinfo.value)
    assert "'victim'" in message and "cannot be decrypted" in message
    assert doc["keys"][0]["ciphertext"] not in message
    assert [i.name for i in store.list()] == ["victim"]  # metadata still readable...
    assert store.remove("victim")  # ...so the broken record can be cleaned up


def test_swapped_ciphertexts_fail_to_decrypt(store: KeyStore, cfg: Path) -> None:
    store.generate("small", network="testnet", permission=KeyPermission("function_call", "app.near"))
    store.generate("big", network="testnet")
    doc = _doc(cfg)
    recs = {r["name"]: r for r in doc["keys"]}
    for field in ("nonce", "ciphertext"):
        recs["small"][field], recs["big"][field] = recs["big"][field], recs["small"][field]
    _save(cfg, doc)
    for name in ("small", "big"):
        with pytest.raises(WalletError, match=f"'{name}' cannot be decrypted"), store.signer(name):
            pass


def test_edited_metadata_is_detected_at_signing(store: KeyStore, cfg: Path) -> None:
    store.generate("fc", network="testnet", permission=KeyPermission("function_call", "app.near"))
    doc = _doc(cfg)
    doc["keys"][0]["permission"] = KeyPermission().to_dict()  # escalate to full access
    _save(cfg, doc)
    with pytest.raises(WalletError, match="cannot be decrypted"), store.signer("fc"):
        pass


def test_renamed_record_is_detected(store: KeyStore, cfg: Path) -> None:
    store.generate("a", network="testnet")
    doc = _doc(cfg)
    doc["keys"][0]["name"] = "b"
    _save(cfg, doc)
    with pytest.raises(WalletError, match="'b' cannot be decrypted"), store.signer("b"):
        pass


def test_wrong_master_key(store: KeyStore, cfg: Path) -> None:
    store.generate("k", network="testnet")
    with store.signer("k"):
        pass  # the master key is now cached
    key_path = cfg / "master.key"
    key_path.unlink()
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, os.urandom(32))
    os.close(fd)
    fresh = KeyStore(cfg)
    with pytest.raises(WalletError, match="'k' cannot be decrypted .*wrong master key"), fresh.signer("k"):
        pass
    # A long-lived store that cached the old key picks up the new one when a record needs it.
    fresh.generate("k2", network="testnet")
    with store.signer("k2") as kp:
        assert kp.public_key == fresh.get("k2").public_key  # type: ignore[union-attr]
    with pytest.raises(WalletError, match="wrong master key"), store.signer("k"):
        pass


def test_missing_master_key(store: KeyStore, cfg: Path) -> None:
    store.generate("k", network="testnet")
    (cfg / "master.key").unlink()
    with pytest.raises(WalletError, match="master key .* is missing"), KeyStore(cfg).signer("k"):
        pass


def test_unsupported_version_and_corrupt_file(store: KeyStore, cfg: Path) -> None:
    store.generate("k", network="testnet")
    doc = _doc(cfg)
    doc["version"] = 2
    _save(cfg, doc)
    with pytest.raises(WalletError, match="version 2"):
        KeyStore(cfg).list()
    (cfg / KEYS_FILE).write_text("{not json")
    with pytest.raises(WalletError, match="corrupt"):
        KeyStore(cfg).list()


# --- export / restore records -------------------------------------------------------------------


def test_export_restore_records_round_trip(store: KeyStore, tmp_path: Path) -> None:
    perm = KeyPermission("function_call", "app.near", ("go",), 10**24)
    store.generate("a", network="mainnet", account_id="alice.near", label="L", permission=perm)
    store.generate("b", network="testnet")
    records = store.export_records()
    other = KeyStore(tmp_path / "other")
    restored = other.restore_records(records)
    assert restored == store.list() == other.list()
    for name in ("a", "b"):
        with store.signer(name) as k1, other.signer(name) as k2:
            assert k1.sign(b"m") == k2.sign(b"m")
    with pytest.raises(WalletError, match="no wallet key named 'zzz'"):
        store.export_records(["a", "zzz"])


def test_restore_records_is_all_or_nothing(store: KeyStore, tmp_path: Path) -> None:
    store.generate("a", network="testnet")
    store.generate("b", network="testnet")
    records = store.export_records()
    target = KeyStore(tmp_path / "target")
    target.generate("b", network="testnet")
    before = (tmp_path / "target" / KEYS_FILE).read_bytes()
    with pytest.raises(WalletError, match="b"):
        target.restore_records(records)
    assert (tmp_path / "target" / KEYS_FILE).read_bytes() == before
    bad = [records[0], dict(records[1], name="c", public_key=records[0]["public_key"])]
    with pytest.raises(WalletError, match="does not match"):
        target.restore_records(bad)
    assert (tmp_path / "target" / KEYS_FILE).read_bytes() == before
    with pytest.raises(WalletError, match="twice"):
        target.restore_records([records[0], records[0]])
    assert [i.name for i in target.restore_records(records, replace=True)] == ["a", "b"]
    assert target.get("b").public_key == store.get("b").public_key  # type: ignore[union-attr]


# --- concurrency --------------------------------------------------------------------------------


def _worker(cfg: str, prefix: str, count: int) -> None:
    store = KeyStore(Path(cfg))
    for i in range(count):
        store.generate(f"{prefix}-{i}", network="testnet")


def test_concurrent_processes_lose_nothing(cfg: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(str(cfg), f"p{n}", 5)) for n in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    names = {i.name for i in KeyStore(cfg).list()}
    assert names == {f"p{n}-{i}" for n in range(6) for i in range(5)}


def test_concurrent_threads_lose_nothing(cfg: Path) -> None:
    shared = KeyStore(cfg)
    errors: list[BaseException] = []

    def run(prefix: str, own_store: bool) -> None:
        try:
            s = KeyStore(cfg) if own_store else shared
            for i in range(8):
                s.generate(f"{prefix}-{i}", network="testnet")
                s.list()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(f"t{n}", n % 2 == 0)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(KeyStore(cfg).list()) == 48
