"""Model providers (Anthropic Messages, OpenAI Chat Completions) and the tool loop.

Each provider speaks its own wire format end to end, including the message shapes kept in
history, so nothing is lost in translation; the loop itself is provider-neutral.

Prompt caching: Anthropic caches only what a request marks, so every request carries
``cache_control`` breakpoints on the last tool, the system prompt and the two newest
messages (the moving end of the conversation; the older of the two still matches what
the previous request cached, so a turn reads it back). Four is the API's limit. The marks
are added to a copy at send time, never stored in history, so they cannot pile up.
OpenAI-compatible servers cache by themselves and get no marks.

Every model call reports its token usage (``Usage``); the loop adds it to a ``UsageMeter``
that the runtime writes to the sandbox's log after the turn (spend is metered by the vault).
"""

import json
import math
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import transport
from .config import Config
from .transport import ModelError, ModelHTTPError, ModelResponseError

MAX_ITERATIONS = 25
NO_REPLY = "(no reply)"  # stands in for an empty assistant turn, which the API would reject
CACHE_CONTROL = {"type": "ephemeral"}
MAX_CACHE_BREAKPOINTS = 4  # the Messages API refuses a request with more
MAX_USAGE_TOKENS = 10**9  # per call; a larger number from a server is nonsense, not spend
Message = Dict[str, Any]


def _count(value: Any) -> int:
    """A token count from an untrusted response: a non-negative int, else 0; capped."""
    if isinstance(value, float):
        value = int(value) if math.isfinite(value) else 0
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return max(0, min(value, MAX_USAGE_TOKENS))


class Usage:
    """Tokens one model call used. ``input`` excludes cached tokens on both providers, so
    ``input + cache_read + cache_write`` is the whole prompt and each part has one price."""

    __slots__ = ("model", "input", "output", "cache_read", "cache_write")

    def __init__(
        self, model: str, input: int = 0, output: int = 0, cache_read: int = 0, cache_write: int = 0
    ) -> None:
        self.model = model
        self.input = input
        self.output = output
        self.cache_read = cache_read
        self.cache_write = cache_write

    @classmethod
    def from_anthropic(cls, model: str, usage: Any) -> "Usage":
        u = usage if isinstance(usage, dict) else {}
        return cls(
            model,
            _count(u.get("input_tokens")),
            _count(u.get("output_tokens")),
            _count(u.get("cache_read_input_tokens")),
            _count(u.get("cache_creation_input_tokens")),
        )

    @classmethod
    def from_openai(cls, model: str, usage: Any) -> "Usage":
        u = usage if isinstance(usage, dict) else {}
        details = u.get("prompt_tokens_details")
        cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
        prompt = _count(u.get("prompt_tokens"))
        return cls(model, max(0, prompt - cached), _count(u.get("completion_tokens")), min(cached, prompt), 0)


class UsageMeter:
    """Usage summed per model over one turn (tool loop and compaction calls alike)."""

    FIELDS = ("input", "output", "cache_read", "cache_write")

    def __init__(self) -> None:
        self.by_model: Dict[str, Dict[str, int]] = {}

    def add(self, usage: Optional[Usage]) -> None:
        if usage is None:
            return
        row = self.by_model.setdefault(usage.model, {"calls": 0, **{f: 0 for f in self.FIELDS}})
        row["calls"] += 1
        for field in self.FIELDS:
            row[field] += getattr(usage, field)

    def reports(self) -> List[Dict[str, Any]]:
        """One entry per model, for the sandbox's log (the vault meters what counts)."""
        return [
            {
                "model": model,
                "input_tokens": row["input"],
                "output_tokens": row["output"],
                "cache_read_tokens": row["cache_read"],
                "cache_write_tokens": row["cache_write"],
                "calls": row["calls"],
            }
            for model, row in self.by_model.items()
        ]


def _model_name(resp: Dict[str, Any], configured: str) -> str:
    """The model that answered (servers name the exact version), else the configured one."""
    name = resp.get("model")
    if isinstance(name, str) and 0 < len(name) <= 200 and name.isprintable():
        return name
    return configured


def _cached_block(block: Any) -> Any:
    if isinstance(block, dict) and block.get("type") in ("text", "tool_use", "tool_result", "image"):
        return {**block, "cache_control": CACHE_CONTROL}
    return None


def _mark_message(msg: Message) -> Optional[Message]:
    """A copy of ``msg`` with a breakpoint on its last block, or None if it has none to mark."""
    content = msg.get("content")
    if isinstance(content, str):
        if not content:
            return None
        return {**msg, "content": [{"type": "text", "text": content, "cache_control": CACHE_CONTROL}]}
    if isinstance(content, list) and content:
        marked = _cached_block(content[-1])
        if marked is not None:
            return {**msg, "content": [*content[:-1], marked]}
    return None


