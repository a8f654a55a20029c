"""Listing a test's containers while the gateway may be removing them.

docker-py's `containers.list()` inspects every container it found, one request each; a
container removed in between (idle shutdown, a stop, the orphan sweep) makes that inspect
raise NotFound, and the test fails on a race it did not mean to test. Here the list is sparse
and each container is then inspected on its own, leaving out the ones already gone.
"""

from __future__ import annotations

import contextlib
from typing import Any

import docker


def labelled(client: docker.DockerClient, labels: list[str], *, stopped: bool = True) -> list[Any]:
    """Containers carrying every one of `labels` (running ones only unless `stopped`), inspected."""
    found = []
    for sparse in client.containers.list(all=stopped, sparse=True, filters={"label": labels}):
        with contextlib.suppress(docker.errors.NotFound):
            found.append(client.containers.get(sparse.id))
    return found
