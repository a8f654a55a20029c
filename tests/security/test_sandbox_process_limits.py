"""A hostile agent piles up zombies and descriptors inside its own sandbox (issue 11, break 4).

Without an init process the agent itself is pid 1 and never reaps orphans, so zombies
accumulate until the pids limit is spent; without a `nofile` limit one process may hold
a million descriptors. Both run inside the real sandbox through the agent's shell tool.
"""

from __future__ import annotations

import json

from gateway.app import Gateway
from tests.security.conftest import Attacker, Tier

ORPHANS = 20
NOFILE_HARD_MAX = 4096

ATTACK = r"""
import json, os, resource, time
for _ in range(%(orphans)d):
    child = os.fork()
    if child == 0:
        if os.fork() == 0:
            time.sleep(0.3)  # outlive the parent: reparented to pid 1, then exit -> a zombie
            os._exit(0)
        os._exit(0)
    os.waitpid(child, 0)
time.sleep(3)
zombies = 0
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{pid}/stat") as f:
            zombies += f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        pass
with open("/proc/1/comm") as f:
    init = f.read().strip()
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
except (ValueError, OSError):
    pass
fds = []
try:
    while len(fds) < 20000:
        fds.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
for fd in fds:
    os.close(fd)
print("REPORT " + json.dumps({"zombies": zombies, "hard": hard, "opened": len(fds), "init": init}))
"""


async def test_attacker_leaves_zombies_and_hoards_descriptors(
    tier: Tier, attacker: Attacker, hostile_gateway: Gateway
) -> None:
    out = await attacker.shell(f"python3 - <<'EOF'\n{ATTACK % {'orphans': ORPHANS}}\nEOF")
    line = next((x for x in out.splitlines() if x.startswith("REPORT ")), None)
    assert line is not None, out
    report = json.loads(line.removeprefix("REPORT "))
    assert report["zombies"] == 0, report  # pid 1 is an init that reaps orphans
    assert report["init"] not in ("python3", "python"), report  # the agent is not pid 1
    assert report["hard"] <= NOFILE_HARD_MAX and report["opened"] < NOFILE_HARD_MAX, report
