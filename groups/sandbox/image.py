"""Building the sandbox image, online or offline.

With a registry, `Dockerfile.sandbox` builds on its default public Python base.
Without one (air-gapped hosts, CI here), a minimal Debian with python3 is made with
debootstrap from the distribution mirror and `docker import`ed as a local base, so
`clawgate image build` works either way.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from docker.errors import APIError, BuildError, DockerException, ImageNotFound

if TYPE_CHECKING:
    from docker import DockerClient

DEFAULT_BASE = "python:3.12-slim"
LOCAL_BASE = "clawgate-base:bookworm"
BASE_PACKAGES = "python3,bash,coreutils,git,curl,ca-certificates"
PROJECT_ROOT = Path(__file__).resolve().parents[2]

Progress = Callable[[str], None]


AGENT_LABEL = "clawgate.agent"


def agent_fingerprint() -> str:
    """A hash of the agent runtime's source, stamped on the image so staleness can be detected."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((PROJECT_ROOT / "groups" / "agent").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def image_is_current(client: DockerClient, image: str) -> bool:
    """Whether the image carries the agent runtime of this checkout (False if missing or stale)."""
    try:
        labels = client.images.get(image).labels or {}
    except DockerException:
        return False
    return labels.get(AGENT_LABEL) == agent_fingerprint()


class ImageBuildError(Exception):
    """The image could not be built; the message says why and what to install."""


def _has_image(client: DockerClient, name: str) -> bool:
    try:
        client.images.get(name)
        return True
    except ImageNotFound:
        return False


def _try_pull(client: DockerClient, name: str, progress: Progress) -> bool:
    progress(f"pulling {name} …")
    try:
        client.images.pull(name)
        return True
    except DockerException as exc:
        progress(f"cannot pull {name}: {str(exc).splitlines()[0][:160]}")
        return False


def build_local_base(client: DockerClient, progress: Progress, mirror: str | None = None) -> str:
    """debootstrap a minimal Debian with python3 and import it as `clawgate-base:bookworm`."""
    if os.geteuid() != 0:
        raise ImageBuildError("building the local base image needs root (debootstrap); run with sudo")
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("debootstrap is not installed: `apt-get install debootstrap`")
    mirror = mirror or os.environ.get("CLAWGATE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    with tempfile.TemporaryDirectory(prefix="clawgate-base-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        progress(f"debootstrap bookworm from {mirror} (about a minute) …")
        done = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={BASE_PACKAGES}",
                "bookworm",
                str(rootfs),
                mirror,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
            raise ImageBuildError(f"debootstrap failed:\n{tail}")
        for junk in ("var/cache/apt/archives", "usr/share/doc", "usr/share/man", "usr/share/locale"):
            shutil.rmtree(rootfs / junk, ignore_errors=True)
        tarball = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
        progress(f"importing {LOCAL_BASE} …")
        repository, tag = LOCAL_BASE.split(":")
        client.api.import_image(src=str(tarball), repository=repository, tag=tag)
    return LOCAL_BASE


def choose_base(client: DockerClient, requested: str | None, progress: Progress) -> str:
    """The requested base if given; else the public default if present or pullable; else a local one."""
    if requested:
        if not _has_image(client, requested) and not _try_pull(client, requested, progress):
            raise ImageBuildError(f"base image {requested!r} is neither present nor pullable")
        return requested
    if _has_image(client, DEFAULT_BASE) or _try_pull(client, DEFAULT_BASE, progress):
        return DEFAULT_BASE
    if _has_image(client, LOCAL_BASE):
        progress(f"using the local base {LOCAL_BASE}")
        return LOCAL_BASE
    return build_local_base(client, progress)


def build_image(client: DockerClient, tag: str, base: str | None, progress: Progress) -> str:
    """Build `Dockerfile.sandbox` on the chosen base, streaming the build log; returns the image id."""
    dockerfile = PROJECT_ROOT / "Dockerfile.sandbox"
    if not dockerfile.exists():
        raise ImageBuildError(f"{dockerfile} not found: run from a clawgate source checkout")
    chosen = choose_base(client, base, progress)
    progress(f"building {tag} on {chosen} …")
    return _build(
        client,
        tag,
        progress,
        path=str(PROJECT_ROOT),
        dockerfile="Dockerfile.sandbox",
        buildargs={"BASE_IMAGE": chosen},
        labels={"clawgate.base": chosen, AGENT_LABEL: agent_fingerprint()},
    )


def _build(client: DockerClient, tag: str, progress: Progress, **options: Any) -> str:
    """Run one `docker build`, streaming its log to `progress`; returns the image id."""
    try:
        stream = client.api.build(tag=tag, rm=True, forcerm=True, decode=True, **options)
        image_id = ""
        for chunk in stream:
            if "stream" in chunk and chunk["stream"].strip():
                progress(chunk["stream"].rstrip())
            if "error" in chunk:
                raise ImageBuildError(f"docker build failed: {chunk['error'].strip()}")
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
    except (BuildError, APIError) as exc:
        raise ImageBuildError(f"docker build failed: {exc}") from None
    if image_id:
        return image_id
    built = client.images.get(tag).id
    assert built is not None  # an image the engine just found has an id
    return built


def _harden_tree(root: Path) -> None:
    """Strip write bits the sandbox uid could use (group/other; owner too unless root owns it)."""
    strip = stat.S_IWGRP | stat.S_IWOTH | (0 if os.geteuid() == 0 else stat.S_IWUSR)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            path = os.path.join(dirpath, name)
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode) and mode & strip:
                os.chmod(path, stat.S_IMODE(mode) & ~strip)
    os.chmod(root, 0o755 & ~strip)


