"""`/healthz` and `/metrics` of a real gateway: real Docker sandbox, real vault process, real SQLite.

The model is the scripted fake on loopback; the endpoint is scraped over HTTP with httpx and
parsed with prometheus_client's own text parser, so the format is checked by the library
Prometheus users rely on, not by our own reading of it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import Gateway, StartupError
from proxy.secrets import SecretStore
from tests.fakes.channel import CaptureChannel
from tests.integration.test_gateway_docker import REAL_KEY, config_for, containers
from tests.waits import drained

METRICS = "[metrics]\nenabled = true\nport = 0\n"
# A well-known credential format (never a real key): the vault's leak scanner blocks it by format.
LEAKED = "sk-ant-api03-" + "L" * 40


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} from the exposition text."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(parsed: dict, name: str, **labels: str) -> float:
    return parsed.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(client: httpx.AsyncClient) -> tuple[str, dict]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return response.text, samples(response.text)


@pytest.fixture
async def gateway(dirs, model_server, sandbox_image, docker_client):  # type: ignore[no-untyped-def]
    config_dir, data_dir = dirs
    SecretStore(config_dir).add("anthropic", REAL_KEY, model_server.host_port, "x-api-key", "{value}")
    channel = CaptureChannel()
    gw = Gateway(config_for(model_server, sandbox_image, extra=METRICS), config_dir, data_dir)
    await gw.start([channel])
    gw.test_channel = channel  # type: ignore[attr-defined]
    yield gw
    await gw.stop(grace_s=5)
    assert containers(docker_client, gw) == []


async def test_answered_message_moves_counters_and_vault_counts_refusals_and_leaks(
    gateway, model_server, docker_client
) -> None:
    channel: CaptureChannel = gateway.test_channel
    port = gateway.endpoints.metrics_server.port
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        _, before = await scrape(client)
        assert value(before, "clawgate_messages_received_total", channel="capture") == 0
        assert value(before, "clawgate_turn_duration_seconds_count", outcome="answered") == 0
        assert value(before, "clawgate_vault_up") == 1

        await gateway.ingest(channel.message("hello metrics"))
        await channel.wait_for(1)
        await drained(gateway)
        text, after = await scrape(client)
        assert value(after, "clawgate_messages_received_total", channel="capture") == 1
        assert value(after, "clawgate_messages_answered_total") == 1
        assert value(after, "clawgate_turn_duration_seconds_count", outcome="answered") == 1
        assert value(after, "clawgate_turn_duration_seconds_sum", outcome="answered") > 0
        assert value(after, "clawgate_turn_duration_seconds_count", outcome="dead_letter") == 0
        assert value(after, "clawgate_sandboxes_warm") == 1
        assert value(after, "clawgate_queue_messages", state="pending") == 0
        assert value(after, "clawgate_vault_requests_total", group="main") >= 1  # the model call
        assert value(after, "clawgate_approvals_pending") == 0
        assert value(after, "clawgate_wallet_spent_today_near") == 0
        assert value(after, "clawgate_channel_connected", channel="capture") == 1

        # From inside the sandbox: one request the vault refuses (a loopback upstream not allowed)
        # and one carrying a credential, which the leak scanner blocks.
        [container] = containers(docker_client, gateway, "main")
        script = f"""
import urllib.request, urllib.error
codes = []
targets = [("http://127.0.0.1:9/x", {{}}), ("{model_server.url}/health", {{"X-Debug": "{LEAKED}"}})]
for url, headers in targets:
    try:
        codes.append(urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10).status)
    except urllib.error.HTTPError as e:
        codes.append(e.code)
