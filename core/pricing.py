"""The price table: what a model call's tokens cost, in USD millionths (`cost_micros`).

One pure function used by both the gateway (pricing each metered row as it is stored, so a later
price change never rewrites history) and the vault (budget headroom in USD, proxy/budget.py).

Prices are USD per million tokens for four kinds of token: `input` (uncached prompt), `output`,
`cache_read` (prompt read from the provider's cache) and `cache_write` (prompt written to it;
Anthropic only). A model is looked up exactly, then by the longest key that prefixes it (so the
dated snapshot `claude-sonnet-4-5-20250929` finds `claude-sonnet-4-5`), then the `default` entry
if one is configured; otherwise it costs 0 and the table warns once per model, since a budget in
USD cannot see spend it cannot price (the owner sets `[prices."<model>"]` or `[prices.default]`).

Ollama's native API (provider "ollama", proxy/spend_paths.py) is the exception: its models run
on the owner's own hardware unless they are cloud models, which Ollama bills by plan, not per
token. So such a call is priced only by an entry that names its model (exactly or by prefix:
`[prices."gpt-oss:120b-cloud"]`, `[prices."qwen3"]`), never by `default`, and costs 0 USD
otherwise, without a warning: a `[prices.default]` meant for unknown paid models does not make
a local model spend a USD budget. Its tokens still count against token budgets.

Defaults: list prices taken 2026-12-02 from Anthropic's pricing page
(platform.claude.com/docs/en/about-claude/pricing; `cache_write` is the default 5-minute
cache-write price) and OpenAI's (platform.openai.com/docs/pricing; `cache_read` is the "cached
input" price; OpenAI has no cache-write charge). Legacy Completions and embedding models: OpenAI's
list prices taken the same day from developers.openai.com/api/docs/models/<model>
(gpt-3.5-turbo-instruct $1.50 in / $2 out, davinci-002 $2 / $2; embeddings, input only:
text-embedding-3-small $0.02, text-embedding-3-large $0.13, text-embedding-ada-002 $0.10).
Gemini: Google's paid-tier list prices (ai.google.dev/gemini-api/docs/pricing) for prompts up
to 200k tokens and text/image/video input, written down 2026-12-02 from that page as the author
knew it, without a live re-read that day (check them against the page); `cache_read` is the
"context caching" price per token read, and Gemini bills no cache writes per token (its cache
storage is per hour; creating a cache is refused under a budget, proxy/spend_paths.py).
Batch, long-context (Gemini 2.5 Pro over 200k prompt tokens: 2x input, 1.5x output), audio
input and priority tiers are not modelled: the vault sees the standard per-token usage, so
those are priced at list price.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

log = logging.getLogger("clawgate.pricing")

DEFAULT_KEY = "default"
MAX_COST_MICROS = 10**15  # a billion dollars: past this a count is a bug, not a bill
NAMED_ONLY = frozenset({"ollama"})  # providers whose models `default` does not price (see above)


class ModelPrice(BaseModel):
    """`[prices."<model-or-prefix>"]`: USD per million tokens; cache prices default to `input`."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # "3" is not a price

    input: float = Field(ge=0, allow_inf_nan=False, description="USD per million uncached input tokens")
    output: float = Field(ge=0, allow_inf_nan=False, description="USD per million output tokens")
    cache_read: float | None = Field(None, ge=0, allow_inf_nan=False, description="default: input")
    cache_write: float | None = Field(None, ge=0, allow_inf_nan=False, description="default: input")

    @field_validator("input", "output", "cache_read", "cache_write")
    @classmethod
    def _bounded(cls, value: float | None) -> float | None:
        if value is not None and value > 1_000_000:
            raise ValueError("must be at most 1000000 (USD per million tokens)")
        return value

    def price(self) -> Price:
        return Price(
            self.input,
            self.output,
            self.input if self.cache_read is None else self.cache_read,
            self.input if self.cache_write is None else self.cache_write,
        )


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cache_read: float
    cache_write: float

    def as_dict(self) -> dict[str, float]:
        return {
            "input": self.input,
            "output": self.output,
            "cache_read": self.cache_read,
            "cache_write": self.cache_write,
        }


def _anthropic(inp: float, out: float) -> Price:
    # Anthropic's multipliers: cache hits 0.1x input, 5-minute cache writes 1.25x input.
    return Price(inp, out, round(inp * 0.1, 6), round(inp * 1.25, 6))


def _openai(inp: float, cached: float, out: float) -> Price:
    return Price(inp, out, cached, 0.0)


