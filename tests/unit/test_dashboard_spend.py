"""The Spend page marks calls the vault counted with an estimate (cut before their final usage):
the store's count of incomplete rows reaches the page's table through the backend's line."""

from __future__ import annotations

from dashboard.backend import SpendLine, SpendView
from dashboard.server import _environment
from gateway.dashboard_backend import _line
from gateway.store.budgets import SpendRow


def render(today: list[SpendLine]) -> str:
    view = SpendView(day="2026-12-02", month="2026-12", today=today, this_month=today, budgets=[])
    return (
        _environment()
        .get_template("spend.html")
        .render(s=view, charts=[], user="tg:1", csrf="x", flash=[], page="spend.html")
    )


def test_estimated_calls_are_marked_and_whole_ones_are_not() -> None:
    cut = _line(SpendRow("team", "gpt-4o", 500, 7, 0, 0, 1500, 3, estimated=2))
    assert cut == SpendLine("team", "gpt-4o", 507, 0.0015, 3, 2)
    whole = _line(SpendRow("main", "claude-sonnet-4-5", 10, 2, 0, 0, 60, 1))
    page = render([cut, whole])
    table = page[page.index('<table id="today">') :]
    team, main = table[: table.index("</table>")].split("<tr>")[2:]
    assert "<td>3 <span" in team and "(2 estimated)</span>" in team
    assert "<td>1</td>" in main and "estimated" not in main