def remove_tree(path: Path) -> None:
    """rmtree that first gives back the write bits `_harden_tree` took (non-root exports)."""
    if not path.exists():
        return
    for dirpath, dirnames, _ in os.walk(path):
        for name in dirnames:
            with contextlib.suppress(OSError):
                p = os.path.join(dirpath, name)
                if not os.path.islink(p):
                    os.chmod(p, stat.S_IMODE(os.lstat(p).st_mode) | stat.S_IWUSR | stat.S_IXUSR)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o755)
    shutil.rmtree(path, ignore_errors=True)


def export_rootfs(
    client: DockerClient, image: str, dest_dir: Path, progress: Progress = lambda _: None
) -> Path:
    """Export `image`'s filesystem to `dest_dir/<image-id-short>/` for the bwrap backend.

    A container is created (never started) and `docker export`ed into a temp dir that is
    renamed into place, so a half-written export is never used. `dest_dir/current.json`
    records the image name, its id (so a stale export is detected) and its environment;
    older exports are removed. Device nodes are dropped (bwrap mounts a fresh /dev), the
    mount points `/workspace` and `/run/clawgate` are created, and group/other write bits
    are stripped so the sandbox uid cannot write anywhere in it even outside bwrap.
    """
    try:
        img = client.images.get(image)
    except ImageNotFound:
        raise ImageBuildError(
            f"image {image!r} does not exist: build it first (`clawgate image build`)"
        ) from None
    image_id = str(img.id)
    short = image_id.split(":")[-1][:12]
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest_dir.chmod(0o755)
    final = dest_dir / short
    meta_path = dest_dir / "current.json"
    with contextlib.suppress(OSError, ValueError):
        meta = json.loads(meta_path.read_text())
        if meta.get("image_id") == image_id and meta.get("image") == image and (final / "usr").is_dir():
            progress(f"root filesystem of {image} already exported to {final}")
            return final
    progress(f"exporting {image} ({short}) to {final} …")
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=dest_dir))
    container = client.containers.create(image, entrypoint=["true"], network_disabled=True)
    try:
        tar = subprocess.Popen(
            ["tar", "-x", "-C", str(tmp), "--numeric-owner", "-f", "-"],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert tar.stdin is not None
        try:
            # types-docker says export() returns str; docker-py yields the tar stream as bytes chunks.
            chunks: Iterator[bytes] = container.export()  # type: ignore[assignment]
            for chunk in chunks:
                tar.stdin.write(chunk)
        finally:
            tar.stdin.close()
        err = tar.stderr.read().decode("utf-8", "replace") if tar.stderr else ""
        if tar.wait() != 0:
            raise ImageBuildError(f"extracting the exported filesystem failed: {err.strip()[-500:]}")
        shutil.rmtree(tmp / "dev", ignore_errors=True)
        for mount_point in ("dev", "proc", "tmp", "workspace", "run/clawgate"):
            (tmp / mount_point).mkdir(parents=True, exist_ok=True)
        _harden_tree(tmp)
        remove_tree(final)
        os.rename(tmp, final)
    except BaseException:
        remove_tree(tmp)
        raise
    finally:
        with contextlib.suppress(DockerException):
            container.remove(force=True)
    record = {"image": image, "image_id": image_id, "dir": short, "env": img.attrs["Config"].get("Env") or []}
    meta_tmp = dest_dir / ".current.json.tmp"
    meta_tmp.write_text(json.dumps(record, indent=2))
    os.replace(meta_tmp, meta_path)
    for old in dest_dir.iterdir():  # keep only the current export
        if old.is_dir() and old.name != short:
            remove_tree(old)
    return final


# ---------------------------------------------------------------- the `claude` runtime's image

CLAUDE_SDK_REQUIREMENT = "claude-agent-sdk>=0.2.189"
RUNTIME_LABEL = "clawgate.runtime"


def image_python(client: DockerClient, image: str) -> str:
    """The `major.minor` of the image's python3 (wheels with C extensions must match it)."""
    try:
        out = client.containers.run(
            image,
            entrypoint=["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            network_disabled=True,
            remove=True,
        )
    except DockerException as exc:
        raise ImageBuildError(f"cannot run python3 in {image}: {str(exc).splitlines()[0][:200]}") from None
    version = out.decode().strip() if isinstance(out, bytes) else str(out).strip()
    if not version or not version.replace(".", "").isdigit():
        raise ImageBuildError(f"cannot tell the Python version of {image} (got {version!r})")
    return version


def has_claude_wheels(wheels: Path) -> bool:
    return any(wheels.glob("claude_agent_sdk-*.whl")) and any(wheels.glob("pip-*.whl"))


def fetch_claude_wheels(wheels: Path, python: str, progress: Progress) -> None:
    """`pip download` the SDK, its dependencies and pip itself for `python` on linux x86_64.

    Runs on the host because a build step inside `docker build` may not reach the package
    index; the wheels are then copied into the build context.
    """
    wheels.mkdir(parents=True, exist_ok=True)
    progress(f"downloading {CLAUDE_SDK_REQUIREMENT} and its dependencies for Python {python} into {wheels} …")
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--only-binary=:all:",
        f"--python-version={python}",
        "--implementation=cp",
        "--platform=manylinux_2_17_x86_64",
        "--platform=manylinux2014_x86_64",
        f"--find-links={wheels}",
        "--dest",
        str(wheels),
        CLAUDE_SDK_REQUIREMENT,
        "pip",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-10:])
        raise ImageBuildError(
            f"pip download failed (fetch the wheels elsewhere and pass --wheels DIR):\n{tail}"
        )


