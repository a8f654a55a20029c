"""Passphrase sealing shared by every backup clawgate writes (wallet keys, whole-instance backups).

A backup must survive the loss of the machine, so it cannot depend on ``master.key``: what it
protects is sealed under a key derived from a passphrase the owner keeps elsewhere.  One scheme
for every backup means one thing to review and one set of limits against crafted files.

* Key derivation: Argon2id (RFC 9106) over the UTF-8 bytes of the NFC-normalized passphrase,
  64 MiB of memory, 3 iterations, 4 lanes, 16-byte random salt, 32-byte output — RFC 9106's
  second recommended option.  The parameters travel in the file's header, so stronger ones can
  be used later without a format change; a file asking for more than 1 GiB of memory or 20
  iterations is refused (a crafted backup must not be a denial of service).
* Encryption: AES-256-GCM with a random 12-byte nonce.  The associated data is the canonical JSON
  (sorted keys, no whitespace) of the header, so editing any header field makes opening fail.

A wrong passphrase and a damaged file are indistinguishable by design (both are a failed GCM
tag) and are reported as :data:`WRONG_PASSPHRASE`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import unicodedata
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

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
MIN_PASSPHRASE_LEN = 8

WRONG_PASSPHRASE = "wrong passphrase or corrupted backup"


class SealError(Exception):
    """Sealed data cannot be made or opened; the message never contains the secret."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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
                raise SealError("backup KDF parameters must be integers")
        if not 1 <= self.lanes <= MAX_LANES:
            raise SealError(f"backup KDF lanes must be 1-{MAX_LANES}")
        if not 1 <= self.iterations <= MAX_ITERATIONS:
            raise SealError(f"backup KDF iterations must be 1-{MAX_ITERATIONS}")
        if not 8 * self.lanes <= self.memory_kib <= MAX_MEMORY_KIB:
            raise SealError(f"backup KDF memory must be {8 * self.lanes} KiB to 1 GiB")
        return self


DEFAULT_KDF = KdfParams()


def derive_key(passphrase: str, salt: bytes, params: KdfParams) -> bytes:
    kdf = Argon2id(
        salt=salt,
        length=KEY_BYTES,
        iterations=params.iterations,
        lanes=params.lanes,
        memory_cost=params.memory_kib,
    )
    # NFC: the same passphrase typed on another OS/keyboard may arrive decomposed.
    return kdf.derive(unicodedata.normalize("NFC", passphrase).encode("utf-8"))


def associated_data(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(value: object, what: str) -> bytes:
    try:
        if not isinstance(value, str):
            raise TypeError
        return base64.b64decode(value, validate=True)
    except (TypeError, binascii.Error):
        raise SealError(f"the backup's {what} is not valid base64") from None


def check_passphrase(passphrase: object) -> str:
    if not isinstance(passphrase, str) or len(passphrase) < MIN_PASSPHRASE_LEN:
        raise SealError(f"the backup passphrase must be at least {MIN_PASSPHRASE_LEN} characters")
    return passphrase


def new_kdf_header(params: KdfParams = DEFAULT_KDF) -> tuple[dict[str, Any], str]:
    """A fresh ``kdf`` header field (random salt) and a fresh base64 nonce for one sealing."""
    params.check()
    kdf = {
        "name": KDF_NAME,
        "salt": b64(os.urandom(SALT_BYTES)),
        "memory_kib": params.memory_kib,
        "iterations": params.iterations,
        "lanes": params.lanes,
    }
    return kdf, b64(os.urandom(NONCE_BYTES))


def seal(passphrase: str, plaintext: bytes, header: dict[str, Any]) -> bytes:
    """Encrypt ``plaintext`` under the passphrase, binding every field of ``header``.

    ``header`` must hold ``kdf`` and ``nonce`` from :func:`new_kdf_header` and ``cipher``.
    """
    check_passphrase(passphrase)
    params, salt, nonce = _kdf_inputs(header)
    return AESGCM(derive_key(passphrase, salt, params)).encrypt(nonce, plaintext, associated_data(header))


def unseal(passphrase: object, ciphertext: bytes, header: dict[str, Any]) -> bytes:
    """Decrypt what :func:`seal` made; any change to the header or ciphertext is WRONG_PASSPHRASE."""
    params, salt, nonce = _kdf_inputs(header)
    if not isinstance(passphrase, str):
        raise SealError(WRONG_PASSPHRASE)
    try:
        return AESGCM(derive_key(passphrase, salt, params)).decrypt(
            nonce, ciphertext, associated_data(header)
        )
    except InvalidTag:
        raise SealError(WRONG_PASSPHRASE) from None


def _kdf_int(value: object) -> int:
    """A KDF parameter from a backup file's header (untrusted JSON): an integer, not a bool."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SealError("backup KDF parameters must be integers")
    return value


def _kdf_inputs(header: dict[str, Any]) -> tuple[KdfParams, bytes, bytes]:
    kdf = header.get("kdf")
    if not isinstance(kdf, dict) or kdf.get("name") != KDF_NAME:
        raise SealError(f"unsupported key derivation (expected {KDF_NAME})")
    if header.get("cipher") != CIPHER:
        raise SealError(f"unsupported cipher (expected {CIPHER})")
    memory_kib, iterations, lanes = (_kdf_int(kdf.get(k)) for k in ("memory_kib", "iterations", "lanes"))
    params = KdfParams(memory_kib, iterations, lanes).check()
    salt, nonce = unb64(kdf.get("salt"), "salt"), unb64(header.get("nonce"), "nonce")
    if not 16 <= len(salt) <= 64 or len(nonce) != NONCE_BYTES:
        raise SealError("malformed salt or nonce")
    return params, salt, nonce
