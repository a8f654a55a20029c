"""A small borsh encoder (and the reader the tests and the RPC test server need).

Integers little-endian; strings u32 length + UTF-8; Vec u32 count + items; Option u8 0/1;
fixed arrays raw; enums u8 variant index followed by the variant's fields.
"""

from __future__ import annotations

import builtins
import struct


class Writer:
    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def getvalue(self) -> bytes:
        return bytes(self._buf)

    def u8(self, v: int) -> Writer:
        return self._uint(v, 1)

    def u32(self, v: int) -> Writer:
        return self._uint(v, 4)

    def u64(self, v: int) -> Writer:
        return self._uint(v, 8)

    def u128(self, v: int) -> Writer:
        return self._uint(v, 16)

    def _uint(self, v: int, size: int) -> Writer:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << (8 * size):
            raise ValueError(f"u{8 * size} out of range: {v!r}")
        self._buf += v.to_bytes(size, "little")
        return self

    def fixed(self, data: bytes, length: int) -> Writer:
        if len(data) != length:
            raise ValueError(f"expected {length} bytes, got {len(data)}")
        self._buf += data
        return self

    def bytes(self, data: bytes) -> Writer:
        """Vec<u8>."""
        self.u32(len(data))
        self._buf += data
        return self

    def string(self, s: str) -> Writer:
        return self.bytes(s.encode("utf-8"))

    def raw(self, data: builtins.bytes) -> Writer:
        self._buf += data
        return self


class Reader:
    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(bytes(data))
        self._pos = 0

    def _take(self, n: int) -> bytes:
        if self._pos + n > len(self._data):
            raise ValueError("borsh: unexpected end of data")
        out = bytes(self._data[self._pos : self._pos + n])
        self._pos += n
        return out

    def u8(self) -> int:
        return self._take(1)[0]

    def u32(self) -> int:
        value: int = struct.unpack("<I", self._take(4))[0]
        return value

    def u64(self) -> int:
        value: int = struct.unpack("<Q", self._take(8))[0]
        return value

    def u128(self) -> int:
        return int.from_bytes(self._take(16), "little")

    def fixed(self, n: int) -> bytes:
        return self._take(n)

    def bytes(self) -> bytes:
        return self._take(self.u32())

    def string(self) -> str:
        return self.bytes().decode("utf-8")

    def option(self) -> bool:
        tag = self.u8()
        if tag > 1:
            raise ValueError("borsh: bad Option tag")
        return tag == 1

    def done(self) -> None:
        if self._pos != len(self._data):
            raise ValueError("borsh: trailing bytes")
