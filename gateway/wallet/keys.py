"""ed25519 keys in NEAR's string formats.

Public key: ``ed25519:<base58 of 32 bytes>``; secret key: ``ed25519:<base58 of 64 bytes>``
(seed || public key, as near-cli and near-api-js write it).  Parsing is strict: the prefix,
the base58 alphabet, the decoded length, and for secret keys that the public half is the one
derived from the seed.

The secret bytes of a :class:`KeyPair` live in a ``bytearray`` that is handed to libsodium
without copies (``ffi.from_buffer``) and zeroed by :meth:`KeyPair.wipe` (also on ``with``
exit).  Python strings cannot be wiped, so :meth:`KeyPair.export_secret` is for the encrypted
store and backups only; ``repr``/``str`` never show the secret.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import NoReturn

from nacl._sodium import ffi, lib

from gateway.wallet.base58 import b58decode, b58encode

ED25519 = 0  # NEAR KeyType::ED25519
PREFIX = "ed25519:"
PUBLIC_KEY_LEN = 32
SECRET_KEY_LEN = 64
SEED_LEN = 32
SIGNATURE_LEN = 64


class InvalidKey(ValueError):
    """A key or signature that is not in NEAR's format."""


def _decode(text: object, length: int, what: str) -> bytes:
    if not isinstance(text, str) or not text.startswith(PREFIX):
        raise InvalidKey(f"{what} must start with {PREFIX!r}")
    body = text[len(PREFIX) :]
    if not body:
        raise InvalidKey(f"{what} is empty")
    try:
        raw = b58decode(body)
    except ValueError:
        raise InvalidKey(f"{what} is not valid base58") from None
    if len(raw) != length:
        raise InvalidKey(f"{what} must decode to {length} bytes, got {len(raw)}")
    return raw


@dataclass(frozen=True, slots=True)
class PublicKey:
    data: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes) or len(self.data) != PUBLIC_KEY_LEN:
            raise InvalidKey("ed25519 public key must be 32 bytes")

    @classmethod
    def from_string(cls, text: object) -> PublicKey:
        """Parse ``ed25519:<base58 32 bytes>``; anything else, a non-string too, is InvalidKey."""
        return cls(_decode(text, PUBLIC_KEY_LEN, "public key"))

    def __str__(self) -> str:
        return PREFIX + b58encode(self.data)

    def __repr__(self) -> str:
        return f"PublicKey({str(self)!r})"

    def verify(self, message: bytes, signature: bytes) -> bool:
        return verify(self, message, signature)


def verify(public_key: PublicKey, message: bytes, signature: bytes) -> bool:
    """True iff ``signature`` (64 raw bytes) is a valid ed25519 signature of ``message``."""
    if len(signature) != SIGNATURE_LEN:
        return False
    signed = bytes(signature) + bytes(message)
    out = ffi.new("unsigned char[]", len(signed))
    out_len = ffi.new("unsigned long long *")
    status: int = lib.crypto_sign_open(out, out_len, signed, len(signed), public_key.data)
    return status == 0


def signature_to_string(signature: bytes) -> str:
    return PREFIX + b58encode(signature)


def signature_from_string(text: str) -> bytes:
    return _decode(text, SIGNATURE_LEN, "signature")


class KeyPair:
    """An ed25519 key pair; the 64-byte secret (seed || public) is kept in a bytearray."""

    __slots__ = ("_secret", "public_key")

    def __init__(self, secret: bytearray | bytes) -> None:
        if len(secret) != SECRET_KEY_LEN:
            raise InvalidKey("ed25519 secret key must be 64 bytes")
        buf = bytearray(secret)
        try:
            derived = _derive(buf[:SEED_LEN])
        except BaseException:
            _zero(buf)
            raise
        if derived[SEED_LEN:] != buf[SEED_LEN:]:
            _zero(buf)
            _zero(derived)
            raise InvalidKey("secret key's public half does not match its seed")
        _zero(derived)
        self._secret = buf
        self.public_key = PublicKey(bytes(buf[SEED_LEN:]))

    @classmethod
    def generate(cls) -> KeyPair:
        seed = bytearray(os.urandom(SEED_LEN))
        return cls.from_seed(seed)

    @classmethod
    def from_seed(cls, seed: bytearray | bytes) -> KeyPair:
        if len(seed) != SEED_LEN:
            raise InvalidKey("ed25519 seed must be 32 bytes")
        sk = _derive(seed)
        if isinstance(seed, bytearray):
            _zero(seed)
        try:
            return cls(sk)
        finally:
            _zero(sk)

    @classmethod
    def from_string(cls, text: str) -> KeyPair:
        """Parse ``ed25519:<base58 64 bytes>`` strictly (the public half must match the seed)."""
        raw = bytearray(_decode(text, SECRET_KEY_LEN, "secret key"))
        try:
            return cls(raw)
        finally:
            _zero(raw)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte ed25519 signature of ``message``."""
        if self.wiped:
            raise RuntimeError("key pair has been wiped")
        n = len(message)
        out = ffi.new("unsigned char[]", n + SIGNATURE_LEN)
        out_len = ffi.new("unsigned long long *")
        rc = lib.crypto_sign(out, out_len, bytes(message), n, ffi.from_buffer(self._secret))
        if rc != 0:  # pragma: no cover - libsodium does not fail here
            raise RuntimeError("ed25519 signing failed")
        return bytes(ffi.buffer(out, SIGNATURE_LEN))

    def export_secret(self) -> str:
        """``ed25519:<base58 64 bytes>`` — only for the encrypted store or an encrypted backup."""
        if self.wiped:
            raise RuntimeError("key pair has been wiped")
        return PREFIX + b58encode(bytes(self._secret))

    @property
    def wiped(self) -> bool:
        return not any(self._secret)

    def wipe(self) -> None:
        _zero(self._secret)

    def __enter__(self) -> KeyPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.wipe()

    def __repr__(self) -> str:
        return f"KeyPair(public_key={str(self.public_key)!r}, secret=<hidden>)"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:  # never pickle secrets by accident
        raise TypeError("KeyPair cannot be pickled")


def _derive(seed: bytearray | bytes) -> bytearray:
    pk = ffi.new("unsigned char[]", PUBLIC_KEY_LEN)
    sk = ffi.new("unsigned char[]", SECRET_KEY_LEN)
    src = ffi.from_buffer(seed) if isinstance(seed, bytearray) else seed
    if lib.crypto_sign_seed_keypair(pk, sk, src) != 0:  # pragma: no cover
        raise RuntimeError("ed25519 key derivation failed")
    out = bytearray(ffi.buffer(sk, SECRET_KEY_LEN))
    lib.sodium_memzero(sk, SECRET_KEY_LEN)
    return out


def _zero(buf: bytearray) -> None:
    if len(buf):
        lib.sodium_memzero(ffi.from_buffer(buf), len(buf))
