"""The Overview's turn charts and sandbox memory, and the Spend page's daily charts, for real.

A real Gateway (Docker sandbox with the real agent, vault process, SQLite) answers one message;
the Overview then shows that sandbox's memory as read from the Docker engine (a number, not
"—") and exactly one answered turn in the last hour's charts; a bwrap sandbox shows its memory
too (its cgroup, or its process tree from /proc). Metered calls of a group whose
name is markup are drawn on the Spend page as text, and a real headless Chromium renders both
pages (screenshots `overview-charts` and `spend-charts`) without running any of it.
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from dashboard.auth import mint_login
from gateway.app import Gateway
from gateway.store.metered import MeteredRow
from proxy.secrets import SecretStore
from tests.fakes.channel import CaptureChannel
from tests.integration.browser_support import Browser
from tests.integration.bwrap_support import bwrap_rootfs, link_rootfs
from tests.integration.test_dashboard_security import DASHBOARD, Recorder, base, client_for, gateway, login
from tests.integration.test_gateway_docker import REAL_KEY, config_for

__all__ = ["bwrap_rootfs", "gateway"]  # fixtures

SVG = "{http://www.w3.org/2000/svg}"
EVIL_GROUP = '<img src=x onerror="document.title=1">team'


async def one_turn(gw: Gateway) -> None:
    channel: CaptureChannel = gw.test_channel  # type: ignore[attr-defined]
    await gw.ingest(channel.message("hello charts"))
    await channel.wait_for(1)
    await gw.drain()  # the run is closed (finished_at written), not only answered


def figure(page: str, chart_id: str) -> ET.Element:
    found = re.search(rf'<figure class="chart" id="{chart_id}".*?</figure>', page, re.S)
    assert found, f"no chart {chart_id}"
    return ET.fromstring(found.group(0))


def sandboxes_table(page: str) -> str:
    found = re.search(r'<table id="sandboxes">.*?</table>', page, re.S)
    assert found, "no sandboxes table"
    return found.group(0)


def tips(root: ET.Element) -> list[str]:
    return [t.text or "" for r in root.iter(f"{SVG}rect") if (t := r.find(f"{SVG}title")) is not None]


async def test_after_a_turn_the_overview_shows_its_memory_and_one_turn(gateway: Gateway) -> None:
    rec = Recorder()
    async with client_for(gateway) as client:
        token = await login(rec, client, gateway.data_dir)
        _, before = await rec.get(client, "/")
        assert 'id="turns-last-hour" data-empty="true"' in before and "None running." in before

        await one_turn(gateway)
        status, page = await rec.get(client, "/")
    assert status == 200
    # The sandboxes table only: once the vault's report of the turn is stored, "Spend today"
    # has a row for main too.
    [row] = re.findall(r"<tr><td>main</td>.*?</tr>", sandboxes_table(page), re.S)
    memory = re.search(r'<td class="memory">([\d.]+) MiB</td>', row)
    assert memory, row  # a number from the engine's stats, not "—"
    assert 0 < float(memory.group(1)) < 256  # under the sandbox's memory_mb limit

    turns, latency = figure(page, "turns-last-hour"), figure(page, "latency-last-hour")
    [turn] = tips(turns)  # one bar: the bucket the turn ended in
    assert turn.endswith(" · answered: 1"), turn
    assert [t.split(" · ")[1].split(":")[0] for t in tips(latency)] == ["p50", "p95"]  # one bucket
    assert len(tips(figure(page, "turns-last-day"))) == 1
    rec.assert_clean(REAL_KEY, token)


async def test_a_memory_read_that_fails_is_a_dash_not_an_error_page(gateway: Gateway) -> None:
    await one_turn(gateway)
    [live] = gateway.pool.live.values()

    async def broken() -> int | None:
        raise OSError("engine gone")

    live.sandbox.memory_bytes = broken  # type: ignore[method-assign]
    rec = Recorder()
    async with client_for(gateway) as client:
        await login(rec, client, gateway.data_dir)
        status, page = await rec.get(client, "/")
    assert status == 200 and '<td class="memory">—</td>' in page


async def test_a_bwrap_sandbox_shows_its_memory_too(dirs, model_server, sandbox_image, bwrap_rootfs) -> None:  # type: ignore[no-untyped-def]
    config_dir, data_dir = dirs
    link_rootfs(data_dir, bwrap_rootfs)
    SecretStore(config_dir).add("anthropic", REAL_KEY, model_server.host_port, "x-api-key", "{value}")
    config = config_for(model_server, sandbox_image, extra=DASHBOARD, backend="bwrap")
    gw = Gateway(config, config_dir, data_dir)
    await gw.start([CaptureChannel()])
    gw.test_channel = gw.channels[0]  # type: ignore[attr-defined]
    try:
        await one_turn(gw)
        [live] = gw.pool.live.values()
        direct = await live.sandbox.memory_bytes()
        assert direct is not None and direct > 1024 * 1024  # at least the agent's Python
        rec = Recorder()
        async with client_for(gw) as client:
            await login(rec, client, gw.data_dir)
            status, page = await rec.get(client, "/")
        assert status == 200
        # The sandboxes table only: once the vault's report of the turn is stored, "Spend today"
        # has a row for main too.
        [row] = re.findall(r"<tr><td>main</td>.*?</tr>", sandboxes_table(page), re.S)
        assert "bwrap" in row and re.search(r'<td class="memory">[\d.]+ MiB</td>', row), row
    finally:
        await gw.stop(grace_s=5)


async def test_overview_and_spend_charts_in_the_browser(
    gateway: Gateway, driver: Any, artifacts: Path
) -> None:
    now = time.time()
    rows = [
        MeteredRow(f"c{i}", group, None, "anthropic", model, 1000, 500, 0, 0, micros, True, now - d * 86400)
        for i, (group, model, micros, d) in enumerate(
            [
                ("main", "claude-sonnet", 1_500_000, 0),
                ("main", "claude-haiku", 250_000, 0),
                ("main", "claude-sonnet", 900_000, 3),
                (EVIL_GROUP, "claude-sonnet", 3_000_000, 1),
                (EVIL_GROUP, "claude-sonnet", 10_000, 40),  # older than 30 days: not drawn
            ]
        )
    ]
    assert await gateway.store.add_metered_usage(rows) == 5
    await one_turn(gateway)

    browser = Browser(driver, base(gateway), artifacts)
    await browser.get(f"/login?t={mint_login(gateway.data_dir, 'console:owner')}")
    assert await browser.text("h1") == "Overview"
    await browser.wait_text("#sandboxes td.memory", "MiB")
    shown = await browser.run(
        lambda: browser.driver.execute_script(
            "return [...document.querySelectorAll('#turns-last-hour svg rect title')].map(t => t.textContent)"
        )
    )
    assert len(shown) == 1 and shown[0].endswith("answered: 1"), shown
    await browser.screenshot("overview-charts")

    await browser.get("/spend")
    assert await browser.text("h1") == "Spend"
    charts = await browser.run(
        lambda: browser.driver.execute_script(
            "return [...document.querySelectorAll('#spend-charts figure')].map(f => ["
            "f.querySelector('svg title').textContent,"
            "[...f.querySelectorAll('rect title')].map(t => t.textContent)])"
        )
    )
    evil_title = f"{EVIL_GROUP}: cost per day (UTC)"
    assert [c[0] for c in charts] == [evil_title, "main: cost per day (UTC)"]
    evil_bars, main_bars = charts[0][1], charts[1][1]
    assert len(evil_bars) == 1 and evil_bars[0].endswith("claude-sonnet: $3.00")
    assert sorted(b.split(" · ")[1] for b in main_bars) == [
        "claude-haiku: $0.25",
        "claude-sonnet: $0.90",
        "claude-sonnet: $1.50",
    ]
    injected = await browser.run(
        lambda: browser.driver.execute_script("return document.querySelectorAll('main img').length")
    )
    assert injected == 0 and await browser.run(lambda: browser.driver.title) == "Spend · clawgate"
    await browser.screenshot("spend-charts")


async def test_the_spend_page_without_calls_says_so(gateway: Gateway) -> None:
    rec = Recorder()
    async with client_for(gateway) as client:
        await login(rec, client, gateway.data_dir)
        status, page = await rec.get(client, "/spend")
    assert status == 200 and "No model calls in the last 30 days." in page
