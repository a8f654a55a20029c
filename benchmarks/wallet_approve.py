"""approve_to_rpc_ms: the owner's Approve click → the signed transaction arriving at the NEAR node.

Everything the wallet really does after a click is on this path: the approval is decided in
SQLite, the prompt is edited, the waiting `near_transfer` wakes up, fetches a fresh nonce and
block hash over JSON-RPC, re-runs analysis and policy together with the spend bookkeeping in
one database transaction, decrypts the key, signs, and posts `send_tx`. Real parts: `Store`
(SQLite file), `KeyStore` (AES-GCM file in a temp config dir), `NearRpc` (httpx),
`gateway.approvals.Approvals`, `WalletService`. Fakes: the channel (in-process capture) and
the NEAR node (`FakeNearRpc`, real HTTP on loopback, which stamps each `send_tx` with
`time.perf_counter()` the moment it arrives).

The baseline, measured in the same run against the same node, is one bare `send_tx` HTTP
round trip with the same payload (httpx, kept-alive connection): the floor any wallet pays.
No Docker needed. Prints one JSON object when run as a script.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from benchmarks.blocking import run_blocking  # noqa: E402
from channels.base import ButtonPress  # noqa: E402
from core.models import Group  # noqa: E402
from core.wallet.settings import WalletConfig, WalletPolicy  # noqa: E402
from gateway.approvals import Approvals  # noqa: E402
from gateway.ipc_protocol import Caller  # noqa: E402
from gateway.registry import GroupRegistry  # noqa: E402
from gateway.store import Store  # noqa: E402
from gateway.wallet.keystore import KeyStore  # noqa: E402
from gateway.wallet.rpc import NearRpc  # noqa: E402
from gateway.wallet.service import WalletService  # noqa: E402
from tests.fakes.channel import CaptureChannel  # noqa: E402
from tests.fakes.near_rpc import FakeNearRpc  # noqa: E402

MAIN, TEAM, ADMIN = "tg:-1", "tg:-2", "tg:1"
OWNER, RECEIVER = "owner.testnet", "bob.testnet"
AMOUNT = "2"  # above auto_approve_max, so every request waits for the click
WARMUP = 2  # first clicks pay for connection set-up and cold caches; not counted


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (the same rule as benchmarks/run.py)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _approve_samples(
    service: WalletService, approvals: Approvals, channel: CaptureChannel, near: FakeNearRpc, count: int
) -> list[float]:
    """Seconds from calling `on_button` (admin, Approve, main chat) to the node receiving the tx."""
    caller = Caller("team", False, TEAM)
    samples: list[float] = []
    for _ in range(count):
        prompts, sends = len(channel.prompts), len(near.received)
        task = asyncio.create_task(
            service.handle(caller, "near_transfer", {"receiver_id": RECEIVER, "amount": AMOUNT})
        )
        await channel.wait_until(lambda n=prompts: len(channel.prompts) > n, 10)  # type: ignore[misc]
        _, prompt = channel.prompts[prompts]
        start = time.perf_counter()
        toast = await approvals.on_button(ButtonPress(prompt.id, "approve", ADMIN, "admin", MAIN))
        result = await asyncio.wait_for(task, 10)
        if not toast.startswith("Approved:") or "transaction_hash" not in result:
            raise RuntimeError(f"approval did not sign: {toast!r} {result!r}")
        arrived = near.received[sends]
        if arrived["hash"] != result["transaction_hash"] or not arrived["accepted"]:
            raise RuntimeError(f"the node got something else: {arrived!r}")
        samples.append(arrived["t"] - start)
    return samples


async def _baseline_samples(near: FakeNearRpc, payload: dict[str, Any], count: int) -> list[float]:
    """Seconds for one bare `send_tx` HTTP round trip of the same payload (answered as a duplicate)."""
    samples: list[float] = []
    async with httpx.AsyncClient(timeout=10) as client:
        for i in range(count + WARMUP):
            start = time.perf_counter()
            response = await client.post(near.url, json={**payload, "id": i})
            response.raise_for_status()
            if "result" not in response.json():
                raise RuntimeError(f"baseline send_tx failed: {response.text[:200]}")
            if i >= WARMUP:
                samples.append(time.perf_counter() - start)
    return samples


async def run_async(samples: int = 20) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="clawgate-bench-wallet-") as tmp, FakeNearRpc() as near:
        config_dir = Path(tmp) / "config"
        config_dir.mkdir()
        key = KeyStore(config_dir).generate("hot", network="testnet", account_id=OWNER)
        near.add_account(OWNER, 10**6 * 10**24, keys=[key.public_key])
        near.add_account(RECEIVER, 0)

        store = await Store.open(Path(tmp) / "clawgate.db")
        registry = GroupRegistry(store)
        await registry.load()
        await registry.register(Group("main", MAIN, "main", "@Andy", False, True))
        await registry.register(Group("team", TEAM, "team", "@Andy"))
        channel = CaptureChannel(prefix="tg:")
        approvals = Approvals(store, registry, [channel], [ADMIN])
        await channel.connect(lambda m: asyncio.sleep(0), approvals.on_button)
        await approvals.start()

        settings = WalletConfig(
            rpc_url=near.url,
            default_key="hot",
            policy=WalletPolicy(
                auto_approve_max="1",  # type: ignore[arg-type]  # validated like the config file
                daily_limit="1000000",  # type: ignore[arg-type]
                key_groups={"hot": ["main", "team"]},
            ),
        )
        notices: list[str] = []

        async def notify_main(text: str) -> None:
            notices.append(text)

        rpc = NearRpc(
            settings.effective_rpc_url, timeout_s=settings.rpc_timeout_s, retries=settings.rpc_retries
        )
        service = WalletService(settings, store, KeyStore(config_dir), rpc, approvals, notify_main)
        await service.start()
        try:
            approve = (await _approve_samples(service, approvals, channel, near, samples + WARMUP))[WARMUP:]
            payload = {
                "jsonrpc": "2.0",
                "method": "send_tx",
                "params": {
                    "signed_tx_base64": near.submitted[-1].to_base64(),
                    "wait_until": "EXECUTED_OPTIMISTIC",
                },
            }
            baseline = await _baseline_samples(near, payload, samples)
        finally:
            await service.aclose()
            await approvals.stop()
            await store.close()
        if len(near.submitted) != samples + WARMUP or len(notices) != samples + WARMUP:
            raise RuntimeError("every approval must sign and submit exactly once")
    return {
        "approve_to_rpc_ms": round(pct(approve, 0.5) * 1000, 3),
        "approve_to_rpc_p99_ms": round(pct(approve, 0.99) * 1000, 3),
        "approve_to_rpc_baseline_rpc_ms": round(pct(baseline, 0.5) * 1000, 3),
    }


def run(samples: int = 20) -> dict[str, float]:
    return run_blocking(lambda: run_async(samples))


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 20)))