DEFAULT_PRICES: dict[str, Price] = {
    # Anthropic, Claude 4.x
    "claude-opus-4-5": _anthropic(5.0, 25.0),
    "claude-opus-4-6": _anthropic(5.0, 25.0),
    "claude-opus-4-7": _anthropic(5.0, 25.0),
    "claude-opus-4-8": _anthropic(5.0, 25.0),
    "claude-opus-5": _anthropic(5.0, 25.0),
    "claude-opus-4-1": _anthropic(15.0, 75.0),
    "claude-opus-4-0": _anthropic(15.0, 75.0),
    "claude-opus-4": _anthropic(15.0, 75.0),  # claude-opus-4-20250514
    "claude-sonnet-4": _anthropic(3.0, 15.0),  # 4, 4-5, 4-6 and their snapshots
    "claude-haiku-4-5": _anthropic(1.0, 5.0),
    # Anthropic, Claude 3.x
    "claude-3-7-sonnet": _anthropic(3.0, 15.0),
    "claude-3-5-sonnet": _anthropic(3.0, 15.0),
    "claude-3-5-haiku": Price(0.8, 4.0, 0.08, 1.0),
    "claude-3-opus": _anthropic(15.0, 75.0),
    "claude-3-haiku": Price(0.25, 1.25, 0.03, 0.3),
    # OpenAI
    "gpt-5": _openai(1.25, 0.125, 10.0),  # also gpt-5.x and dated snapshots
    "gpt-5-mini": _openai(0.25, 0.025, 2.0),
    "gpt-5-nano": _openai(0.05, 0.005, 0.4),
    "gpt-5-pro": _openai(15.0, 15.0, 120.0),
    "gpt-4.1": _openai(2.0, 0.5, 8.0),
    "gpt-4.1-mini": _openai(0.4, 0.1, 1.6),
    "gpt-4.1-nano": _openai(0.1, 0.025, 0.4),
    "gpt-4o": _openai(2.5, 1.25, 10.0),
    "gpt-4o-mini": _openai(0.15, 0.075, 0.6),
    "o3": _openai(2.0, 0.5, 8.0),
    "o3-pro": _openai(20.0, 20.0, 80.0),
    "o3-mini": _openai(1.1, 0.55, 4.4),
    "o4-mini": _openai(1.1, 0.275, 4.4),
    # OpenAI, legacy Completions models
    "gpt-3.5-turbo-instruct": _openai(1.5, 1.5, 2.0),
    "davinci-002": _openai(2.0, 2.0, 2.0),
    # Google Gemini (native API and its OpenAI-compatible endpoint); `-lite` needs its own keys,
    # or `gemini-2.5-flash` would price it by prefix
    "gemini-2.5-pro": _openai(1.25, 0.125, 10.0),
    "gemini-2.5-flash": _openai(0.30, 0.03, 2.50),
    "gemini-2.5-flash-lite": _openai(0.10, 0.01, 0.40),
    "gemini-2.0-flash": _openai(0.10, 0.025, 0.40),
    "gemini-2.0-flash-lite": _openai(0.075, 0.075, 0.30),  # no context caching
    # OpenAI embeddings: input tokens only
    "text-embedding-3-small": _openai(0.02, 0.02, 0.0),
    "text-embedding-3-large": _openai(0.13, 0.13, 0.0),
    "text-embedding-ada-002": _openai(0.1, 0.1, 0.0),
}


class TokenCounts(Protocol):
    """What is priced: a metered Usage (proxy/metering.py) or a stored row."""

    @property
    def provider(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def cache_read_tokens(self) -> int: ...
    @property
    def cache_write_tokens(self) -> int: ...


class PriceTable:
    """Defaults overlaid with `[prices]`; looks a model up exactly, by longest prefix, then `default`."""

    def __init__(self, prices: Mapping[str, Price] | None = None, *, with_defaults: bool = True) -> None:
        table = dict(DEFAULT_PRICES) if with_defaults else {}
        table.update(prices or {})
        self.default = table.pop(DEFAULT_KEY, None)
        self.prices = table
        # Longest first, so the first prefix that matches is the most specific one.
        self._prefixes = sorted(table, key=len, reverse=True)
        self._warned: set[str] = set()

    @classmethod
    def from_config(cls, prices: Mapping[str, ModelPrice]) -> PriceTable:
        return cls({key: value.price() for key, value in prices.items()})

    def to_json(self) -> dict[str, dict[str, float]]:
        """Every entry (`default` too): what the vault needs to price spend the same way."""
        out = {key: price.as_dict() for key, price in self.prices.items()}
        if self.default is not None:
            out[DEFAULT_KEY] = self.default.as_dict()
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Mapping[str, float]]) -> PriceTable:
        """The inverse of `to_json` (the whole table; defaults are not added again)."""
        return cls({key: Price(**dict(value)) for key, value in data.items()}, with_defaults=False)

    def lookup(self, model: str, *, named_only: bool = False) -> Price | None:
        """`named_only`: an entry naming the model (exactly or by prefix) or None; no default, no warning."""
        found = self.prices.get(model)
        if found is not None:
            return found
        for prefix in self._prefixes:
            if model.startswith(prefix):
                return self.prices[prefix]
        if named_only:
            return None
        if self.default is None and model not in self._warned and len(self._warned) < 1000:
            self._warned.add(model)
            log.warning(
                "no price for model %r: its calls count as cost 0; set [prices.%s] or [prices.default]"
                " in config.toml",
                model[:100],
                _toml_key(model[:100]),
            )
        return self.default


def _toml_key(model: str) -> str:
    return model if model.replace("-", "_").isidentifier() else f'"{model}"'


def cost_micros(usage: TokenCounts, prices: PriceTable) -> int:
    """USD millionths of one call: tokens x USD per million tokens is exactly micro-USD."""
    price = prices.lookup(usage.model, named_only=usage.provider in NAMED_ONLY)
    if price is None:
        return 0
    cost = (
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + usage.cache_read_tokens * price.cache_read
        + usage.cache_write_tokens * price.cache_write
    )
    if not math.isfinite(cost) or cost <= 0:
        return 0
    return min(MAX_COST_MICROS, math.floor(cost + 0.5))
