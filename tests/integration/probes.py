"""Hostile programs run inside a sandbox by the hardening proofs of every backend.

One copy, so the Docker and bubblewrap suites attack with exactly the same code.
"""

from __future__ import annotations

# Forks until the pids limit bites, reports how far it got, then cleans up after itself.
FORK_BOMB = (
    "import os, signal, time\n"
    "kids = []\n"
    "try:\n"
    "    for _ in range(200):\n"
    "        pid = os.fork()\n"
    "        if pid == 0:\n"
    "            time.sleep(30); os._exit(0)\n"
    "        kids.append(pid)\n"
    "    print('UNLIMITED')\n"
    "except OSError as e:\n"
    "    print('blocked after', len(kids), e.strerror)\n"
    "for pid in kids: os.kill(pid, signal.SIGKILL)\n"
    "for pid in kids: os.waitpid(pid, 0)\n"
)


def connect_probe(targets: list[tuple[str, int]]) -> str:
    """Tries a direct TCP connection to each (host, port); prints CONNECTED or failed per target."""
    return (
        "import socket\n"
        f"for host, port in {targets!r}:\n"
        "    try:\n"
        "        socket.create_connection((host, port), timeout=3); print('CONNECTED', host)\n"
        "    except OSError as e: print('failed', host, type(e).__name__)\n"
    )
