"""Mount allowlist grants in a real container: what `plan_mounts` grants is what the agent sees.

The spec is built like `gateway/sandboxes.py` builds it (`plan_mounts` -> `SandboxSpec.extra_mounts`)
and started from exactly `container_kwargs(spec, runtime)` with `sleep` as entrypoint, as in
`test_sandbox_hardening.py`, once per Docker runtime (runc and gVisor's runsc).
"""

from __future__ import annotations

import json
import os
import secrets
from typing import Any

from core.config import parse
from core.models import Group, MountRequest
from gateway.sandboxes import agent_environment
from groups import folders
from groups.mounts import plan_mounts
from groups.sandbox.base import Limits, SandboxSpec
from groups.sandbox.docker import LABEL_INSTANCE, container_kwargs
from groups.uids import group_identity
from tests.integration.runsc_support import container_runtime

__all__ = ["container_runtime"]  # a fixture, imported by name


def sh(container: Any, script: str) -> tuple[int, str]:
    code, out = container.exec_run(["sh", "-c", script])
    return code, out.decode("utf-8", "replace")


def test_granted_refused_and_project_mounts_in_a_real_container(  # type: ignore[no-untyped-def]
    docker_client, sandbox_image, dirs, container_runtime
) -> None:
    config_dir, data_dir = dirs
    token = secrets.token_hex(6)
    root = data_dir.parent / "hostfs"
    projects, project = root / "projects", root / "project"
    uid, gid = group_identity(data_dir, "main", parse("", config_dir / "config.toml").sandbox.run_as_uid)
    for d in (projects / "docs", projects / "scratch", projects / ".ssh", root / "outside", project):
        d.mkdir(parents=True)
        os.chmod(d, 0o777)  # so only the mount flags decide what the sandbox uid may write
    (projects / "docs" / "readme.txt").write_text("docs")
    (projects / ".ssh" / f"ssh-marker-{token}").write_text("secret key")
    (root / "outside" / f"outside-marker-{token}").write_text("secret")
    os.symlink(root / "outside", projects / "escape")
    (project / "README").write_text("project")
    (project / ".env").write_text(f"TOKEN=env-secret-{token}")
    (config_dir / "mount-allowlist.json").write_text(
        json.dumps({"allowed_roots": [{"path": str(projects), "allow_read_write": True}]})
    )
    group = Group(
        "main",
        "test:main",
        "main",
        "@bot",
        is_main=True,
        extra_mounts=(
            MountRequest(str(projects / "docs")),
            MountRequest(str(projects / "scratch"), "work/scratch", read_write=True),
            MountRequest(str(projects / ".ssh")),
            MountRequest(str(projects / "escape")),
        ),
    )
    plan = plan_mounts(group, config_dir / "mount-allowlist.json", config_dir, data_dir, str(project))
    assert [m.container_path for m in plan.granted] == [
        "/workspace/project",
        "/workspace/project/.env",
        "/workspace/extra/docs",
        "/workspace/extra/work/scratch",
    ]
    assert len(plan.refused) == 2

    dirs_ = folders.group_dirs(data_dir, "main")
    folders.prepare(dirs_, (uid, gid) if os.getuid() == 0 else None, is_main=True)
    config = parse(f'[sandbox]\nimage = "{sandbox_image}"\n', config_dir / "config.toml")
    spec = SandboxSpec(
        folder="main",
        is_main=True,
        image=sandbox_image,
        group_dir=dirs_.group,
        global_dir=dirs_.global_,
        run_dir=dirs_.run,
        uid=uid,
        gid=gid,
        limits=Limits(memory_mb=256, cpus=1.0, pids=64, tmpfs_mb=16),
        env=agent_environment(config, group),
        labels={LABEL_INSTANCE: "test-" + token},
        extra_mounts=tuple(plan.granted),
    )
    kwargs = container_kwargs(spec, container_runtime)
    container = docker_client.containers.run(**{**kwargs, "entrypoint": ["sleep", "300"]})
    try:
        # read-only grant: visible, not writable (EROFS although the directory is 0777)
        assert sh(container, "cat /workspace/extra/docs/readme.txt") == (0, "docs")
        code, out = sh(container, "touch /workspace/extra/docs/x")
        assert code != 0 and "Read-only file system" in out
        # read-write grant for main under a read-write root
        assert (
            sh(
                container,
                "echo hi > /workspace/extra/work/scratch/new && cat /workspace/extra/work/scratch/new",
            )[0]
            == 0
        )
        assert (projects / "scratch" / "new").read_text() == "hi\n"
        # refused paths are nowhere in the container
        code, out = sh(
            container,
            f"find / -xdev -name '*marker-{token}' 2>/dev/null; "
            "find /workspace/extra -mindepth 1 -maxdepth 1 -printf '%f\\n'",  # coreutils ls fails on runsc
        )
        assert token not in out and sorted(out.split()) == ["docs", "work"]
        code, out = sh(container, "cat /proc/self/mountinfo")
        assert ".ssh" not in out and "outside" not in out
        # project: read-only, .env shadowed by an empty file
        assert sh(container, "cat /workspace/project/README") == (0, "project")
        assert sh(container, "wc -c < /workspace/project/.env")[1].strip() == "0"
        code, out = sh(container, "grep -r env-secret /workspace 2>/dev/null")
        assert token not in out
        assert sh(container, "touch /workspace/project/new")[0] != 0
    finally:
        container.remove(force=True)
