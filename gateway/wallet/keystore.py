"""Encrypted store for the NEAR keys the gateway signs with.

Invariant 5 (docs/ARCHITECTURE.md): a private key leaves ``gateway/wallet`` only encrypted.  So the
keys live in ``<config_dir>/wallet-keys.json`` (the config dir is never mounted into a
container), each secret sealed with AES-256-GCM under the same ``master.key`` the vault uses
(:mod:`core.private_files`), with a fresh 12-byte nonce per record.

The GCM associated data is the canonical JSON of the record's identity: its name, public key,
account id, network and permission.  Copying a ciphertext onto another record (so that the
"small allowance" key name signs with the full-access secret), or editing a record's account,
network or permission in the file, makes that record fail to decrypt, and :meth:`KeyStore.signer`
refuses it — naming the key, never printing bytes.  ``list``/``get`` read the metadata without
decrypting; the check happens where it matters, at signing.

File format (``version`` 1, mode 0600, replaced atomically)::

    {"version": 1, "keys": [{"name": "main", "label": "", "account_id": "alice.near",
      "network": "mainnet", "public_key": "ed25519:…",
      "permission": {"kind": "full_access", "receiver_id": null, "method_names": [],
                     "allowance": null},          # allowance: yoctoNEAR as a decimal string
      "created_at": "2025-01-01T00:00:00+00:00",
      "nonce": "<b64 12 bytes>", "ciphertext": "<b64 AES-GCM(seed || public key, 64 bytes)>"}]}

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

import base64
import binascii
import builtins
import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.private_files import (
    MASTER_KEY_FILE,
    PrivateFileError,
    atomic_write,
    exclusive_lock,
    read_master_key,
)
from core.wallet.accounts import InvalidAccountId, implicit_account_id, validate_account_id
from core.wallet.amounts import U128_MAX, format_near
from gateway.wallet.keys import SECRET_KEY_LEN, InvalidKey, KeyPair, PublicKey

KEYS_FILE = "wallet-keys.json"
LOCK_FILE = "wallet-keys.lock"
FORMAT_VERSION = 1
NONCE_BYTES = 12
MAX_LABEL_LEN = 200
MAX_METHOD_NAME_LEN = 256  # nearcore's max_length_method_name
NETWORKS: tuple[str, ...] = ("mainnet", "testnet")

KeyKind = Literal["full_access", "function_call"]
KEY_KINDS: tuple[str, ...] = get_args(KeyKind)

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class WalletError(Exception):
    """A user-facing wallet problem. The message never contains key material."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- value types ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyPermission:
    """What the key may do on chain, as NEAR's AddKey access key permission describes it.

    Validated on construction so that an impossible permission (a function-call key without a
    receiver, a full-access key with an allowance) cannot exist anywhere in the program.
    """

    kind: KeyKind = "full_access"
    receiver_id: str | None = None
    method_names: tuple[str, ...] = ()
    allowance: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KEY_KINDS:
            raise WalletError(f"invalid key permission {self.kind!r}: use full_access or function_call")
        if not isinstance(self.method_names, tuple):
            raise WalletError("method names must be a tuple of strings")
        if self.kind == "full_access":
            if self.receiver_id is not None or self.method_names or self.allowance is not None:
                raise WalletError("a full-access key has no receiver, methods or allowance")
            return
        if self.receiver_id is None:
            raise WalletError("a function-call key needs a receiver account id")
        try:
            validate_account_id(self.receiver_id)
        except InvalidAccountId as e:
            raise WalletError(f"invalid receiver: {e}") from None
        for method in self.method_names:
            if (
                not isinstance(method, str)
                or not 0 < len(method) <= MAX_METHOD_NAME_LEN
                or not method.isprintable()
                or any(c.isspace() or c == "," for c in method)
            ):
                raise WalletError(f"invalid method name {method!r}")
        if len(set(self.method_names)) != len(self.method_names):
            raise WalletError("method names must not repeat")
        if self.allowance is not None and (
            isinstance(self.allowance, bool)
            or not isinstance(self.allowance, int)
            or not 0 < self.allowance <= U128_MAX
        ):
            raise WalletError("the allowance must be a positive yoctoNEAR amount (omit it for unlimited)")

    def describe(self) -> str:
        """One line for humans: ``full access`` or ``function call to x.near (a, b), allowance 1 NEAR``."""
        if self.kind == "full_access":
            return "full access"
        methods = ", ".join(self.method_names) if self.method_names else "any method"
        allowance = (
            "unlimited allowance"
            if self.allowance is None
            else f"allowance {format_near(self.allowance)} NEAR"
        )
        return f"function call to {self.receiver_id} ({methods}), {allowance}"

    def to_dict(self) -> dict[str, Any]:
        """JSON form; the allowance is a decimal string because u128 overflows JSON numbers elsewhere."""
        return {
            "kind": self.kind,
            "receiver_id": self.receiver_id,
            "method_names": list(self.method_names),
            "allowance": None if self.allowance is None else str(self.allowance),
        }

    @classmethod
    def from_dict(cls, data: object) -> KeyPermission:
        if not isinstance(data, dict):
            raise WalletError("permission must be an object")
        allowance = data.get("allowance")
        if allowance is not None:
            if not isinstance(allowance, str) or not allowance.isdigit():
                raise WalletError("permission allowance must be a decimal yoctoNEAR string")
            allowance = int(allowance)
        methods = data.get("method_names", [])
        if not isinstance(methods, list):
            raise WalletError("permission method_names must be a list")
        return cls(
            kind=data.get("kind", "full_access"),
            receiver_id=data.get("receiver_id"),
            method_names=tuple(methods),
            allowance=allowance,
        )


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """Everything about a stored key except its secret (safe to print, log and pass around)."""

    name: str
    label: str
    account_id: str
    network: str
    public_key: PublicKey
    permission: KeyPermission
    created_at: str  # ISO-8601 UTC

    @property
    def implicit_account_id(self) -> str:
        """The NEAR-implicit account this public key controls (64 hex), whatever ``account_id`` is."""
        return implicit_account_id(self.public_key.data)


