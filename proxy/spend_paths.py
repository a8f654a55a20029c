"""What a request to a model provider costs, as far as the vault can know: the one path table.

Every request a sandbox sends is put in one of these classes (`classify`), on any host unless
said otherwise, so local model servers and test fakes count exactly like the providers' hosts:

- **metered**: the response carries the call's token counts and `proxy/metering.py` reads them
  as they pass (Anthropic Messages, OpenAI Chat Completions, Responses, legacy Completions,
  Embeddings — the OpenAI ones also under the prefixes of OpenAI-compatible APIs, `_COMPAT` —
  Gemini's `:generateContent` / `:streamGenerateContent`, `GEMINI_VERBS`, and Ollama's native
  `/api/chat`, `/api/generate`, `/api/embed`, `OLLAMA`). Refused only once a budget's
  headroom is gone (`proxy/budget.py`).
- **unmeterable**: it spends the owner's money, but no response the vault relays says how much
  at the moment of the call — a batch or a fine-tuning job runs later and bills then; images,
  speech and transcription are priced per image / character / minute, not per token in the
  price table; the legacy Anthropic Text Completions answer has no token counts; a Realtime
  session's usage travels in WebSocket frames; an Assistants run spends in the background; a
  `background: true` Response (`check_background`, read from the body by `background_requested`)
  reports its usage only through a later GET; Gemini's batches, embeddings (no counts in the
  answer), Imagen/Veo, context caches (storage billed per hour), Live API and gRPC likewise, and
  a Gemini model call asking for a protobuf answer (`gemini_unreadable`, checked by the budget),
  and Ollama's legacy `/api/embeddings` (no counts in the answer).
  While any budget applies to the group these are refused (a budget that cannot see spend is
  no budget); without one they pass and the audit log marks them "unmetered".
- **free**: known not to bill by itself (token counting, uploads, cancelling, moderation, ...).
- **unknown**: any other write (not GET/HEAD/OPTIONS/DELETE, nor one a method-override header
  makes a write) under `/v1/` on Anthropic's and OpenAI's API hosts, under `/api/` or `/v1/` on
  Ollama's cloud (`ollama.com`), and anywhere on Gemini's (`PROVIDER_HOSTS`). Providers add
  paid endpoints faster than this table grows, so on
  their hosts what the table does not know is treated like unmeterable spend, not like free.
- **other**: everything else (package mirrors, other APIs): not the budget's business.

Paths are compared the way a lenient server might read them, so spelling cannot slip a call
past the table: query and fragment dropped, percent-escapes decoded (repeatedly, so `%2562`
counts as `b`, `%3A` as the colon of a Gemini `:verb`), backslashes as slashes, `;params`
dropped and kept, empty and `.` segments dropped, case folded, and `..` both resolved and kept
as a segment — the strictest reading wins. Matching over-approximates on purpose: refusing a
request the upstream would have 404ed costs nothing, relaying one it would have billed unseen costs money.

Ollama's native API is matched by its path alone, `/api/<name>` or `/ollama/api/<name>` (Open
WebUI's Ollama proxy, the way many self-hosters expose it), on any host. Over- against
under-approximation, decided so:
- No look at the body for Ollama's `model` + `messages`/`prompt`: Ollama's Go decoder reads keys
  in any case (`"MODEL"`) and keeps the last of duplicates, and `/api/generate` with only `model`
  loads a model; a body test would have to mirror that decoder or be talked past, and a streamed
  body is on its way upstream before the vault could read it. What the path alone costs another
  REST API: its `POST /api/chat` or `/api/generate` is refused only once the group's budget is
  used up (when its model calls are refused anyway), and its answer, without counts, is stored as
  a call estimated from its request's size, marked incomplete (proxy/meter_estimate.py); its
  `POST /api/embeddings` is refused while any budget applies. Cheap next to a paid cloud model's
  spend going unseen.
- No other prefix (`/llm/api/chat`, `/v2/api/chat`): `…/api/chat` under any prefix would catch far
  more unrelated APIs, refusing them under a budget; a reverse proxy that moves Ollama elsewhere
  is under-approximated (its spend unseen), which the README says.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

from core.json_nesting import nesting_exceeds

Endpoint = Literal[
    "anthropic",
    "openai-chat",
    "openai-responses",
    "openai-completions",
    "openai-embeddings",
    "gemini",
    "ollama",
]
Kind = Literal["metered", "unmeterable", "free", "unknown", "other"]

PROVIDER_HOSTS = {
    "api.anthropic.com": "anthropic",
    "api.openai.com": "openai",
    "generativelanguage.googleapis.com": "gemini",
    "ollama.com": "ollama",
}
PROVIDER_NAMES = {"anthropic": "Anthropic", "openai": "OpenAI", "gemini": "Gemini", "ollama": "Ollama"}
NATIVE = ("anthropic", "gemini", "ollama")  # endpoints that are their own provider (else: OpenAI's shape)
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
MAX_CHECKED_BODY = 4 << 20  # a body larger than this is not parsed for `background`
MAX_NESTING = 128
_UNPRINTABLE = re.compile(r"[^\x21-\x7e]")
_SEVERITY: dict[Kind, int] = {"other": 0, "free": 1, "metered": 2, "unknown": 3, "unmeterable": 4}


@dataclass(frozen=True, slots=True)
class Call:
    """One request's class; `provider` picks the error shape of a refusal."""

    kind: Kind
    provider: str = "openai"
    endpoint: Endpoint | None = None  # metered: which parser reads the response
    what: str = ""  # e.g. "OpenAI batch creation", for refusals and the audit log
    why: str = ""  # why the vault cannot meter it
    check_background: bool = False  # POST /v1/responses: `background: true` is unmeterable


