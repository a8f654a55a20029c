"""The NEAR keys the gateway signs with: their lifecycle, and the one writer at a time.

Invariant 5 (docs/ARCHITECTURE.md): a private key leaves ``gateway/wallet`` only encrypted.  So the
keys live in ``<config_dir>/wallet-keys.json`` (the config dir is never mounted into a
container), each secret sealed under the vault's ``master.key``; the format, and how a
ciphertext is bound to its record, is :mod:`gateway.wallet.keyfile`.  What a key *is* (its
metadata and permission, and the validation of both) is :mod:`gateway.wallet.keyinfo`.  This
module creates, imports, removes, restores, lists and lends keys out for signing.

Writers (several CLI invocations, the gateway) serialize every read-modify-write on
``wallet-keys.lock`` and always re-read the file under the lock, so two concurrent ``generate``
calls cannot lose one another's key.

:meth:`KeyStore.signer` is on the signing hot path: it keeps the parsed file (keyed by
``(st_mtime_ns, st_size, st_ino)``) and the master key, but never a decrypted secret; the secret
is decrypted straight into a ``bytearray`` that is zeroed, and the yielded :class:`KeyPair` is
wiped when the ``with`` block ends, also on error.  Known limit of the stat key: a file replaced
by *another process* within one filesystem timestamp tick, with identical size and a recycled
inode number, is seen one call late; writes through the same ``KeyStore`` drop the cache.
"""

from __future__ import annotations

import builtins
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.private_files import MASTER_KEY_FILE, atomic_write, exclusive_lock
from core.wallet.accounts import implicit_account_id
from gateway.wallet import keyfile
from gateway.wallet.keyfile import Entry, KeyCipher
from gateway.wallet.keyinfo import (
    KeyInfo,
    KeyPermission,
    WalletError,
    validate_account,
    validate_key_name,
    validate_label,
    validate_network,
)
from gateway.wallet.keys import InvalidKey, KeyPair

KEYS_FILE = "wallet-keys.json"
LOCK_FILE = "wallet-keys.lock"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class _Snapshot:
    stat_key: tuple[int, int, int] | None
    entries: dict[str, Entry] = field(default_factory=dict)


_EMPTY = _Snapshot(None)


# --- the store --------------------------------------------------------------------------------


