"""Small bar charts drawn on the server as inline SVG: no script, no library, no inline style.

The dashboard's CSP forbids inline script and inline style, so a chart is markup only: bars
are `<rect>`s with presentation attributes and a class (colours live in static/style.css), each
with a `<title>` the browser shows as a tooltip. The `<svg>` is `role="img"` with an
`aria-label`; a screen reader (and anyone who wants the exact figures) gets the same numbers
in a `<details>` table beside it. Every label and value is escaped here, because the result is
handed to Jinja as `Markup` (group and model names come from chat users and model responses).

Values are sanitised rather than refused, because a chart must never turn a page into an error
page: a missing or non-finite value is drawn as no bar and shown as "—", a negative one as 0,
and anything above `MAX_VALUE` as `MAX_VALUE` (so a stacked sum stays finite). A chart whose
values are all missing or zero says "no data yet" instead of drawing empty axes.

The output is well-formed XML (tests parse it with xml.etree), so it is valid both inside HTML
and as a standalone SVG fragment.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

WIDTH = 640
HEIGHT = 220
LEFT = 58  # room for the y axis' labels
RIGHT = 10
TOP = 30  # the title row
BOTTOM = 44  # x labels, then the legend
MAX_X_LABELS = 8
MAX_VALUE = 1e300
PALETTE = 6  # classes s0 … s5 in style.css; more series reuse them

Formatter = Callable[[float], str]


@dataclass(frozen=True)
class Series:
    """One named row of values, one per bucket label (None: nothing known for that bucket)."""

    name: str
    values: Sequence[float | None]


def compact(value: float) -> str:
    """A short number for an axis or a tooltip: 12, 0.25, 3.4k, 1.2M, 1.0e+18."""
    size = abs(value)
    if size >= 1e15:
        return f"{value:.1e}"
    for limit, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if size >= limit:
            return f"{value / limit:.3g}{suffix}"
    if value == int(value):
        return str(int(value))
    return f"{value:.3g}"


def seconds(value: float) -> str:
    """A latency: 850ms, 2.4s, 3.1min."""
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 120:
        return f"{value:.3g}s"
    return f"{value / 60:.3g}min"


def usd(value: float) -> str:
    if value == 0:
        return "$0"
    if value < 0.01:
        return f"${value:.4f}"
    return f"${compact(value)}" if value >= 1000 else f"${value:.2f}"


def clean(value: float | None) -> float | None:
    """The value a chart draws: None for missing/NaN/infinite, 0 for negative, capped at MAX_VALUE."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number):
        return None
    return min(max(number, 0.0), MAX_VALUE)