def with_cache_breakpoints(
    system: str, messages: List[Message], tools: List[Dict[str, Any]]
) -> Tuple[Any, List[Message], List[Dict[str, Any]]]:
    """``(system, messages, tools)`` for an Anthropic request, with at most four breakpoints.

    Tools and system come first in Anthropic's prefix order and change least (the system
    prompt changes when MEMORY.md does), so each gets one; the rest go to the newest messages.
    Nothing passed in is modified.
    """
    budget = MAX_CACHE_BREAKPOINTS
    out_tools = list(tools)
    if out_tools:
        out_tools[-1] = {**out_tools[-1], "cache_control": CACHE_CONTROL}
        budget -= 1
    out_system: Any = system
    if system:
        out_system = [{"type": "text", "text": system, "cache_control": CACHE_CONTROL}]
        budget -= 1
    out_messages = list(messages)
    index = len(out_messages) - 1
    while budget > 0 and index >= 0:
        marked = _mark_message(out_messages[index])
        if marked is not None:
            out_messages[index] = marked
            budget -= 1
        index -= 1
    return out_system, out_messages, out_tools


class ToolCall:
    """One tool invocation requested by the model; ``args`` is None if unparseable."""

    __slots__ = ("id", "name", "args", "error")

    def __init__(self, id: str, name: str, args: Optional[Dict[str, Any]], error: str = "") -> None:
        self.id = id
        self.name = name
        self.args = args
        self.error = error


class ToolLoopLimit(ModelError):
    """The model kept calling tools past the per-turn cap."""

    def summary(self) -> str:
        return f"stopped after {self.args[0]} model calls without a final answer"


Executor = Callable[[str, Optional[Dict[str, Any]]], Tuple[str, bool]]


class AnthropicProvider:
    """Anthropic Messages API (``POST {base}/v1/messages``)."""

    name = "anthropic"

    def __init__(self, cfg: Config, retries: int = 2, backoff: float = 0.5) -> None:
        self.cfg = cfg
        self.retries = retries
        self.backoff = backoff

    def user_message(self, text: str) -> Message:
        return {"role": "user", "content": text}

    def assistant_message(self, text: str) -> Message:
        return {"role": "assistant", "content": [{"type": "text", "text": text}]}

    @staticmethod
    def is_turn_start(msg: Message) -> bool:
        """A user message that is a prompt, not tool results (safe place to cut history)."""
        if msg.get("role") != "user":
            return False
        content = msg.get("content")
        if isinstance(content, str):
            return True
        return isinstance(content, list) and not any(
            isinstance(b, dict) and b.get("type") == "tool_result" for b in content
        )

    def step(
        self,
        system: str,
        messages: List[Message],
        tools: List[Dict[str, Any]],
        max_tokens: Optional[int] = None,
    ) -> Tuple[Message, List[ToolCall], Usage]:
        specs = [
            {"name": t["name"], "description": t["description"], "input_schema": t["parameters"]}
            for t in tools
        ]
        cached_system, cached_messages, cached_tools = with_cache_breakpoints(system, messages, specs)
        body: Dict[str, Any] = {
            "model": self.cfg.model,
            "max_tokens": max_tokens or self.cfg.max_tokens,
            "system": cached_system,
            "messages": cached_messages,
        }
        if cached_tools:
            body["tools"] = cached_tools
        headers = {"x-api-key": self.cfg.api_key, "anthropic-version": "2023-06-01"}
        resp = transport.post_json(
            f"{self.cfg.base_url}/v1/messages",
            body,
            headers,
            self.cfg.model_timeout,
            self.retries,
            self.backoff,
        )
        content = resp.get("content")
        if not isinstance(content, list) or not all(isinstance(b, dict) for b in content):
            raise ModelResponseError("no content blocks")
        # The API rejects empty text blocks and empty assistant turns when they are sent back.
        content = [b for b in content if not (b.get("type") == "text" and not b.get("text"))]
        if not content:
            content = [{"type": "text", "text": NO_REPLY}]
        calls = [
            ToolCall(
                str(b.get("id", "")),
                str(b.get("name", "")),
                b.get("input") if isinstance(b.get("input"), dict) else None,
            )
            for b in content
            if b.get("type") == "tool_use"
        ]
        usage = Usage.from_anthropic(_model_name(resp, self.cfg.model), resp.get("usage"))
        return {"role": "assistant", "content": content}, calls, usage

    def tool_results(self, results: List[Tuple[ToolCall, str, bool]]) -> List[Message]:
        blocks = [
            {"type": "tool_result", "tool_use_id": call.id, "content": text, "is_error": is_error}
            for call, text, is_error in results
        ]
        return [{"role": "user", "content": blocks}]

    @staticmethod
    def text_of(msg: Message) -> str:
        content = msg.get("content")
        if isinstance(content, str):
            return content
        return "".join(
            b.get("text", "") for b in content or [] if isinstance(b, dict) and b.get("type") == "text"
        )


