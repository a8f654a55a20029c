"""The durable state of the gateway: one SQLite file in WAL mode, through aiosqlite.

Inbound messages are written with group commit: concurrent `ingest` calls are
batched into one transaction, and each caller returns only after that transaction
committed. That keeps invariant 7 (in the database before it is acknowledged) while
sustaining thousands of messages per second on one connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

from core.models import (
    Approval,
    ClaimedRun,
    Group,
    InboundMessage,
    MountRequest,
    OutboxEntry,
    ScheduledTask,
    StoredMessage,
    TaskRun,
    WalletDraft,
    WalletRequest,
)
from gateway.migration_backup import backup_before_migration
from gateway.wallet.decision import DaySpend, Decision

log = logging.getLogger(__name__)

# An outbox entry with this `seq` is a notice to the owner (a dead letter's `/retry` hint, a
# failure report). A notice that fails is dead-lettered silently: never a notice about a notice.
NOTICE_SEQ = -1


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


# Message lifecycle: stored (chat not registered) | bot (our own output) | context (no trigger)
# | pending (wants an answer) -> processing (claimed by a run) -> done | failed | skipped.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE chats (
        chat_id TEXT PRIMARY KEY,
        name TEXT NOT NULL DEFAULT '',
        channel TEXT NOT NULL,
        last_message_at REAL NOT NULL
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        chat_id TEXT NOT NULL,
        external_id TEXT NOT NULL,
        sender_id TEXT NOT NULL,
        sender_name TEXT NOT NULL,
        text TEXT NOT NULL,
        timestamp REAL NOT NULL,
        is_from_bot INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL,
        wants_reply INTEGER NOT NULL DEFAULT 0,
        run_id INTEGER,
        UNIQUE (chat_id, external_id)
    );
    CREATE INDEX messages_open ON messages (chat_id, status, id);
    CREATE TABLE groups (
        folder TEXT PRIMARY KEY,
        chat_id TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        trigger TEXT NOT NULL,
        requires_trigger INTEGER NOT NULL DEFAULT 1,
        is_main INTEGER NOT NULL DEFAULT 0,
        extra_mounts TEXT NOT NULL DEFAULT '[]',
        created_at REAL NOT NULL
    );
    CREATE UNIQUE INDEX groups_one_main ON groups (is_main) WHERE is_main = 1;
    CREATE TABLE sessions (
        folder TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        folder TEXT NOT NULL,
        status TEXT NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL,
        error TEXT
    );
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        run_id INTEGER,
        seq INTEGER NOT NULL,
        chat_id TEXT NOT NULL,
        text TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        sent_at REAL,
        UNIQUE (run_id, seq)
    );
    CREATE INDEX outbox_pending ON outbox (status, id);
    CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        ref TEXT NOT NULL,
        reason TEXT NOT NULL,
        payload TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL
    );
    """,
    # 2: scheduled tasks (gateway.scheduler) and the log of their runs.
    """
    CREATE TABLE tasks (
        id INTEGER PRIMARY KEY,
        folder TEXT NOT NULL,
        prompt TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('cron', 'interval', 'once')),
        spec TEXT NOT NULL,
        next_run_at REAL,
        anchor REAL,
        status TEXT NOT NULL DEFAULT 'active'
            CHECK (status IN ('active', 'paused', 'cancelled', 'done')),
        created_by TEXT NOT NULL,
        created_at REAL NOT NULL,
        last_run_at REAL,
        last_result TEXT
    );
    CREATE INDEX tasks_due ON tasks (status, next_run_at);
    CREATE INDEX tasks_folder ON tasks (folder, status);
    CREATE TABLE task_runs (
        id INTEGER PRIMARY KEY,
        task_id INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
        scheduled_for REAL NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL,
        duration REAL,
        status TEXT NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'ok', 'error')),
        result TEXT,
        error TEXT,
        message_id INTEGER,
        run_id INTEGER,
        UNIQUE (task_id, scheduled_for)
    );
    CREATE INDEX task_runs_message ON task_runs (message_id);
    """,
    # 3: approval prompts in the main chat (gateway.approvals); a row is decided exactly once.
    """
    CREATE TABLE approvals (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        details TEXT NOT NULL DEFAULT '',
        requester_group TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'approved', 'denied', 'expired')),
        decided_by TEXT,
        decided_at REAL,
        chat_id TEXT NOT NULL,
        message_ref TEXT
    );
    CREATE INDEX approvals_pending ON approvals (state, expires_at);
    """,
    # 4: wallet requests (gateway.wallet.service). The verdict and the spend it allows are one
    # row written in one transaction; `value` is yoctoNEAR as text (it exceeds int64).
    """
    CREATE TABLE wallet_requests (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at REAL NOT NULL,
        group_folder TEXT NOT NULL,
        key_name TEXT NOT NULL,
        signer_id TEXT NOT NULL,
        receiver_id TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('transaction', 'message')),
        summary TEXT NOT NULL,
        value TEXT NOT NULL DEFAULT '0',
        outcome TEXT NOT NULL CHECK (outcome IN ('auto_approve', 'needs_approval', 'deny')),
        reasons TEXT NOT NULL DEFAULT '[]',
        state TEXT NOT NULL
            CHECK (state IN ('denied', 'pending', 'signing', 'submitted', 'failed', 'rejected')),
        spend_day TEXT,
        approval_id TEXT,
        tx_hash TEXT,
        error TEXT,
        updated_at REAL NOT NULL
    );
    CREATE INDEX wallet_requests_spend ON wallet_requests (spend_day, state);
    CREATE INDEX wallet_requests_state ON wallet_requests (state);
    CREATE TABLE wallet_settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 5: the spend ledger sees fees and tokens (gateway.wallet.fees, gateway.wallet.tokens). `fee` is
    # yoctoNEAR: a reservation until the outcome is known, then what was burnt; `tokens` maps a
    # token contract to the base units moved. A transaction that failed on chain still counts
    # (`failed` with a spend day); one the node rejected before running it never did (the node's
    # rejection text starts "transaction rejected:") and gives its spend day up.
    """
    ALTER TABLE wallet_requests ADD COLUMN fee TEXT NOT NULL DEFAULT '0';
    ALTER TABLE wallet_requests ADD COLUMN tokens TEXT NOT NULL DEFAULT '{}';
    UPDATE wallet_requests SET spend_day = NULL
        WHERE state = 'failed' AND error LIKE 'transaction rejected:%';
    """,
]


_REOPEN = (
    "UPDATE messages SET run_id = NULL, "
    "status = CASE WHEN wants_reply = 1 THEN 'pending' ELSE 'context' END WHERE status = 'processing'"
)


_LATEST_TIMESTAMP = 253402300799.0  # 9999-12-31T23:59:59Z, the last second a prompt can show


def _valid_text(value: str) -> str:
    """`value` with lone UTF-16 surrogates (which a JSON `\\udXXX` escape can produce) as U+FFFD."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


