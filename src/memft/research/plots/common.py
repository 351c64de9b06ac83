"""What every figure uses: a figure on an Agg canvas, the no-data figure, a row's values as numbers, the metrics
shown in percent and the colours of the probability line.

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from memft.research import law
from memft.research.law import LawFitEntry
from memft.research.law import number as _num
from memft.research.rows import Row

Fit = LawFitEntry | Mapping[str, Any]  # an entry, or a mapping shaped like one (law.as_entry reads it)

# Metrics stored as fractions in [0, 1]; figures show them in percent.
FRACTIONS = frozenset({
    "exact_match", "token_accuracy", "token_accuracy_tf", "certified", "p_above_half",
    "heldout_exact_match", "heldout_token_accuracy",
})
LOW, HIGH = "#d62728", "#1f77b4"  # p ≤ 0.5 (a stubborn token) / p > 0.5


def figure(w: float = 6.4, h: float = 4.8, **kw: Any) -> Figure:
    fig = Figure(figsize=(w, h), layout="constrained", **kw)
    FigureCanvasAgg(fig)  # Agg canvas: renders to files/bytes, needs no display
    return fig


def no_data(name: str, why: str) -> Figure:
    """A small figure that says there was nothing to plot (and why) instead of raising."""
    fig = figure(5.0, 2.2)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(name)
    ax.text(0.5, 0.5, f"no data\n{why}", ha="center", va="center", transform=ax.transAxes, color="0.4")
    return fig


def value(row: Row, key: str) -> float | None:
    """row[key] as a finite float; ΔL falls back to loss_init − loss_final as in the law fit."""
    if key != "delta_loss":
        return _num(row.get(key))
    try:
        return _num(law.delta_loss(row))
    except TypeError:  # a non-numeric loss
        return None


def points(rows: Sequence[Row], key: str) -> list[tuple[int, int, float]]:
    """(rank, length, value) for rows where all three are usable numbers."""
    out = []
    for r in rows:
        rk, ln, v = _num(r.get("rank")), _num(r.get("length")), value(r, key)
        if rk is not None and ln is not None and v is not None:
            out.append((int(rk), int(ln), v))
    return out
