"""Building the sandbox image, online or offline.

With a registry, `Dockerfile.sandbox` builds on its default public Python base.
Without one (air-gapped hosts, CI here), a minimal Debian with python3 is made with
debootstrap from the distribution mirror and `docker import`ed as a local base, so
`clawgate image build` works either way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from docker.errors import APIError, BuildError, DockerException, ImageNotFound

DEFAULT_BASE = "python:3.12-slim"
LOCAL_BASE = "clawgate-base:bookworm"
BASE_PACKAGES = "python3,bash,coreutils,git,curl,ca-certificates"
PROJECT_ROOT = Path(__file__).resolve().parents[2]

Progress = Callable[[str], None]


class ImageBuildError(Exception):
    """The image could not be built; the message says why and what to install."""


def _has_image(client: Any, name: str) -> bool:
    try:
        client.images.get(name)
        return True
    except ImageNotFound:
        return False


def _try_pull(client: Any, name: str, progress: Progress) -> bool:
    progress(f"pulling {name} …")
    try:
        client.images.pull(name)
        return True
    except DockerException as exc:
        progress(f"cannot pull {name}: {str(exc).splitlines()[0][:160]}")
        return False


def build_local_base(client: Any, progress: Progress, mirror: str | None = None) -> str:
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


def choose_base(client: Any, requested: str | None, progress: Progress) -> str:
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


def build_image(client: Any, tag: str, base: str | None, progress: Progress) -> str:
    """Build `Dockerfile.sandbox` on the chosen base, streaming the build log; returns the image id."""
    dockerfile = PROJECT_ROOT / "Dockerfile.sandbox"
    if not dockerfile.exists():
        raise ImageBuildError(f"{dockerfile} not found: run from a clawgate source checkout")
    chosen = choose_base(client, base, progress)
    progress(f"building {tag} on {chosen} …")
    try:
        stream = client.api.build(
            path=str(PROJECT_ROOT),
            dockerfile="Dockerfile.sandbox",
            tag=tag,
            rm=True,
            forcerm=True,
            decode=True,
            buildargs={"BASE_IMAGE": chosen},
            labels={"clawgate.base": chosen},
        )
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
    return image_id or client.images.get(tag).id