def unmetered(call: Call) -> str:
    """The audit log's `spend` for a call let through that the vault cannot meter."""
    return f"unmetered: {call.what}"


_BATCH = "a batch runs later and bills then, in results the vault never relays"
_JOB = "training is billed while the job runs, long after the call"
_UNITS = "it is priced per {}, not per token in the vault's price table"
_ASYNC = "the run spends tokens in the background and its usage shows only on later reads"
_NO_COUNTS = "its answer has no token counts"
_STORAGE = "its storage is billed per hour while it exists, which no response states"


def _m(endpoint: Endpoint, what: str, *, background: bool = False) -> Call:
    provider = endpoint if endpoint in NATIVE else "openai"
    return Call("metered", provider, endpoint, what, check_background=background)


def _u(provider: str, what: str, why: str) -> Call:
    return Call("unmeterable", provider, None, what, why)


_FREE = Call("free")
BACKGROUND = _u(
    "openai",
    "OpenAI background response",
    "its usage arrives only later, through a GET the vault does not match to it",
)

# (path pattern, any method?, class). `*` is one segment, `**` any rest (also none). Write
# methods only unless "any method"; the first matching row wins. The README's "Model spend"
# section lists the same paths (tests/unit/test_spend_paths.py keeps them in step).
TABLE: tuple[tuple[str, bool, Call], ...] = (
    # metered
    ("/v1/messages", False, _m("anthropic", "Anthropic Messages")),
    ("/v1/chat/completions", False, _m("openai-chat", "OpenAI Chat Completions")),
    ("/v1/responses", False, _m("openai-responses", "OpenAI Responses", background=True)),
    ("/v1/completions", False, _m("openai-completions", "OpenAI legacy Completions")),
    ("/v1/embeddings", False, _m("openai-embeddings", "OpenAI Embeddings")),
    # unmeterable
    ("/v1/messages/batches", False, _u("anthropic", "Anthropic message batch creation", _BATCH)),
    ("/v1/batches", False, _u("openai", "OpenAI batch creation", _BATCH)),
    (
        "/v1/complete",
        False,
        _u("anthropic", "Anthropic legacy Text Completions", "its answer has no token counts"),
    ),
    ("/v1/images/generations", False, _u("openai", "OpenAI image generation", _UNITS.format("image"))),
    ("/v1/images/edits", False, _u("openai", "OpenAI image edit", _UNITS.format("image"))),
    ("/v1/images/variations", False, _u("openai", "OpenAI image variation", _UNITS.format("image"))),
    ("/v1/audio/speech", False, _u("openai", "OpenAI text-to-speech", _UNITS.format("character or audio"))),
    ("/v1/audio/transcriptions", False, _u("openai", "OpenAI transcription", _UNITS.format("audio minute"))),
    (
        "/v1/audio/translations",
        False,
        _u("openai", "OpenAI audio translation", _UNITS.format("audio minute")),
    ),
    ("/v1/realtime/**", True, _u("openai", "OpenAI Realtime", "its usage travels in WebSocket frames")),
    ("/v1/fine_tuning/jobs/*/cancel", False, _FREE),
    ("/v1/fine_tuning/jobs/*/pause", False, _FREE),
    ("/v1/fine_tuning/jobs", False, _u("openai", "OpenAI fine-tuning job", _JOB)),
    ("/v1/fine_tuning/jobs/*/resume", False, _u("openai", "OpenAI fine-tuning job resume", _JOB)),
    ("/v1/fine-tunes", False, _u("openai", "OpenAI legacy fine-tune", _JOB)),
    ("/v1/threads/runs", False, _u("openai", "OpenAI Assistants run", _ASYNC)),
    ("/v1/threads/*/runs", False, _u("openai", "OpenAI Assistants run", _ASYNC)),
    ("/v1/threads/*/runs/*/submit_tool_outputs", False, _u("openai", "OpenAI Assistants run", _ASYNC)),
    ("/v1/videos", False, _u("openai", "OpenAI video generation", _UNITS.format("second of video"))),
    ("/v1/videos/*/remix", False, _u("openai", "OpenAI video remix", _UNITS.format("second of video"))),
    # free (matters on the providers' hosts, where anything unlisted is "unknown")
    ("/v1/messages/count_tokens", False, _FREE),
    ("/v1/messages/batches/*/cancel", False, _FREE),
    ("/v1/batches/*/cancel", False, _FREE),
    ("/v1/responses/input_tokens", False, _FREE),
    ("/v1/responses/*/cancel", False, _FREE),
    ("/v1/chat/completions/*", False, _FREE),  # updates a stored completion's metadata
    ("/v1/threads/*/runs/*/cancel", False, _FREE),
    ("/v1/files", False, _FREE),
    ("/v1/uploads/**", False, _FREE),
    ("/v1/moderations", False, _FREE),
    ("/v1/conversations/**", False, _FREE),
    # Gemini's resources; its model calls are `:verb`s, in GEMINI_VERBS below
    ("/*/cachedContents", False, _u("gemini", "Gemini context cache creation", _STORAGE)),
    ("/*/cachedContents/*", False, _u("gemini", "Gemini context cache update", _STORAGE)),
    ("/v1beta/files", False, _FREE),
    ("/upload/v1beta/files", False, _FREE),
)
_ROWS = tuple((tuple(p.lower().strip("/").split("/")), any_method, call) for p, any_method, call in TABLE)

