"""`[metrics]` validation, the per-gateway registry, the vault's bounded counters, the HTTP server."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.config import ConfigError, parse
from gateway.metrics import GatewayMetrics
from gateway.metrics_http import EndpointUnavailable, MetricsServer
from proxy.stats import MAX_GROUPS, VaultStats, reason_of


def metrics_config(body: str):  # type: ignore[no-untyped-def]
    return parse("[metrics]\n" + body, Path("config.toml")).metrics


def test_metrics_are_off_by_default_on_loopback_port_9464() -> None:
    settings = parse("", Path("config.toml")).metrics
    assert (settings.enabled, settings.listen, settings.port, settings.allow_remote) == (
        False,
        "127.0.0.1",
        9464,
        False,
    )


@pytest.mark.parametrize("listen", ["0.0.0.0", "192.168.1.10", "::"])
def test_a_non_loopback_listen_address_needs_allow_remote(listen: str) -> None:
    with pytest.raises(ConfigError) as err:
        metrics_config(f'enabled = true\nlisten = "{listen}"\n')
    assert "metrics" in str(err.value) and "allow_remote" in str(err.value)
    allowed = metrics_config(f'enabled = true\nlisten = "{listen}"\nallow_remote = true\n')
    assert allowed.listen == listen


@pytest.mark.parametrize(("listen", "normal"), [("localhost", "127.0.0.1"), ("::1", "::1"), ("[::1]", "::1")])
def test_loopback_spellings_are_accepted(listen: str, normal: str) -> None:
    assert metrics_config(f'listen = "{listen}"\n').listen == normal


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('listen = "metrics.example.com"\n', "metrics.listen"),
        ("port = 70000\n", "metrics.port"),
        ("port = -1\n", "metrics.port"),
        ("enabled = true\nbind = 1\n", "metrics.bind"),
    ],
)
def test_bad_metrics_settings_name_the_key(body: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        metrics_config(body)
    assert key in str(err.value)


def test_each_gateway_has_its_own_registry() -> None:
    # With the library's global registry the second one would raise "Duplicated timeseries".
    first, second = GatewayMetrics(), GatewayMetrics()
    first.received("telegram")
    first.turn_finished("answered", 1.5, answered=2)
    parsed = {
        s.name + str(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(second.render().decode())
        for s in family.samples
    }
    assert parsed.get("clawgate_messages_received_total[('channel', 'telegram')]") is None
    assert parsed["clawgate_messages_answered_total[]"] == 0
    mine = {
        s.name + str(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(first.render().decode())
        for s in family.samples
    }
    assert mine["clawgate_messages_received_total[('channel', 'telegram')]"] == 1
    assert mine["clawgate_messages_answered_total[]"] == 2
    assert mine["clawgate_turn_duration_seconds_count[('outcome', 'answered')]"] == 1


@pytest.mark.parametrize(
    ("refusal", "reason"),
    [
        ("leak: Anthropic API key", "leak"),
        ("host mismatch: SNI a.example != b.example", "host_mismatch"),
        ("error: connection refused", "upstream_error"),
        ("response exceeds max_response_bytes = 10", "size"),
        ("clawgate vault: request body of 9 bytes exceeds [vault] max_request_bytes = 1.", "size"),
        ("clawgate vault: evil.example is not in this group's egress list", "policy"),
    ],
)
def test_vault_refusals_map_to_a_fixed_reason_set(refusal: str, reason: str) -> None:
    assert reason_of(refusal) == reason


def test_vault_stats_count_by_group_and_stay_bounded() -> None:
    stats = VaultStats()
    stats.record("team", None)
    stats.record("team", "leak: Slack token")
    stats.record(None, "clawgate vault: unknown client")
    for i in range(MAX_GROUPS + 50):
        stats.record(f"g{i}", None)
    snap = stats.snapshot()
    assert snap["requests"]["team"] == 2  # type: ignore[index]
    assert ["team", "leak", 1] in snap["refusals"]  # type: ignore[operator]
    assert ["?", "policy", 1] in snap["refusals"]  # type: ignore[operator]
    assert len(snap["requests"]) <= MAX_GROUPS + 1  # type: ignore[arg-type]
    assert snap["requests"]["other"] >= 50  # type: ignore[index]


async def test_a_non_loopback_endpoint_warns_at_start(caplog: pytest.LogCaptureFixture) -> None:
    settings = metrics_config('enabled = true\nlisten = "0.0.0.0"\nport = 0\nallow_remote = true\n')

    async def health():  # type: ignore[no-untyped-def]
        return True, {"status": "ok"}

    async def render() -> bytes:
        return b""

    server = MetricsServer(settings, health, render)
    with caplog.at_level(logging.WARNING, logger="gateway.metrics_http"):
        await server.start()
    try:
        assert any("no authentication" in r.getMessage() for r in caplog.records)
    finally:
        await server.close()


async def test_healthz_answers_503_with_the_problem_and_never_a_traceback() -> None:
    settings = metrics_config("enabled = true\nport = 0\n")
    answers = iter(
        [(False, {"status": "unhealthy", "problems": ["vault: not running"]}), RuntimeError("boom")]
    )

    async def health():  # type: ignore[no-untyped-def]
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def render() -> bytes:
        return b"# nothing\n"

    server = MetricsServer(settings, health, render)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            first = await client.get("/healthz")
            assert first.status_code == 503
            assert first.json()["problems"] == ["vault: not running"]
            second = await client.get("/healthz")
            assert second.status_code == 503
            assert second.json()["problems"] == ["health check: RuntimeError"]
            assert "Traceback" not in second.text
            assert (await client.get("/other")).status_code == 404
    finally:
        await server.close()


async def test_a_taken_port_is_a_clear_error() -> None:
    settings = metrics_config("enabled = true\nport = 0\n")

    async def health():  # type: ignore[no-untyped-def]
        return True, {}

    async def render() -> bytes:
        return b""

    first = MetricsServer(settings, health, render)
    await first.start()
    try:
        taken = metrics_config(f"enabled = true\nport = {first.port}\n")
        with pytest.raises(EndpointUnavailable) as err:
            await MetricsServer(taken, health, render).start()
        assert f"127.0.0.1:{first.port}" in str(err.value)
        assert "[metrics] port" in str(err.value)
    finally:
        await first.close()