print(codes)
"""
        result = container.exec_run(["python3", "-c", script])
        assert result.output.decode().strip().splitlines()[-1] == "[403, 403]", result.output[-2000:]
        for _ in range(100):  # the vault counts as it answers; poll rather than guess a delay
            text, final = await scrape(client)
            if value(final, "clawgate_vault_leak_blocks_total", group="main") >= 1:
                break
            await asyncio.sleep(0.1)
        assert value(final, "clawgate_vault_leak_blocks_total", group="main") == 1
        assert value(final, "clawgate_vault_refusals_total", group="main", reason="leak") == 1
        assert value(final, "clawgate_vault_refusals_total", group="main", reason="policy") >= 1
        assert value(final, "clawgate_vault_requests_total", group="main") >= 3

        # Nothing from the conversation, no chat or user id, no secret ends up in a label or value.
        for forbidden in ("hello metrics", "console:main", REAL_KEY, LEAKED, "127.0.0.1:9", "X-Debug"):
            assert forbidden not in text


async def test_healthz_reports_the_vault_down_while_it_is_restarted(gateway) -> None:
    port = gateway.endpoints.metrics_server.port
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        ok = await client.get("/healthz")
        assert ok.status_code == 200, ok.text
        report = ok.json()
        assert report["status"] == "ok"
        assert report["vault"] == {"state": "up", "restarts": 0}
        assert report["store"] == "ok"
        assert report["channels"] == {"capture": "connected"}

        os.kill(gateway.vault.pid, signal.SIGKILL)
        seen_down: dict | None = None
        metrics_down = False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the supervisor restarts it: down first, then up again
            response = await client.get("/healthz")
            if response.status_code == 503:
                seen_down = response.json()
                _, parsed = await scrape(client)
                metrics_down = metrics_down or value(parsed, "clawgate_vault_up") == 0
            elif seen_down is not None and response.json()["vault"]["restarts"] >= 1:
                break
            await asyncio.sleep(0.05)
        assert seen_down is not None, "never saw /healthz answer 503 while the vault was dead"
        assert seen_down["vault"]["state"] == "down"
        assert any(p.startswith("vault:") for p in seen_down["problems"])
        assert metrics_down
        back = await client.get("/healthz")
        assert back.status_code == 200, back.text
        assert back.json()["vault"] == {"state": "up", "restarts": 1}
        _, parsed = await scrape(client)
        assert value(parsed, "clawgate_vault_restarts_total") == 1
        assert value(parsed, "clawgate_vault_up") == 1


async def test_healthz_is_503_when_a_channel_disconnects(gateway) -> None:
    channel: CaptureChannel = gateway.test_channel
    port = gateway.endpoints.metrics_server.port
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        channel.connected = False
        down = await client.get("/healthz")
        assert down.status_code == 503
        assert "channel capture: disconnected" in down.json()["problems"]
        channel.connected = True
        assert (await client.get("/healthz")).status_code == 200


async def test_metrics_port_in_use_refuses_to_start_and_leaves_no_vault(
    dirs, model_server, sandbox_image, docker_client
) -> None:
    config_dir, data_dir = dirs
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        extra = f"[metrics]\nenabled = true\nport = {taken}\n"
        gw = Gateway(config_for(model_server, sandbox_image, extra=extra), config_dir, data_dir)
        with pytest.raises(StartupError) as err:
            await gw.start([CaptureChannel()])
    message = str(err.value)
    assert f"metrics: cannot listen on 127.0.0.1:{taken}" in message
    assert "\n" not in message
    assert not _vault_alive(gw.vault.pid)
    assert not (Path(data_dir) / "vault" / "vault.pid").exists()  # noqa: ASYNC240


def _vault_alive(pid: int | None) -> bool:
    """Running (not gone, not a zombie awaiting its reaping)."""
    if pid is None:
        return False
    try:
        return not Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except OSError:
        return False


async def test_disabled_by_default_nothing_listens(gateway_default) -> None:
    assert gateway_default.endpoints.metrics_server is None


@pytest.fixture
async def gateway_default(dirs, model_server, sandbox_image, docker_client):  # type: ignore[no-untyped-def]
    config_dir, data_dir = dirs
    gw = Gateway(config_for(model_server, sandbox_image), config_dir, data_dir)
    await gw.start([CaptureChannel()])
    yield gw
    await gw.stop(grace_s=5)
