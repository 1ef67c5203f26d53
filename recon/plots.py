"""PNG charts for the analyst notebooks, drawn like recon/charts.py: matplotlib's object API on
the Agg canvas (no pyplot, no display), returning PNG bytes the notebooks show with
`IPython.display.Image` and could save as files."""

from __future__ import annotations

import io
from collections.abc import Mapping

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from recon.checks import CHECK_NAMES

PALETTE = [
    "#2c3e50",
    "#c0392b",
    "#27ae60",
    "#f39c12",
    "#8e44ad",
    "#16a085",
    "#7f8c8d",
    "#d35400",
    "#2980b9",
    "#e84393",
    "#6c5ce7",
    "#00b894",
]

# Fixed colours for the statuses and outcomes the notebooks stack, so a colour means one thing.
LABEL_COLOURS = {
    "completed": "#27ae60",
    "paid": "#27ae60",
    "failed": "#c0392b",
    "cancelled": "#f39c12",
    "timeout": "#8e44ad",
    "pending": "#2980b9",
    "open": "#2980b9",
    "unknown": "#7f8c8d",
    "submitting": "#2c3e50",
    "review": "#d35400",
    "amount_mismatch": "#e84393",
    "reversed": "#16a085",
    "awaiting_approval": "#f1c40f",
    "rejected": "#6d214f",
    "expired": "#bdc3c7",
}

# One colour per reconciliation check, the same in every chart that shows checks (Kelly's
# colours of maximum contrast, black included, in check order): none shared.
CHECK_COLOURS = dict(
    zip(
        CHECK_NAMES,
        [
            "#be0032",  # red
            "#f38400",  # orange
            "#848482",  # grey
            "#0067a5",  # blue
            "#875692",  # purple
            "#008856",  # green
            "#f3c300",  # yellow
            "#e68fac",  # purplish pink
            "#a1caf1",  # light blue
            "#c2b280",  # buff
            "#882d17",  # reddish brown
            "#604e97",  # violet
            "#8db600",  # yellow green
            "#f6a600",  # orange yellow
            "#e25822",  # reddish orange
            "#dcd300",  # greenish yellow
            "#f99379",  # yellowish pink
            "#2b3d26",  # olive green
            "#b3446c",  # purplish red
            "#654522",  # yellowish brown
            "#222222",  # black
        ],
        strict=True,
    )
)


def stacked_bars(
    table: pd.DataFrame, title: str, unit: str, colours: Mapping[str, str] = LABEL_COLOURS
) -> bytes:
    """One bar per row of `table` (its index as labels), stacked by column, each column in its
    colour from `colours` (CHECK_COLOURS for checks); columns that are zero throughout are left
    out of the bars and the legend."""
    figure, axes = _figure(width=8, height=4)
    table = table.loc[:, (table != 0).any(axis=0)] if len(table) else table
    bottom = pd.Series(0.0, index=table.index)
    labels = [str(label) for label in table.index]
    for index, column in enumerate(table.columns):
        values = table[column].astype("float64")
        colour = colours.get(str(column), _colour(index))
        axes.bar(labels, values, bottom=bottom, label=str(column), color=colour)
        bottom += values
    axes.set_ylabel(unit)
    axes.set_title(title)
    if len(table.columns):
        axes.legend(fontsize="small", frameon=False, loc="upper left", bbox_to_anchor=(1, 1))
    axes.tick_params(axis="x", labelrotation=45)
    return _png(figure)


def bars(labels, values, title: str, unit: str) -> bytes:
    """Horizontal bars, the first label on top."""
    figure, axes = _figure(width=7, height=max(2.5, 0.35 * len(labels) + 1.2))
    axes.barh([str(label) for label in labels][::-1], [float(v) for v in values][::-1])
    axes.set_xlabel(unit)
    axes.set_title(title)
    return _png(figure)


def histogram(seconds: pd.Series, title: str, marks: dict[str, float | None]) -> bytes:
    """A histogram of durations (seconds, log-spaced bins) with a vertical line per mark
    (e.g. p50, p95)."""
    figure, axes = _figure(width=7, height=3.5)
    values = pd.Series(seconds, dtype="float64").dropna()
    if len(values):
        low, high = max(values.min(), 0.5), max(values.max(), 1.0)
        edges = pd.Series(range(31), dtype="float64")
        edges = low * (high / low) ** (edges / 30) if high > low else [low * 0.9, high * 1.1]
        axes.hist(values.clip(lower=low), bins=list(edges), color=PALETTE[0])
        axes.set_xscale("log")
    for index, (label, value) in enumerate(marks.items()):
        if value is not None:
            axes.axvline(
                value, color=_colour(index + 1), linestyle="--", label=f"{label} {value:g} s"
            )
    axes.set_xlabel("seconds (log scale)")
    axes.set_ylabel("count")
    axes.set_title(title)
    if marks:
        axes.legend(frameon=False)
    return _png(figure)


def _figure(*, width: float, height: float):
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    axes.spines[["top", "right"]].set_visible(False)
    return figure, axes


def _colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _png(figure: Figure) -> bytes:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
