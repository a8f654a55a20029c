"""Metered usage, reported to the gateway without losing a record (SPEND-INTERFACE §3).

Each metered call becomes a record with an id unique across vault restarts
(`<vault-start-uuid>:<seq>`). The record is appended to a spool file (0600, in the vault's state
dir) and only once that write is fsynced may it be sent; the gateway answers
`{"ok": true, "stored": n}` only after committing the rows, and a resent id is ignored there, so
a record is sent until acknowledged and stored exactly once whatever dies in between:

- the gateway dies before committing: no reply, the record stays unacknowledged and is resent;
- it dies after committing, before replying: resent, and ignored as a duplicate;
- the vault dies: the spool is read back at the next start and its unacknowledged records resent.

Why fsync in batches: an fsync per model call would put a disk flush on the relay path; one flush
covers every record added in the last `FLUSH_S`. Metering never waits for this: `add` only queues.

The spool is an append-only log of `{"r": record}` and `{"a": [ids]}` (acknowledged) lines; it is
rewritten with only the unacknowledged records when it has collected enough acknowledgements. A
torn last line (a crash mid-write) is skipped when read back. If the gateway stays away long
enough for `MAX_PENDING` records to queue up, the oldest are dropped with an error in the log:
the disk is bounded too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

from proxy.metering import Usage

log = logging.getLogger("clawgate.vault.usage")

SPOOL_FILE = "usage-spool.jsonl"
BATCH = 500  # records per report line (the gateway refuses more)
FLUSH_S = 0.05  # records wait at most this long for their fsync
BACKOFF_INITIAL_S = 0.2
BACKOFF_MAX_S = 30.0
REPLY_TIMEOUT_S = 30.0
COMPACT_AFTER = 10_000  # acknowledged lines before the spool is rewritten
MAX_PENDING = 1_000_000  # unacknowledged records kept (about 250 MB of spool)


def _open_private(path: Path, flags: int) -> int:
    fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    return fd


class UsageReporter:
    """Spools metered records and ships them to the gateway's control socket until acknowledged."""

    def __init__(self, state_dir: Path, gateway_socket: Path | None) -> None:
        self.path = Path(state_dir) / SPOOL_FILE
        self.gateway_socket = gateway_socket
        self.prefix = uuid.uuid4().hex  # this vault start's id; a record id is prefix:seq
        self._seq = 0
        self._pending: OrderedDict[str, dict[str, Any]] = OrderedDict()  # spooled, unacknowledged
        self._unsynced: list[dict[str, Any]] = []  # not yet on disk: never sent before it is
        self._acked_lines = 0
        self._fd: int | None = None
        self._io = threading.Lock()  # the spool's descriptor: the flush thread and the loop share it
        self._wake = asyncio.Event()
        self._flushed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.sent_batches = 0  # for tests and stats

    # -- lifecycle --

    def load(self) -> int:
        """Read back what an earlier run left unacknowledged; open the spool for appending."""
        if self.gateway_socket is None:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        records: OrderedDict[str, dict[str, Any]] = OrderedDict()
        if self.path.exists():
            with open(self.path, "rb") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                    except (ValueError, UnicodeDecodeError):
                        continue  # a torn last line
                    if not isinstance(entry, dict):
                        continue
                    if isinstance(entry.get("r"), dict) and isinstance(entry["r"].get("id"), str):
                        records[entry["r"]["id"]] = entry["r"]
                    elif isinstance(entry.get("a"), list):
                        for rid in entry["a"]:
                            if isinstance(rid, str):
                                records.pop(rid, None)
        self._pending = records
        self._rewrite()  # only the unacknowledged remain; also fixes the mode of an old file
        if records:
            log.warning("vault: %d metered record(s) from before the restart to report", len(records))
        return len(records)

    def start(self) -> None:
        if self.gateway_socket is None:
            return
        if self._fd is None:
            self.load()
        self._tasks = [
            asyncio.create_task(self._flush_forever(), name="usage-flush"),
            asyncio.create_task(self._send_forever(), name="usage-send"),
        ]
        if self._pending:
            self._wake.set()

    async def close(self) -> None:
        """Flush what is queued (so nothing metered is lost), then stop."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        with contextlib.suppress(OSError):
            self._flush()
        with self._io:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    # -- adding --

    def add(self, group: str, usage: Usage) -> None:
        """Queue one metered call; never blocks (the spool write happens within FLUSH_S)."""
        if self.gateway_socket is None:
            return
        self._seq += 1
        record = {
            "id": f"{self.prefix}:{self._seq}",
            "group": group,
            "provider": usage.provider,
            "model": usage.model[:100],
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_read_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
            "complete": usage.complete,
            "at": time.time(),
        }
        self._unsynced.append(record)
        self._flushed.set()

    @property
    def pending(self) -> int:
        return len(self._pending) + len(self._unsynced)

    # -- the spool --

    def _append(self, data: bytes, sync: bool) -> None:
        with self._io:
            if self._fd is None:
                raise OSError("the usage spool is closed")
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            if sync:
                os.fsync(self._fd)

    @staticmethod
    def _lines(records: list[dict[str, Any]]) -> bytes:
        return b"".join(json.dumps({"r": r}, separators=(",", ":")).encode() + b"\n" for r in records)

    def _spooled(self, batch: list[dict[str, Any]]) -> None:
        """Records now on disk: eligible for sending."""
        for r in batch:
            self._pending[r["id"]] = r
        while len(self._pending) > MAX_PENDING:
            rid, _ = self._pending.popitem(last=False)
            log.error("vault: dropped metered record %s: the gateway has not taken reports for too long", rid)
        self._wake.set()

    def _flush(self) -> None:
        """Append the queued records and fsync, in the caller's thread (shutdown)."""
        if not self._unsynced or self._fd is None:
            return
        batch, self._unsynced = self._unsynced, []
        self._append(self._lines(batch), sync=True)
        self._spooled(batch)

    def _acked(self, ids: list[str]) -> None:
        for rid in ids:
            self._pending.pop(rid, None)
        self._acked_lines += len(ids)
        if self._acked_lines >= COMPACT_AFTER and not self._unsynced:
            self._rewrite()
        elif self._fd is not None:
            # Not fsynced: an acknowledgement lost in a crash only means a resend the gateway ignores.
            self._append(json.dumps({"a": ids}, separators=(",", ":")).encode() + b"\n", sync=False)

    def _rewrite(self) -> None:
        """Replace the spool with just the unacknowledged records (atomically, fsynced)."""
        with self._io:
            tmp = self.path.with_suffix(".tmp")
            fd = _open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                view = memoryview(self._lines(list(self._pending.values())))
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            with contextlib.suppress(OSError):
                dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
            if self._fd is not None:
                os.close(self._fd)
            self._fd = _open_private(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            self._acked_lines = 0

    async def _flush_forever(self) -> None:
        while True:
            await self._flushed.wait()
            await asyncio.sleep(FLUSH_S)  # gather whatever else arrives, then one fsync for all
            self._flushed.clear()
            if not self._unsynced:
                continue
            batch, self._unsynced = self._unsynced, []
            try:
                await asyncio.to_thread(self._append, self._lines(batch), True)
            except OSError as exc:
                log.error("vault: cannot write the usage spool %s: %s", self.path, exc)
                self._unsynced[:0] = batch  # keep them, in order, for the next attempt
                self._flushed.set()
                await asyncio.sleep(1.0)
                continue
            self._spooled(batch)

    # -- sending --

    def _next_batch(self) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        for record in self._pending.values():
            batch.append(record)
            if len(batch) >= BATCH:
                break
        return batch

    async def _send_forever(self) -> None:
        backoff = BACKOFF_INITIAL_S
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._next_batch()
            try:
                stored = await self._send(batch)
            except (OSError, TimeoutError, ValueError) as exc:
                log.warning(
                    "vault: usage report not acknowledged (%s); %d record(s) wait, retrying in %.1fs",
                    exc,
                    len(self._pending),
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(BACKOFF_MAX_S, backoff * 2)
                continue
            backoff = BACKOFF_INITIAL_S
            self.sent_batches += 1
            log.debug("vault: reported %d metered record(s), %d new", len(batch), stored)
            self._acked([r["id"] for r in batch])

    async def _send(self, batch: list[dict[str, Any]]) -> int:
        assert self.gateway_socket is not None
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(self.gateway_socket), limit=1 << 16), 5
        )
        try:
            writer.write(json.dumps({"op": "vault_usage", "records": batch}).encode() + b"\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), REPLY_TIMEOUT_S)
        finally:
            writer.close()
        if not line:
            raise ValueError("the gateway closed the connection without an answer")
        reply = json.loads(line)
        if not isinstance(reply, dict) or reply.get("ok") is not True:
            error = reply.get("error") if isinstance(reply, dict) else None
            raise ValueError(f"the gateway refused the report: {str(error)[:200]}")
        stored = reply.get("stored")
        return stored if isinstance(stored, int) else 0
