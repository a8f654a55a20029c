from pathlib import Path

import pytest

from core.config import Config, ConfigError, load, parse
from core.models import Group
from gateway.sandboxes import sandbox_spec
from groups.folders import group_dirs
from groups.sandbox.docker import DockerBackend, container_kwargs
from groups.sandbox.select import make_backend

SRC = Path("config.toml")


def test_defaults_without_a_file(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    assert cfg.assistant_name == "Andy"
    assert cfg.default_trigger == "@Andy"
    assert cfg.sandbox.backend == "docker"


def test_full_config_parses() -> None:
    cfg = parse(
        """
assistant_name = "Bob"
[model]
provider = "openai"
name = "gpt-x"
base_url = "http://127.0.0.1:11434/v1/"
[sandbox]
idle_timeout_s = 5
max_containers = 2
memory_mb = 256
[vault]
allow_private_upstreams = ["127.0.0.1:11434", "[::1]:8080"]
""",
        SRC,
    )
    assert cfg.model.base_url == "http://127.0.0.1:11434/v1"
    assert cfg.vault.allow_private_upstreams == ["127.0.0.1:11434", "[::1]:8080"]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[sandbox]\nbackend = "podman"', "sandbox.backend"),
        ('[sandbox]\nruntime = "kata"', "sandbox.runtime"),
        ('[sandbox]\nbackend = "bwrap"\nruntime = "runsc"', "sandbox.runtime"),
        ("[sandbox]\nmax_containers = 0", "sandbox.max_containers"),
        ('[model]\nprovider = "gemini"', "model.provider"),
        ('[model]\nbase_url = "ftp://x"', "model.base_url"),
        ('[vault]\nallow_private_upstreams = ["localhost"]', "vault.allow_private_upstreams"),
        ('[sandbox]\nimagee = "x"', "sandbox.imagee"),
        ('assistant_name = "two words"', "assistant_name"),
        ("[sandbox]\ngroup_quota_mb = 0", "sandbox.group_quota_mb"),
        ("[sandbox]\nmin_free_mb = -1", "sandbox.min_free_mb"),
        ("[sandbox]\ndisk_check_s = 0", "sandbox.disk_check_s"),
        ("[sandbox]\ngroup_max_files = 10", "sandbox.group_max_files"),
    ],
)
def test_bad_values_name_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(text, SRC)
    assert key in str(info.value)


def test_unknown_backend_is_rejected_not_defaulted() -> None:
    with pytest.raises(ConfigError, match="podman"):
        parse('[sandbox]\nbackend = "podman"', SRC)


def test_runtime_defaults_to_runc_and_runsc_is_passed_to_docker(tmp_path: Path) -> None:
    assert load(tmp_path).sandbox.runtime == "runc"
    cfg = parse('[sandbox]\nruntime = "runsc"', SRC)
    backend = make_backend(cfg, tmp_path)
    assert isinstance(backend, DockerBackend) and backend.runtime == "runsc"
    group = Group("team", "console:team", "team", "@Andy")
    spec = sandbox_spec(cfg, group, group_dirs(tmp_path, "team"), (1000, 1000), "test")
    assert container_kwargs(spec, backend.runtime)["runtime"] == "runsc"
    assert "runtime" not in container_kwargs(spec)  # runc: the engine's default, as before


def test_invalid_toml_is_reported() -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse("[model\nname=", SRC)


def test_config_is_immutable() -> None:
    cfg = Config()
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error type is an implementation detail
        cfg.sandbox.image = "x"  # type: ignore[misc]


def test_disk_limits_default_to_a_quota_and_a_floor(tmp_path: Path) -> None:
    sandbox = load(tmp_path).sandbox
    assert (sandbox.group_quota_mb, sandbox.min_free_mb, sandbox.group_max_files) == (1024, 1024, 200_000)
    assert sandbox.disk_check_s == 1.0


def test_the_inbox_is_mounted_read_only_by_both_backends(tmp_path: Path) -> None:
    from groups.sandbox.bwrap_argv import bwrap_argv

    dirs = group_dirs(tmp_path, "team")
    spec = sandbox_spec(load(tmp_path), Group("team", "tg:1", "team", "@Andy"), dirs, (1000, 1000), "i")
    assert spec.inbox_dir == tmp_path / "inbox" / "team"
    [mount] = [m for m in container_kwargs(spec)["mounts"] if m["Target"] == "/workspace/inbox"]
    assert mount["Source"] == str(dirs.inbox) and mount["ReadOnly"] is True
    argv = bwrap_argv(spec, tmp_path / "rootfs", privileged=False)
    at = argv.index("/workspace/inbox")
    assert argv[at - 2 : at] == ["--ro-bind", str(dirs.inbox)]


def test_no_single_file_may_outgrow_the_group_quota(tmp_path: Path) -> None:
    from groups.sandbox.bwrap import FSIZE_MB

    cfg = parse("[sandbox]\ngroup_quota_mb = 64", SRC)
    spec = sandbox_spec(
        cfg, Group("team", "tg:1", "team", "@Andy"), group_dirs(tmp_path, "team"), (1, 1), "i"
    )
    assert spec.limits.file_mb == 64 != FSIZE_MB
    [fsize] = [u for u in container_kwargs(spec)["ulimits"] if u["Name"] == "fsize"]
    assert fsize["Soft"] == fsize["Hard"] == 64 * 1024 * 1024