# Gemini's native API names the call by a verb after the resource, `…/models/<model>:<verb>`
# (`tunedModels/<id>:…` too). A verb is matched in the last segment after decoding (`%3A` is a
# colon), under any prefix and with any method (Google honours X-HTTP-Method-Override, and the
# verb alone makes the call), on any host. The README's "Model spend" lists the same verbs.
_LIVE = "its usage travels in WebSocket frames"
GEMINI_VERBS: dict[str, Call] = {
    "generateContent": _m("gemini", "Gemini generateContent"),
    "streamGenerateContent": _m("gemini", "Gemini streamGenerateContent"),
    "countTokens": _FREE,
    "countMessageTokens": _FREE,
    "countTextTokens": _FREE,
    "cancel": _FREE,  # batches/<id>:cancel, operations/<id>:cancel
    "batchGenerateContent": _u("gemini", "Gemini batch creation", _BATCH),
    "asyncBatchEmbedContent": _u("gemini", "Gemini embedding batch creation", _BATCH),
    "embedContent": _u("gemini", "Gemini embedContent", _NO_COUNTS),
    "batchEmbedContents": _u("gemini", "Gemini batchEmbedContents", _NO_COUNTS),
    "embedText": _u("gemini", "Gemini (PaLM) embedText", _NO_COUNTS),
    "batchEmbedText": _u("gemini", "Gemini (PaLM) batchEmbedText", _NO_COUNTS),
    "generateText": _u("gemini", "Gemini (PaLM) generateText", _NO_COUNTS),
    "generateMessage": _u("gemini", "Gemini (PaLM) generateMessage", _NO_COUNTS),
    "generateAnswer": _u("gemini", "Gemini generateAnswer", _NO_COUNTS),
    "predict": _u("gemini", "Gemini predict (Imagen)", _UNITS.format("image")),
    "predictLongRunning": _u(
        "gemini", "Gemini predictLongRunning (Veo, Imagen)", _UNITS.format("second of video or image")
    ),
    "bidiGenerateContent": _u("gemini", "Gemini Live API", _LIVE),
}
_VERBS = {verb.lower(): call for verb, call in GEMINI_VERBS.items()}
# The same service over gRPC (`/google.ai.generativelanguage.v1beta.GenerativeService/…`),
# its `/$rpc/…` fallback, and the Live API's WebSocket (`/ws/….BidiGenerateContent`): any method.
_RPC_PREFIX = "google.ai.generativelanguage."
_RPC = _u("gemini", "Gemini gRPC call", "its answer is protobuf, which the vault does not read")
_LIVE_WS = _u("gemini", "Gemini Live API", _LIVE)

