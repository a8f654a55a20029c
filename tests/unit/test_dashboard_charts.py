"""The dashboard's server-side SVG charts (dashboard/charts.py) and how the pages build them.

Every chart is parsed as XML: a chart that is not well-formed, or that lets a label's markup
through, fails here rather than in a browser.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from dashboard.activity import DailyCost, SpendHistory, TurnActivity, TurnBucket, spend_charts, turn_charts
from dashboard.charts import HEIGHT, MAX_VALUE, TOP, Series, bar_chart, clean, compact, nice_top, seconds, usd

SVG = "{http://www.w3.org/2000/svg}"


def parse(markup: str) -> ET.Element:
    return ET.fromstring(str(markup))


def bars(root: ET.Element) -> list[ET.Element]:
    """The data bars (legend swatches have no tooltip)."""
    return [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]


def tips(root: ET.Element) -> list[str]:
    return [r.findtext(f"{SVG}title") or "" for r in bars(root)]


def cells(root: ET.Element) -> list[list[str]]:
    return [[c.text or "" for c in tr] for tr in root.iter("tr")]


def test_no_points_and_all_zero_say_no_data_yet() -> None:
    for labels, values in (([], []), (["a", "b"], [0, 0]), (["a"], [None]), (["a"], [math.nan])):
        root = parse(bar_chart("Turns", labels, [Series("n", values)]))
        assert root.tag == "figure" and root.get("data-empty") == "true"
        assert root.findtext("p") == "no data yet"
        assert root.find(f"{SVG}svg") is None


def test_one_point_is_one_bar_filling_the_axis_with_its_number_in_the_table() -> None:
    root = parse(bar_chart("Turns", ["10:00"], [Series("turns", [7])], chart_id="t"))
    assert root.get("id") == "t" and root.get("class") == "chart"
    svg = root.find(f"{SVG}svg")
    assert svg is not None and svg.get("role") == "img"
    assert svg.findtext(f"{SVG}title") == "Turns"
    assert "Turns" in (svg.get("aria-label") or "") and "highest 7" in (svg.get("aria-label") or "")
    [bar] = bars(root)
    assert tips(root) == ["10:00 · turns: 7"]
    # 7 on an axis topped at 10: 70% of the plot's height, standing on its base line.
    plot_h = HEIGHT - TOP - 44
    assert float(bar.get("height") or 0) == pytest.approx(0.7 * plot_h, abs=0.01)
    assert float(bar.get("y") or 0) + float(bar.get("height") or 0) == pytest.approx(TOP + plot_h, abs=0.01)
    assert cells(root) == [["Bucket", "turns"], ["10:00", "7"]]


def test_many_points_grouped_and_stacked() -> None:
    labels = [f"{h:02d}:00" for h in range(24)]
    p50 = [float(h) for h in range(24)]
    p95 = [2.0 * h for h in range(24)]
    grouped = parse(bar_chart("Latency", labels, [Series("p50", p50), Series("p95", p95)], fmt=seconds))
    assert len(bars(grouped)) == 2 * 23  # hour 0 has 0 in both: no bar
    xs = [float(b.get("x") or 0) for b in bars(grouped)]
    assert xs == sorted(xs)  # p50 then p95, bucket after bucket, left to right
    ticks = [t.text for t in grouped.iter(f"{SVG}text") if t.get("text-anchor") == "middle"]
    assert ticks == labels[::3]  # at most 8 labels under the axis; all 24 in the table
    assert len(cells(grouped)) == 25

    stacked = parse(
        bar_chart("Turns", ["a", "b"], [Series("ok", [3, 1]), Series("failed", [1, 0])], stacked=True)
    )
    ok_a, failed_a, ok_b = bars(stacked)
    assert ok_a.get("x") == failed_a.get("x")  # one stack per bucket
    assert float(failed_a.get("y") or 0) + float(failed_a.get("height") or 0) == pytest.approx(
        float(ok_a.get("y") or 0)
    )
    assert tips(stacked) == ["a · ok: 3", "a · failed: 1", "b · ok: 1"]


def test_missing_negative_nan_and_infinite_values_are_cleaned_not_drawn() -> None:
    assert [clean(v) for v in (None, math.nan, math.inf, -math.inf, -3, 2.5, 1e308)] == [
        None,
        None,
        None,
        None,
        0.0,
        2.5,
        MAX_VALUE,
    ]
    root = parse(bar_chart("x", list("abcde"), [Series("v", [None, math.nan, -5, math.inf, 4])]))
    assert tips(root) == ["e · v: 4"]
    assert cells(root)[1:] == [["a", "—"], ["b", "—"], ["c", "0"], ["d", "—"], ["e", "4"]]


def test_huge_values_stay_finite_and_stacks_do_not_overflow() -> None:
    root = parse(
        bar_chart("big", ["a", "b"], [Series("x", [1e308, 1e12]), Series("y", [1e308, 0])], stacked=True)
    )
    for bar in bars(root):
        for attr in ("x", "y", "width", "height"):
            assert math.isfinite(float(bar.get(attr) or "nan")), bar.attrib
    assert "1.0e+300" in tips(root)[0]
    assert compact(1_234_567) == "1.23M" and compact(1e18) == "1.0e+18" and compact(0.25) == "0.25"
    assert nice_top(7) == 10 and nice_top(10) == 10 and nice_top(0.03) == pytest.approx(0.05)
    assert nice_top(0) == 1 and nice_top(1e300) == pytest.approx(1e300)
    assert seconds(0.25) == "250ms" and seconds(2.5) == "2.5s" and seconds(600) == "10min"
    assert usd(0.001) == "$0.0010" and usd(3.5) == "$3.50" and usd(0) == "$0"


def test_markup_in_titles_labels_and_series_names_is_escaped() -> None:
    evil = '<script>alert(1)</script>"><img src=x onerror=alert(2)>&amp;'
    root = parse(bar_chart(evil, [evil, "b"], [Series(evil, [1, 2])]))
    assert root.find(".//script") is None and root.find(f".//{SVG}script") is None
    assert root.find(".//img") is None
    texts = [t.text for t in root.iter() if t.text]
    assert evil in texts  # shown as text, literally, not interpreted
    svg = root.find(f"{SVG}svg")
    assert svg is not None and evil in (svg.get("aria-label") or "")
    raw = str(bar_chart(evil, [evil], [Series(evil, [1])]))
    assert "<script>" not in raw and "<img" not in raw


def test_a_series_of_the_wrong_length_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="2 values for 3 labels"):
        bar_chart("x", ["a", "b", "c"], [Series("v", [1, 2])])


def test_turn_charts_are_latency_and_throughput_of_each_range() -> None:
    buckets = [TurnBucket(0.0, 0, 0, None, None), TurnBucket(300.0, 3, 1, 1.5, 4.0)]
    latency, turns = (parse(c) for c in turn_charts(TurnActivity("last hour", 300, buckets)))
    assert latency.get("id") == "latency-last-hour" and turns.get("id") == "turns-last-hour"
    assert tips(latency) == ["00:05 · p50: 1.5s", "00:05 · p95: 4s"]
    assert tips(turns) == ["00:05 · answered: 3", "00:05 · failed: 1"]
    assert cells(latency)[1] == ["00:00", "—", "—"]  # nothing ended: unknown, not 0 s
    empty = [TurnBucket(0.0, 0, 0, None, None)]
    assert all(
        parse(c).get("data-empty") == "true" for c in turn_charts(TurnActivity("last day", 3600, empty))
    )


def test_spend_charts_one_per_group_stacked_by_model_with_hostile_names_escaped() -> None:
    days = ["2026-03-01", "2026-03-02", "2026-03-03"]
    evil = "<b>team</b>"
    costs = [
        DailyCost("2026-03-01", evil, "m1", 0.5, 100, 1),
        DailyCost("2026-03-03", evil, "m1", 1.0, 200, 2),
        DailyCost("2026-03-03", evil, "m2<i>", 2.0, 300, 3),
        DailyCost("2026-03-02", "main", "m1", 0.25, 50, 1),
        DailyCost("2026-02-01", "main", "m1", 99.0, 1, 1),  # outside the days: ignored
    ]
    team, main = (parse(c) for c in spend_charts(SpendHistory(days, "Europe/Berlin", costs)))
    assert team.findtext("details/summary", "").startswith(evil)  # sorted: "<" before "m"
    assert team.find(".//b") is None and team.find(".//i") is None
    assert tips(team) == ["03-01 · m1: $0.50", "03-03 · m1: $1.00", "03-03 · m2<i>: $2.00"]
    assert tips(main) == ["03-02 · m1: $0.25"]
    assert cells(main)[1:] == [["03-01", "$0"], ["03-02", "$0.25"], ["03-03", "$0"]]
    assert spend_charts(SpendHistory(days, "UTC", [])) == []
