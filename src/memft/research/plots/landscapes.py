"""Grids over (rank × ℓ): a metric's heatmap and the exact-match landscape per method.

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from memft.research.law import number as _num
from memft.research.plots.common import FRACTIONS, figure, no_data, points
from memft.research.rows import Row


def _grid(rows: Sequence[Row], metric: str) -> tuple[list[int], list[int], np.ndarray, int]:
    """(ranks, lengths, mean value [n_rank, n_len] with NaN where missing, most rows in one cell)."""
    cells: dict[tuple[int, int], list[float]] = defaultdict(list)
    for rk, ln, v in points(rows, metric):
        cells[rk, ln].append(100 * v if metric in FRACTIONS else v)
    ranks = sorted({k[0] for k in cells})
    lengths = sorted({k[1] for k in cells})
    M = np.full((len(ranks), len(lengths)), np.nan)
    for (rk, ln), vs in cells.items():
        M[ranks.index(rk), lengths.index(ln)] = np.mean(vs)
    return ranks, lengths, M, max((len(v) for v in cells.values()), default=0)


def _draw_grid(ax: Any, ranks: list[int], lengths: list[int], M: np.ndarray, cmap: str, vmin: float | None,
               vmax: float | None, fmt: str) -> Any:
    im = ax.imshow(np.ma.masked_invalid(M), origin="lower", aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax)
    for i in range(len(ranks)):
        for j in range(len(lengths)):
            v = M[i, j]
            if np.isnan(v):
                ax.text(j, i, "—", ha="center", va="center", color="0.5", fontsize="small")
                continue
            r, g, b, _ = im.cmap(im.norm(v))
            color = "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"  # readable on the cell
            ax.text(j, i, format(v, fmt), ha="center", va="center", color=color, fontsize="small")
    ax.set_xticks(range(len(lengths)), [str(v) for v in lengths])
    ax.set_yticks(range(len(ranks)), [str(v) for v in ranks])
    ax.set_xlabel("value length ℓ (tokens)")
    ax.set_ylabel("LoRA rank r")
    return im


def heatmap(rows: Sequence[Row], metric: str = "loss_final") -> Figure:
    """`metric` over the (rank × ℓ) grid, one annotated cell per point (mean over rows sharing it; fractions in %)."""
    label = f"{metric} (%)" if metric in FRACTIONS else metric
    ranks, lengths, M, most = _grid(rows, metric)
    if not ranks:
        return no_data(label, f"needs rows with rank, length and {metric}")
    fig = figure(1.6 + 1.1 * len(lengths), 1.4 + 0.7 * len(ranks))
    ax = fig.add_subplot()
    cmap = "viridis_r" if metric.startswith("loss") or metric in ("steps", "steps_to_certify", "seconds") else "viridis"
    lim = (0.0, 100.0) if metric in FRACTIONS else (None, None)
    im = _draw_grid(ax, ranks, lengths, M, cmap, *lim, ".1f" if metric in FRACTIONS else ".3g")
    fig.colorbar(im, ax=ax, label=label)
    methods = sorted({str(r.get("method")) for r in rows if r.get("method") is not None})
    note = f" — mean of up to {most} rows per cell" if most > 1 else ""
    ax.set_title(f"{label} over rank × ℓ{note}" + (f"\n{', '.join(methods)}" if methods else ""), fontsize="medium")
    return fig


def exact_landscape(rows: Sequence[Row]) -> Figure:
    """Exact match (%) over (rank × ℓ), one panel per method, shared 0–100 colour scale."""
    by_method: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        if _num(r.get("exact_match")) is not None:
            by_method[str(r.get("method"))].append(r)
    grids = {m: _grid(rs, "exact_match") for m, rs in sorted(by_method.items())}
    grids = {m: g for m, g in grids.items() if g[0]}
    if not grids:
        return no_data("exact match landscape", "needs rows with method, rank, length and exact_match")
    n = len(grids)
    width = max(len(g[1]) for g in grids.values())
    fig = figure(1.0 + n * (0.9 + 0.9 * width), 1.6 + 0.7 * max(len(g[0]) for g in grids.values()))
    axes = [fig.add_subplot(1, n, i + 1) for i in range(n)]
    im = None
    for ax, (m, (ranks, lengths, M, _)) in zip(axes, grids.items()):
        im = _draw_grid(ax, ranks, lengths, M, "RdYlGn", 0.0, 100.0, ".0f")
        ax.set_title(m, fontsize="medium")
    fig.colorbar(im, ax=axes, label="exact match (%)")
    fig.suptitle("free-run exact match (%) over rank × ℓ")
    return fig
