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

* Key derivation: Argon2id (RFC 9106) over the UTF-8 bytes of the NFC-normalized passphrase,
  64 MiB of memory, 3 iterations, 4 lanes, 16-byte random salt, 32-byte output — RFC 9106's
  second recommended option.  The parameters are read back from the file, so stronger ones can
  be used later without a format change; a file asking for more than 1 GiB of memory or
  20 iterations is refused (a crafted backup must not be a denial of service).
* Encryption: AES-256-GCM with a random 12-byte nonce.  The associated data is the canonical
  JSON (sorted keys, no whitespace) of every field except ``ciphertext``, so editing the KDF
  parameters, the key count or anything else in the header makes decryption fail.
* Plaintext: ``{"keys": [...]}``, each entry the metadata of a key plus its ``secret_key`` in
  NEAR's ``ed25519:<base58>`` form (see :meth:`KeyStore.export_records`).

A wrong passphrase and a damaged file are indistinguishable by design (both are a failed GCM
tag) and are reported as "wrong passphrase or corrupted backup"; nothing is written.  Restore is
all-or-nothing, and a key name already in the store is refused (listing the names) unless
``replace`` is given.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from gateway.private_files import atomic_write
from gateway.wallet.keystore import KeyInfo, KeyStore, WalletError

FORMAT = "clawgate-wallet-backup"
FORMAT_VERSION = 1
KDF_NAME = "argon2id"
CIPHER = "aes-256-gcm"

ARGON2_MEMORY_KIB = 65536  # 64 MiB
ARGON2_ITERATIONS = 3
ARGON2_LANES = 4
KEY_BYTES = 32
SALT_BYTES = 16
NONCE_BYTES = 12

MAX_MEMORY_KIB = 1024 * 1024  # 1 GiB: the most a backup file may make us allocate
MAX_ITERATIONS = 20
MAX_LANES = 64
MAX_BACKUP_BYTES = 16 * 1024 * 1024  # far beyond any real key set; bounds what we parse
MIN_PASSPHRASE_LEN = 8

WRONG_PASSPHRASE = "wrong passphrase or corrupted backup"


class BackupError(WalletError):
    """A backup cannot be written or restored. The message never contains key material."""


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Argon2id cost parameters; the defaults are the documented ones. Tests pass cheaper ones."""

    memory_kib: int = ARGON2_MEMORY_KIB
    iterations: int = ARGON2_ITERATIONS
    lanes: int = ARGON2_LANES

    def check(self) -> KdfParams:
        """Refuse parameters Argon2 cannot use or that would let a crafted file exhaust the host."""
        for value in (self.memory_kib, self.iterations, self.lanes):
            if isinstance(value, bool) or not isinstance(value, int):
                raise BackupError("backup KDF parameters must be integers")
        if not 1 <= self.lanes <= MAX_LANES:
            raise BackupError(f"backup KDF lanes must be 1-{MAX_LANES}")
        if not 1 <= self.iterations <= MAX_ITERATIONS:
            raise BackupError(f"backup KDF iterations must be 1-{MAX_ITERATIONS}")
        if not 8 * self.lanes <= self.memory_kib <= MAX_MEMORY_KIB:
            raise BackupError(f"backup KDF memory must be {8 * self.lanes} KiB to 1 GiB")
        return self


DEFAULT_KDF = KdfParams()


def _derive_key(passphrase: str, salt: bytes, params: KdfParams) -> bytes:
    kdf = Argon2id(
        salt=salt,
        length=KEY_BYTES,
        iterations=params.iterations,
        lanes=params.lanes,
        memory_cost=params.memory_kib,
    )
    # NFC: the same passphrase typed on another OS/keyboard may arrive decomposed.
    return kdf.derive(unicodedata.normalize("NFC", passphrase).encode("utf-8"))


def _associated_data(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


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
    if not isinstance(passphrase, str) or len(passphrase) < MIN_PASSPHRASE_LEN:
        raise BackupError(f"the backup passphrase must be at least {MIN_PASSPHRASE_LEN} characters")
    params.check()
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not force:
        raise BackupError(f"{path} already exists (use --force to overwrite it)")
    if path.is_dir():
        raise BackupError(f"{path} is a directory")
    records = store.export_records(names)
    if not records:
        raise BackupError("there are no wallet keys to back up")
    salt, nonce = os.urandom(SALT_BYTES), os.urandom(NONCE_BYTES)
    header: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "kdf": {
            "name": KDF_NAME,
            "salt": _b64(salt),
            "memory_kib": params.memory_kib,
            "iterations": params.iterations,
            "lanes": params.lanes,
        },
        "cipher": CIPHER,
        "nonce": _b64(nonce),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "keys": len(records),
    }
    plaintext = json.dumps({"keys": records}).encode("utf-8")
    del records  # the secrets now exist only in `plaintext`, which is encrypted next
    ciphertext = AESGCM(_derive_key(passphrase, salt, params)).encrypt(
        nonce, plaintext, _associated_data(header)
    )
    document = dict(header, ciphertext=_b64(ciphertext))
    try:
        atomic_write(path, (json.dumps(document, indent=2) + "\n").encode("utf-8"))
    except OSError as e:
        raise BackupError(f"cannot write {path}: {e.strerror}") from None
    return document["keys"]


def read_backup_header(path: Path) -> dict[str, Any]:
    """The validated, unencrypted header of a backup (format, KDF, count) — no passphrase needed."""
    header, _ = _load(Path(path))
    return header


def restore_backup(store: KeyStore, path: Path, passphrase: str, replace: bool = False) -> list[KeyInfo]:
    """Decrypt the backup at ``path`` and add its keys to ``store`` (all or nothing)."""
    header, ciphertext = _load(Path(path))
    kdf = header["kdf"]
    params = KdfParams(kdf.get("memory_kib"), kdf.get("iterations"), kdf.get("lanes")).check()  # type: ignore[arg-type]
    salt, nonce = _unb64(kdf["salt"], "salt"), _unb64(header["nonce"], "nonce")
    if not 16 <= len(salt) <= 64 or len(nonce) != NONCE_BYTES:
        raise BackupError(f"{path}: malformed salt or nonce")
    if not isinstance(passphrase, str):
        raise BackupError(WRONG_PASSPHRASE)
    try:
        plaintext = AESGCM(_derive_key(passphrase, salt, params)).decrypt(
            nonce, ciphertext, _associated_data(header)
        )
    except InvalidTag:
        raise BackupError(WRONG_PASSPHRASE) from None
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


def _unb64(value: object, what: str) -> bytes:
    try:
        if not isinstance(value, str):
            raise TypeError
        return base64.b64decode(value, validate=True)
    except (TypeError, binascii.Error):
        raise BackupError(f"the backup's {what} is not valid base64") from None


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
    ciphertext = _unb64(doc.pop("ciphertext", None), "ciphertext")
    return doc, ciphertext