# Ollama's native API (`ollama serve`, its cloud models on ollama.com, hosted Ollama-compatible
# services), write methods only, under the prefixes and for the reasons in the module docstring.
# The README's "Model spend" lists the same names.
OLLAMA: dict[str, Call] = {
    "chat": _m("ollama", "Ollama chat"),
    "generate": _m("ollama", "Ollama generate"),
    "embed": _m("ollama", "Ollama embed"),
    "embeddings": _u("ollama", "Ollama legacy embeddings", _NO_COUNTS),
    **{name: _FREE for name in ("pull", "push", "create", "copy", "delete", "show", "tags", "ps", "version")},
}
_OLLAMA_PREFIXES = (("api",), ("ollama", "api"))


def _ollama(segments: tuple[str, ...]) -> Call | None:
    for prefix in _OLLAMA_PREFIXES:
        rest = segments[len(prefix) :] if segments[: len(prefix)] == prefix else ()
        if len(rest) == 1:
            return OLLAMA.get(rest[0])
        if len(rest) == 2 and rest[0] == "blobs":  # a model file uploaded for /api/create
            return _FREE
    return None


# OpenAI-compatible APIs under other prefixes: OpenRouter `/api/v1/…`, Groq `/openai/v1/…`,
# Gemini `/v1beta/openai/…`, Azure `/openai/deployments/<name>/…`, DeepSeek's bare
# `/chat/completions`. The same four endpoints are metered there when they follow a version or
# `openai` segment, or a deployment name, or stand alone; a REST API whose path merely ends in
# `…/responses` (survey answers, say) is left alone. Anthropic's `/v1/messages` is matched
# exactly: `…/messages` is far too common a REST path to read as a model call.
_COMPAT: tuple[tuple[tuple[str, ...], Call], ...] = (
    (("chat", "completions"), _m("openai-chat", "OpenAI-compatible Chat Completions")),
    (("completions",), _m("openai-completions", "OpenAI-compatible legacy Completions")),
    (("embeddings",), _m("openai-embeddings", "OpenAI-compatible Embeddings")),
    (("responses",), _m("openai-responses", "OpenAI-compatible Responses", background=True)),
)
_COMPAT_AFTER = frozenset({"v1", "v1beta", "openai"})


def _compatible(segments: tuple[str, ...]) -> Call | None:
    for suffix, call in _COMPAT:
        if segments[-len(suffix) :] != suffix:
            continue
        before = segments[: -len(suffix)]
        if not before or before[-1] in _COMPAT_AFTER or before[-2:-1] == ("deployments",):
            return call
    return None


