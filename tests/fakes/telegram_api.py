"""A Telegram Bot API server on loopback, speaking the real HTTP/JSON protocol.

python-telegram-bot talks to it unchanged (`base_url`). It implements what clawgate
uses — getMe, getUpdates (long polling), deleteWebhook, sendMessage, editMessageText,
answerCallbackQuery, setMyCommands/getMyCommands, sendChatAction, getFile and file
downloads — validates `parse_mode=HTML` like Telegram does (allowed tags, balanced,
4096 characters of text), and lets a test push updates and inject failures
(`fail_next("sendMessage", 429, retry_after=1)`, or `slow_next("sendMessage", 3)`: the
call is carried out — the message is in the chat — but answered only after 3 s, past
a client's timeout).
"""

from __future__ import annotations

import contextlib
import html
import itertools
import json
import re
import threading
import time
import urllib.parse
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "123456:TEST-token-not-real"
BOT = {"id": 777000111, "is_bot": True, "first_name": "Claw", "username": "claw_test_bot"}
_ALLOWED_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "code", "pre", "a", "blockquote"}


def check_html(text: str) -> str:
    """Telegram's HTML rules, roughly: known tags only, properly nested; returns the plain text."""
    stack: list[str] = []
    for match in re.finditer(r"<(/?)([a-zA-Z-]*)[^>]*>|<|>", text):
        token = match.group(0)
        if token in ("<", ">") or not match.group(2):
            raise ValueError(f"can't parse entities: unexpected {token!r} at byte offset {match.start()}")
        name = match.group(2).lower()
        if name not in _ALLOWED_TAGS:
            raise ValueError(f'can\'t parse entities: unsupported start tag "{name}" at {match.start()}')
        if match.group(1):
            if not stack or stack[-1] != name:
                raise ValueError(f'can\'t parse entities: unmatched end tag "{name}" at {match.start()}')
            stack.pop()
        else:
            stack.append(name)
    if stack:
        raise ValueError(f'can\'t parse entities: unclosed start tag "{stack[-1]}"')
    return html.unescape(re.sub(r"<[^>]*>", "", text))


