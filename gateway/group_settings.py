"""`clawgate groups set`: change a registered group's runtime and sender policy, in one place.

The CLI runs it on a registry loaded from the database (then tells a running gateway to reload);
the dashboard runs it on the running gateway's registry (then does that reload itself). Both get
the same checks and the same answer, and a refused change writes nothing: every value is
checked before the first write.
"""

from __future__ import annotations

from core.config import AGENT_RUNTIMES
from core.senders import validate_policy
from gateway.registry import GroupRegistry

RUNTIME_CHOICES = (*AGENT_RUNTIMES, "default")  # "default": follow [agent] runtime


async def set_group(registry: GroupRegistry, name: str, runtime: str | None, senders: str | None) -> str:
    """Apply the change; returns the line the CLI prints, or raises ValueError with the reason."""
    if runtime is None and senders is None:
        raise ValueError("nothing to change: give --runtime and/or --senders")
    group = registry.by_folder(name)
    if group is None:
        raise ValueError(f"no registered group {name!r} (see `clawgate groups list`)")
    if runtime is not None and runtime not in RUNTIME_CHOICES:
        raise ValueError(f"unknown runtime {runtime!r}: use one of {', '.join(RUNTIME_CHOICES)}")
    if senders is not None:
        validate_policy(senders)
        if group.is_main:
            raise ValueError("the main chat is always limited to admins ([admin] users)")
        await registry.set_senders(name, senders)
    if runtime is not None:
        await registry.set_runtime(name, None if runtime == "default" else runtime)
    changed = [f"runtime {runtime}"] if runtime else []
    changed += [f"senders {senders}"] if senders else []
    return f"{name}: {', '.join(changed)}"
