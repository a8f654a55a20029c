"""A gateway on a sandbox tier whose vault knows a credential for a fake upstream on loopback.

Shared by the vault attack tests: the hostile group (tests/security/conftest.py) holds the
credential `TOKEN` for the front's real name (127.0.0.1:<port>); the front also answers as
`ATTACKER` (a shared front, like a CDN edge: tests/fakes/shared_front.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from core.config import parse
from gateway.app import Gateway
from proxy.secrets import SecretStore
from tests.fakes.model_server import FakeModelServer
from tests.fakes.shared_front import SharedFront
from tests.security.conftest import HOSTILE, Tier, add_model_key, with_hostile_group

TOKEN = "front-REAL-token-sandbox-0c9a71"
ATTACKER = "attacker.example"


@asynccontextmanager
async def gateway_with_front(
    tier: Tier,
    dirs: tuple[Path, Path],
    model: FakeModelServer,
    fronts: list[SharedFront],
    upstream_ca: Path | None = None,
    vault: str = "",
    idle: float = 30,
) -> AsyncIterator[Gateway]:
    """Started gateway; `vault` = more `[vault]` keys. The hostile group may reach 127.0.0.1 only."""
    config_dir, data_dir = dirs
    tier.prepare(data_dir)
    add_model_key(config_dir, model)
    store = SecretStore(config_dir)
    for front in fronts:
        store.add(f"front{front.port}", TOKEN, f"127.0.0.1:{front.port}", groups=[HOSTILE.folder])
    allowed = ", ".join(f'"{a}"' for a in [model.host_port, *(f"127.0.0.1:{f.port}" for f in fronts)])
    text = tier.config_toml(model, extra=f'[vault.egress]\n{HOSTILE.folder} = ["127.0.0.1"]\n', idle=idle)
    ca = f'upstream_ca = "{upstream_ca}"\n' if upstream_ca else ""
    text = text.replace(
        f'allow_private_upstreams = ["{model.host_port}"]\n',
        f"allow_private_upstreams = [{allowed}]\n{ca}{vault}\n",
    )
    async with with_hostile_group(parse(text, Path(f"{tier.name}.toml")), config_dir, data_dir) as gateway:
        yield gateway