def build_claude_image(
    client: DockerClient, sandbox_image: str, tag: str, wheels: Path, progress: Progress
) -> str:
    """Build `Dockerfile.claude` on top of the built-in `sandbox_image`; returns the image id.

    The build context is a temporary directory holding only the Dockerfile and the wheels
    (hard links where possible), not the checkout, so nothing else is sent to the engine.
    """
    dockerfile = PROJECT_ROOT / "Dockerfile.claude"
    if not dockerfile.exists():
        raise ImageBuildError(f"{dockerfile} not found: run from a clawgate source checkout")
    if not has_claude_wheels(wheels):
        raise ImageBuildError(f"{wheels} holds no claude_agent_sdk and pip wheels")
    with tempfile.TemporaryDirectory(prefix="clawgate-claude-") as tmp:
        context = Path(tmp)
        shutil.copy(dockerfile, context / "Dockerfile.claude")
        (context / "wheels").mkdir()
        for wheel in sorted(wheels.glob("*.whl")):
            target = context / "wheels" / wheel.name
            try:
                os.link(wheel, target)
            except OSError:
                shutil.copy(wheel, target)
        progress(f"building {tag} on {sandbox_image} …")
        return _build(
            client,
            tag,
            progress,
            path=str(context),
            dockerfile="Dockerfile.claude",
            buildargs={"SANDBOX_IMAGE": sandbox_image},
            labels={AGENT_LABEL: agent_fingerprint(), RUNTIME_LABEL: "claude"},
        )