def nice_top(value: float) -> float:
    """The axis' top: the smallest of 1, 2, 5 × 10^k at or above `value` (1 for nothing)."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1.0, 2.0, 5.0, 10.0):
        top = step * 10.0**exponent
        if top >= value * (1 - 1e-12):
            return top
    return 10.0 ** (exponent + 1)  # unreachable: 10 × 10^k ≥ any value with that exponent


def _attrs(**values: object) -> str:
    return " ".join(f'{name.rstrip("_").replace("_", "-")}="{escape(str(v))}"' for name, v in values.items())


def _num(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def bar_chart(
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    fmt: Formatter = compact,
    stacked: bool = False,
    chart_id: str = "",
) -> Markup:
    """A bar chart of `series` over the buckets `labels`: grouped bars, or one stack per bucket.

    Raises ValueError only for a caller's mistake (a series whose length differs from the
    labels'); bad values are sanitised (see the module docstring).
    """
    for s in series:
        if len(s.values) != len(labels):
            raise ValueError(f"series {s.name!r} has {len(s.values)} values for {len(labels)} labels")
    rows = [[clean(v) for v in s.values] for s in series]
    figure_attrs = _attrs(class_="chart", id=chart_id) if chart_id else _attrs(class_="chart")
    caption = f"<figcaption>{escape(title)}</figcaption>"
    if not labels or not any(v for row in rows for v in row):
        return Markup(
            f'<figure {figure_attrs} data-empty="true">{caption}'
            '<p class="muted chart-empty">no data yet</p></figure>'
        )
    svg = _svg(title, labels, [s.name for s in series], rows, fmt, stacked)
    return Markup(f"<figure {figure_attrs}>{svg}{_table(title, labels, series, rows, fmt)}</figure>")


def _svg(
    title: str,
    labels: Sequence[str],
    names: Sequence[str],
    rows: list[list[float | None]],
    fmt: Formatter,
    stacked: bool,
) -> str:
    n, k = len(labels), len(rows)
    if stacked:
        peak = max(sum(row[i] or 0.0 for row in rows) for i in range(n))
    else:
        peak = max((v for row in rows for v in row if v is not None), default=0.0)
    top = nice_top(peak)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    base_y = TOP + plot_h
    slot = plot_w / n
    summary = f"{title}: {n} buckets from {labels[0]} to {labels[-1]}, highest {fmt(peak)}"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" {_attrs(role="img", aria_label=summary)} '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" class="chart-svg">',
        f"<title>{escape(title)}</title>",
        f'<text class="chart-title" x="{LEFT}" y="18">{escape(title)}</text>',
    ]
    for fraction in (0.0, 0.5, 1.0):  # y axis: gridlines and their values
        gy = _num(base_y - fraction * plot_h)
        out.append(f'<line class="grid" x1="{LEFT}" y1="{gy}" x2="{WIDTH - RIGHT}" y2="{gy}"/>')
        tick = escape(fmt(top * fraction))
        out.append(f'<text class="tick" x="{LEFT - 6}" y="{gy}" text-anchor="end">{tick}</text>')
    out.append(f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{base_y}"/>')
    bar_w = slot * 0.8 if stacked else slot * 0.8 / k
    for i, label in enumerate(labels):
        x0 = LEFT + i * slot + slot * 0.1
        height_so_far = 0.0
        for j, row in enumerate(rows):
            value = row[i]
            if value is None or value == 0:
                continue
            h = value / top * plot_h
            x = x0 if stacked else x0 + j * bar_w
            y = base_y - height_so_far - h
            if stacked:
                height_so_far += h
            tip = f"{label} · {names[j]}: {fmt(value)}"
            out.append(
                f'<rect class="bar s{j % PALETTE}" x="{_num(x)}" y="{_num(y)}" '
                f'width="{_num(max(bar_w - 1, 1))}" height="{_num(max(h, 0.5))}">'
                f"<title>{escape(tip)}</title></rect>"
            )
    step = max(1, math.ceil(n / MAX_X_LABELS))
    for i in range(0, n, step):
        lx = _num(LEFT + (i + 0.5) * slot)
        out.append(
            f'<text class="tick" x="{lx}" y="{base_y + 15}" text-anchor="middle">{escape(labels[i])}</text>'
        )
    legend_x, legend_y = float(LEFT), HEIGHT - 8
    for j, name in enumerate(names):  # the table and the tooltips name what does not fit
        if legend_x > WIDTH - 40:
            break
        swatch = f'x="{_num(legend_x)}" y="{legend_y - 9}" width="10" height="10"'
        out.append(f'<rect class="bar s{j % PALETTE}" {swatch}/>')
        out.append(f'<text class="legend" x="{_num(legend_x + 14)}" y="{legend_y}">{escape(name)}</text>')
        legend_x += 24 + 7 * len(name)
    out.append("</svg>")
    return "".join(out)


def _table(
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    rows: list[list[float | None]],
    fmt: Formatter,
) -> str:
    head = "".join(f"<th>{escape(s.name)}</th>" for s in series)
    body = "".join(
        f"<tr><td>{escape(label)}</td>"
        + "".join(f"<td>{escape('—' if row[i] is None else fmt(row[i] or 0.0))}</td>" for row in rows)
        + "</tr>"
        for i, label in enumerate(labels)
    )
    return (
        f"<details><summary>{escape(title)}: the numbers</summary>"
        f'<table class="chart-numbers"><tr><th>Bucket</th>{head}</tr>{body}</table></details>'
    )
