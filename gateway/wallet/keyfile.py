"""The at-rest format of ``wallet-keys.json``: how each secret is sealed, written and read back.

Invariant 5 (docs/ARCHITECTURE.md): a private key leaves ``gateway/wallet`` only encrypted.  Each
secret is sealed with AES-256-GCM under the same ``master.key`` the vault uses
(:mod:`core.private_files`), with a fresh 12-byte nonce per record.

The GCM associated data is the canonical JSON of the record's identity: its name, public key,
account id, network and permission.  Copying a ciphertext onto another record (so that the
"small allowance" key name signs with the full-access secret), or editing a record's account,
network or permission in the file, makes that record fail to decrypt, and
:meth:`KeyCipher.unseal` refuses it — naming the key, never printing bytes.  Parsing reads the
metadata without decrypting; the check happens where it matters, at signing.

File format (``version`` 1, mode 0600, replaced atomically by the key store)::

    {"version": 1, "keys": [{"name": "main", "label": "", "account_id": "alice.near",
      "network": "mainnet", "public_key": "ed25519:…",
      "permission": {"kind": "full_access", "receiver_id": null, "method_names": [],
                     "allowance": null},          # allowance: yoctoNEAR as a decimal string
      "created_at": "2025-01-01T00:00:00+00:00",
      "nonce": "<b64 12 bytes>", "ciphertext": "<b64 AES-GCM(seed || public key, 64 bytes)>"}]}

Where the file lives, who may write it and when it is re-read is :mod:`gateway.wallet.keystore`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.private_files import PrivateFileError, read_master_key
from gateway.wallet.keyinfo import (
    KeyInfo,
    KeyPermission,
    WalletError,
    validate_account,
    validate_key_name,
    validate_label,
    validate_network,
)
from gateway.wallet.keys import SECRET_KEY_LEN, InvalidKey, KeyPair, PublicKey

FORMAT_VERSION = 1
NONCE_BYTES = 12


def associated_data(info: KeyInfo) -> bytes:
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


def _secret_buffer(keypair: KeyPair) -> bytearray:
    # Same package, deliberately: encrypting the raw bytearray avoids an unwipeable str copy
    # that export_secret() would create.
    return keypair._secret


@dataclass(frozen=True, slots=True)
class Entry:
    """One record as stored: its metadata, and its secret sealed to that metadata (``ad``)."""

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


def render(entries: dict[str, Entry]) -> bytes:
    """The file's bytes, records sorted by name so the same keys always write the same file."""
    doc = {"version": FORMAT_VERSION, "keys": [entries[n].to_json() for n in sorted(entries)]}
    return json.dumps(doc, indent=2).encode("utf-8")


def parse(path: Path, data: bytes) -> dict[str, Entry]:
    """The records of a key file read from ``path`` (named in errors), by name; nothing decrypted."""
    try:
        doc = json.loads(data)
    except ValueError:
        raise WalletError(f"{path} is corrupt (not JSON)") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise WalletError(f"{path} is not a clawgate wallet key file")
    if doc.get("version") != FORMAT_VERSION:
        raise WalletError(
            f"{path} has format version {doc.get('version')!r}; this clawgate reads"
            f" version {FORMAT_VERSION} (upgrade clawgate)"
        )
    entries: dict[str, Entry] = {}
    for index, record in enumerate(doc["keys"]):
        entry = _parse_record(path, record, index)
        if entry.info.name in entries:
            raise WalletError(f"{path} lists key {entry.info.name!r} twice")
        entries[entry.info.name] = entry
    return entries


def _parse_record(path: Path, record: object, index: int) -> Entry:
    where = f"{path}: key record {index}"
    if not isinstance(record, dict):
        raise WalletError(f"{where} is not an object")
    try:
        name = validate_key_name(record.get("name"))
        where = f"{path}: key {name!r}"
        info = KeyInfo(
            name=name,
            label=validate_label(record.get("label", "")),
            account_id=validate_account(record.get("account_id")),
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
    return Entry(info, _b64(record.get("nonce")), _b64(record.get("ciphertext")), associated_data(info))


def _b64(value: object) -> bytes:
    try:
        return base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except binascii.Error:
        return b""


class KeyCipher:
    """AES-256-GCM under the master key at ``key_path``; it keeps the master key, never a secret.

    The master key is read once and again only when a record stops decrypting (another process
    may have replaced it since), so signing does not open a file per call.
    """

    def __init__(self, key_path: Path) -> None:
        self.key_path = key_path
        self._master: bytes | None = None
        self._aead: AESGCM | None = None

    def ready(self, *, create: bool) -> None:
        """Read (or, with ``create``, make) the master key now: a writer that cannot encrypt fails
        before it has decided anything else."""
        self._cipher(create=create)

    def seal(self, info: KeyInfo, keypair: KeyPair) -> Entry:
        """The record for ``info`` with ``keypair``'s secret encrypted under a fresh nonce."""
        ad = associated_data(info)
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = self._cipher(create=True).encrypt(nonce, bytes(_secret_buffer(keypair)), ad)
        return Entry(info, nonce, ciphertext, ad)

    def unseal(self, entry: Entry) -> KeyPair:
        """The record's KeyPair (the caller wipes it); WalletError if it does not decrypt."""
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