def _segments(path: str, resolve_dots: bool, drop_params: bool = True) -> tuple[str, ...]:
    raw = path.split("#", 1)[0].split("?", 1)[0]
    for _ in range(4):  # `%2562` -> `%62` -> `b`: a double-decoding server must not see more than we do
        decoded = unquote(raw, errors="replace")
        if decoded == raw:
            break
        raw = decoded
    raw = raw.split("#", 1)[0].split("?", 1)[0].replace("\\", "/")
    out: list[str] = []
    for segment in raw.split("/"):
        segment = (segment.split(";", 1)[0] if drop_params else segment).strip().lower()
        if segment in ("", "."):
            continue
        if segment == ".." and resolve_dots:
            if out:
                out.pop()
            continue
        out.append(segment)
    return tuple(out)


def normalize_path(path: str) -> str:
    """The path as the table reads it (dot segments resolved): `/V1//./Batches/?x` -> `/v1/batches`."""
    return "/" + "/".join(_segments(path, True))


def _match(pattern: tuple[str, ...], segments: tuple[str, ...]) -> bool:
    if pattern and pattern[-1] == "**":
        head = pattern[:-1]
        return len(segments) >= len(head) and all(p in ("*", s) for p, s in zip(head, segments, strict=False))
    return len(pattern) == len(segments) and all(
        p in ("*", s) for p, s in zip(pattern, segments, strict=True)
    )


def _gemini(segments: tuple[str, ...]) -> Call | None:
    """A Gemini `:verb` in the last segment (every verb there counts), or its gRPC/Live paths."""
    found: list[Call] = []
    if segments:
        found = [_VERBS[verb] for verb in segments[-1].split(":")[1:] if verb in _VERBS]
    for segment in segments:
        if segment.startswith(_RPC_PREFIX):
            found.append(_LIVE_WS if "bidigeneratecontent" in segment else _RPC)
    return max(found, key=lambda call: _SEVERITY[call.kind]) if found else None


def _lookup(write: bool, segments: tuple[str, ...], host: str) -> Call:
    row = next((c for p, any_method, c in _ROWS if (write or any_method) and _match(p, segments)), None)
    ollama = _ollama(segments) if write else None
    found = [call for call in (row, _gemini(segments), ollama) if call is not None]
    if found:  # the first matching row, unless a Gemini verb or an Ollama call is stricter
        return max(found, key=lambda call: _SEVERITY[call.kind])
    compatible = _compatible(segments) if write else None
    if compatible is not None:
        return compatible
    provider = PROVIDER_HOSTS.get(host)
    # Anthropic's and OpenAI's APIs live under /v1/, Ollama's under /api/ and /v1/ (its
    # OpenAI-compatible one); everything on Gemini's host is its API.
    api = ("v1", "api") if provider == "ollama" else ("v1",)
    if write and provider is not None and (provider == "gemini" or segments[:1] in [(p,) for p in api]):
        shown = _UNPRINTABLE.sub("?", "/".join(segments))  # the client's text: no newline reaches a log
        what = f"{PROVIDER_NAMES[provider]} /{shown}"[:120]
        return Call("unknown", provider, None, what, "the vault does not know what this endpoint costs")
    return Call("other")


def classify(method: str, path: str, host: str = "", overrides: Iterable[str] = ()) -> Call:
    """The class of one request (see the module docstring); the strictest of the path readings.

    `overrides`: the request's X-HTTP-Method-Override (and alike) values; a server that honours
    one (Google's does) treats a GET carrying `POST` as a write, so the table does too.
    """
    write = any(m.strip().upper() not in READ_METHODS for m in (method, *overrides))
    host = host.strip().lower().rstrip(".")
    readings = ((True, True), (False, True), (True, False))  # (resolve `..`, drop `;params`)
    found = [_lookup(write, _segments(path, resolve, params), host) for resolve, params in readings]
    return max(found, key=lambda call: _SEVERITY[call.kind])


def model_endpoint(method: str, path: str) -> Endpoint | None:
    """Which metered model API a request calls, on any host; None if it is not one."""
    call = classify(method, path)
    return call.endpoint if call.kind == "metered" else None


