"""PNG charts of a report, drawn with matplotlib's object API on the Agg canvas (no pyplot, no
display): findings per check, KES at risk per check, and the aging of open items."""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from recon.plots import CHECK_COLOURS

CHART_FILES = ("findings_by_check.png", "kes_at_risk_by_check.png", "aging.png")


def render_charts(report) -> dict[str, bytes]:
    """File name -> PNG bytes for each chart of `report`."""
    summary = report.summary
    valued = summary[summary["kes_at_risk"].notna()]  # count-only checks have no amount
    aging = report.aging
    return {
        "findings_by_check.png": _bar_chart(
            list(summary["check"]),
            [int(v) for v in summary["count"]],
            "Findings by check",
            "findings",
            horizontal=True,
        ),
        "kes_at_risk_by_check.png": _bar_chart(
            list(valued["check"]),
            [float(v) for v in valued["kes_at_risk"]],
            "KES at risk by check",
            "KES",
            horizontal=True,
        ),
        "aging.png": _bar_chart(
            list(aging["bucket"]),
            [int(v) for v in aging["count"]],
            "Aging of open items (findings with money at risk)",
            "findings",
            horizontal=False,
        ),
    }


def _bar_chart(labels, values, title, unit, *, horizontal) -> bytes:
    """Bars per check (horizontal, each check in its CHECK_COLOURS colour) or per age bucket."""
    figure = Figure(figsize=(7, 4.2 if horizontal else 3.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    if horizontal:
        colours = [CHECK_COLOURS[label] for label in labels[::-1]]
        axes.barh(labels[::-1], values[::-1], color=colours)
        axes.set_xlabel(unit)
    else:
        axes.bar(labels, values, color="#2c3e50")
        axes.set_ylabel(unit)
    axes.set_title(title)
    axes.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