class KeyStore:
    """The encrypted key file plus the shared master key, both inside ``config_dir``."""

    def __init__(self, config_dir: Path) -> None:
        self.config_dir = Path(config_dir)
        self.path = self.config_dir / KEYS_FILE
        self.lock_path = self.config_dir / LOCK_FILE
        self.key_path = self.config_dir / MASTER_KEY_FILE
        self._snapshot: _Snapshot = _EMPTY
        self._cipher = KeyCipher(self.key_path)

    # -- writing --

    def generate(
        self,
        name: str,
        *,
        network: str,
        account_id: str | None = None,
        label: str = "",
        permission: KeyPermission = KeyPermission(),  # noqa: B008 - frozen, immutable default
    ) -> KeyInfo:
        """Create a fresh ed25519 key; without ``account_id`` it belongs to its implicit account."""
        validate_key_name(name)
        with KeyPair.generate() as keypair:
            info = self._make_info(name, keypair, network, account_id, label, permission, _now())
            self._store([(info, keypair)], replace=False)
        return info

    def import_key(
        self,
        name: str,
        secret: str,
        *,
        network: str,
        account_id: str | None = None,
        label: str = "",
        permission: KeyPermission = KeyPermission(),  # noqa: B008 - frozen, immutable default
        replace: bool = False,
    ) -> KeyInfo:
        """Store an existing ``ed25519:<base58 64 bytes>`` secret (as near-cli writes it)."""
        validate_key_name(name)
        with self._parse_secret(secret, name) as keypair:
            info = self._make_info(name, keypair, network, account_id, label, permission, _now())
            self._store([(info, keypair)], replace=replace)
        return info

    def remove(self, name: str) -> bool:
        """Delete a key; False if there was none with that name."""
        validate_key_name(name)
        with self._locked():
            entries = self._read_fresh().entries
            if name not in entries:
                return False
            self._write({n: e for n, e in entries.items() if n != name})
        return True

    def restore_records(self, records: list[dict[str, Any]], *, replace: bool = False) -> list[KeyInfo]:
        """Store records from :meth:`export_records` (a decrypted backup) all-or-nothing.

        Every record is validated, and every name checked for a collision, before anything is
        written; one bad record or an unwanted overwrite leaves the store untouched.
        """
        if not isinstance(records, list):
            raise WalletError("backup records must be a list")
        pairs: list[tuple[KeyInfo, KeyPair]] = []
        try:
            for index, record in enumerate(records):
                pairs.append(self._record_to_pair(record, index))
            names = [info.name for info, _ in pairs]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise WalletError(f"the backup contains these key names twice: {', '.join(duplicates)}")
            self._store(pairs, replace=replace)
        finally:
            for _, keypair in pairs:
                keypair.wipe()
        return [info for info, _ in pairs]

    # -- reading --

    def list(self) -> list[KeyInfo]:
        """Metadata of every key, sorted by name; nothing is decrypted."""
        entries = self._read_cached().entries
        return [entries[n].info for n in sorted(entries)]

    def get(self, name: str) -> KeyInfo | None:
        """Metadata of one key (never its secret), or None."""
        validate_key_name(name)
        entry = self._read_cached().entries.get(name)
        return None if entry is None else entry.info

    @contextlib.contextmanager
    def signer(self, name: str) -> Iterator[KeyPair]:
        """Decrypt key ``name`` for the duration of the block; the KeyPair is wiped afterwards.

        Raises WalletError for an unknown name or a record that does not decrypt (wrong master
        key, tampered or moved ciphertext).
        """
        entry = self._read_cached().entries.get(name)
        if entry is None:
            raise WalletError(f"no wallet key named {name!r}")
        keypair = self._cipher.unseal(entry)
        try:
            yield keypair
        finally:
            keypair.wipe()

    def export_records(self, names: builtins.list[str] | None = None) -> builtins.list[dict[str, Any]]:
        """Decrypted records (metadata + ``secret_key``) for :mod:`gateway.wallet.backup` ONLY.

        The result holds secret keys as Python strings, which cannot be wiped; the only caller
        allowed is the backup writer, which encrypts them immediately. Never log, print, send
        or store these dicts unencrypted, and never let them leave ``gateway/wallet``.
        """
        entries = self._read_cached().entries
        wanted = sorted(entries) if names is None else list(dict.fromkeys(names))
        missing = [n for n in wanted if n not in entries]
        if missing:
            raise WalletError(f"no wallet key named {', '.join(repr(n) for n in missing)}")
        out: builtins.list[dict[str, Any]] = []
        for name in wanted:
            entry = entries[name]
            with self._cipher.unseal(entry) as keypair:
                secret = keypair.export_secret()
            record = {k: v for k, v in entry.to_json().items() if k not in ("nonce", "ciphertext")}
            record["secret_key"] = secret
            out.append(record)
        return out

    # -- internals --

    def _parse_secret(self, secret: object, name: str) -> KeyPair:
        if not isinstance(secret, str):
            raise WalletError(f"secret key for {name!r} must be a string")
        try:
            return KeyPair.from_string(secret.strip())
        except InvalidKey as e:  # InvalidKey messages describe the format, never the bytes
            raise WalletError(f"invalid secret key for {name!r}: {e}") from None

    def _make_info(
        self,
        name: str,
        keypair: KeyPair,
        network: object,  # validated here: it may come straight from a backup record
        account_id: str | None,
        label: str,
        permission: KeyPermission,
        created_at: str,
    ) -> KeyInfo:
        if not isinstance(permission, KeyPermission):
            raise WalletError("permission must be a KeyPermission")
        account = (
            implicit_account_id(keypair.public_key.data)
            if account_id is None
            else validate_account(account_id)
        )
        return KeyInfo(
            name=validate_key_name(name),
            label=validate_label(label),
            account_id=account,
            network=validate_network(network),
            public_key=keypair.public_key,
            permission=permission,
            created_at=created_at,
        )

    def _record_to_pair(self, record: object, index: int) -> tuple[KeyInfo, KeyPair]:
        if not isinstance(record, dict):
            raise WalletError(f"backup record {index} is not an object")
        name = validate_key_name(record.get("name"))
        keypair = self._parse_secret(record.get("secret_key"), name)
        try:
            expected = record.get("public_key")
            if expected is not None and expected != str(keypair.public_key):
                raise WalletError(f"key {name!r}: the secret key does not match the recorded public key")
            created_at = record.get("created_at")
            info = self._make_info(
                name,
                keypair,
                record.get("network"),
                record.get("account_id"),
                record.get("label", ""),
                KeyPermission.from_dict(record.get("permission", {})),
                created_at if isinstance(created_at, str) and created_at else _now(),
            )
        except BaseException:
            keypair.wipe()
            raise
        return info, keypair

    def _store(self, pairs: builtins.list[tuple[KeyInfo, KeyPair]], *, replace: bool) -> None:
        """Encrypt and add ``pairs`` in one locked read-modify-write; refuse collisions unless replace."""
        with self._locked():
            self._cipher.ready(create=True)
            entries = dict(self._read_fresh().entries)
            taken = sorted(info.name for info, _ in pairs if info.name in entries)
            if taken and not replace:
                names = ", ".join(taken)
                raise WalletError(
                    f"a wallet key named {names} already exists (use --replace to overwrite)"
                    if len(taken) == 1
                    else f"wallet keys already exist: {names} (use --replace to overwrite)"
                )
            for info, keypair in pairs:
                entries[info.name] = self._cipher.seal(info, keypair)
            self._write(entries)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The writers' lock. The dir is created here with exist_ok first: `ensure_dir` in
        private_files checks-then-creates, which races when two first writers start at once."""
        self.config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with exclusive_lock(self.lock_path):
            yield

    def _write(self, entries: dict[str, Entry]) -> None:
        atomic_write(self.path, keyfile.render(entries))
        self._snapshot = _EMPTY  # our own write: never trust a stat key from before it

    def _read_cached(self) -> _Snapshot:
        """The parsed file, re-read only when its (mtime_ns, size, inode) changed."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return _EMPTY
        snap = self._snapshot
        if snap.stat_key == (st.st_mtime_ns, st.st_size, st.st_ino):
            return snap
        return self._read_fresh()

    def _read_fresh(self) -> _Snapshot:
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())  # key the cache by the file we actually read
                data = f.read()
        except FileNotFoundError:
            self._snapshot = _EMPTY
            return _EMPTY
        snap = _Snapshot((st.st_mtime_ns, st.st_size, st.st_ino), keyfile.parse(self.path, data))
        self._snapshot = snap
        return snap
