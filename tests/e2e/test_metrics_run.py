"""The real `clawgate run` with `[metrics]` on: a console message answered through the fake
model moves the counters a scrape reads, and a `kill -9` of its vault shows on `/healthz`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from proxy.secrets import SecretStore
from tests.chaos.test_instance_and_orphans import vault_pid
from tests.e2e.test_console import write_config
from tests.e2e.test_crash_recovery import start

SERVING = re.compile(rb"metrics: serving /healthz and /metrics on http://127\.0\.0\.1:(\d+)")


def counter(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


async def test_clawgate_run_serves_metrics_and_healthz_sees_a_killed_vault(
    dirs, model_server, sandbox_image
) -> None:
    config_dir, data_dir = dirs
    write_config(config_dir, model_server, sandbox_image, idle_s=600)
    with (config_dir / "config.toml").open("a") as f:
        f.write("[metrics]\nenabled = true\nport = 0\n")
    SecretStore(config_dir).add(
        "anthropic", "sk-ant-e2e-metrics", model_server.host_port, "x-api-key", "{value}"
    )
    proc = await start(dict(os.environ))
    assert proc.stderr is not None and proc.stdin is not None and proc.stdout is not None
    try:
        while True:
            line = await asyncio.wait_for(proc.stderr.readline(), 90)
            assert line, "the gateway exited before it was ready"
            if b"ready" in line:
                break
        # port = 0: the bound port is in the start-up log line (INFO goes to the log file)
        match = SERVING.search((data_dir / "logs" / "gateway.log").read_bytes())  # noqa: ASYNC240
        assert match is not None, "no log line names the metrics address"
        port = int(match.group(1))
        stderr = proc.stderr
        drain = asyncio.create_task(_drain(stderr))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            assert (await client.get("/healthz")).status_code == 200
            proc.stdin.write(b"hello from the console\n")
            await proc.stdin.drain()
            reply = await asyncio.wait_for(proc.stdout.readline(), 120)
            assert b"echo: " in reply
            text = ""
            for _ in range(100):  # the turn is observed right after its reply is handed over
                text = (await client.get("/metrics")).text
                if counter(text, "clawgate_turn_duration_seconds_count", outcome="answered") == 1:
                    break
                await asyncio.sleep(0.1)
            assert counter(text, "clawgate_messages_received_total", channel="console") == 1
            assert counter(text, "clawgate_turn_duration_seconds_count", outcome="answered") == 1
            assert counter(text, "clawgate_vault_requests_total", group="main") >= 1
            assert "hello from the console" not in text and "sk-ant-e2e-metrics" not in text

            os.kill(vault_pid(data_dir), signal.SIGKILL)
            seen_503 = False
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                health = await client.get("/healthz")
                if health.status_code == 503:
                    assert health.json()["vault"]["state"] == "down"
                    seen_503 = True
                elif seen_503 and health.json()["vault"]["restarts"] >= 1:
                    break
                await asyncio.sleep(0.05)
            assert seen_503
            assert (await client.get("/healthz")).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        drain.cancel()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _drain(stream: asyncio.StreamReader) -> None:
    with contextlib.suppress(Exception):
        while await stream.read(65536):
            pass