class FakeBotApi:
    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.bot = dict(BOT)
        self.lock = threading.Condition()
        self.updates: list[dict[str, Any]] = []
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}  # (chat, message id) → message
        self.sent: list[dict[str, Any]] = []  # every accepted sendMessage, in order
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.call_times: list[float] = []  # time.monotonic() of each entry in `calls`
        self.unauthorized: list[str] = []  # methods called with a wrong token (answered 401)
        self.answers: list[dict[str, Any]] = []
        self.commands: list[dict[str, Any]] = []
        self.files: dict[str, bytes] = {}
        self.webhook: dict[str, Any] = {}
        self.on_get_updates: Any = None  # called (no lock held) at every getUpdates, before it answers
        self._failures: list[tuple[str, int, dict[str, Any]]] = []
        self._slow: list[tuple[str, float]] = []
        self.confirmed_below = 0  # getUpdates offsets: every update below this is acknowledged
        self.confirmed_ids: set[int] = set()
        self.on_confirm: Any = None  # called with the new offset before it takes effect
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1000)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeBotApi:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- test controls ---------------------------------------------------------------------

    def fail_next(
        self, method: str, code: int, description: str = "", retry_after: int | None = None
    ) -> None:
        params: dict[str, Any] = {"description": description or f"error {code}"}
        if retry_after is not None:
            params["parameters"] = {"retry_after": retry_after}
            params["description"] = f"Too Many Requests: retry after {retry_after}"
        with self.lock:
            self._failures.append((method, code, params))

    def _push(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.updates.append({"update_id": next(self._update_ids), kind: payload})
            self.lock.notify_all()
        return payload

    def push_message(
        self,
        chat_id: int,
        text: str | None = None,
        *,
        user: dict[str, Any] | None = None,
        chat_type: str = "supergroup",
        title: str = "Test group",
        thread_id: int | None = None,
        reply_to: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        sender = user or {"id": 4242, "is_bot": False, "first_name": "Alice"}
        chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
        if chat_type != "private":
            chat["title"] = title
        if thread_id is not None:
            chat["is_forum"] = True
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": chat,
            "from": sender,
        }
        if text is not None:
            message["text"] = text
        if thread_id is not None:
            message["message_thread_id"] = thread_id
            message["is_topic_message"] = True
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        message.update(extra or {})
        with self.lock:
            self.messages[(chat_id, message["message_id"])] = message
        return self._push("message", message)

    def push_callback(self, message: dict[str, Any], data: str, user: dict[str, Any] | None = None) -> str:
        query_id = f"cq{next(self._update_ids)}"
        sender = user or {"id": 4242, "is_bot": False, "first_name": "Alice"}
        self._push(
            "callback_query",
            {"id": query_id, "from": sender, "message": message, "chat_instance": "ci1", "data": data},
        )
        return query_id

    def wait_for(self, predicate: Any, timeout: float = 10) -> Any:
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                result = predicate()
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("fake Bot API: condition not reached")
                self.lock.wait(remaining)

    # -- the API -----------------------------------------------------------------------------

    def _new_message(self, chat_id: int, text: str, params: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "supergroup" if chat_id < 0 else "private", "title": "t"},
            "from": self.bot,
            "text": text,
        }
        if params.get("message_thread_id") is not None:
            message["message_thread_id"] = int(params["message_thread_id"])
            message["is_topic_message"] = True
        if params.get("reply_markup"):
            message["reply_markup"] = params["reply_markup"]
        return message

    def slow_next(self, method: str, delay_s: float) -> None:
        """The next `method` call is accepted at once but answered `delay_s` seconds later."""
        with self.lock:
            self._slow.append((method, delay_s))

    def answer_delay(self, method: str) -> float:
        with self.lock:
            for index, (name, delay) in enumerate(self._slow):
                if name == method:
                    del self._slow[index]
                    return delay
        return 0.0

    def call(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.calls.append((method, params))
            self.call_times.append(time.monotonic())
            for index, (name, code, body) in enumerate(self._failures):
                if name == method:
                    del self._failures[index]
                    return code, {"ok": False, "error_code": code, **body}
        handler = getattr(self, f"api_{method.lower()}", None)
        if handler is None:
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}
        try:
            result = handler(params)
        except ValueError as exc:
            return 400, {"ok": False, "error_code": 400, "description": f"Bad Request: {exc}"}
        with self.lock:
            self.lock.notify_all()
        return 200, {"ok": True, "result": result}

    def _text(self, params: dict[str, Any]) -> str:
        text = str(params.get("text", ""))
        plain = check_html(text) if str(params.get("parse_mode", "")).upper() == "HTML" else text
        if not plain.strip():
            raise ValueError("message text is empty")
        if len(plain) > 4096:
            raise ValueError("message is too long")
        return text

    def api_getme(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.bot

    def api_deletewebhook(self, params: dict[str, Any]) -> bool:
        return True

    def api_setwebhook(self, params: dict[str, Any]) -> bool:
        self.webhook = params
        return True

    def api_getupdates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Telegram's rule: an offset above an update's id confirms it, and it is gone for good.

        Without an offset, the oldest unconfirmed updates come back (that is what a restarted
        bot sees). `on_confirm(offset)` runs before anything is forgotten, so a test can kill
        the bot at the exact moment it acknowledges a batch.
        """
        offset = int(params.get("offset") or 0)
        limit = max(1, min(int(params.get("limit") or 100), 100))
        timeout = float(params.get("timeout") or 0)
        if offset > self.confirmed_below:
            if self.on_confirm is not None:
                self.on_confirm(offset)
            with self.lock:
                self.confirmed_below = max(self.confirmed_below, offset)
                self.confirmed_ids.update(u["update_id"] for u in self.updates if u["update_id"] < offset)
                self.lock.notify_all()
        deadline = time.monotonic() + timeout
        if self.on_get_updates is not None:
            self.on_get_updates()
        with self.lock:  # confirmed updates stay in `updates` (tests read them) but never come back
            while True:
                start = max(offset, self.confirmed_below)
                pending = [u for u in self.updates if u["update_id"] >= start][:limit]
                remaining = deadline - time.monotonic()
                if pending or remaining <= 0:
                    return pending
                self.lock.wait(min(remaining, 0.5))

    def api_sendmessage(self, params: dict[str, Any]) -> dict[str, Any]:
        text = self._text(params)
        chat_id = int(params["chat_id"])
        message = self._new_message(chat_id, text, params)
        with self.lock:
            self.messages[(chat_id, message["message_id"])] = message
            self.sent.append({**message, "parse_mode": params.get("parse_mode")})
        return message

    def api_editmessagetext(self, params: dict[str, Any]) -> dict[str, Any]:
        text = self._text(params)
        key = (int(params["chat_id"]), int(params["message_id"]))
        with self.lock:
            message = self.messages.get(key)
            if message is None:
                raise ValueError("message to edit not found")
            message["text"] = text
            message["edit_date"] = int(time.time())
            if params.get("reply_markup"):
                message["reply_markup"] = params["reply_markup"]
            else:
                message.pop("reply_markup", None)  # like Telegram: no markup in the edit removes it
            return dict(message)

    def api_answercallbackquery(self, params: dict[str, Any]) -> bool:
        with self.lock:
            self.answers.append(params)
        return True

    def api_setmycommands(self, params: dict[str, Any]) -> bool:
        self.commands = list(params.get("commands") or [])
        return True

    def api_getmycommands(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return self.commands

    def api_sendchataction(self, params: dict[str, Any]) -> bool:
        return True

    def api_getfile(self, params: dict[str, Any]) -> dict[str, Any]:
        file_id = str(params["file_id"])
        if file_id not in self.files:
            raise ValueError("invalid file_id")
        return {
            "file_id": file_id,
            "file_unique_id": f"u{file_id}",
            "file_size": len(self.files[file_id]),
            "file_path": f"documents/{file_id}",
        }

    # -- HTTP --------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, code: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(ConnectionError):  # a long poll the client gave up on
                    self.wfile.write(body)

            def do_GET(self) -> None:
                prefix, path = f"/file/bot{api.token}/documents/", urllib.parse.unquote(self.path)
                if path.startswith(prefix) and path[len(prefix) :] in api.files:
                    self._reply(200, api.files[path[len(prefix) :]], "application/octet-stream")
                else:
                    self._reply(404, b'{"ok":false,"error_code":404,"description":"Not Found"}')

            def do_POST(self) -> None:
                match = re.fullmatch(r"/bot([^/]+)/(\w+)", self.path)
                if match is None or match.group(1) != api.token:
                    with api.lock:
                        api.unauthorized.append(match.group(2) if match else self.path[:40])
                    self._reply(401, b'{"ok":false,"error_code":401,"description":"Unauthorized"}')
                    return
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                delay = api.answer_delay(match.group(2))
                code, body = api.call(match.group(2), _params(self.headers.get("Content-Type", ""), raw))
                time.sleep(delay)  # accepted (carried out above), answered late
                self._reply(code, json.dumps(body).encode())

        return Handler


def _params(content_type: str, raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    if content_type.startswith("application/json"):
        return json.loads(raw)
    if content_type.startswith("multipart/form-data"):
        message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
        fields = {
            part.get_param("name", header="content-disposition"): part.get_content()
            for part in message.iter_parts()
        }
    else:
        fields = dict(urllib.parse.parse_qsl(raw.decode(), keep_blank_values=True))
    return {key: _decode(key, value) for key, value in fields.items()}


def _decode(key: str, value: Any) -> Any:
    if key in ("text", "callback_query_id", "file_id", "parse_mode") or not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value
