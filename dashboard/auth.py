"""Who may use the dashboard: one-time login links, server-side sessions, CSRF tokens.

Login links. `clawgate dashboard url` (a shell on this machine, the same trust as the config
dir) mints a random token and stores only its SHA-256, with an expiry and the admin identity
the session will act as, in a file of its own under `<data dir>/dashboard/logins/` (directory
0700, file 0600). The gateway consumes a token by unlinking that file: the kernel lets exactly
one unlink succeed, so a link works once even when two requests race, and nothing in the data
dir lets anyone rebuild a usable link. No database write is needed, so minting works whether
or not the gateway runs.

Sessions live only in the gateway's memory (a restart logs everybody out): a random id in an
`HttpOnly; SameSite=Strict; Path=/` cookie, an absolute expiry, and a per-session synchroniser
token every form carries (CSRF). The cookie is not `Secure` because the default bind is plain
HTTP on loopback; a remote bind needs TLS in front (README).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

LOGIN_TTL_S = 600.0  # a login link is for opening now, not for keeping
SESSION_TTL_S = 8 * 3600.0
MAX_SESSIONS = 64  # oldest dropped first: a flood of logins cannot grow memory without bound
COOKIE = "clawgate_session"
_TOKEN_BYTES = 32


def logins_dir(data_dir: Path) -> Path:
    return data_dir / "dashboard" / "logins"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def mint_login(data_dir: Path, user: str, now: float | None = None, ttl_s: float = LOGIN_TTL_S) -> str:
    """A new one-time token acting as `user`; only its hash reaches the disk (0600, written whole)."""
    now = time.time() if now is None else now
    directory = logins_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    os.chmod(directory.parent, 0o700)
    _sweep(directory, now)
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    final = directory / _digest(token)
    tmp = directory / f".{final.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"user": user, "expires_at": now + ttl_s}, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return token


def consume_login(data_dir: Path, token: str, now: float | None = None) -> str | None:
    """The admin identity of a valid, unexpired, unused token; None otherwise. Used up either way."""
    now = time.time() if now is None else now
    if not token or len(token) > 200:
        return None
    path = logins_dir(data_dir) / _digest(token)
    try:
        text = path.read_text(encoding="utf-8")
        path.unlink()  # exactly one caller gets past this line for a given token
    except OSError:
        return None
    try:
        record = json.loads(text)
        user, expires_at = str(record["user"]), float(record["expires_at"])
    except (ValueError, KeyError, TypeError):
        return None
    return user if now < expires_at else None


def _sweep(directory: Path, now: float) -> None:
    """Remove expired (or unreadable) login files, so unused links do not pile up."""
    for path in directory.iterdir():
        try:
            expires_at = float(json.loads(path.read_text(encoding="utf-8"))["expires_at"])
        except (OSError, ValueError, KeyError, TypeError):
            expires_at = 0.0
        if expires_at <= now:
            with contextlib.suppress(OSError):
                path.unlink()


@dataclass
class Session:
    id: str
    user: str  # the admin identity decisions are taken as (gateway.approvals judges it each time)
    csrf: str
    expires_at: float
    flash: list[str] = field(default_factory=list)  # one-shot notes shown on the next page


class Sessions:
    """Server-side sessions keyed by the cookie's random id."""

    def __init__(self, ttl_s: float = SESSION_TTL_S) -> None:
        self._ttl_s = ttl_s
        self._by_id: dict[str, Session] = {}

    def create(self, user: str, now: float | None = None) -> Session:
        now = time.time() if now is None else now
        self._drop_expired(now)
        while len(self._by_id) >= MAX_SESSIONS:
            self._by_id.pop(next(iter(self._by_id)))
        session = Session(
            id=secrets.token_urlsafe(_TOKEN_BYTES),
            user=user,
            csrf=secrets.token_urlsafe(_TOKEN_BYTES),
            expires_at=now + self._ttl_s,
        )
        self._by_id[session.id] = session
        return session

    def get(self, session_id: str | None, now: float | None = None) -> Session | None:
        if not session_id:
            return None
        now = time.time() if now is None else now
        session = self._by_id.get(session_id)
        if session is None:
            return None
        if now >= session.expires_at:
            del self._by_id[session_id]
            return None
        return session

    def end(self, session_id: str) -> None:
        self._by_id.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._by_id)

    def _drop_expired(self, now: float) -> None:
        for sid in [s.id for s in self._by_id.values() if now >= s.expires_at]:
            del self._by_id[sid]


def csrf_ok(session: Session, submitted: str | None) -> bool:
    return submitted is not None and hmac.compare_digest(session.csrf.encode(), submitted.encode())


def same_origin(origin: str | None, fetch_site: str | None, own_origin: str) -> bool:
    """A state-changing request must prove it comes from our own pages.

    `Sec-Fetch-Site` (a header no page can set) decides when the browser sends it: it must be
    `same-origin`; `Origin` may then be ours or `null` — Chromium sends `null` on a same-origin
    form POST because our `Referrer-Policy` is `no-referrer`. Without `Sec-Fetch-Site`, `Origin`
    must be ours. A request with neither (no browser posts like that) is refused.
    """
    if fetch_site is not None:
        return fetch_site == "same-origin" and origin in (None, "null", own_origin)
    return origin == own_origin
