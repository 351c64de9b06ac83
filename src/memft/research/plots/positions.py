"""Per-position and per-step figures: the probability grid, first failures, stubborn positions against failures
(with their Spearman ρ), training curves.

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from memft.research.law import number as _num
from memft.research.plots.common import HIGH, LOW, figure, no_data, value
from memft.research.rows import Row


def _pairs(rows: Sequence[Row]) -> list[tuple[int, int]]:
    """(earliest stubborn, first failure) per record where both are known (memft.research.transitions.record_pairs)."""
    from memft.research.transitions import record_pairs

    return record_pairs(rows)


def probability_grid(rows: Sequence[Row]) -> Figure:
    """Target-token probability by position for record 0 of each row with `probs`: one column per rank (one
    line of panels per (method, ℓ, ρ)); bars with p ≤ 0.5 in red, 0.5 dashed, the free-run first failure dotted."""
    use = [r for r in rows if r.get("probs") and r["probs"][0] and _num(r.get("rank")) is not None]
    if not use:
        return no_data("target-token probability by position", "needs rows with `probs` (e.g. the stress test)")
    ranks = sorted({int(r["rank"]) for r in use})
    lines = sorted({(str(r.get("method")), r.get("length") or 0, r.get("ratio") or 0) for r in use})
    fig = figure(0.6 + 4.2 * len(ranks), 0.8 + 2.6 * len(lines))
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
        return no_data("first failure positions", why)
    lo, hi = min(vals), max(vals)
    bins = np.arange(lo, hi + 2) - 0.5 if hi - lo <= 60 else 50
    fig = figure(6.4, 4.0)
    ax = fig.add_subplot()
    ax.hist(vals, bins=bins, color="C3", edgecolor="white")
    ax.set_xlabel("first free-run failure position")
    ax.set_ylabel("records")
    ax.set_title(f"first failure positions ({len(vals)} failing of {len(known)} records)", fontsize="medium")
    return fig


def stubborn_failure_spearman(rows: Sequence[Row]) -> tuple[float, int]:
    """Spearman ρ between each record's earliest stubborn position and its free-run first failure, and the number
    of records where both exist (the paper's definition: one pair per uncertified record of the final adapter;
    memft.research.stats.spearman, the page's one implementation). ρ is NaN when it is undefined (n < 2 or a constant side).

    >>> stubborn_failure_spearman([{"earliest_stubborn": [1, 2, None, 5], "first_failure": [3, 4, 1, 9]}])
    (1.0, 3)
    """
    from memft.research.transitions import rho_of

    s = rho_of(_pairs(rows))
    return s.rho, s.n


def stubborn_vs_failure(rows: Sequence[Row]) -> Figure:
    """Earliest stubborn (teacher-forced p ≤ 0.5) position vs free-run first failure, per record; Spearman ρ and n
    in the title, y = x dashed (greedy decoding cannot fail before the first stubborn token, so points lie on or above)."""
    pairs = _pairs(rows)
    if not pairs:
        return no_data("earliest stubborn vs first failure", "needs records with both earliest_stubborn and first_failure")
    rho, n = stubborn_failure_spearman(rows)
    a = np.array(pairs, float)
    fig = figure(5.2, 5.0)
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
            rho = f" ρ={r['ratio']:g}" if value(r, "ratio") is not None else ""
            seen.setdefault(f"{r.get('benchmark')} ℓ={r.get('length')}{rho} r={r.get('rank')} {r.get('method')}", r)
    if not seen:
        return no_data("ΔL during training", "needs fixed-budget runs with a stored training curve")
    fig = figure(7.0, 4.6)
    ax = fig.add_subplot()
    for label, r in sorted(seen.items())[:12]:
        pts = [(c["step"], r["loss_init"] - c["loss"]) for c in r["curve"] if c.get("loss") is not None]
        ax.plot([s for s, _ in pts], [d for _, d in pts], lw=1.2, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("ΔL = L_init − L(step)")
    ax.set_title("ΔL during training (fixed budgets)")
    ax.legend(fontsize=7)
    return fig
