"""The law figures: ΔL against rank and against ℓ with the fit's curves, the log plane, predicted against measured.

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import matplotlib.ticker
import mpl_toolkits.mplot3d  # noqa: F401  (registers the "3d" projection)
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from memft.research import law
from memft.research.law import LawFitEntry, as_entry
from memft.research.law import number as _num
from memft.research.plots.common import Fit, figure, no_data, points, value
from memft.research.rows import Row


def _entry(fit: Fit | None) -> LawFitEntry | None:
    return as_entry(fit) if fit else None


def _params(fit: Fit | None) -> tuple[float, float, float, float] | None:
    e = _entry(fit)
    if e is None or e.fit is None:
        return None
    return e.fit.C, e.fit.alpha, e.fit.beta, e.fit.b


def _law_text(p: tuple[float, float, float, float]) -> str:
    C, alpha, beta, b = p
    return f"ΔL = {C:.3g}·r^{alpha:.3g}·ℓ^−{beta:.3g} {'+' if b >= 0 else '−'} {abs(b):.3g}"


def _predict(p: tuple[float, float, float, float], r: Any, ell: Any) -> np.ndarray:
    return law.law(r, ell, *p)


def _setting(fit: Fit | None) -> str:
    e = _entry(fit)
    return f" [{e.label()}]" if e is not None and e.label() else ""


def _log_ticks(axis: Any, values: Sequence[float]) -> None:
    axis.set_ticks(sorted(set(values)), [f"{v:g}" for v in sorted(set(values))])
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _delta_vs(rows: Sequence[Row], fit: Fit | None, x: str) -> Figure:
    series = "length" if x == "rank" else "rank"
    sym = {"rank": "r", "length": "ℓ"}
    name = f"ΔL vs {'rank' if x == 'rank' else 'length'}"
    pts = points(rows, "delta_loss")
    pos = [(rk, ln, d) for rk, ln, d in pts if d > 0]
    if not pos:
        return no_data(name, "needs rows with rank, length and delta_loss > 0")
    groups: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for rk, ln, d in pos:
        xv, sv = (rk, ln) if x == "rank" else (ln, rk)
        groups[sv][xv].append(d)
    p = _params(fit)
    fig = figure()
    ax = fig.add_subplot()
    for i, s in enumerate(sorted(groups)):
        xs = sorted(groups[s])
        ys = [float(np.mean(groups[s][v])) for v in xs]
        color = f"C{i % 10}"
        ax.plot(xs, ys, "o-", color=color, label=f"{sym[series]} = {s}")
        if p is not None and len(xs) > 0:
            xx = np.geomspace(min(xs), max(xs), 100) if min(xs) < max(xs) else np.array(xs, float)
            yy = _predict(p, xx, s) if x == "rank" else _predict(p, s, xx)
            ok = yy > 0
            ax.plot(xx[ok], yy[ok], "--", color=color, alpha=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    _log_ticks(ax.xaxis, [v for g in groups.values() for v in g])
    ax.set_xlabel("LoRA rank r" if x == "rank" else "value length ℓ (tokens)")
    ax.set_ylabel("ΔL = loss_init − loss_final")
    handles, _ = ax.get_legend_handles_labels()
    if p is not None:
        handles.append(Line2D([], [], ls="--", color="0.3", label="law fit"))
    ax.legend(handles=handles, fontsize="small")
    title = f"{name} (one line per {sym[series]}){_setting(fit)}"
    if p is not None:
        title += "\n" + _law_text(p)
    ax.set_title(title, fontsize="medium")
    notes = []
    if any(len(v) > 1 for g in groups.values() for v in g.values()):
        notes.append("points: mean over rows")
    if len(pos) < len(pts):
        notes.append(f"{len(pts) - len(pos)} rows with ΔL ≤ 0 not shown")
    if notes:
        ax.text(0.01, 0.01, "; ".join(notes), transform=ax.transAxes, fontsize="x-small", color="0.4")
    return fig


def delta_vs_rank(rows: Sequence[Row], fit: Fit | None = None) -> Figure:
    """ΔL vs rank on log–log axes, one series per length ℓ; dashed law curves when `fit` is given."""
    return _delta_vs(rows, fit, "rank")


def delta_vs_length(rows: Sequence[Row], fit: Fit | None = None) -> Figure:
    """ΔL vs length ℓ on log–log axes, one series per rank; dashed law curves when `fit` is given."""
    return _delta_vs(rows, fit, "length")


def log_plane(rows: Sequence[Row], fit: Fit | None = None) -> Figure:
    """3-D scatter of (log10 r, log10 ℓ, log10 ΔL) with the fitted law as a surface (scatter only without a fit)."""
    pts = [(rk, ln, d) for rk, ln, d in points(rows, "delta_loss") if d > 0]
    if not pts:
        return no_data("log plane", "needs rows with rank, length and delta_loss > 0")
    a = np.log10(np.array(pts, float))  # (N, 3)
    fig = figure(6.4, 5.6)
    ax = fig.add_subplot(projection="3d")
    ax.scatter(a[:, 0], a[:, 1], a[:, 2], color="C0", depthshade=False, label="runs")
    p = _params(fit)
    if p is not None:
        lr = np.linspace(a[:, 0].min(), a[:, 0].max(), 30)
        ll = np.linspace(a[:, 1].min(), a[:, 1].max(), 30)
        R, L = np.meshgrid(lr, ll)
        Z = _predict(p, 10 ** R, 10 ** L)
        with np.errstate(invalid="ignore", divide="ignore"):
            Z = np.where(Z > 0, np.log10(np.where(Z > 0, Z, 1.0)), np.nan)
        ax.plot_surface(R, L, Z, cmap="viridis", alpha=0.35, linewidth=0)
    ax.view_init(elev=20, azim=-135)  # looks along the ℓ-decline so the tilt of the plane is visible
    ax.set_xlabel("log10 r")
    ax.set_ylabel("log10 ℓ")
    ax.set_zlabel("log10 ΔL")
    ax.set_title(f"log ΔL over the (log r, log ℓ) plane{_setting(fit)}\n"
                 + (_law_text(p) if p is not None else "(no law fit)"), fontsize="medium")
    return fig


def predicted_vs_true(rows: Sequence[Row], fit: Fit | None = None) -> Figure:
    """Law prediction vs measured ΔL per row, with the y = x line; R² in the title (the fit's, and on these points).

    When the fit records its saturation margin `eps`, rows with ΔL ≥ (1 − eps)·loss_init (left out of the fit) are
    drawn hollow and left out of the R² computed here.
    """
    p = _params(fit)
    if p is None:
        return no_data("predicted vs true ΔL", "needs a law fit with C, alpha, beta, b")
    entry = _entry(fit)
    eps = entry.eps if entry else None
    pts, sat = [], []
    for r in rows:
        rk, ln, d = _num(r.get("rank")), _num(r.get("length")), value(r, "delta_loss")
        if rk is None or ln is None or d is None:
            continue
        li = _num(r.get("loss_init"))
        saturated = eps is not None and li is not None and law.saturated({"loss_init": li, "delta_loss": d}, eps)
        (sat if saturated else pts).append((rk, ln, d))
    if not pts and not sat:
        return no_data("predicted vs true ΔL", "needs rows with rank, length and delta_loss")
    fig = figure(5.2, 5.0)
    ax = fig.add_subplot()
    every = []
    for group, style in ((pts, {"color": "C0", "label": "runs"}),
                         (sat, {"facecolors": "none", "edgecolors": "C1", "label": "saturated (not fitted)"})):
        if group:
            true = np.array([d for _, _, d in group])
            pred = _predict(p, [rk for rk, _, _ in group], [ln for _, ln, _ in group])
            ax.scatter(true, pred, alpha=0.8, **style)
            every += [true, pred]
    lo, hi = float(min(a.min() for a in every)), float(max(a.max() for a in every))
    if lo > 0:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    ax.set_xlabel("measured ΔL")
    ax.set_ylabel("predicted ΔL")
    ax.legend(fontsize="small")
    r2_here = float("nan")
    if pts:
        true = np.array([d for _, _, d in pts])
        pred = _predict(p, [rk for rk, _, _ in pts], [ln for _, ln, _ in pts])
        r2_here = law.r_squared(true, pred)
    r2_fit = _num(entry.fit.r2) if entry and entry.fit else None
    r2 = (f"R² = {r2_fit:.3f} (fit), {r2_here:.3f} (these {len(pts)} points)" if r2_fit is not None
          else f"R² = {r2_here:.3f} (n = {len(pts)})")
    ax.set_title(f"predicted vs true ΔL{_setting(fit)}\n{r2}", fontsize="medium")
    return fig
