"""The durable state of the gateway: one SQLite file in WAL mode, through aiosqlite.

`Store` is the one object callers hold (`from gateway.store import Store`). Its SQL is split by
concern, one module per group of tables, each readable on its own:

    connection.py    open + PRAGMAs (synchronous=FULL) + quick_check; the lock, `_write` and
                     `_transaction` every other module writes through
    migrations.py    the schema, as versioned scripts, and the backup taken before migrating
    messages.py      ingest with group commit (invariant 7), the message lifecycle, chats
    groups.py        registered groups, their mount requests, session markers
    senders.py       who may talk to a group's assistant: allowed/blocked senders, held messages
    runs.py          claiming a group's messages as a run, and how a run ends
    outbox.py        replies recorded before they are sent, and their delivery states
    dead_letters.py  messages and replies given up on, /retry and /drop
    tasks.py         scheduled tasks and their firings
    approvals.py     owner approvals, decided exactly once
    wallet.py        wallet requests, the daily spend ledger, policy settings
    usage.py         model tokens used per group, run and model (reported by the agents)
    metered.py       model calls metered by the vault, priced when stored (spend control's account)
    budgets.py       /budget set overrides, budget notices sent, spend read from metered_usage
    retention.py     emptying and deleting old rows
    activity.py      turns per time bucket and cost per day, for the dashboard's charts

Why one class made of mixins rather than a repository object per concern: every concern must
share one connection and one lock (a transaction of one concern must never interleave with a
write of another), several transactions span concerns (a dead letter with its notice, a run's
end with the task firings it answered), and over a hundred call sites in 18 modules use
`store.<method>` and stay as they are. Each mixin derives from `connection.Database`, so it
type-checks alone against the connection and the helpers it uses; `Store` only composes them
and adds what needs the whole: opening (check, refuse a newer schema, migrate) and the
cross-concern counts of `stats`. A new concern is a new mixin here and a script appended to
`migrations.MIGRATIONS`.
"""

from __future__ import annotations

from pathlib import Path

from gateway.store import migrations
from gateway.store.activity import ActivityStore
from gateway.store.approvals import ApprovalStore
from gateway.store.budgets import BudgetStore
from gateway.store.connection import Database, StoreUnusable, connect
from gateway.store.dead_letters import DeadLetterStore
from gateway.store.groups import GroupStore
from gateway.store.messages import MessageStore, storable
from gateway.store.metered import MeteredRow, MeteredUsageStore
from gateway.store.migrations import MIGRATIONS
from gateway.store.outbox import NOTICE_SEQ, OutboxStore
from gateway.store.retention import RetentionStore
from gateway.store.runs import RunStore
from gateway.store.senders import SenderStore
from gateway.store.tasks import TaskStore
from gateway.store.wallet import SPENDING_STATES, WalletStore

__all__ = [
    "MIGRATIONS",
    "MeteredRow",
    "NOTICE_SEQ",
    "SPENDING_STATES",
    "Store",
    "StoreUnusable",
    "storable",
]


class Store(
    MessageStore,
    GroupStore,
    SenderStore,
    RunStore,
    OutboxStore,
    DeadLetterStore,
    TaskStore,
    ApprovalStore,
    WalletStore,
    MeteredUsageStore,
    BudgetStore,
    RetentionStore,
    ActivityStore,
    Database,
):
    """All reads and writes of the gateway's database."""

    @classmethod
    async def open(cls, path: Path, *, create: bool = True, migrate: bool = True) -> Store:
        """Open, check and migrate the database; StoreUnusable says why it cannot be used.

        The checks and PRAGMAs are `connection.connect`'s. A file written by a newer clawgate
        is refused here, so the gateway never says "ready" and then fails on the first message.
        """
        conn = await connect(path, create=create)
        try:
            store = cls(conn, path)
            migrations.refuse_newer(await store.schema_version(), path)
            if migrate:
                await migrations.migrate(conn, path)
        except BaseException:
            await conn.close()
            raise
        return store

    async def stats(self) -> dict[str, dict[str, int]]:
        """Counts for /metrics: messages by status, open dead letters by kind, approvals by state.

        Read-only and cheap (indexed or small tables); it doubles as the health probe of the store.
        """
        queries = {
            "messages": "SELECT status, COUNT(*) FROM messages WHERE status IN "
            "('pending', 'processing', 'held', 'dead') GROUP BY status",
            "dead_letters": "SELECT kind, COUNT(*) FROM dead_letters GROUP BY kind",
            "approvals": "SELECT state, COUNT(*) FROM approvals GROUP BY state",
        }
        result: dict[str, dict[str, int]] = {}
        for name, sql in queries.items():
            async with self._conn.execute(sql) as cur:
                result[name] = {str(key): int(count) for key, count in await cur.fetchall()}
        return result