class OpenAIProvider:
    """OpenAI-compatible Chat Completions (``POST {base}/chat/completions``)."""

    name = "openai"

    def __init__(self, cfg: Config, retries: int = 2, backoff: float = 0.5) -> None:
        self.cfg = cfg
        self.retries = retries
        self.backoff = backoff
        # Newer OpenAI models reject max_tokens; switch once if the server says so.
        self._tokens_field = "max_tokens"

    def user_message(self, text: str) -> Message:
        return {"role": "user", "content": text}

    def assistant_message(self, text: str) -> Message:
        return {"role": "assistant", "content": text}

    @staticmethod
    def is_turn_start(msg: Message) -> bool:
        return msg.get("role") == "user"

    def step(
        self,
        system: str,
        messages: List[Message],
        tools: List[Dict[str, Any]],
        max_tokens: Optional[int] = None,
    ) -> Tuple[Message, List[ToolCall], Usage]:
        body: Dict[str, Any] = {
            "model": self.cfg.model,
            "messages": [{"role": "system", "content": system}, *messages],
        }
        if tools:  # OpenAI refuses an empty list
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t["name"],
                        "description": t["description"],
                        "parameters": t["parameters"],
                    },
                }
                for t in tools
            ]
        headers = {"authorization": f"Bearer {self.cfg.api_key}"}
        url = f"{self.cfg.base_url}/chat/completions"
        while True:
            body[self._tokens_field] = max_tokens or self.cfg.max_tokens
            try:
                resp = transport.post_json(
                    url, body, headers, self.cfg.model_timeout, self.retries, self.backoff
                )
                break
            except ModelHTTPError as exc:
                if (
                    exc.status == 400
                    and self._tokens_field == "max_tokens"
                    and "max_completion_tokens" in exc.body
                ):
                    del body["max_tokens"]
                    self._tokens_field = "max_completion_tokens"
                    continue
                raise
        choices = resp.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise ModelResponseError("no choices")
        msg = choices[0].get("message")
        if not isinstance(msg, dict):
            raise ModelResponseError("choice has no message")
        content = msg.get("content")
        assistant: Message = {"role": "assistant", "content": content if isinstance(content, str) else ""}
        calls: List[ToolCall] = []
        raw_calls = msg.get("tool_calls") or []
        if isinstance(raw_calls, list) and raw_calls:
            kept = []
            for raw in raw_calls:
                fn = raw.get("function") if isinstance(raw, dict) else None
                if not isinstance(fn, dict):
                    continue
                call_id, name, arguments = (
                    str(raw.get("id", "")),
                    str(fn.get("name", "")),
                    fn.get("arguments") or "{}",
                )
                kept.append(
                    {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
                )
                try:
                    args = json.loads(arguments) if isinstance(arguments, str) else arguments
                    error = "" if isinstance(args, dict) else "arguments must be a JSON object"
                except ValueError as exc:
                    args, error = None, f"arguments are not valid JSON: {exc}"
                calls.append(ToolCall(call_id, name, args if isinstance(args, dict) else None, error))
            if kept:
                assistant["tool_calls"] = kept
                if not content:
                    assistant["content"] = None
        usage = Usage.from_openai(_model_name(resp, self.cfg.model), resp.get("usage"))
        return assistant, calls, usage

    def tool_results(self, results: List[Tuple[ToolCall, str, bool]]) -> List[Message]:
        return [
            {"role": "tool", "tool_call_id": call.id, "content": f"ERROR: {text}" if is_error else text}
            for call, text, is_error in results
        ]

    @staticmethod
    def text_of(msg: Message) -> str:
        content = msg.get("content")
        if isinstance(content, list):  # some compatible servers return content parts
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return content or ""


Provider = Any  # AnthropicProvider | OpenAIProvider (kept loose: py3.11, no typing overhead)


def make_provider(cfg: Config) -> Provider:
    """The provider for ``cfg.provider`` (config.load already rejected unknown names)."""
    return AnthropicProvider(cfg) if cfg.provider == "anthropic" else OpenAIProvider(cfg)


def run_tool_loop(
    provider: Provider,
    system: str,
    history: List[Message],
    prompt: str,
    execute: Executor,
    tools: List[Dict[str, Any]],
    max_iterations: int = MAX_ITERATIONS,
    meter: Optional[UsageMeter] = None,
) -> Tuple[Optional[str], List[Message]]:
    """Run one turn: call the model, execute requested tools, repeat until a final answer.

    Returns ``(final_text or None, full message list including history)``. Raises
    ModelError (incl. ToolLoopLimit); the caller decides what history to keep on failure.
    Each call's usage goes to ``meter`` as soon as it is known, so a failing turn still counts.
    """
    messages = [*history, provider.user_message(prompt)]
    for _ in range(max_iterations):
        assistant, calls, usage = provider.step(system, messages, tools)
        if meter is not None:
            meter.add(usage)
        messages.append(assistant)
        if not calls:
            text = provider.text_of(assistant).strip()
            return (text if text and text != NO_REPLY else None), messages
        results = []
        for call in calls:
            if call.error or call.args is None:
                text, is_error = (call.error or "tool input must be a JSON object"), True
            else:
                text, is_error = execute(call.name, call.args)
            results.append((call, text, is_error))
        messages.extend(provider.tool_results(results))
    raise ToolLoopLimit(max_iterations)
