"""The schema, as the ordered list of scripts that built it, and the code that applies them.

`PRAGMA user_version` is the number of scripts applied. A new concern adds a script at the end;
an existing script is never edited, because databases in the field already ran it. Before
migrating a database that holds data, a copy goes to `backups/` (gateway.migration_backup), so
the operator can get back what a misbehaving new version changed.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import aiosqlite

from gateway.migration_backup import backup_before_migration
from gateway.store.connection import StoreUnusable

log = logging.getLogger(__name__)

# The values of messages.status are the lifecycle in messages.py's docstring.
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
    # 6: model usage reported by the agents (gateway.store.usage): one row per group, run and
    # model, summed over the run's calls; spend control reads it by group, model and time.
    """
    CREATE TABLE model_usage (
        id INTEGER PRIMARY KEY,
        group_folder TEXT NOT NULL,
        run_id INTEGER NOT NULL,
        model TEXT NOT NULL,
        input_tokens INTEGER NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),
        output_tokens INTEGER NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
        cache_read_tokens INTEGER NOT NULL DEFAULT 0 CHECK (cache_read_tokens >= 0),
        cache_write_tokens INTEGER NOT NULL DEFAULT 0 CHECK (cache_write_tokens >= 0),
        calls INTEGER NOT NULL DEFAULT 0 CHECK (calls >= 0),
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (group_folder, run_id, model)
    );
    CREATE INDEX model_usage_time ON model_usage (created_at);
    CREATE INDEX model_usage_group ON model_usage (group_folder, created_at);
    """,
    # 7: a group may choose its agent runtime ("builtin" | "claude"); NULL follows `[agent] runtime`.
    """
    ALTER TABLE groups ADD COLUMN runtime TEXT;
    """,
    # 8: model usage metered by the vault (gateway.store.metered): one row per model call, keyed by
    # the vault's record id so a resent report is stored once; priced when stored. A row names the
    # group's running turn, found through the small partial index on running runs.
    """
    CREATE TABLE metered_usage (
        id TEXT PRIMARY KEY,
        group_folder TEXT NOT NULL,
        run_id INTEGER,
        provider TEXT NOT NULL,
        model TEXT NOT NULL,
        input_tokens INTEGER NOT NULL CHECK (input_tokens >= 0),
        output_tokens INTEGER NOT NULL CHECK (output_tokens >= 0),
        cache_read_tokens INTEGER NOT NULL CHECK (cache_read_tokens >= 0),
        cache_write_tokens INTEGER NOT NULL CHECK (cache_write_tokens >= 0),
        cost_micros INTEGER NOT NULL CHECK (cost_micros >= 0),
        complete INTEGER NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX metered_usage_group_at ON metered_usage (group_folder, at);
    CREATE INDEX metered_usage_at ON metered_usage (at);
    CREATE INDEX runs_running ON runs (folder) WHERE status = 'running';
    """,
    # 9: who may talk to a group's assistant (gateway.senders): the group's sender policy, and
    # the senders the owner allowed or blocked, per group, by channel-qualified id.
    """
    ALTER TABLE groups ADD COLUMN senders TEXT NOT NULL DEFAULT 'open'
        CHECK (senders IN ('open', 'members', 'approval'));
    CREATE TABLE group_senders (
        folder TEXT NOT NULL,
        sender_id TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('allowed', 'blocked')),
        decided_by TEXT,
        decided_at REAL NOT NULL,
        PRIMARY KEY (folder, sender_id)
    );
    CREATE INDEX messages_held ON messages (chat_id, sender_id) WHERE status = 'held';
    """,
    # 10: model budgets (gateway.store.budgets): the owner's `/budget set` overrides (amount NULL =
    # no limit) and the main-chat notices already sent, one per scope, limit, period and level.
    """
    CREATE TABLE budget_overrides (
        scope TEXT NOT NULL,
        kind TEXT NOT NULL,
        amount INTEGER CHECK (amount IS NULL OR amount >= 0),
        set_by TEXT NOT NULL,
        set_at REAL NOT NULL,
        PRIMARY KEY (scope, kind)
    );
    CREATE TABLE budget_notices (
        scope TEXT NOT NULL,
        kind TEXT NOT NULL,
        period TEXT NOT NULL,
        level TEXT NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (scope, kind, period, level)
    );
    """,
    # 11: the dashboard's turn charts (gateway.store.activity) read runs by when they ended.
    """
    CREATE INDEX runs_finished ON runs (finished_at);
    """,
    # 12: agents no longer report their own token counts (spend is what the vault meters, in
    # metered_usage); their old reports decided nothing and go with the table.
    """
    DROP TABLE model_usage;
    """,
]


def refuse_newer(version: int, path: Path) -> None:
    """A database written by a newer clawgate is refused rather than half-understood."""
    if version > len(MIGRATIONS):
        raise StoreUnusable(
            f"database {path} has schema v{version}, written by a newer clawgate (this one"
            f" knows up to v{len(MIGRATIONS)}); upgrade clawgate, or restore a backup made"
            " by this version"
        )


async def migrate(conn: aiosqlite.Connection, path: Path | None) -> None:
    """Apply the missing migrations, after copying a database that has data to backups/.

    A database at v0 is new and empty; anything older than the latest version holds the
    operator's data, which the copy lets them get back if the new version misbehaves.
    Each script commits together with its version number, so a crash leaves a known version.
    """
    async with conn.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    assert row is not None  # a PRAGMA read always returns one row
    (version,) = row
    if 0 < version < len(MIGRATIONS) and path is not None:
        try:
            copy = await asyncio.to_thread(backup_before_migration, path, version)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnusable(
                f"database {path} needs migrating from v{version} to v{len(MIGRATIONS)}, but"
                f" the backup taken first failed ({exc}); free disk space in {path.parent}"
                " and start again"
            ) from None
        log.warning(
            "database schema v%d -> v%d; the old database is kept at %s", version, len(MIGRATIONS), copy
        )
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        await conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")
