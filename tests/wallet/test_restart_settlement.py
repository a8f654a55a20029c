"""A restart settles requests left waiting; an approved one that was never signed is admitted to.

The crash window between the owner's Approve (committed, prompt edited to "Approved") and the
signature cannot be closed, so the restart must say plainly that nothing was signed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.wallet.rpc import NearRpc
from gateway.wallet.service import WalletService
from tests.wallet.test_service import ADMIN, config, make_env


async def test_an_approval_decided_just_before_a_crash_is_reported_unsigned_after_restart(
    tmp_path: Path,
) -> None:
    env = await make_env(tmp_path, config())
    notes: list[str] = []

    async def notify_main(text: str) -> None:
        notes.append(text)

    try:
        task = env.start("near_transfer", receiver_id="bob.testnet", amount="5")
        prompt = await env.prompt()
        task.cancel()  # the process dies right after the owner's decision was committed
        await asyncio.gather(task, return_exceptions=True)
        assert await env.world.store.decide_approval(prompt.id, "approved", ADMIN, env.world.clock.now())
        [waiting] = await env.world.store.wallet_requests()
        assert waiting.state == "pending"

        again = WalletService(
            config(), env.world.store, env.keys, NearRpc(env.rpc.url), env.world.approvals, notify_main
        )
        await again.start()
        [settled] = await env.world.store.wallet_requests()
        assert settled.state == "rejected" and "restarted" in (settled.error or "")
        assert notes == [
            f"NEAR request #{settled.id} was approved but NOT signed: the gateway restarted before it "
            "could sign. Ask again if it is still wanted."
        ]
        assert env.rpc.submitted == []
        await again.aclose()
    finally:
        await env.service.aclose()
        await env.world.approvals.stop()
        await env.world.store.close()
        env.rpc.stop()