# --- validation -------------------------------------------------------------------------------


def validate_key_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise WalletError(f"invalid key name {name!r}: use 1-64 characters from A-Z a-z 0-9 _ . -")
    return name


def validate_label(label: object) -> str:
    if not isinstance(label, str) or len(label) > MAX_LABEL_LEN or not label.isprintable():
        raise WalletError(f"invalid label: at most {MAX_LABEL_LEN} printable characters")
    return label


def validate_network(network: object) -> str:
    if network not in NETWORKS:
        raise WalletError(f"invalid network {network!r}: use mainnet or testnet")
    return str(network)


def _validate_account(account_id: object) -> str:
    try:
        return validate_account_id(account_id)
    except InvalidAccountId as e:
        raise WalletError(str(e)) from None


def _associated_data(info: KeyInfo) -> bytes:
    """What a ciphertext is bound to: a record's identity and authority, canonically encoded."""
    identity = {
        "v": FORMAT_VERSION,
        "name": info.name,
        "public_key": str(info.public_key),
        "account_id": info.account_id,
        "network": info.network,
        "permission": info.permission.to_dict(),
    }
    return json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _secret_buffer(keypair: KeyPair) -> bytearray:
    # Same package, deliberately: encrypting the raw bytearray avoids an unwipeable str copy
    # that export_secret() would create.
    return keypair._secret


@dataclass(frozen=True, slots=True)
class _Entry:
    info: KeyInfo
    nonce: bytes
    ciphertext: bytes
    ad: bytes

    def to_json(self) -> dict[str, Any]:
        i = self.info
        return {
            "name": i.name,
            "label": i.label,
            "account_id": i.account_id,
            "network": i.network,
            "public_key": str(i.public_key),
            "permission": i.permission.to_dict(),
            "created_at": i.created_at,
            "nonce": base64.b64encode(self.nonce).decode("ascii"),
            "ciphertext": base64.b64encode(self.ciphertext).decode("ascii"),
        }