# Google's APIs answer in protobuf when asked (`alt=proto`, `$alt=…`, a protobuf or JSPB
# `application/json+protobuf` body or Accept): the same metered call, in bytes the meter cannot
# read. Such a call is unmeterable; only JSON and SSE answers are metered.
GEMINI_OPAQUE = _u(
    "gemini",
    "Gemini call asking for a protobuf answer",
    "its answer would be protobuf, which the vault does not read",
)
_READABLE_ALT = frozenset({"", "json", "sse"})


def _decoded(text: str) -> str:
    for _ in range(4):
        decoded = unquote(text.replace("+", " "), errors="replace")
        if decoded == text:
            break
        text = decoded
    return text


def gemini_unreadable(path: str, content_type: str = "", accept: str = "") -> bool:
    """Whether a Gemini model call asks for an answer the meter cannot read (see GEMINI_OPAQUE).

    Every `alt`/`$alt` parameter counts (decoded, any case); a value other than json or sse
    (`json;enum-encoding=int` is json) makes the answer unreadable, and so does a body or
    Accept type naming protobuf or gRPC.
    """
    if any(word in f"{content_type} {accept}".lower() for word in ("proto", "grpc")):
        return True
    query = path.split("#", 1)[0].partition("?")[2]
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        alt = _decoded(value).split(";", 1)[0].strip().lower()
        if _decoded(key).strip().lower().lstrip("$") == "alt" and alt not in _READABLE_ALT:
            return True
    return False


def gemini_model(path: str) -> str:
    """The model a Gemini `…/models/<model>:<verb>` path names (the meter's fallback), or ""."""
    segments = _segments(path, True)
    if not segments or ":" not in segments[-1]:
        return ""
    return _UNPRINTABLE.sub("?", segments[-1].split(":", 1)[0])[:100]


class _Object(list[tuple[str, object]]):
    """A JSON object as its key/value pairs, duplicates kept (an upstream may take either)."""


def background_requested(body: bytes) -> bool | None:
    """Whether a Responses request body asks for `background`; None if that cannot be told.

    True for a top-level `background` that is anything but false/null (a string "true" too:
    how an upstream coerces it is not ours to guess), in any duplicate of the key. None for a
    body too large or too deeply nested to parse safely, or malformed JSON that mentions the
    word or escapes (whatever reads it upstream might be more lenient). The caller refuses on
    True and on None while a budget applies.
    """
    if len(body) > MAX_CHECKED_BODY:
        return None
    ascii_like = not body[:4].count(0)  # json.loads also reads UTF-16/32, where no byte test works
    if ascii_like and b"background" not in body and b"\\u" not in body:
        return False
    if nesting_exceeds(body, MAX_NESTING):
        return None
    try:
        top = json.loads(body, object_pairs_hook=_Object)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None if not ascii_like or b"background" in body or b"\\u" in body else False
    if not isinstance(top, _Object):
        return False
    return any(key == "background" and value is not False and value is not None for key, value in top)


_QUEUED = re.compile(rb'"status"\s*:\s*"(?:queued|in_progress)"')
_BACKGROUND_TRUE = re.compile(rb'"background"\s*:\s*true\b')


def background_answer(obj: dict[str, object] | None, head: bytes) -> bool:
    """Whether a Responses answer is the object of a call queued in the background (its usage
    comes only through a later GET): `"background": true` with status queued or in_progress.

    `obj` is the parsed answer, or the meter's `{model, usage}` rebuilt from the ends of one too
    large to keep (`_rebuilt`), or None; then the answer's first bytes (`head`) are searched,
    where OpenAI puts both keys, ahead of the echoed instructions and tools. A key cannot be
    forged from inside a JSON string (its quotes are escaped), and a false match only marks a
    call without usage "unmetered" instead of "estimated".
    """
    if obj is not None and not obj.get("_rebuilt"):
        return obj.get("background") is True and obj.get("status") in ("queued", "in_progress")
    return _BACKGROUND_TRUE.search(head) is not None and _QUEUED.search(head) is not None
