"""HTTP JSON POST to the model API through the egress proxy, with retries and typed errors.

Why a hand-rolled proxy handler: urllib honours ``NO_PROXY``/``no_proxy`` and would connect
directly to e.g. ``127.0.0.1`` model URLs, but the container's loopback is not the host's;
every request must go through the relay. ``urllib.request`` is imported lazily because it
pulls in ``http.client``/``ssl`` and cold start is benchmarked.
"""

import contextlib
import json
import os
import time
from typing import Any, Dict, Optional

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504, 529})
# The vault refuses a model call of a group over its budget with a 403 whose message starts
# so (proxy/budget.py). It is final: the turn ends and the message is what the chat sees.
BUDGET_MARKER = "clawgate budget:"
MAX_ERROR_BODY = 65536


class ModelError(Exception):
    """Base for everything that makes a model call fail; ``summary()`` is chat-safe."""

    def summary(self) -> str:
        return f"model error: {_one_line(str(self))}"


class ModelHTTPError(ModelError):
    """The upstream (or the vault in front of it) answered with a non-2xx status."""

    def __init__(self, status: int, detail: str, body: str = "", retry_after: Optional[float] = None) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail
        self.body = body
        self.retry_after = retry_after

    def budget_refusal(self) -> Optional[str]:
        """The vault's budget message when this is its refusal, else None."""
        if self.status != 403:
            return None
        try:
            data = json.loads(self.body)
        except ValueError:
            return None
        err = data.get("error") if isinstance(data, dict) else None
        message = err.get("message") if isinstance(err, dict) else None
        if isinstance(message, str) and message.startswith(BUDGET_MARKER):
            return _one_line(message, 300)
        return None

    def summary(self) -> str:
        refused = self.budget_refusal()
        if refused is not None:
            return refused
        # "retry after Ns" is read by the gateway (gateway/failures.py): its retry waits that long.
        suffix = f" ({self.detail})" if self.detail else ""
        wait = f"; retry after {self.retry_after:g}s" if self.retry_after else ""
        return f"model error: HTTP {self.status} from upstream{suffix}{wait}"


class ModelUnreachable(ModelError):
    """No HTTP response at all: relay/vault refused, connection reset, timeout."""

    def summary(self) -> str:
        return f"model unreachable: {_one_line(str(self))}"


class ModelResponseError(ModelError):
    """A 2xx response we cannot interpret."""

    def summary(self) -> str:
        return f"model error: bad response ({_one_line(str(self))})"


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error_detail(body: str) -> str:
    """Turn an Anthropic/OpenAI error body into a short human phrase, e.g. ``overloaded``."""
    try:
        data = json.loads(body)
    except ValueError:
        return _one_line(body, 120) if body.strip() and "<" not in body[:1] else ""
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return ""
    etype = str(err.get("type") or err.get("code") or "")
    kind = etype.removesuffix("_error").replace("_", " ").strip()
    message = _one_line(str(err.get("message") or ""), 120)
    if kind and message and message.lower() != kind.lower():
        return f"{kind}: {message}"
    return kind or message


def _reason(exc: BaseException) -> str:
    reason: Any = getattr(exc, "reason", None) or exc
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    text = str(reason) or type(reason).__name__
    return text


def _proxies() -> Dict[str, str]:
    """Proxy URLs from the environment (lower-case wins, as in curl), ignoring NO_PROXY."""
    proxies: Dict[str, str] = {}
    for scheme in ("http", "https"):
        value = os.environ.get(f"{scheme}_proxy") or os.environ.get(f"{scheme.upper()}_PROXY")
        if value:
            proxies[scheme] = value
    return proxies


_OPENERS: Dict[Any, Any] = {}


def _opener() -> Any:
    """An opener whose proxy handler never bypasses the proxy; cached per proxy settings."""
    proxies = _proxies()
    key = tuple(sorted(proxies.items()))
    opener = _OPENERS.get(key)
    if opener is not None:
        return opener
    import urllib.request

    class _StrictProxyHandler(urllib.request.ProxyHandler):
        def proxy_open(self, req: Any, proxy: str, type: str) -> Any:
            # The stdlib implementation minus its proxy_bypass() check.
            from urllib.parse import unquote
            from urllib.request import _parse_proxy  # type: ignore[attr-defined]  # private: not in typeshed

            orig_type = req.type
            proxy_type, user, password, hostport = _parse_proxy(proxy)
            if proxy_type is None:
                proxy_type = orig_type
            if user and password:
                import base64

                creds = f"{unquote(user)}:{unquote(password)}".encode()
                req.add_header("Proxy-authorization", "Basic " + base64.b64encode(creds).decode("ascii"))
            req.set_proxy(unquote(hostport), proxy_type)
            if orig_type == proxy_type or orig_type == "https":
                return None
            return self.parent.open(req, timeout=req.timeout)

    opener = urllib.request.build_opener(_StrictProxyHandler(proxies))
    _OPENERS[key] = opener
    return opener


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    from email.utils import parsedate_to_datetime

    with contextlib.suppress(TypeError, ValueError, IndexError):
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    return None


def _retry_delay(attempt: int, backoff: float, retry_after: Optional[float], cap: float) -> float:
    """Exponential backoff capped at ``cap``, but never sooner than the server's Retry-After."""
    delay = min(backoff * (2**attempt), cap)
    return max(delay, retry_after or 0.0)


def post_json(
    url: str,
    body: Dict[str, Any],
    headers: Dict[str, str],
    timeout: float,
    retries: int = 2,
    backoff: float = 0.5,
    max_retry_after: float = 5.0,
) -> Dict[str, Any]:
    """POST ``body`` as JSON and return the decoded JSON object.

    Transient failures (429/5xx/529, connection reset) are retried ``retries`` times with
    exponential backoff, never sooner than ``retry-after``; a longer ``retry-after`` than
    ``max_retry_after`` seconds is raised instead (the gateway's retry honours it). A
    timeout is not retried: it already cost ``timeout`` seconds of the user's wait.
    """
    import http.client
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode("utf-8")
    all_headers = {"content-type": "application/json", "accept": "application/json", **headers}
    opener = _opener()
    attempt = 0
    while True:
        request = urllib.request.Request(url, data=data, headers=all_headers, method="POST")
        try:
            with opener.open(request, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            try:
                err_body = exc.read(MAX_ERROR_BODY).decode("utf-8", "replace")
            except (OSError, http.client.HTTPException):
                err_body = ""
            finally:
                exc.close()
            retry_after = parse_retry_after(exc.headers.get("retry-after"))
            # A wait longer than ``max_retry_after`` is not slept here (the turn would hold the
            # sandbox): the error goes to the gateway, whose retry waits at least that long.
            if exc.code in RETRY_STATUSES and attempt < retries and (retry_after or 0) <= max_retry_after:
                time.sleep(_retry_delay(attempt, backoff, retry_after, max_retry_after))
                attempt += 1
                continue
            raise ModelHTTPError(exc.code, _error_detail(err_body), err_body, retry_after) from None
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError) or "timed out" in str(reason):
                raise ModelUnreachable(f"timed out after {timeout:g}s") from None
            if attempt < retries:
                time.sleep(_retry_delay(attempt, backoff, None, max_retry_after))
                attempt += 1
                continue
            raise ModelUnreachable(_reason(exc)) from None
        try:
            decoded = json.loads(raw)
        except ValueError:
            raise ModelResponseError("response is not JSON") from None
        if not isinstance(decoded, dict):
            raise ModelResponseError("response is not a JSON object")
        return decoded
