"""Passphrase-encrypted backups of wallet keys (``clawgate wallet export`` / ``restore``).

A backup must survive the loss of the machine, so it cannot depend on ``master.key``: it is
encrypted under a key derived from a passphrase the owner keeps elsewhere.  It is the only form
in which keys leave the config dir (invariant 5: keys leave ``gateway/wallet`` only encrypted).

Format (UTF-8 JSON, written atomically with mode 0600; an existing file is never overwritten
unless asked)::

    {
      "format": "clawgate-wallet-backup",
      "version": 1,
      "kdf": {"name": "argon2id", "salt": "<b64, 16 random bytes>",
              "memory_kib": 65536, "iterations": 3, "lanes": 4},
      "cipher": "aes-256-gcm",
      "nonce": "<b64, 12 random bytes>",
      "ciphertext": "<b64>",
      "created_at": "2025-01-01T00:00:00+00:00",
      "keys": 2
    }

* Key derivation and encryption: Argon2id + AES-256-GCM as described in
  :mod:`gateway.passphrase_crypto` (shared with ``clawgate backup``).  The associated data is the
  canonical JSON of every field except ``ciphertext``, so editing the KDF parameters, the key
  count or anything else in the header makes decryption fail.
* Plaintext: ``{"keys": [...]}``, each entry the metadata of a key plus its ``secret_key`` in
  NEAR's ``ed25519:<base58>`` form (see :meth:`KeyStore.export_records`).

A wrong passphrase and a damaged file are indistinguishable by design (both are a failed GCM
tag) and are reported as "wrong passphrase or corrupted backup"; nothing is written.  Restore is
all-or-nothing, and a key name already in the store is refused (listing the names) unless
``replace`` is given.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.private_files import atomic_write
from gateway.passphrase_crypto import (
    CIPHER,
    DEFAULT_KDF,
    KDF_NAME,
    MIN_PASSPHRASE_LEN,
    WRONG_PASSPHRASE,
    KdfParams,
    SealError,
    b64,
    check_passphrase,
    new_kdf_header,
    seal,
    unb64,
    unseal,
)
from gateway.wallet.keyinfo import KeyInfo, WalletError
from gateway.wallet.keystore import KeyStore

__all__ = [
    "DEFAULT_KDF",
    "MIN_PASSPHRASE_LEN",
    "WRONG_PASSPHRASE",
    "BackupError",
    "KdfParams",
    "export_backup",
    "read_backup_header",
    "restore_backup",
]

FORMAT = "clawgate-wallet-backup"
FORMAT_VERSION = 1
MAX_BACKUP_BYTES = 16 * 1024 * 1024  # far beyond any real key set; bounds what we parse


class BackupError(WalletError):
    """A backup cannot be written or restored. The message never contains key material."""


def export_backup(
    store: KeyStore,
    path: Path,
    passphrase: str,
    names: list[str] | None = None,
    *,
    force: bool = False,
    params: KdfParams = DEFAULT_KDF,
) -> int:
    """Write an encrypted backup of ``names`` (default: every key) to ``path``; return the count.

    Refuses to overwrite an existing ``path`` unless ``force`` (a backup is often the only copy of
    a key; silently replacing an older one with a partial export would lose keys).
    """
    try:
        check_passphrase(passphrase)
        params.check()
    except SealError as e:
        raise BackupError(e.message) from None
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not force:
        raise BackupError(f"{path} already exists (use --force to overwrite it)")
    if path.is_dir():
        raise BackupError(f"{path} is a directory")
    records = store.export_records(names)
    if not records:
        raise BackupError("there are no wallet keys to back up")
    kdf, nonce = new_kdf_header(params)
    header: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "kdf": kdf,
        "cipher": CIPHER,
        "nonce": nonce,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "keys": len(records),
    }
    plaintext = json.dumps({"keys": records}).encode("utf-8")
    del records  # the secrets now exist only in `plaintext`, which is encrypted next
    ciphertext = seal(passphrase, plaintext, header)
    document = dict(header, ciphertext=b64(ciphertext))
    try:
        atomic_write(path, (json.dumps(document, indent=2) + "\n").encode("utf-8"))
    except OSError as e:
        raise BackupError(f"cannot write {path}: {e.strerror}") from None
    count: int = document["keys"]
    return count


def read_backup_header(path: Path) -> dict[str, Any]:
    """The validated, unencrypted header of a backup (format, KDF, count) — no passphrase needed."""
    header, _ = _load(Path(path))
    return header


def restore_backup(store: KeyStore, path: Path, passphrase: str, replace: bool = False) -> list[KeyInfo]:
    """Decrypt the backup at ``path`` and add its keys to ``store`` (all or nothing)."""
    header, ciphertext = _load(Path(path))
    try:
        plaintext = unseal(passphrase, ciphertext, header)
    except SealError as e:
        raise BackupError(e.message if e.message == WRONG_PASSPHRASE else f"{path}: {e.message}") from None
    try:
        records = json.loads(plaintext)["keys"]
        if not isinstance(records, list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise BackupError(f"{path}: the decrypted backup is not a key list") from None
    if len(records) != header["keys"]:
        raise BackupError(f"{path}: the backup says {header['keys']} keys but holds {len(records)}")
    try:
        return store.restore_records(records, replace=replace)
    except BackupError:
        raise
    except WalletError as e:
        raise BackupError(e.message) from None


def _load(path: Path) -> tuple[dict[str, Any], bytes]:
    """Parse and validate the header; return it (without ``ciphertext``) and the ciphertext."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BACKUP_BYTES + 1)
    except FileNotFoundError:
        raise BackupError(f"{path} does not exist") from None
    except OSError as e:
        raise BackupError(f"cannot read {path}: {e.strerror}") from None
    if len(raw) > MAX_BACKUP_BYTES:
        raise BackupError(f"{path} is too large to be a clawgate wallet backup")
    try:
        doc = json.loads(raw)
    except ValueError:
        raise BackupError(f"{path} is not a clawgate wallet backup (not JSON)") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BackupError(f"{path} is not a clawgate wallet backup (format is not {FORMAT!r})")
    if doc.get("version") != FORMAT_VERSION:
        raise BackupError(
            f"{path} is backup format version {doc.get('version')!r}; this clawgate reads"
            f" version {FORMAT_VERSION} (upgrade clawgate to restore it)"
        )
    kdf = doc.get("kdf")
    if not isinstance(kdf, dict) or kdf.get("name") != KDF_NAME:
        raise BackupError(f"{path}: unsupported key derivation (expected {KDF_NAME})")
    if doc.get("cipher") != CIPHER:
        raise BackupError(f"{path}: unsupported cipher (expected {CIPHER})")
    count = doc.get("keys")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise BackupError(f"{path}: invalid key count")
    try:
        ciphertext = unb64(doc.pop("ciphertext", None), "ciphertext")
    except SealError as e:
        raise BackupError(e.message) from None
    return doc, ciphertext
