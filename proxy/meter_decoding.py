"""Incremental gzip/deflate decoding of a model response, for metering only.

The vault asks model endpoints for `Accept-Encoding: identity` (proxy/meter_addon.py), because
decompressing every model response would cost the vault CPU and a compressed body is a
decompression bomb risk; an upstream that compresses anyway is still metered when it uses gzip
or deflate (stdlib zlib). The response is untrusted, so decoding is bounded per step (`STEP`)
and in total (`MAX_DECODED`: a bomb stops being read, and the call is reported incomplete); the
bytes relayed to the client are never touched.
"""

from __future__ import annotations

import zlib

MAX_DECODED = 256 << 20  # a compressed response decoded (for metering only) up to this
STEP = 1 << 20


class Decoder:
    """Incremental gzip/deflate decoding for metering only, bounded per step and in total."""

    def __init__(self, encoding: str) -> None:
        self.ok = encoding in ("gzip", "x-gzip", "deflate")
        # 47 = auto-detect a zlib or gzip header; raw deflate (seen in the wild) is tried next.
        self._z = zlib.decompressobj(47) if self.ok else None
        self._raw_tried = encoding not in ("deflate",)
        self.total = 0

    def decode(self, chunk: bytes) -> list[bytes]:
        if self._z is None:
            return []
        out: list[bytes] = []
        data = chunk
        try:
            while data:
                piece = self._z.decompress(data, STEP)
                data = self._z.unconsumed_tail
                self.total += len(piece)
                if self.total > MAX_DECODED:
                    self._z = None
                    self.ok = False
                    return out
                if piece:
                    out.append(piece)
        except zlib.error:
            if not self._raw_tried and self.total == 0:
                self._raw_tried = True
                self._z = zlib.decompressobj(-15)
                return self.decode(chunk)
            self._z = None
            self.ok = False
        return out
