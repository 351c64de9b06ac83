"""Figures: each is a pure function of result rows (see `memft.research.rows.ResultRow`) and, for the law figures,
a law fit.

Every function returns a `matplotlib.figure.Figure` built without pyplot (Agg canvas), so nothing leaks between
calls and no display is needed; nothing here calls `show()`. A figure with no usable data comes back as a figure
that says "no data" and why, never as an exception, so a report builds on any store.

A law fit is a `memft.research.law.LawFitEntry` (or a mapping shaped like a law fit file's entry, read as one); its
prediction is ΔL = C·r^alpha·ℓ^(−beta) + b. Rows are result rows (memft.research.results.ResultRow) or mappings
shaped like them.
Where several rows share a grid point (seeds, ratios, benchmarks), the figure shows their mean; filter rows first
to compare one setting.

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.ticker
import mpl_toolkits.mplot3d  # noqa: F401  (registers the "3d" projection)
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from memft.research import law
from memft.research.law import LawFitEntry, as_entry
from memft.research.law import number as _num
from memft.research.rows import Row

Fit = LawFitEntry | Mapping[str, Any]  # an entry, or a mapping shaped like one (as_entry reads it)

# Metrics stored as fractions in [0, 1]; figures show them in percent.
FRACTIONS = frozenset({
    "exact_match", "token_accuracy", "token_accuracy_tf", "certified", "p_above_half",
    "heldout_exact_match", "heldout_token_accuracy",
})
LOW, HIGH = "#d62728", "#1f77b4"  # p ≤ 0.5 (a stubborn token) / p > 0.5


# ---------------------------------------------------------------- helpers

def _figure(w: float = 6.4, h: float = 4.8, **kw: Any) -> Figure:
    fig = Figure(figsize=(w, h), layout="constrained", **kw)
    FigureCanvasAgg(fig)  # Agg canvas: renders to files/bytes, needs no display
    return fig


def _no_data(name: str, why: str) -> Figure:
    """A small figure that says there was nothing to plot (and why) instead of raising."""
    fig = _figure(5.0, 2.2)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(name)
    ax.text(0.5, 0.5, f"no data\n{why}", ha="center", va="center", transform=ax.transAxes, color="0.4")
    return fig


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


def _value(row: Row, key: str) -> float | None:
    """row[key] as a finite float; ΔL falls back to loss_init − loss_final as in the law fit."""
    if key != "delta_loss":
        return _num(row.get(key))
    try:
        return _num(law.delta_loss(row))
    except TypeError:  # a non-numeric loss
        return None


def _points(rows: Sequence[Row], key: str) -> list[tuple[int, int, float]]:
    """(rank, length, value) for rows where all three are usable numbers."""
    out = []
    for r in rows:
        rk, ln, v = _num(r.get("rank")), _num(r.get("length")), _value(r, key)
        if rk is not None and ln is not None and v is not None:
            out.append((int(rk), int(ln), v))
    return out


def _log_ticks(axis: Any, values: Sequence[float]) -> None:
    axis.set_ticks(sorted(set(values)), [f"{v:g}" for v in sorted(set(values))])
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _pairs(rows: Sequence[Row]) -> list[tuple[int, int]]:
    """(earliest stubborn, first failure) per record where both are known."""
    out = []
    for r in rows:
        for s, f in zip(r.get("earliest_stubborn") or [], r.get("first_failure") or []):
            if s is not None and f is not None:
                out.append((int(s), int(f)))
    return out


# ---------------------------------------------------------------- law figures

def _delta_vs(rows: Sequence[Row], fit: Fit | None, x: str) -> Figure:
    series = "length" if x == "rank" else "rank"
    sym = {"rank": "r", "length": "ℓ"}
    name = f"ΔL vs {'rank' if x == 'rank' else 'length'}"
    pts = _points(rows, "delta_loss")
    pos = [(rk, ln, d) for rk, ln, d in pts if d > 0]
    if not pos:
        return _no_data(name, "needs rows with rank, length and delta_loss > 0")
    groups: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for rk, ln, d in pos:
        xv, sv = (rk, ln) if x == "rank" else (ln, rk)
        groups[sv][xv].append(d)
    p = _params(fit)
    fig = _figure()
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
    pts = [(rk, ln, d) for rk, ln, d in _points(rows, "delta_loss") if d > 0]
    if not pts:
        return _no_data("log plane", "needs rows with rank, length and delta_loss > 0")
    a = np.log10(np.array(pts, float))  # (N, 3)
    fig = _figure(6.4, 5.6)
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
        return _no_data("predicted vs true ΔL", "needs a law fit with C, alpha, beta, b")
    entry = _entry(fit)
    eps = entry.eps if entry else None
    pts, sat = [], []
    for r in rows:
        rk, ln, d = _num(r.get("rank")), _num(r.get("length")), _value(r, "delta_loss")
        if rk is None or ln is None or d is None:
            continue
        li = _num(r.get("loss_init"))
        saturated = eps is not None and li is not None and law.saturated({"loss_init": li, "delta_loss": d}, eps)
        (sat if saturated else pts).append((rk, ln, d))
    if not pts and not sat:
        return _no_data("predicted vs true ΔL", "needs rows with rank, length and delta_loss")
    fig = _figure(5.2, 5.0)
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


# ---------------------------------------------------------------- grids over (rank × ℓ)

def _grid(rows: Sequence[Row], metric: str) -> tuple[list[int], list[int], np.ndarray, int]:
    """(ranks, lengths, mean value [n_rank, n_len] with NaN where missing, most rows in one cell)."""
    cells: dict[tuple[int, int], list[float]] = defaultdict(list)
    for rk, ln, v in _points(rows, metric):
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
        return _no_data(label, f"needs rows with rank, length and {metric}")
    fig = _figure(1.6 + 1.1 * len(lengths), 1.4 + 0.7 * len(ranks))
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
        return _no_data("exact match landscape", "needs rows with method, rank, length and exact_match")
    n = len(grids)
    width = max(len(g[1]) for g in grids.values())
    fig = _figure(1.0 + n * (0.9 + 0.9 * width), 1.6 + 0.7 * max(len(g[0]) for g in grids.values()))
    axes = [fig.add_subplot(1, n, i + 1) for i in range(n)]
    im = None
    for ax, (m, (ranks, lengths, M, _)) in zip(axes, grids.items()):
        im = _draw_grid(ax, ranks, lengths, M, "RdYlGn", 0.0, 100.0, ".0f")
        ax.set_title(m, fontsize="medium")
    fig.colorbar(im, ax=axes, label="exact match (%)")
    fig.suptitle("free-run exact match (%) over rank × ℓ")
    return fig


# ---------------------------------------------------------------- per-position figures

def probability_grid(rows: Sequence[Row]) -> Figure:
    """Target-token probability by position for record 0 of each row with `probs`: one column per rank (one
    line of panels per (method, ℓ, ρ)); bars with p ≤ 0.5 in red, 0.5 dashed, the free-run first failure dotted."""
    use = [r for r in rows if r.get("probs") and r["probs"][0] and _num(r.get("rank")) is not None]
    if not use:
        return _no_data("target-token probability by position", "needs rows with `probs` (e.g. the stress test)")
    ranks = sorted({int(r["rank"]) for r in use})
    lines = sorted({(str(r.get("method")), r.get("length") or 0, r.get("ratio") or 0) for r in use})
    fig = _figure(0.6 + 4.2 * len(ranks), 0.8 + 2.6 * len(lines))
    cells: dict[tuple[int, int], Row] = {}
    for r in use:  # the last row for a (line, rank) wins; duplicates are seeds of the same point
        cells[lines.index((str(r.get("method")), r.get("length") or 0, r.get("ratio") or 0)), ranks.index(int(r["rank"]))] = r
    for (i, j), r in sorted(cells.items()):
        ax = fig.add_subplot(len(lines), len(ranks), i * len(ranks) + j + 1)
        p = np.asarray(r["probs"][0], float)
        ax.bar(np.arange(len(p)), p, width=1.0, color=[LOW if v <= 0.5 else HIGH for v in p], linewidth=0)
        ax.axhline(0.5, ls="--", color="0.3", lw=1)
        ff = (r.get("first_failure") or [None])[0]
        if ff is not None:
            ax.axvline(ff, ls=":", color="k", lw=1.5)
        ax.set_ylim(0, 1.02)
        ax.set_xlim(-0.5, len(p) - 0.5)
        bits = [f"r = {r['rank']}", str(r.get("method") or ""), f"ℓ = {r['length']}" if r.get("length") else "",
                f"ρ = {r['ratio']:g}" if _num(r.get("ratio")) is not None else ""]
        state = "no free-run failure" if ff is None else f"first failure @ {ff}"
        ax.set_title(", ".join(b for b in bits if b) + f"\n{int((p <= 0.5).sum())} tokens p ≤ 0.5; {state}",
                     fontsize="small")
        ax.set_xlabel("position")
        ax.set_ylabel("p(target)")
    fig.legend(handles=[Patch(color=HIGH, label="p > 0.5"), Patch(color=LOW, label="p ≤ 0.5"),
                        Line2D([], [], ls="--", color="0.3", label="0.5"),
                        Line2D([], [], ls=":", color="k", label="free-run first failure")],
               loc="outside lower center", ncols=4, fontsize="small")
    fig.suptitle("target-token probability by position (record 0)")
    return fig


def failure_histogram(rows: Sequence[Row]) -> Figure:
    """Histogram of free-run first failure positions over all records of all rows (records without one skipped)."""
    known = [f for r in rows for f in (r.get("first_failure") or [])]
    vals = [int(f) for f in known if f is not None]
    if not vals:
        why = f"none of {len(known)} records failed in free run" if known else "needs rows with first_failure"
        return _no_data("first failure positions", why)
    lo, hi = min(vals), max(vals)
    bins = np.arange(lo, hi + 2) - 0.5 if hi - lo <= 60 else 50
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    ax.hist(vals, bins=bins, color="C3", edgecolor="white")
    ax.set_xlabel("first free-run failure position")
    ax.set_ylabel("records")
    ax.set_title(f"first failure positions ({len(vals)} failing of {len(known)} records)", fontsize="medium")
    return fig


def stubborn_failure_spearman(rows: Sequence[Row]) -> tuple[float, int]:
    """Spearman ρ between each record's earliest stubborn position and its free-run first failure, and the number
    of records where both exist. ρ is NaN when it is undefined (n < 2 or a constant side).

    >>> stubborn_failure_spearman([{"earliest_stubborn": [1, 2, None, 5], "first_failure": [3, 4, 1, 9]}])
    (1.0, 3)
    """
    from scipy.stats import spearmanr

    pairs = _pairs(rows)
    if len(pairs) < 2 or len({s for s, _ in pairs}) < 2 or len({f for _, f in pairs}) < 2:
        return float("nan"), len(pairs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = spearmanr([s for s, _ in pairs], [f for _, f in pairs]).statistic
    return float(rho), len(pairs)


def stubborn_vs_failure(rows: Sequence[Row]) -> Figure:
    """Earliest stubborn (teacher-forced p ≤ 0.5) position vs free-run first failure, per record; Spearman ρ and n
    in the title, y = x dashed (greedy decoding cannot fail before the first stubborn token, so points lie on or above)."""
    pairs = _pairs(rows)
    if not pairs:
        return _no_data("earliest stubborn vs first failure", "needs records with both earliest_stubborn and first_failure")
    rho, n = stubborn_failure_spearman(rows)
    a = np.array(pairs, float)
    fig = _figure(5.2, 5.0)
    ax = fig.add_subplot()
    ax.scatter(a[:, 0], a[:, 1], color="C0", alpha=0.5, label="records")
    top = float(a.max()) + 1
    ax.plot([0, top], [0, top], "k--", lw=1, label="y = x")
    ax.set_xlabel("earliest stubborn position (p ≤ 0.5)")
    ax.set_ylabel("free-run first failure position")
    ax.legend(fontsize="small")
    ax.set_title(f"earliest stubborn vs first failure\nSpearman ρ = {'n/a' if math.isnan(rho) else f'{rho:.3f}'}, n = {n}",
                 fontsize="medium")
    return fig


def training_curves(rows: Sequence[Row]) -> Figure:
    """ΔL so far (L_init − the step's loss) against the step, for the fixed-budget runs that kept a curve (first seed
    of each benchmark/ℓ/ρ/rank/method, up to 12 lines): whether ΔL had reached a plateau when the budget ended."""
    seen: dict[str, Row] = {}
    for r in sorted(rows, key=lambda r: (str(r.get("seed")))):
        if r.get("curve") and r.get("stop_when_certified") is False and r.get("loss_init") is not None:
            rho = f" ρ={r['ratio']:g}" if _value(r, "ratio") is not None else ""
            seen.setdefault(f"{r.get('benchmark')} ℓ={r.get('length')}{rho} r={r.get('rank')} {r.get('method')}", r)
    if not seen:
        return _no_data("ΔL during training", "needs fixed-budget runs with a stored training curve")
    fig = _figure(7.0, 4.6)
    ax = fig.add_subplot()
    for label, r in sorted(seen.items())[:12]:
        pts = [(c["step"], r["loss_init"] - c["loss"]) for c in r["curve"] if c.get("loss") is not None]
        ax.plot([s for s, _ in pts], [d for _, d in pts], lw=1.2, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("ΔL = L_init − L(step)")
    ax.set_title("ΔL during training (fixed budgets)")
    ax.legend(fontsize=7)
    return fig


# ---------------------------------------------------------------- registry and saving

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
