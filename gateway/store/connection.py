"""The one SQLite connection every part of the store shares, and the two ways to write through it.

The gateway keeps a single aiosqlite connection: SQLite allows one writer at a time anyway, and
one connection lets ingest batch many messages into one commit. Sharing it between coroutines
needs one rule, kept here and nowhere else: every write goes through `Database._write` (one
autocommitted statement) or `Database._transaction` (`BEGIN IMMEDIATE` … `COMMIT`), and both take
the same lock, so one coroutine's statements never land inside another's open transaction.
Reads run without the lock: on one connection a read may see another coroutine's uncommitted
writes, so a read that must not (the wallet's spend total) takes the lock itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite


class StoreUnusable(Exception):
    """The database cannot be used as it is; the message says why and what to do."""


async def _check_integrity(conn: aiosqlite.Connection, path: Path) -> None:
    """`PRAGMA quick_check` (seconds on a large file, unlike integrity_check's minutes)."""
    fix = (
        "stop clawgate and restore the database from a backup (or move the file aside to"
        " start with an empty one)"
    )
    try:
        async with conn.execute("PRAGMA quick_check") as cur:
            rows = [str(row[0]) for row in await cur.fetchall()]
    except sqlite3.DatabaseError as exc:
        raise StoreUnusable(f"database {path} is corrupt or not a database ({exc}); {fix}") from None
    if rows != ["ok"]:
        raise StoreUnusable(f"database {path} is corrupt (quick_check: {'; '.join(rows[:3])[:300]}); {fix}")


async def connect(path: Path, *, create: bool = True) -> aiosqlite.Connection:
    """Open and check the database file; StoreUnusable says why it cannot be used.

    `synchronous=FULL`: with WAL, NORMAL may lose the last commits on a power cut,
    and those are messages already acknowledged to Telegram or Slack (invariant 7 of
    docs/ARCHITECTURE.md). Ingest commits in batches, so the extra fsync per batch
    costs little (`make bench`: ingest_msgs_per_s). A corrupt file is refused here, so
    the gateway never says "ready" and then fails on the first message.
    `isolation_level=None` leaves transactions to `Database._transaction`, never to the driver.
    """
    if not create and not await asyncio.to_thread(path.exists):
        raise StoreUnusable(f"no database at {path} yet (the first `clawgate run` creates it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        conn.row_factory = aiosqlite.Row
        await conn.execute("PRAGMA busy_timeout=5000")
        await _check_integrity(conn, path)
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=FULL")
        await conn.execute("PRAGMA foreign_keys=ON")
    except BaseException:
        await conn.close()
        raise
    return conn


class Database:
    """The shared connection, its write lock and the transaction helper every concern builds on."""

    def __init__(self, conn: aiosqlite.Connection, path: Path | None = None) -> None:
        self._conn = conn
        self._path = path
        # One connection is shared by every coroutine; the lock keeps one coroutine's
        # statements from landing inside another's open transaction.
        self._lock = asyncio.Lock()

    async def _write(self, sql: str, args: Iterable[object] = ()) -> aiosqlite.Cursor:
        """One autocommitted statement, kept out of any other coroutine's transaction."""
        async with self._lock:
            return await self._conn.execute(sql, tuple(args))

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """Everything inside commits together or not at all (rolled back on any exception).

        A task cancelled while it waits for BEGIN (or COMMIT) does not stop the statement: it is
        already queued on the connection's thread and runs anyway. So the end of a transaction
        is settled whatever interrupted it: ROLLBACK is queued behind whatever was sent (and
        shielded from a second cancellation); had nothing begun, it is a no-op. Left open, the
        one shared connection would refuse every later transaction of the gateway.
        """
        async with self._lock:
            try:
                await self._conn.execute("BEGIN IMMEDIATE")
                yield self._conn
                await self._conn.execute("COMMIT")
            except BaseException:
                await asyncio.shield(self._settle())
                raise

    async def _settle(self) -> None:
        """Roll back an open transaction; none open (BEGIN failed, COMMIT ran) is fine."""
        with contextlib.suppress(sqlite3.OperationalError):  # "no transaction is active"
            await self._conn.execute("ROLLBACK")

    async def schema_version(self) -> int:
        async with self._conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        assert row is not None  # a PRAGMA read always returns one row
        (version,) = row
        return int(version)

    async def check_writable(self) -> None:
        """Take the write lock and let it go: fails if the file or its directory is read-only."""
        async with self._transaction():
            pass

    async def close(self) -> None:
        await self._conn.close()