def storable(message: InboundMessage) -> InboundMessage:
    """The message as it can be stored and later shown in a prompt, whatever a channel handed over.

    The batch is committed as one transaction, so a single unencodable string would fail the
    messages of every other group in it; and a time the prompt cannot render would fail every
    later run of the group. Both are repaired here, at the one door every message goes through.
    """
    fixes: dict[str, object] = {}
    for name in ("chat_id", "external_id", "sender_id", "sender_name", "text", "channel", "chat_name"):
        value = getattr(message, name)
        valid = _valid_text(value)
        if valid is not value:
            fixes[name] = valid
    if not (math.isfinite(message.timestamp) and 0 <= message.timestamp <= _LATEST_TIMESTAMP):
        fixes["timestamp"] = time.time()
    return dataclasses.replace(message, **fixes) if fixes else message  # type: ignore[arg-type]


class Store:
    """All reads and writes of the gateway's database."""

    def __init__(self, conn: aiosqlite.Connection, path: Path | None = None) -> None:
        self._conn = conn
        self._path = path
        self._batch: list[tuple[InboundMessage, str, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        # One connection is shared by every coroutine; the lock keeps one coroutine's
        # statements from landing inside another's open transaction.
        self._lock = asyncio.Lock()

    async def _write(self, sql: str, args: Iterable[object] = ()) -> aiosqlite.Cursor:
        """One autocommitted statement, kept out of any other coroutine's transaction."""
        async with self._lock:
            return await self._conn.execute(sql, tuple(args))

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            await self._conn.execute("COMMIT")

    @classmethod
    async def open(cls, path: Path, *, create: bool = True, migrate: bool = True) -> Store:
        """Open, check and migrate the database; StoreUnusable says why it cannot be used.

        `synchronous=FULL`: with WAL, NORMAL may lose the last commits on a power cut,
        and those are messages already acknowledged to Telegram or Slack (invariant 7 of
        docs/ARCHITECTURE.md). Ingest commits in batches, so the extra fsync per batch
        costs little (`make bench`: ingest_msgs_per_s). A corrupt file or one written by
        a newer clawgate is refused here, so the gateway never says "ready" and then
        fails on the first message.
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
            store = cls(conn, path)
            version = await store.schema_version()
            if version > len(MIGRATIONS):
                raise StoreUnusable(
                    f"database {path} has schema v{version}, written by a newer clawgate (this one"
                    f" knows up to v{len(MIGRATIONS)}); upgrade clawgate, or restore a backup made"
                    " by this version"
                )
            if migrate:
                await store._migrate()
        except BaseException:
            await conn.close()
            raise
        return store

    async def schema_version(self) -> int:
        async with self._conn.execute("PRAGMA user_version") as cur:
            (version,) = await cur.fetchone()  # type: ignore[misc]
        return int(version)

    async def check_writable(self) -> None:
        """Take the write lock and let it go: fails if the file or its directory is read-only."""
        async with self._transaction():
            pass

    async def close(self) -> None:
        if self._flusher is not None:
            await self._flusher
        await self._conn.close()

    async def _migrate(self) -> None:
        """Apply the missing migrations, after copying a database that has data to backups/.

        A database at v0 is new and empty; anything older than the latest version holds the
        operator's data, which the copy lets them get back if the new version misbehaves.
        """
        async with self._conn.execute("PRAGMA user_version") as cur:
            (version,) = await cur.fetchone()  # type: ignore[misc]
        if 0 < version < len(MIGRATIONS) and self._path is not None:
            try:
                copy = await asyncio.to_thread(backup_before_migration, self._path, version)
            except (OSError, sqlite3.Error) as exc:
                raise StoreUnusable(
                    f"database {self._path} needs migrating from v{version} to v{len(MIGRATIONS)}, but"
                    f" the backup taken first failed ({exc}); free disk space in {self._path.parent}"
                    " and start again"
                ) from None
            log.warning(
                "database schema v%d -> v%d; the old database is kept at %s", version, len(MIGRATIONS), copy
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await self._conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")

    # -- inbound messages -------------------------------------------------------------

    async def ingest(self, message: InboundMessage, status: str) -> None:
        """Persist one inbound message; returns only once it is committed (group commit)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._batch.append((storable(message), status, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        while self._batch:
            batch, self._batch = self._batch, []
            try:
                await self._write_batch([(m, s) for m, s, _ in batch])
            except Exception as exc:  # every waiter learns the batch did not land
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for _, _, future in batch:
                if not future.done():
                    future.set_result(None)

    async def _write_batch(self, batch: list[tuple[InboundMessage, str]]) -> None:
        chats: dict[str, tuple[str, str, str, float]] = {}
        for message, _ in batch:
            chats[message.chat_id] = (message.chat_id, message.chat_name, message.channel, message.timestamp)
        async with self._transaction():
            await self._conn.executemany(
                "INSERT INTO chats (chat_id, name, channel, last_message_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (chat_id) DO UPDATE SET last_message_at = excluded.last_message_at, "
                "name = CASE WHEN excluded.name != '' THEN excluded.name ELSE chats.name END",
                chats.values(),
            )
            await self._conn.executemany(
                "INSERT OR IGNORE INTO messages (chat_id, external_id, sender_id, sender_name, text, "
                "timestamp, is_from_bot, status, wants_reply) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        m.chat_id,
                        m.external_id,
                        m.sender_id,
                        m.sender_name,
                        m.text,
                        m.timestamp,
                        int(m.is_from_bot),
                        status,
                        int(status == "pending"),
                    )
                    for m, status in batch
                ],
            )

    async def count_messages(self, status: str | None = None) -> int:
        query, args = "SELECT COUNT(*) FROM messages", ()
        if status is not None:
            query, args = query + " WHERE status = ?", (status,)
        async with self._conn.execute(query, args) as cur:
            (count,) = await cur.fetchone()  # type: ignore[misc]
        return int(count)

    async def messages_for_chat(self, chat_id: str) -> list[StoredMessage]:
        async with self._conn.execute(
            "SELECT id, chat_id, sender_name, text, timestamp, status FROM messages "
            "WHERE chat_id = ? ORDER BY id",
            (chat_id,),
        ) as cur:
            return [StoredMessage(*row) for row in await cur.fetchall()]

    async def chats_with_pending(self) -> list[str]:
        async with self._conn.execute(
            "SELECT DISTINCT chat_id FROM messages WHERE status = 'pending'"
        ) as cur:
            return [row[0] for row in await cur.fetchall()]

    async def prune_messages(
        self, *, closed_before: float | None, unregistered_before: float | None, keep_last: int
    ) -> tuple[int, int]:
        """Retention (gateway.retention): return (bodies emptied, rows deleted), in one transaction.

        Only closed messages are touched (done, skipped, our own `bot` lines, and `stored` ones of
        unregistered chats); pending, processing and context messages are what the next turn
        needs, and failed ones are what `/retry` revives, so they are never touched. The newest
        `keep_last` messages of each chat are kept whatever their age. Registered chats keep
        their rows (with '' as text), so a redelivered update is still recognised as a
        duplicate; rows of unregistered chats are deleted unless a task run points at them.
        """
        closed = "('done', 'skipped', 'bot', 'stored')"
        recent = (
            "id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER"
            " (PARTITION BY chat_id ORDER BY id DESC) AS n FROM messages) WHERE n <= ?)"
        )
        emptied = deleted = 0
        async with self._transaction():
            if unregistered_before is not None:
                cur = await self._conn.execute(
                    f"DELETE FROM messages WHERE status IN {closed} AND timestamp < ?"
                    " AND chat_id NOT IN (SELECT chat_id FROM groups)"
                    " AND id NOT IN (SELECT message_id FROM task_runs WHERE message_id IS NOT NULL)"
                    f" AND NOT {recent}",
                    (unregistered_before, keep_last),
                )
                deleted = cur.rowcount
            if closed_before is not None:
                cur = await self._conn.execute(
                    f"UPDATE messages SET text = '' WHERE status IN {closed} AND timestamp < ?"
                    f" AND text != '' AND NOT {recent}",
                    (closed_before, keep_last),
                )
                emptied = cur.rowcount
                cur = await self._conn.execute(
                    "UPDATE outbox SET text = '' WHERE status = 'sent' AND sent_at < ? AND text != ''",
                    (closed_before,),
                )
                emptied += cur.rowcount
        return emptied, deleted

    # -- groups ------------------------------------------------------------------------

    async def register_group(self, group: Group) -> None:
        await self._write(
            "INSERT INTO groups (folder, chat_id, name, trigger, requires_trigger, is_main, "
            "extra_mounts, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                group.folder,
                group.chat_id,
                group.name,
                group.trigger,
                int(group.requires_trigger),
                int(group.is_main),
                _mounts_to_json(group.extra_mounts),
                time.time(),
            ),
        )

    async def move_group_chat(self, folder: str, chat_id: str) -> None:
        await self._write("UPDATE groups SET chat_id = ? WHERE folder = ?", (chat_id, folder))

    async def unregister_group(self, folder: str) -> bool:
        cur = await self._write("DELETE FROM groups WHERE folder = ?", (folder,))
        return cur.rowcount > 0

    async def groups(self) -> list[Group]:
        async with self._conn.execute(
            "SELECT folder, chat_id, name, trigger, requires_trigger, is_main, extra_mounts "
            "FROM groups ORDER BY is_main DESC, folder"
        ) as cur:
            return [
                Group(*row[:4], bool(row[4]), bool(row[5]), _mounts_from_json(row[0], row[6]))
                for row in await cur.fetchall()
            ]

    async def set_group_mounts(self, folder: str, requests: Iterable[MountRequest]) -> None:
        await self._write(
            "UPDATE groups SET extra_mounts = ? WHERE folder = ?", (_mounts_to_json(requests), folder)
        )

    async def chats(self) -> list[tuple[str, str, str, float]]:
        async with self._conn.execute(
            "SELECT chat_id, name, channel, last_message_at FROM chats ORDER BY last_message_at DESC"
        ) as cur:
            return [tuple(row) for row in await cur.fetchall()]  # type: ignore[misc]

    # -- runs --------------------------------------------------------------------------

    async def claim_run(self, group: Group, context_limit: int) -> ClaimedRun | None:
        """Atomically turn a group's open messages into one run, or None if nothing asks for one.

        All pending messages are claimed; untriggered context messages before the last
        pending one are included up to `context_limit` (newest kept), older ones skipped.
        """
        async with self._transaction():
            async with self._conn.execute(
                "SELECT id, chat_id, sender_name, text, timestamp, status FROM messages "
                "WHERE chat_id = ? AND status IN ('pending', 'context') ORDER BY id",
                (group.chat_id,),
            ) as cur:
                rows = [StoredMessage(*row) for row in await cur.fetchall()]
            pending = [m for m in rows if m.status == "pending"]
            if not pending:
                return None
            last_pending = pending[-1].id
            context = [m for m in rows if m.status == "context" and m.id < last_pending]
            kept_context = context[-context_limit:] if context_limit else []
            skipped = context[: len(context) - len(kept_context)]
            batch = sorted(pending + kept_context, key=lambda m: m.id)
            cur = await self._conn.execute(
                "INSERT INTO runs (folder, status, started_at) VALUES (?, 'running', ?)",
                (group.folder, time.time()),
            )
            run_id = int(cur.lastrowid or 0)
            await self._conn.executemany(
                "UPDATE messages SET status = 'processing', run_id = ? WHERE id = ?",
                [(run_id, m.id) for m in batch],
            )
            await self._conn.executemany(
                "UPDATE messages SET status = 'skipped' WHERE id = ?", [(m.id,) for m in skipped]
            )
        return ClaimedRun(run_id, group, batch)

    async def finish_run(self, run_id: int, error: str | None = None) -> None:
        """Close a run and its messages in one transaction."""
        status = "failed" if error else "done"
        async with self._transaction():
            await self._conn.execute(
                "UPDATE runs SET status = ?, finished_at = ?, error = ? WHERE id = ?",
                (status, time.time(), error, run_id),
            )
            await self._conn.execute(
                "UPDATE messages SET status = ? WHERE run_id = ? AND status = 'processing'",
                (status, run_id),
            )

    async def release_run(self, run_id: int, reason: str) -> None:
        """Give a run's messages back (infrastructure was down); they are answered on the next try."""
        async with self._transaction():
            await self._conn.execute(
                "UPDATE runs SET status = 'deferred', finished_at = ?, error = ? WHERE id = ?",
                (time.time(), reason, run_id),
            )
            await self._conn.execute(_REOPEN + " AND run_id = ?", (run_id,))

    async def consecutive_deferred(self, folder: str) -> int:
        """How many runs of this group in a row ended in a transient failure (the attempt count)."""
        async with self._conn.execute(
            "SELECT status FROM runs WHERE folder = ? AND status != 'running' ORDER BY id DESC LIMIT 100",
            (folder,),
        ) as cur:
            statuses = [row[0] for row in await cur.fetchall()]
        count = 0
        for status in statuses:
            if status != "deferred":
                break
            count += 1
        return count

    async def dead_letter_pending(self, group: Group, reason: str) -> int:
        """Move a group's open messages to the dead-letter table, atomically; returns the letter id."""
        async with self._transaction():
            async with self._conn.execute(
                "SELECT id FROM messages WHERE chat_id = ? AND status = 'pending' ORDER BY id",
                (group.chat_id,),
            ) as cur:
                ids = [row[0] for row in await cur.fetchall()]
            await self._conn.execute(
                "UPDATE messages SET status = 'dead' WHERE chat_id = ? AND status = 'pending'",
                (group.chat_id,),
            )
            await self._conn.execute(
                "INSERT INTO runs (folder, status, started_at, finished_at, error) "
                "VALUES (?, 'dead', ?, ?, ?)",
                (group.folder, time.time(), time.time(), reason),
            )
            cur = await self._conn.execute(
                "INSERT INTO dead_letters (kind, ref, reason, payload, created_at) "
                "VALUES ('run', ?, ?, ?, ?)",
                (
                    group.folder,
                    reason,
                    json.dumps({"message_ids": ids, "chat_id": group.chat_id}),
                    time.time(),
                ),
            )
            return int(cur.lastrowid or 0)

    async def revive_messages(self, message_ids: list[int]) -> int:
        """Dead messages back to pending (an admin's /retry)."""
        async with self._transaction():
            cur = await self._conn.executemany(
                "UPDATE messages SET status = 'pending', run_id = NULL WHERE id = ? AND status = 'dead'",
                [(i,) for i in message_ids],
            )
            return cur.rowcount

    async def recover_interrupted(self) -> int:
        """After a crash, give messages of unfinished runs back to the queue; returns how many.

        A run whose final reply already reached the outbox is complete (the outbox delivers
        or dead-letters it); re-running it would answer the same messages twice.
        """
        answered = (
            "SELECT run_id FROM outbox WHERE seq = 0 AND run_id IS NOT NULL AND run_id IN "
            "(SELECT id FROM runs WHERE status = 'running')"
        )
        async with self._transaction():
            await self._conn.execute(
                f"UPDATE messages SET status = 'done' WHERE status = 'processing' AND run_id IN ({answered})"
            )
            await self._conn.execute(
                f"UPDATE runs SET status = 'done', finished_at = ? WHERE id IN ({answered})", (time.time(),)
            )
            cur = await self._conn.execute(_REOPEN)
            count = cur.rowcount
            await self._conn.execute(
                "UPDATE runs SET status = 'interrupted', finished_at = ? WHERE status = 'running'",
                (time.time(),),
            )
        return count

    async def run_status(self, run_id: int) -> tuple[str, str | None]:
        async with self._conn.execute("SELECT status, error FROM runs WHERE id = ?", (run_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            raise KeyError(run_id)
        return row[0], row[1]

    async def run_started_at(self, run_id: int) -> float | None:
        """When a run was claimed (its turn latency is measured from here, gateway.metrics)."""
        async with self._conn.execute("SELECT started_at FROM runs WHERE id = ?", (run_id,)) as cur:
            row = await cur.fetchone()
        return None if row is None else float(row[0])

    async def stats(self) -> dict[str, dict[str, int]]:
        """Counts for /metrics: messages by status, open dead letters by kind, approvals by state.

        Read-only and cheap (indexed or small tables); it doubles as the health probe of the store.
        """
        queries = {
            "messages": "SELECT status, COUNT(*) FROM messages WHERE status IN "
            "('pending', 'processing', 'dead') GROUP BY status",
            "dead_letters": "SELECT kind, COUNT(*) FROM dead_letters GROUP BY kind",
            "approvals": "SELECT state, COUNT(*) FROM approvals GROUP BY state",
        }
        result: dict[str, dict[str, int]] = {}
        for name, sql in queries.items():
            async with self._conn.execute(sql) as cur:
                result[name] = {str(key): int(count) for key, count in await cur.fetchall()}
        return result

    # -- sessions ----------------------------------------------------------------------

    async def set_session(self, folder: str, session_id: str) -> None:
        await self._write(
            "INSERT INTO sessions (folder, session_id, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (folder) DO UPDATE SET session_id = excluded.session_id, "
            "updated_at = excluded.updated_at",
            (folder, session_id, time.time()),
        )

    async def session(self, folder: str) -> str | None:
        async with self._conn.execute("SELECT session_id FROM sessions WHERE folder = ?", (folder,)) as cur:
            row = await cur.fetchone()
        return None if row is None else str(row[0])

    # -- outbox ------------------------------------------------------------------------

    async def enqueue_notice(self, chat_id: str, text: str) -> int:
        """A notice to the owner: an outbox entry that is never itself the subject of a notice."""
        cur = await self._write(
            "INSERT INTO outbox (run_id, seq, chat_id, text, created_at) VALUES (NULL, ?, ?, ?, ?)",
            (NOTICE_SEQ, chat_id, text, time.time()),
        )
        return int(cur.lastrowid or 0)

    async def enqueue_reply(self, run_id: int | None, seq: int, chat_id: str, text: str) -> int | None:
        """Record a reply before sending it; a second call for the same (run, seq) is a no-op."""
        cur = await self._write(
            "INSERT OR IGNORE INTO outbox (run_id, seq, chat_id, text, created_at) VALUES (?, ?, ?, ?, ?)",
            (run_id, seq, chat_id, text, time.time()),
        )
        return int(cur.lastrowid) if cur.rowcount else None

    async def pending_outbox(self, ids: Iterable[int] | None = None) -> list[OutboxEntry]:
        query = "SELECT id, run_id, chat_id, text, attempts FROM outbox WHERE status = 'pending'"
        args: tuple[int, ...] = ()
        if ids is not None:
            id_list = tuple(ids)
            query += f" AND id IN ({','.join('?' * len(id_list))})"
            args = id_list
        async with self._conn.execute(query + " ORDER BY id", args) as cur:
            return [OutboxEntry(*row) for row in await cur.fetchall()]

    async def claim_outbox(self, entry_id: int) -> bool:
        """Take an entry for sending exactly once: pending -> sending, atomically.

        `sending` still means "not handed to the network": a crash now leaves a reply that
        never left the process (it may be waiting in a channel's local rate limiter), and
        `requeue_unhanded_replies` sends it normally after the restart.
        """
        cur = await self._write(
            "UPDATE outbox SET status = 'sending', attempts = attempts + 1 "
            "WHERE id = ? AND status = 'pending'",
            (entry_id,),
        )
        return cur.rowcount == 1

    async def mark_outbox_handed(self, entry_id: int) -> None:
        """Committed right before the request is written to the network: from here on the
        platform may have the reply, so a crash or an ambiguous answer must not resend it."""
        await self._write(
            "UPDATE outbox SET status = 'handed' WHERE id = ? AND status = 'sending'", (entry_id,)
        )

    async def settle_outbox(self, entry_id: int, sent: bool) -> None:
        """`sent=False` is only for a send proven not accepted (it goes back to pending)."""
        if sent:
            await self._write(
                "UPDATE outbox SET status = 'sent', sent_at = ? WHERE id = ?", (time.time(), entry_id)
            )
        else:
            await self._write("UPDATE outbox SET status = 'pending' WHERE id = ?", (entry_id,))

    async def dead_letter_reply(self, entry_id: int, reason: str) -> int:
        letter, _ = await self.dead_letter_reply_with_notice(entry_id, reason, None)
        return letter

    async def dead_letter_reply_with_notice(
        self, entry_id: int, reason: str, notice: Callable[[int], tuple[str, str]] | None
    ) -> tuple[int, int | None]:
        """Dead-letter an outbox entry; `notice(letter_id) -> (chat_id, text)` is enqueued in the
        same transaction, so each dead letter gets exactly one notice, even across a crash.
        Returns (dead letter id, notice's outbox id)."""
        async with self._transaction():
            await self._conn.execute("UPDATE outbox SET status = 'dead' WHERE id = ?", (entry_id,))
            cur = await self._conn.execute(
                "INSERT INTO dead_letters (kind, ref, reason, payload, created_at) "
                "VALUES ('reply', ?, ?, ?, ?)",
                (str(entry_id), reason, json.dumps({"outbox_id": entry_id}), time.time()),
            )
            letter = int(cur.lastrowid or 0)
            if notice is None:
                return letter, None
            chat_id, text = notice(letter)
            cur = await self._conn.execute(
                "INSERT INTO outbox (run_id, seq, chat_id, text, created_at) VALUES (NULL, ?, ?, ?, ?)",
                (NOTICE_SEQ, chat_id, text, time.time()),
            )
            return letter, int(cur.lastrowid or 0)

    async def is_notice(self, entry_id: int) -> bool:
        async with self._conn.execute("SELECT seq FROM outbox WHERE id = ?", (entry_id,)) as cur:
            row = await cur.fetchone()
        return row is not None and row[0] == NOTICE_SEQ

    async def requeue_unhanded_replies(self) -> int:
        """After a crash: entries claimed but never handed to the network go back to pending."""
        cur = await self._write("UPDATE outbox SET status = 'pending' WHERE status = 'sending'")
        return cur.rowcount

    async def handed_replies(self) -> list[tuple[int, str, bool]]:
        """Entries whose send may have reached the platform when the gateway stopped."""
        async with self._conn.execute(
            "SELECT id, chat_id, seq FROM outbox WHERE status = 'handed' ORDER BY id"
        ) as cur:
            return [(row[0], row[1], row[2] == NOTICE_SEQ) for row in await cur.fetchall()]

    async def revive_reply(self, entry_id: int) -> bool:
        cur = await self._write(
            "UPDATE outbox SET status = 'pending', attempts = 0 WHERE id = ? AND status = 'dead'", (entry_id,)
        )
        return cur.rowcount == 1

    async def outbox_for_chat(self, chat_id: str) -> list[tuple[str, str]]:
        async with self._conn.execute(
            "SELECT text, status FROM outbox WHERE chat_id = ? ORDER BY id", (chat_id,)
        ) as cur:
            return [(row[0], row[1]) for row in await cur.fetchall()]

    # -- dead letters ------------------------------------------------------------------

    async def add_dead_letter(self, kind: str, ref: str, reason: str, payload: dict[str, object]) -> None:
        await self._write(
            "INSERT INTO dead_letters (kind, ref, reason, payload, created_at) VALUES (?, ?, ?, ?, ?)",
            (kind, ref, reason, json.dumps(payload), time.time()),
        )

    async def dead_letter(self, letter_id: int) -> tuple[str, str, dict[str, object]] | None:
        async with self._conn.execute(
            "SELECT kind, ref, payload FROM dead_letters WHERE id = ?", (letter_id,)
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else (row[0], row[1], json.loads(row[2]))

    async def drop_dead_letter(self, letter_id: int) -> bool:
        cur = await self._write("DELETE FROM dead_letters WHERE id = ?", (letter_id,))
        return cur.rowcount > 0

    async def dead_letters(self) -> list[tuple[int, str, str, str]]:
        async with self._conn.execute("SELECT id, kind, ref, reason FROM dead_letters ORDER BY id") as cur:
            return [tuple(row) for row in await cur.fetchall()]  # type: ignore[misc]

    # -- tasks (gateway.scheduler) -------------------------------------------------------

    async def add_task(
        self,
        folder: str,
        prompt: str,
        kind: str,
        spec: str,
        next_run_at: float,
        anchor: float | None,
        created_by: str,
        created_at: float,
    ) -> int:
        cur = await self._write(
            "INSERT INTO tasks (folder, prompt, kind, spec, next_run_at, anchor, created_by, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (folder, prompt, kind, spec, next_run_at, anchor, created_by, created_at),
        )
        return int(cur.lastrowid or 0)

    async def task(self, task_id: int) -> ScheduledTask | None:
        async with self._conn.execute(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,)) as cur:
            row = await cur.fetchone()
        return None if row is None else ScheduledTask(*row)

    async def tasks(
        self, folder: str | None = None, statuses: Iterable[str] | None = None
    ) -> list[ScheduledTask]:
        """Tasks of one group (None = all), optionally only those in `statuses`, oldest first."""
        query, args = f"SELECT {_TASK_COLUMNS} FROM tasks WHERE 1 = 1", []
        if folder is not None:
            query += " AND folder = ?"
            args.append(folder)
        if statuses is not None:
            wanted = list(statuses)
            query += f" AND status IN ({','.join('?' * len(wanted))})"
            args.extend(wanted)
        async with self._conn.execute(query + " ORDER BY id", args) as cur:
            return [ScheduledTask(*row) for row in await cur.fetchall()]

    async def set_task_status(self, task_id: int, status: str, next_run_at: float | None) -> bool:
        cur = await self._write(
            "UPDATE tasks SET status = ?, next_run_at = ? WHERE id = ?", (status, next_run_at, task_id)
        )
        return cur.rowcount == 1

    async def advance_task(
        self, task_id: int, slot: float, next_run_at: float | None, fired_at: float
    ) -> bool:
        """After firing `slot`: move to the next slot (None = a one-off, now done).

        Conditional on the row still being active at that slot, so a pause or cancel written
        meanwhile (e.g. by the CLI) is never overwritten.
        """
        cur = await self._write(
            "UPDATE tasks SET next_run_at = ?, last_run_at = ?, "
            "status = CASE WHEN ? IS NULL THEN 'done' ELSE status END "
            "WHERE id = ? AND status = 'active' AND next_run_at = ?",
            (next_run_at, fired_at, next_run_at, task_id, slot),
        )
        return cur.rowcount == 1

    async def start_task_run(self, task_id: int, scheduled_for: float, started_at: float) -> TaskRun:
        """The log row for one firing; idempotent per (task, slot) so a replay after a crash reuses it."""
        async with self._transaction():
            await self._conn.execute(
                "INSERT OR IGNORE INTO task_runs (task_id, scheduled_for, started_at) VALUES (?, ?, ?)",
                (task_id, scheduled_for, started_at),
            )
            async with self._conn.execute(
                f"SELECT {_TASK_RUN_COLUMNS} FROM task_runs WHERE task_id = ? AND scheduled_for = ?",
                (task_id, scheduled_for),
            ) as cur:
                row = await cur.fetchone()
        return TaskRun(*row)  # type: ignore[misc]

    async def link_task_run(self, task_run_id: int, chat_id: str, external_id: str) -> None:
        """Tie a firing to the chat message that carries its prompt, so the run's end can be logged."""
        await self._write(
            "UPDATE task_runs SET message_id = "
            "(SELECT id FROM messages WHERE chat_id = ? AND external_id = ?) WHERE id = ?",
            (chat_id, external_id, task_run_id),
        )

    async def finish_task_run(
        self,
        task_run_id: int,
        result: str | None,
        error: str | None,
        duration: float,
        run_id: int | None = None,
    ) -> None:
        now = time.time()
        async with self._transaction():
            await self._finish_task_run(task_run_id, result, error, now, duration, run_id)

    async def finish_task_runs_of_run(
        self, run_id: int, message_ids: Iterable[int], result: str | None, error: str | None
    ) -> list[int]:
        """A run ended: log it for every task firing whose message it answered; returns their task ids."""
        ids = list(message_ids)
        if not ids:
            return []
        now = time.time()
        async with self._transaction():
            async with self._conn.execute(
                f"SELECT id, task_id FROM task_runs WHERE status = 'running' "
                f"AND message_id IN ({','.join('?' * len(ids))})",
                ids,
            ) as cur:
                firings = [(row[0], row[1]) for row in await cur.fetchall()]
            if not firings:
                return []
            async with self._conn.execute("SELECT started_at FROM runs WHERE id = ?", (run_id,)) as cur:
                row = await cur.fetchone()
            duration = max(0.0, now - row[0]) if row is not None else 0.0
            for task_run_id, _ in firings:
                await self._finish_task_run(task_run_id, result, error, now, duration, run_id)
        return [task_id for _, task_id in firings]

    async def _finish_task_run(
        self,
        task_run_id: int,
        result: str | None,
        error: str | None,
        finished_at: float,
        duration: float,
        run_id: int | None,
    ) -> None:
        """Inside a transaction: close the log row and copy the outcome onto the task."""
        status = "error" if error else "ok"
        await self._conn.execute(
            "UPDATE task_runs SET status = ?, result = ?, error = ?, finished_at = ?, duration = ?, "
            "run_id = COALESCE(?, run_id) WHERE id = ?",
            (status, result, error, finished_at, duration, run_id, task_run_id),
        )
        summary = f"error: {error}" if error else (result or "")
        await self._conn.execute(
            "UPDATE tasks SET last_result = ? WHERE id = (SELECT task_id FROM task_runs WHERE id = ?)",
            (summary[:2000], task_run_id),
        )

    async def task_runs(self, task_id: int) -> list[TaskRun]:
        async with self._conn.execute(
            f"SELECT {_TASK_RUN_COLUMNS} FROM task_runs WHERE task_id = ? ORDER BY scheduled_for, id",
            (task_id,),
        ) as cur:
            return [TaskRun(*row) for row in await cur.fetchall()]

    # -- approvals (gateway.approvals) ---------------------------------------------------

    async def create_approval(self, approval: Approval) -> None:
        await self._write(
            f"INSERT INTO approvals ({_APPROVAL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                approval.id,
                approval.title,
                approval.details,
                approval.requester_group,
                approval.created_at,
                approval.expires_at,
                approval.state,
                approval.decided_by,
                approval.decided_at,
                approval.chat_id,
                approval.message_ref,
            ),
        )

    async def approval(self, approval_id: str) -> Approval | None:
        async with self._conn.execute(
            f"SELECT {_APPROVAL_COLUMNS} FROM approvals WHERE id = ?", (approval_id,)
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else Approval(*row)

    async def pending_approvals(self) -> list[Approval]:
        async with self._conn.execute(
            f"SELECT {_APPROVAL_COLUMNS} FROM approvals WHERE state = 'pending' ORDER BY expires_at, id"
        ) as cur:
            return [Approval(*row) for row in await cur.fetchall()]

    async def set_approval_ref(self, approval_id: str, ref: str) -> None:
        """Where the channel posted the prompt, so it can be edited after a restart."""
        await self._write("UPDATE approvals SET message_ref = ? WHERE id = ?", (ref, approval_id))

    async def decide_approval(self, approval_id: str, state: str, by: str | None, at: float) -> bool:
        """`pending -> state`, exactly once: False if the approval was already decided (or is unknown)."""
        if state not in ("approved", "denied", "expired"):
            raise ValueError(f"not a decision: {state!r}")
        async with self._transaction():
            cur = await self._conn.execute(
                "UPDATE approvals SET state = ?, decided_by = ?, decided_at = ? "
                "WHERE id = ? AND state = 'pending'",
                (state, by, at, approval_id),
            )
            return cur.rowcount == 1

    # -- wallet (gateway.wallet.service) -------------------------------------------------

    async def _wallet_spent(self, day: str) -> DaySpend:
        near = 0
        tokens: dict[str, int] = {}
        async with self._conn.execute(
            "SELECT value, fee, tokens FROM wallet_requests "
            f"WHERE spend_day = ? AND state IN {_SPENDING_SQL}",
            (day,),
        ) as cur:
            for value, fee, moved in await cur.fetchall():
                near += int(value) + int(fee)
                for contract, amount in json.loads(moved).items():
                    tokens[contract] = tokens.get(contract, 0) + int(amount)
        return DaySpend(near, tokens)

    async def wallet_spent(self, day: str) -> int:
        """yoctoNEAR (value and fees) counted against the daily limit on UTC `day` (YYYY-MM-DD)."""
        async with self._lock:
            return (await self._wallet_spent(day)).near

    async def wallet_day(self, day: str) -> DaySpend:
        """Everything counted against the daily limits on UTC `day`: NEAR and each token's base units."""
        async with self._lock:
            return await self._wallet_spent(day)

    async def wallet_decide(
        self, draft: WalletDraft, decide: Callable[[DaySpend], Decision], day: str, now: float
    ) -> tuple[int, Decision, DaySpend]:
        """Record `decide(spent_today)` and, if it signs, the spend — in one write transaction.

        The verdict is computed *inside* the transaction, so two concurrent requests see each
        other's spend and together cannot pass the daily limit. Returns (id, verdict, spent).
        """
        async with self._transaction() as conn:
            spent = await self._wallet_spent(day)
            verdict = decide(spent)
            state = _STATE_OF_OUTCOME[verdict.outcome]
            cur = await conn.execute(
                "INSERT INTO wallet_requests (created_at, group_folder, key_name, signer_id, receiver_id, "
                "kind, summary, value, outcome, reasons, state, spend_day, updated_at, fee, tokens) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    now,
                    draft.group_folder,
                    draft.key_name,
                    draft.signer_id,
                    draft.receiver_id,
                    draft.kind,
                    draft.summary,
                    str(draft.value),
                    verdict.outcome,
                    json.dumps(list(verdict.reasons)),
                    state,
                    day if verdict.signs else None,
                    now,
                    str(draft.fee),
                    _tokens_json(draft.tokens),
                ),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid, verdict, spent

    async def wallet_clear_approved(
        self,
        request_id: int,
        value: int,
        decide: Callable[[DaySpend], Decision],
        day: str,
        now: float,
        *,
        fee: int = 0,
        tokens: Mapping[str, int] | None = None,
    ) -> tuple[Decision, DaySpend] | None:
        """The owner approved a pending request: re-check it against today's spend, atomically.

        `value`, `fee` and `tokens` are the re-analyzed charges (the transaction is rebuilt with a
        fresh nonce and gas price).
        None if the request is no longer pending (decided, or cancelled by a restart).
        """
        async with self._transaction() as conn:
            async with conn.execute("SELECT state FROM wallet_requests WHERE id = ?", (request_id,)) as cur:
                row = await cur.fetchone()
            if row is None or row[0] != "pending":
                return None
            spent = await self._wallet_spent(day)
            verdict = decide(spent)
            state = "signing" if verdict.signs else "denied"
            await conn.execute(
                "UPDATE wallet_requests SET state = ?, value = ?, spend_day = ?, reasons = ?, "
                "error = ?, updated_at = ?, fee = ?, tokens = ? WHERE id = ?",
                (
                    state,
                    str(value),
                    day if verdict.signs else None,
                    json.dumps(list(verdict.reasons)),
                    None if verdict.signs else "; ".join(verdict.reasons),
                    now,
                    str(fee),
                    _tokens_json(tokens or {}),
                    request_id,
                ),
            )
            return verdict, spent

    async def wallet_settle(
        self,
        request_id: int,
        state: str,
        now: float,
        *,
        tx_hash: str | None = None,
        error: str | None = None,
        only_from: tuple[str, ...] | None = None,
        fee: int | None = None,
        release: bool = False,
    ) -> bool:
        """Move a request to `state` (optionally only from one of `only_from`); False if it did not move.

        `fee` replaces the reserved fee with the one burnt; `release` gives the spend up (the
        transaction never ran: nothing left the account).
        """
        sql = (
            "UPDATE wallet_requests SET state = ?, tx_hash = COALESCE(?, tx_hash), error = ?, "
            "updated_at = ?, fee = COALESCE(?, fee)"
            + (", spend_day = NULL" if release else "")
            + " WHERE id = ?"
        )
        args: list[object] = [state, tx_hash, error, now, None if fee is None else str(fee), request_id]
        if only_from:
            sql += f" AND state IN ({', '.join('?' for _ in only_from)})"
            args.extend(only_from)
        cur = await self._write(sql, args)
        return cur.rowcount == 1

    async def wallet_set_approval(self, request_id: int, approval_id: str) -> None:
        await self._write(
            "UPDATE wallet_requests SET approval_id = ? WHERE id = ?", (approval_id, request_id)
        )

    async def wallet_request(self, request_id: int) -> WalletRequest | None:
        async with self._conn.execute(
            f"SELECT {_WALLET_COLUMNS} FROM wallet_requests WHERE id = ?", (request_id,)
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else _wallet_request(row)

    async def wallet_requests(self, state: str | None = None, limit: int = 50) -> list[WalletRequest]:
        """Most recent first."""
        where, args = ("WHERE state = ?", (state, limit)) if state else ("", (limit,))
        async with self._conn.execute(
            f"SELECT {_WALLET_COLUMNS} FROM wallet_requests {where} ORDER BY id DESC LIMIT ?", args
        ) as cur:
            return [_wallet_request(row) for row in await cur.fetchall()]

    async def wallet_settings(self) -> dict[str, str]:
        """Policy overrides set with `/policy set` (JSON-encoded values by setting name)."""
        async with self._conn.execute("SELECT name, value FROM wallet_settings ORDER BY name") as cur:
            return {str(name): str(value) for name, value in await cur.fetchall()}

    async def set_wallet_setting(self, name: str, value: str | None) -> None:
        if value is None:
            await self._write("DELETE FROM wallet_settings WHERE name = ?", (name,))
        else:
            await self._write(
                "INSERT INTO wallet_settings (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, value),
            )


# States whose value counts against the daily limit on its spend day: cleared to sign, signed and
# submitted, or failed on chain (a failed transaction still burnt gas, and the wallet does not
# trust a refund it did not see). A request the node rejected unexecuted releases its spend day.
SPENDING_STATES = ("signing", "submitted", "failed")
_SPENDING_SQL = "('signing', 'submitted', 'failed')"
_STATE_OF_OUTCOME = {"auto_approve": "signing", "needs_approval": "pending", "deny": "denied"}

_WALLET_COLUMNS = (
    "id, created_at, group_folder, key_name, signer_id, receiver_id, kind, summary, value, outcome, "
    "reasons, state, spend_day, approval_id, tx_hash, error, updated_at, fee, tokens"
)


def _wallet_request(row: Iterable[object]) -> WalletRequest:
    values = list(row)
    values[8] = int(str(values[8]))
    values[10] = tuple(json.loads(str(values[10])))
    values[17] = int(str(values[17]))
    values[18] = {str(k): int(v) for k, v in json.loads(str(values[18])).items()}
    return WalletRequest(*values)  # type: ignore[arg-type]


def _tokens_json(tokens: Mapping[str, int]) -> str:
    """Token contract -> base units, amounts as strings (they exceed int64 like yoctoNEAR does)."""
    return json.dumps({contract: str(amount) for contract, amount in sorted(tokens.items())})


_APPROVAL_COLUMNS = (
    "id, title, details, requester_group, created_at, expires_at, state, decided_by, decided_at, "
    "chat_id, message_ref"
)

_TASK_COLUMNS = (
    "id, folder, prompt, kind, spec, next_run_at, anchor, status, created_by, created_at, "
    "last_run_at, last_result"
)
_TASK_RUN_COLUMNS = (
    "id, task_id, scheduled_for, started_at, finished_at, duration, status, result, error, run_id"
)


def _mounts_to_json(requests: Iterable[MountRequest]) -> str:
    return json.dumps([MountRequest.from_json(r).to_json() for r in requests])


def _mounts_from_json(folder: str, text: str) -> tuple[MountRequest, ...]:
    """Stored mount requests; old rows hold plain path strings. A malformed entry is dropped (no mount)."""
    try:
        items = json.loads(text or "[]")
    except ValueError:
        log.warning("group %s: unreadable extra_mounts %r; no extra mounts", folder, text[:200])
        return ()
    if not isinstance(items, list):
        log.warning("group %s: extra_mounts is not a list; no extra mounts", folder)
        return ()
    requests = []
    for item in items:
        try:
            requests.append(MountRequest.from_json(item))
        except (TypeError, ValueError) as exc:
            log.warning("group %s: dropping malformed mount request %r: %s", folder, item, exc)
    return tuple(requests)
