"""core/pricing.py: lookup order, cost arithmetic, config validation, the JSON form the vault gets."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.config import ConfigError, parse
from core.pricing import DEFAULT_PRICES, MAX_COST_MICROS, Price, PriceTable, cost_micros


@dataclass(frozen=True)
class Call:
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    provider: str = "openai"


def test_exact_then_longest_prefix_then_default() -> None:
    table = PriceTable({"gpt-4o": Price(2.5, 10, 1.25, 0), "gpt-4o-mini": Price(0.15, 0.6, 0.075, 0)})
    assert table.lookup("gpt-4o") == Price(2.5, 10, 1.25, 0)
    assert table.lookup("gpt-4o-2024-08-06") == Price(2.5, 10, 1.25, 0)
    assert table.lookup("gpt-4o-mini-2024-07-18") == Price(0.15, 0.6, 0.075, 0)  # longest prefix
    assert table.lookup("claude-sonnet-4-5-20250929") == DEFAULT_PRICES["claude-sonnet-4"]
    assert table.lookup("claude-opus-4-5-20251101").input == 5.0  # not the claude-opus-4 (4.0) price
    assert table.lookup("claude-opus-4-20250514").input == 15.0
    assert table.lookup("llama3") is None
    with_default = PriceTable({"default": Price(1, 2, 0.5, 1)})
    assert with_default.lookup("llama3") == Price(1, 2, 0.5, 1)
    assert with_default.lookup("gpt-4o") == DEFAULT_PRICES["gpt-4o"]


def test_unknown_model_costs_nothing_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    table = PriceTable()
    with caplog.at_level(logging.WARNING, "clawgate.pricing"):
        assert cost_micros(Call("my-local-model", 1000, 1000), table) == 0
        assert cost_micros(Call("my-local-model", 5, 5), table) == 0
    warnings = [r for r in caplog.records if "my-local-model" in r.getMessage()]
    assert len(warnings) == 1 and "[prices.default]" in warnings[0].getMessage()


def test_an_ollama_model_is_priced_only_by_an_entry_naming_it_never_by_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A local model is free: `[prices.default]`, meant for unknown paid models, must not make an
    Ollama call spend a USD budget (or, used up, refuse it); a model the owner prices still costs."""
    table = PriceTable({"default": Price(3, 15, 3, 3), "gpt-oss:120b-cloud": Price(1, 2, 1, 1)})
    with caplog.at_level(logging.WARNING, "clawgate.pricing"):
        assert cost_micros(Call("llama3.2", 1000, 1000, provider="ollama"), table) == 0
        assert cost_micros(Call("gpt-oss:120b-cloud", 1000, 1000, provider="ollama"), table) == 3000
        assert cost_micros(Call("llama3.2", 1000, 1000), table) == 18_000  # the same name elsewhere: default
        assert (
            cost_micros(Call("gpt-4o", 1000, 0, provider="ollama"), table) == 2500
        )  # a built-in name prices it
        assert cost_micros(Call("qwen3:8b", 1000, 1000, provider="ollama"), PriceTable()) == 0
    assert not [r for r in caplog.records if "qwen3" in r.getMessage()]  # no advice that would not help


def test_cost_is_tokens_times_price_in_micro_dollars() -> None:
    table = PriceTable({"m": Price(3.0, 15.0, 0.3, 3.75)}, with_defaults=False)
    call = Call("m", input_tokens=1000, output_tokens=500, cache_read_tokens=10_000, cache_write_tokens=2000)
    # 1000*3 + 500*15 + 10000*0.3 + 2000*3.75 = 3000 + 7500 + 3000 + 7500
    assert cost_micros(call, table) == 21_000
    assert cost_micros(Call("m", input_tokens=1), PriceTable({"m": Price(0.4, 0, 0, 0)})) == 0  # rounds
    assert cost_micros(Call("m", input_tokens=1), PriceTable({"m": Price(0.5, 0, 0, 0)})) == 1
    huge = Call("m", 10**15, 10**15)
    assert cost_micros(huge, table) == MAX_COST_MICROS


def test_json_round_trip_keeps_default() -> None:
    table = PriceTable({"default": Price(1, 2, 3, 4), "x": Price(5, 6, 7, 8)})
    again = PriceTable.from_json(table.to_json())
    assert again.prices == table.prices and again.default == Price(1, 2, 3, 4)


def test_config_prices_override_defaults_and_are_validated() -> None:
    cfg = parse(
        '[prices."claude-sonnet-4-5"]\ninput = 2.0\noutput = 10.0\n'
        "[prices.default]\ninput = 1\noutput = 4\ncache_read = 0.1\ncache_write = 0\n",
        Path("config.toml"),
    )
    table = PriceTable.from_config(cfg.prices)
    assert table.lookup("claude-sonnet-4-5-20250929") == Price(2.0, 10.0, 2.0, 2.0)  # cache: input
    assert table.lookup("claude-sonnet-4-0") == DEFAULT_PRICES["claude-sonnet-4"]
    assert table.default == Price(1, 4, 0.1, 0)
    bad = [
        ("[prices.x]\ninput = -1\noutput = 1\n", "prices.x.input"),
        ("[prices.x]\ninput = nan\noutput = 1\n", "prices.x.input"),
        ("[prices.x]\ninput = inf\noutput = 1\n", "prices.x.input"),
        ("[prices.x]\ninput = 1\n", "prices.x.output"),
        ('[prices.x]\ninput = "3"\noutput = 1\n', "prices.x.input"),
        ("[prices.x]\ninput = 1\noutput = 1\ncache = 1\n", "prices.x.cache"),
        ("[prices.x]\ninput = 1e9\noutput = 1\n", "prices.x.input"),
        ('[prices." "]\ninput = 1\noutput = 1\n', "prices"),
    ]
    for text, key in bad:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            parse(text, Path("config.toml"))
