"""Model providers (Anthropic Messages, OpenAI Chat Completions) and the tool loop.

Each provider speaks its own wire format end to end, including the message shapes kept in
history, so nothing is lost in translation; the loop itself is provider-neutral.
"""

import json
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import transport
from .config import Config
from .transport import ModelError, ModelHTTPError, ModelResponseError

MAX_ITERATIONS = 25
NO_REPLY = "(no reply)"  # stands in for an empty assistant turn, which the API would reject
Message = Dict[str, Any]


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
        self, system: str, messages: List[Message], tools: List[Dict[str, Any]]
    ) -> Tuple[Message, List[ToolCall]]:
        body = {
            "model": self.cfg.model,
            "max_tokens": self.cfg.max_tokens,
            "system": system,
            "messages": messages,
            "tools": [
                {"name": t["name"], "description": t["description"], "input_schema": t["parameters"]}
                for t in tools
            ],
        }
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
        return {"role": "assistant", "content": content}, calls

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
        self, system: str, messages: List[Message], tools: List[Dict[str, Any]]
    ) -> Tuple[Message, List[ToolCall]]:
        body: Dict[str, Any] = {
            "model": self.cfg.model,
            "messages": [{"role": "system", "content": system}, *messages],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": t["name"],
                        "description": t["description"],
                        "parameters": t["parameters"],
                    },
                }
                for t in tools
            ],
        }
        headers = {"authorization": f"Bearer {self.cfg.api_key}"}
        url = f"{self.cfg.base_url}/chat/completions"
        while True:
            body[self._tokens_field] = self.cfg.max_tokens
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
        return assistant, calls

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
) -> Tuple[Optional[str], List[Message]]:
    """Run one turn: call the model, execute requested tools, repeat until a final answer.

    Returns ``(final_text or None, full message list including history)``. Raises
    ModelError (incl. ToolLoopLimit); the caller decides what history to keep on failure.
    """
    messages = [*history, provider.user_message(prompt)]
    for _ in range(max_iterations):
        assistant, calls = provider.step(system, messages, tools)
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
