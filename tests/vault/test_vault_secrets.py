"""SecretStore: encryption at rest, permissions, atomicity, validation, no value leaks."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from proxy.secrets import SecretInfo, SecretStore, VaultError, normalize_host

VALUE = "sk-ant-REAL-VALUE-0123456789"


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture
def store(tmp_path: Path) -> SecretStore:
    return SecretStore(tmp_path / "cfg")


def test_roundtrip_and_modes(store: SecretStore) -> None:
    info = store.add("anthropic", VALUE, "API.Anthropic.com", header="x-api-key", fmt="{value}")
    assert info == SecretInfo("anthropic", "api.anthropic.com", "x-api-key", "{value}", info.created_at)
    store.add("openai", "sk-openai-1", "api.openai.com:443")
    loaded = {i.name: (i, v) for i, v in store.load_all()}
    assert loaded["anthropic"][1] == VALUE
    assert loaded["openai"][1] == "sk-openai-1"
    assert loaded["openai"][0].format == "Bearer {value}"
    assert loaded["openai"][0].host == "api.openai.com:443"
    assert mode(store.secrets_path) == 0o600
    assert mode(store.key_path) == 0o600
    assert store.key_path.stat().st_size == 32
    # the value is encrypted at rest
    assert VALUE not in store.secrets_path.read_text()
    rec = json.loads(store.secrets_path.read_text())["secrets"][0]
    assert set(rec) == {"name", "host", "header", "format", "created_at", "nonce", "ciphertext"}


def test_fresh_nonce_and_replace(store: SecretStore) -> None:
    store.add("a", VALUE, "example.com")
    with pytest.raises(VaultError, match="already exists"):
        store.add("a", "other", "example.com")
    nonce1 = json.loads(store.secrets_path.read_text())["secrets"][0]["nonce"]
    store.add("a", VALUE, "example.com", replace=True)
    nonce2 = json.loads(store.secrets_path.read_text())["secrets"][0]["nonce"]
    assert nonce1 != nonce2
    assert [i.name for i in store.list()] == ["a"]


def test_list_and_remove_never_show_values(store: SecretStore) -> None:
    store.add("b", VALUE, "example.com")
    assert VALUE not in repr(store.list())
    assert store.remove("b") is True
    assert store.remove("b") is False
    assert store.list() == []


def test_master_key_with_loose_mode_is_refused(store: SecretStore) -> None:
    store.add("a", VALUE, "example.com")
    os.chmod(store.key_path, 0o644)
    with pytest.raises(VaultError, match="chmod 600"):
        store.load_all()
    with pytest.raises(VaultError, match="group/others"):
        store.add("b", VALUE, "example.com")


def test_ciphertext_is_bound_to_name(store: SecretStore) -> None:
    store.add("one", VALUE, "a.example")
    store.add("two", "second-value", "b.example")
    doc = json.loads(store.secrets_path.read_text())
    r1, r2 = doc["secrets"]
    for k in ("nonce", "ciphertext"):
        r1[k], r2[k] = r2[k], r1[k]
    store.secrets_path.write_text(json.dumps(doc))
    with pytest.raises(VaultError, match="cannot be decrypted") as exc:
        store.load_all()
    assert VALUE not in str(exc.value) and "second-value" not in str(exc.value)


def test_wrong_master_key_fails(store: SecretStore) -> None:
    store.add("one", VALUE, "a.example")
    store.key_path.write_bytes(os.urandom(32))
    with pytest.raises(VaultError, match="cannot be decrypted"):
        store.load_all()


def test_atomic_write_leaves_no_partial_file(store: SecretStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.add("keep", VALUE, "example.com")
    before = store.secrets_path.read_bytes()

    def boom(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        store.add("new", "v2", "example.com")
    monkeypatch.undo()
    assert store.secrets_path.read_bytes() == before
    leftovers = [p.name for p in store.config_dir.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    assert [i.name for i in store.list()] == ["keep"]


def test_load_all_without_secrets_creates_nothing(store: SecretStore) -> None:
    assert store.load_all() == []
    assert not store.key_path.exists()


@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "a/b", "ä", "a\n"])
def test_bad_names(store: SecretStore, name: str) -> None:
    with pytest.raises(VaultError, match="invalid secret name"):
        store.add(name, VALUE, "example.com")


@pytest.mark.parametrize(
    "host",
    ["", "http://x.com", "x.com/path", "a..b", "-a.com", "x.com:0", "x.com:70000", "x.com:", "a b", "[::1"],
)
def test_bad_hosts(store: SecretStore, host: str) -> None:
    with pytest.raises(VaultError, match="invalid host"):
        store.add("n", VALUE, host)


def test_host_normalization() -> None:
    assert normalize_host("API.Example.COM") == "api.example.com"
    assert normalize_host("example.com.:8443") == "example.com:8443"
    assert normalize_host("127.0.0.1:80") == "127.0.0.1:80"
    assert normalize_host("[::1]:8080") == "[::1]:8080"


@pytest.mark.parametrize("fmt", ["Bearer", "{value}{value}", "Bearer {value} {other}", "x {value}\n", "{}"])
def test_bad_formats(store: SecretStore, fmt: str) -> None:
    with pytest.raises(VaultError, match="invalid format"):
        store.add("n", VALUE, "example.com", fmt=fmt)


@pytest.mark.parametrize("header", ["", "x api key", "x-api-key:", "h\n"])
def test_bad_headers(store: SecretStore, header: str) -> None:
    with pytest.raises(VaultError, match="invalid header"):
        store.add("n", VALUE, "example.com", header=header)


@pytest.mark.parametrize("value", ["", VALUE + "\n", "a\rb", "a\0b"])
def test_bad_values_never_echoed(store: SecretStore, value: str) -> None:
    with pytest.raises(VaultError) as exc:
        store.add("n", value, "example.com")
    if value:
        assert value.strip() not in str(exc.value)
    assert not store.secrets_path.exists()