@dataclass(frozen=True, slots=True)
class _Snapshot:
    stat_key: tuple[int, int, int] | None
    entries: dict[str, _Entry] = field(default_factory=dict)


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
        self._master: bytes | None = None
        self._aead: AESGCM | None = None

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
        keypair = self._decrypt(entry)
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
            with self._decrypt(entry) as keypair:
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
            else _validate_account(account_id)
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
            aead = self._cipher(create=True)
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
                ad = _associated_data(info)
                nonce = os.urandom(NONCE_BYTES)
                ciphertext = aead.encrypt(nonce, bytes(_secret_buffer(keypair)), ad)
                entries[info.name] = _Entry(info, nonce, ciphertext, ad)
            self._write(entries)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The writers' lock. The dir is created here with exist_ok first: `ensure_dir` in
        private_files checks-then-creates, which races when two first writers start at once."""
        self.config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with exclusive_lock(self.lock_path):
            yield

    def _write(self, entries: dict[str, _Entry]) -> None:
        doc = {"version": FORMAT_VERSION, "keys": [entries[n].to_json() for n in sorted(entries)]}
        atomic_write(self.path, json.dumps(doc, indent=2).encode("utf-8"))
        self._snapshot = _EMPTY  # our own write: never trust a stat key from before it

    def _cipher(self, *, create: bool, reload: bool = False) -> AESGCM:
        if self._aead is None or reload:
            try:
                master = read_master_key(self.key_path, create=create, what="the wallet keys")
            except PrivateFileError as e:
                raise WalletError(str(e)) from None
            if self._aead is None or master != self._master:
                self._master, self._aead = master, AESGCM(master)
        assert self._aead is not None
        return self._aead

    def _decrypt(self, entry: _Entry) -> KeyPair:
        buf = bytearray(SECRET_KEY_LEN)
        try:
            try:
                self._cipher(create=False).decrypt_into(entry.nonce, entry.ciphertext, entry.ad, buf)
            except (InvalidTag, ValueError):
                # The master key may have been replaced since we cached it; try once more.
                self._cipher(create=False, reload=True).decrypt_into(
                    entry.nonce, entry.ciphertext, entry.ad, buf
                )
            keypair = KeyPair(buf)
        except (InvalidTag, ValueError):
            raise WalletError(
                f"wallet key {entry.info.name!r} cannot be decrypted (wrong master key or tampered"
                " record); restore it from a backup or import it again with --replace"
            ) from None
        finally:
            buf[:] = bytes(SECRET_KEY_LEN)
        if keypair.public_key != entry.info.public_key:  # pragma: no cover - the AD binds it
            keypair.wipe()
            raise WalletError(f"wallet key {entry.info.name!r} does not match its public key")
        return keypair

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
        snap = _Snapshot((st.st_mtime_ns, st.st_size, st.st_ino), self._parse(data))
        self._snapshot = snap
        return snap

    def _parse(self, data: bytes) -> dict[str, _Entry]:
        try:
            doc = json.loads(data)
        except ValueError:
            raise WalletError(f"{self.path} is corrupt (not JSON)") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise WalletError(f"{self.path} is not a clawgate wallet key file")
        if doc.get("version") != FORMAT_VERSION:
            raise WalletError(
                f"{self.path} has format version {doc.get('version')!r}; this clawgate reads"
                f" version {FORMAT_VERSION} (upgrade clawgate)"
            )
        entries: dict[str, _Entry] = {}
        for index, record in enumerate(doc["keys"]):
            entry = self._parse_record(record, index)
            if entry.info.name in entries:
                raise WalletError(f"{self.path} lists key {entry.info.name!r} twice")
            entries[entry.info.name] = entry
        return entries

    def _parse_record(self, record: object, index: int) -> _Entry:
        where = f"{self.path}: key record {index}"
        if not isinstance(record, dict):
            raise WalletError(f"{where} is not an object")
        try:
            name = validate_key_name(record.get("name"))
            where = f"{self.path}: key {name!r}"
            info = KeyInfo(
                name=name,
                label=validate_label(record.get("label", "")),
                account_id=_validate_account(record.get("account_id")),
                network=validate_network(record.get("network")),
                public_key=PublicKey.from_string(record.get("public_key")),
                permission=KeyPermission.from_dict(record.get("permission", {})),
                created_at=str(record.get("created_at", "")),
            )
        except WalletError as e:
            raise WalletError(f"{where} is invalid: {e.message}") from None
        except (InvalidKey, TypeError) as e:
            raise WalletError(f"{where} is invalid ({type(e).__name__})") from None
        # A damaged nonce/ciphertext does not make the whole file unreadable: the record still
        # lists (so it can be removed or replaced) and fails only when it is used to sign.
        return _Entry(info, _b64(record.get("nonce")), _b64(record.get("ciphertext")), _associated_data(info))


def _b64(value: object) -> bytes:
    try:
        return base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except binascii.Error:
        return b""
