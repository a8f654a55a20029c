"""A task cancelled in the middle of a store transaction leaves the shared connection usable.

The gateway has one SQLite connection for every coroutine. Stopping the vault, a channel or a
turn cancels tasks that may be writing; a cancellation that landed while a task waited for its
BEGIN used to leave that transaction open (the statement runs on aiosqlite's thread anyway), and
every later write of the gateway failed with "cannot start a transaction within a transaction"
(seen in CI: `/status` after the vault was stopped). Real SQLite; the cancellation is tried at
every await point of a transaction in turn.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.store import Store

STEPS = 16  # more event-loop turns than one transaction takes here


async def test_a_cancelled_transaction_never_blocks_the_next_and_is_all_or_nothing(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "clawgate.db")
    try:
        async with store._transaction() as conn:
            await conn.execute("CREATE TABLE t (step INTEGER, part INTEGER)")
        committed = 0
        for step in range(STEPS):

            async def write(step: int = step) -> None:
                async with store._transaction() as conn:
                    await conn.execute("INSERT INTO t VALUES (?, 1)", (step,))
                    await conn.execute("INSERT INTO t VALUES (?, 2)", (step,))

            task = asyncio.create_task(write())
            for _ in range(step):
                await asyncio.sleep(0)
            task.cancel()
            try:
                await task
                committed += 1
            except asyncio.CancelledError:
                pass
            # The next transaction starts, and the cancelled one wrote both rows or none.
            async with (
                store._transaction() as conn,
                conn.execute("SELECT COUNT(*) FROM t WHERE step = ?", (step,)) as cur,
            ):
                row = await cur.fetchone()
            assert row is not None and row[0] in (0, 2), (step, row)
            assert not store._conn.in_transaction
        assert committed < STEPS  # the cancellation did land inside transactions
    finally:
        await store.close()
