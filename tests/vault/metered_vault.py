"""One real vault process with metering on, for the budget e2e tests of each provider format.

The unmetered-spend, Gemini and Ollama tests need the same world: a fake model server, the
gateway's end of the usage reports storing into a real SQLite store, a vault with a secret for
the model server scoped to a few groups, each group's socket open. Only the secret (header and
format), the receiver's pricing and how the fake answers differ, so those are the arguments.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from proxy.process import VaultProcess
from proxy.secrets import SecretStore
from tests.fakes.model_payloads import Tokens
from tests.fakes.model_server import FakeModelServer
from tests.vault.test_vault_metering_e2e import Receiver


class Setup:
    def __init__(self, model: FakeModelServer, vault: VaultProcess, receiver: Receiver, base: Path) -> None:
        self.model, self.vault, self.receiver, self.base = model, vault, receiver, base
        self.reported: dict[str, Tokens] = {}  # marker in a request -> what the fake answers with

    def sock(self, group: str) -> Path:
        return self.base / group / "vault.sock"

    @property
    def state(self) -> Path:
        return self.base / "state"


@contextlib.asynccontextmanager
async def metered_vault(
    base: Path,
    groups: tuple[str, ...],
    add_secret: Callable[[SecretStore, str], None],
    receiver: type[Receiver] = Receiver,
) -> AsyncIterator[Setup]:
    """`add_secret(store, model_host_port)` adds the provider's key, scoped to `groups`."""
    from gateway.store import Store

    for name in ("cfg", "state", *groups):
        (base / name).mkdir(mode=0o700)
    with FakeModelServer() as model:
        store = await Store.open(base / "db.sqlite")
        gateway_end = receiver(base / "gw.sock", store)
        await gateway_end.start()
        egress = "".join(f'{g} = ["127.0.0.1"]\n' for g in groups)
        (base / "cfg" / "config.toml").write_text(
            f'[vault]\nallow_private_upstreams = ["{model.host_port}"]\n[vault.egress]\n{egress}'
        )
        add_secret(SecretStore(base / "cfg"), model.host_port)
        vault = VaultProcess(
            base / "cfg", base / "state", allow_private=[model.host_port], gateway_socket=base / "gw.sock"
        )
        try:
            await vault.start(timeout=30)
            for group in groups:
                await vault.open_group(group, base / group / "vault.sock")
            yield Setup(model, vault, gateway_end, base)
        finally:
            await vault.stop()
            await gateway_end.stop()
            await store.close()
