"""`clawgate doctor` on gVisor: it runs a real gVisor container and says what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import parse
from gateway import doctor
from tests.integration.runsc_support import REQUIRE, runsc_problem


async def test_doctor_fails_on_an_unusable_runsc_only_when_it_is_configured(
    docker_client, sandbox_image, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    problem = runsc_problem(docker_client, sandbox_image)
    if REQUIRE:
        assert problem is None, problem  # CI provisions runsc (.ci/run): it must be usable there

    configured = parse(f'[sandbox]\nimage = "{sandbox_image}"\nruntime = "runsc"\n', Path("c.toml"))
    assert await doctor.runsc_report(configured) is (problem is None)
    out = capsys.readouterr().out
    assert "runsc (gVisor)" in out and "(configured)" in out
    if problem is None:
        assert "[ok" in out and "FAIL" not in out, out
    else:
        assert "FAIL" in out and "/etc/docker/daemon.json" in out and "--host-uds=open" in out, out

    elsewhere = parse(f'[sandbox]\nimage = "{sandbox_image}"\n', Path("c.toml"))
    assert await doctor.runsc_report(elsewhere) is True  # information only when runc is configured
    out = capsys.readouterr().out
    assert out.startswith("[info] sandbox runtime runsc (gVisor)")
    assert ("not usable" in out) is (problem is not None), out
