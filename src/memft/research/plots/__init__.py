"""Figures: each is a pure function of result rows (see `memft.research.rows.ResultRow`) and, for the law figures,
a law fit.

Every function returns a `matplotlib.figure.Figure` built without pyplot (Agg canvas), so nothing leaks between
calls and no display is needed; nothing here calls `show()`. A figure with no usable data comes back as a figure
that says "no data" and why, never as an exception, so a report builds on any store.

A law fit is a `memft.research.law.LawFitEntry` (or a mapping shaped like a law fit file's entry, read as one); its
prediction is ΔL = C·r^alpha·ℓ^(−beta) + b. Rows are result rows (memft.research.rows.ResultRow) or mappings
shaped like them. Where several rows share a grid point (seeds, ratios, benchmarks), the figure shows their mean; filter rows first
to compare one setting.

Where they live: common.py (the canvas, no-data figures, row values), fits.py (the law figures), landscapes.py
(grids over rank × ℓ), positions.py (per-position and per-step figures); this package registers them all
(ALL_FIGURES) and re-exports their public names: `from memft.research.plots import heatmap, save`.

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from memft.research.plots.common import FRACTIONS, HIGH, LOW, Fit
from memft.research.plots.fits import delta_vs_length, delta_vs_rank, log_plane, predicted_vs_true
from memft.research.plots.landscapes import exact_landscape, heatmap
from memft.research.plots.positions import (
    failure_histogram, probability_grid, stubborn_failure_spearman, stubborn_vs_failure, training_curves,
)
from memft.research.rows import Row


@dataclass(frozen=True)
class FigureSpec:
    """A registered figure: the function, what it needs from rows, and whether it takes a law fit."""

    fn: Callable[..., Figure]
    needs: str
    fit: str = "no"  # "no" | "optional" | "required"

    def __call__(self, rows: Sequence[Row], fit: Fit | None = None) -> Figure:
        return self.fn(rows) if self.fit == "no" else self.fn(rows, fit)


ALL_FIGURES: dict[str, FigureSpec] = {
    "delta_vs_rank": FigureSpec(delta_vs_rank, "rank, length, delta_loss > 0 (law curves from the fit)", "optional"),
    "delta_vs_length": FigureSpec(delta_vs_length, "rank, length, delta_loss > 0 (law curves from the fit)", "optional"),
    "log_plane": FigureSpec(log_plane, "rank, length, delta_loss > 0, and a law fit for the surface", "required"),
    "predicted_vs_true": FigureSpec(predicted_vs_true, "rank, length, delta_loss, and a law fit", "required"),
    "heatmap": FigureSpec(heatmap, "rank, length, loss_final"),
    "exact_landscape": FigureSpec(exact_landscape, "method, rank, length, exact_match"),
    "probability_grid": FigureSpec(probability_grid, "rank, probs (per-position target probabilities), first_failure"),
    "failure_histogram": FigureSpec(failure_histogram, "first_failure (per record)"),
    "stubborn_vs_failure": FigureSpec(stubborn_vs_failure, "earliest_stubborn and first_failure (per record)"),
    "training_curves": FigureSpec(training_curves, "curve (per-step loss) of fixed-budget runs, loss_init"),
}


def save(fig: Figure, path_stem: str | Path) -> list[Path]:
    """Write `fig` as `<path_stem>.png` (120 dpi) and `<path_stem>.svg`; returns both paths."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = [stem.parent / f"{stem.name}.png", stem.parent / f"{stem.name}.svg"]
    fig.savefig(out[0], dpi=120, format="png")
    fig.savefig(out[1], format="svg")
    return out


__all__ = [
    "ALL_FIGURES", "FRACTIONS", "HIGH", "LOW", "Fit", "FigureSpec", "Row", "delta_vs_length", "delta_vs_rank", "exact_landscape",
    "failure_histogram", "heatmap", "log_plane", "predicted_vs_true", "probability_grid", "save", "stubborn_failure_spearman",
    "stubborn_vs_failure", "training_curves",
]
