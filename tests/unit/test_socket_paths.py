"""A data dir too deep for its unix sockets is refused up front, in one line naming the fix.

The gateway and its vault bind sockets under the data dir (`run/gateway.sock`,
`vault/vault-control.sock`, `run/<folder>/ipc.sock` and `vault.sock`). Linux keeps a socket's
path in sun_path (108 bytes with the closing NUL); a longer one cannot be bound at all, and
the vault used to die at start with an "AF_UNIX path too long" traceback.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from core.config import Config
from core.paths import SUN_PATH_MAX, socket_path_problem
from gateway.app import Gateway, StartupError
from gateway.preflight import socket_path_findings, socket_paths
from proxy.peers import PeerRegistry
from proxy.process import VaultProcess, VaultUnavailable
from proxy.relay import Relay, RelayError
from tests.fakes.channel import CaptureChannel


def padded(base: Path, size: int, name: str = "s.sock") -> Path:
    """A path of exactly `size` bytes under `base`, ending in `name`."""
    filler = size - len(str(base / name)) - 1
    assert filler >= 1, (base, size)
    return base / ("d" * filler) / name


def test_the_limit_is_the_kernels(short_tmp: Path) -> None:
    fits, too_long = padded(short_tmp, SUN_PATH_MAX), padded(short_tmp, SUN_PATH_MAX + 1, "t.sock")
    fits.parent.mkdir()
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(fits))  # the longest path the check allows binds
    with socket.socket(socket.AF_UNIX) as s, pytest.raises(OSError):
        s.bind(str(too_long))  # one byte more cannot
    assert socket_path_problem(fits) is None
    problem = socket_path_problem(too_long)
    assert problem is not None and f"{SUN_PATH_MAX + 1} bytes" in problem and str(too_long) in problem


def test_preflight_names_the_first_socket_that_does_not_fit(short_tmp: Path) -> None:
    data_dir = short_tmp / "data"
    assert socket_path_findings(data_dir, ["main", "team"]) == []
    # A data dir that fits the gateway's own sockets but not a long group folder's.
    deep = padded(short_tmp, SUN_PATH_MAX - len("/run/" + "f" * 48 + "/vault.sock") + 1, "data")
    assert socket_path_findings(deep, ["main"]) == []
    [finding] = socket_path_findings(deep, ["main", "f" * 48])
    assert finding.level == "error" and "CLAWGATE_DATA_DIR" in finding.fix
    assert str(deep / "run" / ("f" * 48) / "vault.sock") in finding.what
    # Every socket the gateway and the vault bind is among those checked.
    names = {p.relative_to(deep).as_posix() for p in socket_paths(deep, ["main"])}
    assert names == {
        "run/gateway.sock",
        "vault/vault-control.sock",
        "run/main/ipc.sock",
        "run/main/vault.sock",
    }


async def test_gateway_start_refuses_a_too_deep_data_dir_before_any_side_effect(short_tmp: Path) -> None:
    data_dir = padded(short_tmp, SUN_PATH_MAX, "data")
    gateway = Gateway(Config(), short_tmp / "config", data_dir)
    with pytest.raises(StartupError) as err:
        await gateway.start([CaptureChannel()])
    message = str(err.value)
    assert "\n" not in message and "CLAWGATE_DATA_DIR" in message and "sun_path" in message, message
    assert not data_dir.exists()  # refused before creating anything


async def test_the_vault_refuses_a_too_long_control_socket_in_one_line(short_tmp: Path) -> None:
    state = padded(short_tmp, SUN_PATH_MAX - len("/vault-control.sock") + 1, "state")
    vault = VaultProcess(short_tmp / "config", state, allow_private=[])
    with pytest.raises(VaultUnavailable) as err:
        await vault.start(timeout=10)
    assert "vault-control.sock" in str(err.value) and "\n" not in str(err.value), err.value
    assert vault.pid is None and not state.exists()  # no process was started


async def test_the_relay_refuses_a_too_long_group_socket(short_tmp: Path) -> None:
    path = padded(short_tmp, SUN_PATH_MAX + 1, "vault.sock")
    path.parent.mkdir()
    with pytest.raises(RelayError, match="sun_path"):
        await Relay(PeerRegistry(), 1).open_group("team", path)
