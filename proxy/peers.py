"""Which group a loopback connection into mitmproxy belongs to.

The relay (proxy/relay.py) binds a fresh loopback port for every sandbox connection and
registers `(ip, port) -> group` here *before* it connects; the addon reads the identity
back from the peer address mitmproxy reports. The address is the only identity there is,
so two things must hold:

- An entry names its owner (the relay link that bound the port) and only that owner can
  remove it. Ports are reused; a late removal by a link that has long let its port go must
  never delete the entry of the link that holds the port now (that connection would be
  refused as a stranger) — and an entry must never outlive its link (a stale entry would
  lend a group's identity to whatever process binds the port next).
- A refused peer is explained. The addon's warning says whether the address was a group
  link a moment ago (a race inside the vault, worth a bug report) or never one (another
  process on the machine dialled mitmproxy's port), so one log line tells them apart.

Shared between the relay (writer) and the addon (reader) in one process; a lock keeps it
safe even if mitmproxy ever calls hooks from another thread.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

Address = tuple[str, int]

_RECENT = 256  # closed links remembered for the refusal message


class PeerRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._peers: dict[Address, tuple[str, object]] = {}
        self._closed: OrderedDict[Address, tuple[str, float]] = OrderedDict()

    def register(self, addr: Address, group: str, owner: object = None) -> None:
        """`owner` is whatever will later unregister: only it can remove the entry."""
        key = (str(addr[0]), int(addr[1]))
        with self._lock:
            self._peers[key] = (group, owner)
            self._closed.pop(key, None)

    def unregister(self, addr: Address, owner: object = None) -> bool:
        """Remove `addr` if `owner` registered it; False (and nothing removed) otherwise."""
        key = (str(addr[0]), int(addr[1]))
        with self._lock:
            entry = self._peers.get(key)
            if entry is None or entry[1] is not owner:
                return False
            del self._peers[key]
            self._closed[key] = (entry[0], time.monotonic())
            while len(self._closed) > _RECENT:
                self._closed.popitem(last=False)
            return True

    def lookup(self, addr: object) -> str | None:
        key = _key(addr)
        if key is None:
            return None
        with self._lock:
            entry = self._peers.get(key)
        return entry[0] if entry is not None else None

    def describe_unknown(self, addr: object) -> str:
        """Why `addr` has no entry, for the refusal's log line."""
        key = _key(addr)
        with self._lock:
            closed = self._closed.get(key) if key is not None else None
        if closed is None:
            return "not a group link: another local process dialled the vault's port"
        group, at = closed
        return f"a link of group {group!r} on this port closed {time.monotonic() - at:.3f}s ago"

    def __len__(self) -> int:
        with self._lock:
            return len(self._peers)


def _key(addr: object) -> Address | None:
    if not isinstance(addr, tuple) or len(addr) < 2:
        return None
    try:
        return (str(addr[0]), int(addr[1]))
    except (TypeError, ValueError):
        return None
