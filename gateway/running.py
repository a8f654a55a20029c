"""What a running gateway offers the modules that serve it: admin commands, /healthz, metrics.

Those modules are handed the gateway itself (gateway/app.py), but they name its type through
this Protocol, never by importing `gateway.app`: app imports them, so importing it back would be
a cycle (tests/unit/test_layering.py fails on one). The Protocol also says, in one place, which
parts of the gateway they may touch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from channels.base import Channel
from core.config import Config
from gateway.agent_services import AgentServices
from gateway.approvals import Approvals
from gateway.budget_state import BudgetGuard
from gateway.outbox import Outbox
from gateway.queue import GroupQueue
from gateway.registry import GroupRegistry
from gateway.sandboxes import SandboxPool
from gateway.scheduler import Scheduler
from gateway.senders import SenderGate
from gateway.store import Store
from gateway.wallet.service import WalletService
from proxy.process import VaultProcess


class RunningGateway(Protocol):
    """The parts of a started `gateway.app.Gateway` its helpers read (set by `Gateway.start`)."""

    config: Config
    config_dir: Path
    data_dir: Path
    started_at: float
    store: Store
    registry: GroupRegistry
    queue: GroupQueue
    pool: SandboxPool
    outbox: Outbox
    services: AgentServices
    scheduler: Scheduler
    approvals: Approvals
    senders: SenderGate
    wallet: WalletService
    vault: VaultProcess
    budget: BudgetGuard

    @property
    def channels(self) -> Sequence[Channel]: ...

    @property
    def running(self) -> bool: ...

    @property
    def stopping(self) -> bool: ...

    async def notify_main(self, text: str) -> None: ...
