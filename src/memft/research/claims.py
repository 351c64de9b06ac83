"""The paper's claims, each set against what result rows measured on this model, with a verdict from one rule.

`paper_claims(rows)` -> [Claim]: one per claim of "How LoRA Remembers?" (the law's form, the two identities of the
phase transition, Spearman of earliest stubborn vs first failure, MemFT-OT and MemFT-SW vs SFT on stress and
PhoneBook, the linear rule). Each has the paper's number, memft's, an effect size with its interval, the seeds and
budget it rests on, a power line, and a verdict by the rule of `memft.research.verdict` (identity / reproduced /
refuted / inconclusive / untested). Pure functions of rows; no model, no torch.

Rows are the runs of `memft sweep` stores (memft.research.rows.ResultRow, read with `read_rows(full=True)`, or
mappings shaped like them). Comparisons read `memft.research.cells` (the cells, their metrics side by side, where
capacity binds, the budget check); the phase-transition claims `memft.research.transitions`.

The law (`law_claims`): per fixed-budget SFT stress grid (ℓ spanning ≥ 10x, ≥ 2 ranks), the power law
ΔL = C·r^α·ℓ^(−β) + b beside the saturating alternative ΔL = L_init·(1 − exp(−k·r^a·ℓ^(−g))), both on every point
(AIC, BIC, leave-one-length-out error), and the power law again without the saturated points, the selection the
paper's fits make. Reproduced: the power law reaches R² > 0.98 on every point and the saturating form is not better
by AIC (ΔAIC < 2); refuted: it does not, the saturating form is better by ΔAIC ≥ 10 (Burnham and Anderson's
"essentially no support") and predicts held-out lengths better; inconclusive otherwise.

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from memft.research.cells import (
    BINDING, CELL_KEYS, FLOOR, METRIC, METRICS, PLATEAU_GAIN, MethodCell, bind_name, budget_controls, budget_rows,
    budget_status, cell_label, method_cells, placement, point, score_name,
)
from memft.research.law import fit_rows, number, saturated
from memft.research.law.select import SATURATION_EPS
from memft.research.law.saturating import compare_forms
from memft.research.rows import Row
from memft.research.transitions import (
    MIN_PAIRS, SPEARMAN_PAPER, record_pairs, spearman_claim, step_pairs, transition_claims, transition_pairs,
)
from memft.research.verdict import EFFECT, RULE, VERDICTS, Claim, combine, interval_text, judge, level_for, power_text
from memft.research.stats import paired_interval

__all__ = [
    "BINDING", "CELL_HEAD", "CELL_KEYS", "FLOOR", "LAW_R2", "METRICS", "MIN_PAIRS", "PLATEAU_GAIN", "SPEARMAN_PAPER", "VERDICTS",
    "RULE", "Claim", "MethodCell", "bind_name", "claims_document", "budget_controls", "budget_status", "cell_columns", "cell_label", "claims_markdown",
    "compare_claim", "late_gain", "law_claims", "mean_sd", "method_cells", "paper_claims", "placement", "pm", "point",
    "record_pairs", "score_name", "spearman_claim", "step_pairs", "transition_claims", "transition_pairs",
]

MIN_LAW_SPAN = 10.0  # a law fit needs ℓ spanning at least 10x within its setting
LAW_R2 = 0.98
AIC_TIE, AIC_DECISIVE = 2.0, 10.0
SIDE = ("exact_match", "token_accuracy", "token_accuracy_tf", "delta_loss")  # the metrics every comparison shows


def mean_sd(xs: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation; 0 for one value).

    >>> mean_sd([0.5, 0.7, 0.9])
    (0.7, 0.2)
    """
    m = statistics.fmean(xs)
    return round(m, 12), round(statistics.stdev(xs), 12) if len(xs) > 1 else 0.0


def pm(xs: Sequence[float], scale: float = 100.0, digits: int = 1) -> str:
    """'mean ± sd' in percent (or another scale), one decimal.

    >>> pm([0.5, 0.7, 0.9])
    '70.0 ± 20.0'
    """
    if not xs:
        return "—"
    m, s = mean_sd(xs)
    return f"{scale * m:.{digits}f} ± {scale * s:.{digits}f}"


def _metric_line(c: MethodCell, level: float) -> str:
    """Every side metric of a cell: the method's mean, SFT's, and the paired difference with its interval."""
    parts = []
    for m in SIDE + (("heldout_token_accuracy", "heldout_exact_match") if c.benchmark == "rule" else ()):
        d = c.diffs(m)
        if not d:
            continue
        _, label, scale, unit = METRIC[m]
        u = " %" if unit == "points" else " nats"
        parts.append(f"{label} {pm(c.values[m], scale, 2 if unit == 'nats' else 1)} vs {pm(c.sft_values[m], scale, 2 if unit == 'nats' else 1)}{u}, "
                     f"Δ {interval_text(paired_interval(d, level), scale, unit, 2 if unit == 'nats' else 1)}")
    return "; ".join(parts)


def _against(c: MethodCell, level: float) -> list[str]:
    """The side metrics whose interval lies wholly on the other side of 0 from the verdict score's mean difference."""
    sign = statistics.fmean(c.diff) if c.diff else 0.0
    out = []
    for m in SIDE:
        d = c.diffs(m)
        if m == c.score_name or len(d) < 2 or sign == 0:
            continue
        iv = paired_interval(d, level)
        if iv.lo is not None and iv.hi is not None and ((sign > 0 and iv.hi < 0) or (sign < 0 and iv.lo > 0)):
            out.append(f"{METRIC[m][1]} {interval_text(iv, METRIC[m][2], METRIC[m][3], 2 if METRIC[m][3] == 'nats' else 1)}")
    return out


def compare_claim(cells: Sequence[MethodCell], claim: str, paper: str, benchmark: str, methods: Sequence[str],
                  size: float | None = None, min_rank: int = 1, scope: str = "") -> Claim:
    """The rule on "`methods` beat SFT (by `size`, when the paper gives one) where capacity binds" for one benchmark.

    Counts the cells at rank ≥ min_rank where capacity binds and the verdict score is off its floor; each is judged
    on its paired differences at the Bonferroni level for their number (`memft.research.verdict.judge`) and the claim
    takes `combine` of them. A cell that wins on the verdict score but whose interval on another metric lies wholly
    on the other side says so ("mixed"). `scope`: why cells below min_rank are left out.
    """
    mine = [c for c in cells if c.benchmark == benchmark and c.method in methods and c.sft_score]
    if not mine:
        return Claim(claim, paper, "—", "no runs", "untested", f"no fixed-budget {benchmark} runs of {' / '.join(methods)} with SFT on the same seeds")
    outside = [c for c in mine if c.rank < min_rank]
    inside = [c for c in mine if c.rank >= min_rank]
    note = ""
    if outside:
        note = "; outside the claim (" + scope + "): " + "; ".join(
            f"{c.cell}: {c.method} Δ {METRIC[c.score_name][1]} {interval_text(paired_interval(c.diff))}" for c in outside)
    if not inside:
        return Claim(claim, paper, "—" + note, f"{len(outside)} cells below rank {min_rank}", "untested",
                     f"no {benchmark} comparison at rank ≥ {min_rank} ({scope})")
    binding = [c for c in inside if c.binding]
    if not binding:
        sft = "; ".join(f"{c.cell}: SFT {METRIC[c.bind_name][1]} {pm(c.sft_bind)} %" for c in inside)
        return Claim(claim, paper, sft + note, f"{len(inside)} cells", "untested",
                     f"capacity does not bind in any cell (SFT's mean held share outside {BINDING[0]:.0%}–{BINDING[1]:.0%})")
    usable = [c for c in binding if not c.floor]
    if not usable:
        lines = "; ".join(f"{c.cell}: {c.method} {_metric_line(c, 0.95)}" for c in binding)
        return Claim(claim, paper, lines + note, f"{len(binding)} binding cells", "untested",
                     f"{METRIC[binding[0].score_name][1]} is below {100 * FLOOR:.0f} % for SFT and MemFT alike: the benchmark "
                     f"sits on its floor and cannot show {'the paper’s gain' if size is None else f'+{100 * size:.0f} points'}",
                     seeds="; ".join(f"{c.cell}: {len(c.seeds)}" for c in binding),
                     budget="; ".join(dict.fromkeys(c.budget for c in binding)))
    level = level_for(len(usable))
    verdicts, effects, whys, powers, measured = [], [], [], [], []
    for c in usable:
        j = judge(c.diff, size, level, METRIC[c.score_name][2], METRIC[c.score_name][3])
        against = _against(c, level)
        verdicts.append(j.verdict)
        head = f"{c.cell} {c.method}"
        effects.append(f"{head}: {METRIC[c.score_name][1]} {interval_text(j.interval)}")
        whys.append(f"{head}: {j.verdict}, {j.why}" + (f"; mixed: lower on {', '.join(against)}" if against and j.interval.mean > 0
                                                       else f"; mixed: higher on {', '.join(against)}" if against else ""))
        powers.append(f"{head}: {power_text(j)}")
        measured.append(f"{head}: {_metric_line(c, level)}")
    verdict = combine(verdicts)
    seeds = "; ".join(f"{c.cell} {c.method}: seeds {', '.join(map(str, c.seeds))} (paired)" for c in usable)
    budget = "; ".join(dict.fromkeys(f"{c.cell}: {c.budget}" for c in usable))
    if verdict == "reproduced" and any(c.budget.startswith("budget-bound") for c in usable):
        whys.append("at a budget not shown converged (budget-bound)")
    fam = f"{100 * level:.4g} % intervals (Bonferroni over {len(usable)} cells)" if len(usable) > 1 else "95 % intervals"
    return Claim(claim, paper, "; ".join(measured) + note, f"{len(usable)} binding cell{'s' * (len(usable) > 1)}, {fam}", verdict,
                 "; ".join(whys), effect="; ".join(effects), seeds=seeds, budget=budget, power="; ".join(powers))


def late_gain(curve: Sequence[dict[str, Any]], loss_init: float, share: float = 0.2) -> float | None:
    """The part of a run's ΔL gained in the last `share` of its steps, (L(t0) − L(T)) / (L_init − L(T)) with
    t0 = the last step at or before (1 − share)·T: near 0 when ΔL had reached its plateau. None without a curve or gain.

    >>> late_gain([{"step": 0, "loss": 10.0}, {"step": 8, "loss": 3.0}, {"step": 10, "loss": 2.0}], 10.0)
    0.125
    """
    pts = [(int(c["step"]), float(c["loss"])) for c in curve if c.get("loss") is not None]
    if len(pts) < 2:
        return None
    end_step, end = pts[-1]
    t0 = max(s for s, _ in pts if s <= (1 - share) * end_step)
    at = next(x for s, x in pts if s == t0)
    gained = loss_init - end
    return (at - end) / gained if gained > 0 else None


def law_claims(rows: Sequence[Row], n_boot: int = 0) -> list[Claim]:
    """The law's form per fixed-budget SFT stress grid (see the module docstring for the rule)."""
    paper = f"ΔL = C·r^α·ℓ^(−β) + b, R² > {LAW_R2}"
    groups: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    budgeted = budget_rows(rows)
    for r in budgeted:
        if r.get("method") == "sft" and r.get("benchmark") == "stress":
            groups[(r.get("model"), r.get("ratio"), r.get("max_steps"), r.get("batch_size"), r.get("lr_schedule"), placement(r))].append(r)
    out = []
    for (model, ratio, steps, batch, schedule, where), g in sorted(groups.items(), key=lambda kv: str(kv[0])):
        lengths = sorted({float(r["length"]) for r in g})
        ranks = sorted({int(r["rank"]) for r in g})
        if len(ranks) < 2 or lengths[-1] < MIN_LAW_SPAN * lengths[0] or len(g) < 5:
            continue
        name = f"law, stress ρ={ratio:g}, {steps} steps ({schedule or 'constant'} lr, batch {batch}{', ' + where if where else ''})"
        span = f"ranks {', '.join(map(str, ranks))}; ℓ {lengths[0]:g}–{lengths[-1]:g}"
        power, sat = compare_forms([r["rank"] for r in g], [r["length"] for r in g], [r["loss_init"] for r in g], [r["delta_loss"] for r in g])
        p = power.params
        measured = (f"on all {power.n} points — power law: R² {power.r2:.3f}, α {p['alpha']:.2f}, β {p['beta']:.2f}, "
                    f"AIC {power.aic:.1f}, BIC {power.bic:.1f}, held-out length MAPE {_pct(power.heldout_mape)}; "
                    f"saturating L_init·(1 − exp(−k·r^a·ℓ^(−g))): R² {sat.r2:.3f}, a {sat.params['a']:.2f}, g {sat.params['g']:.2f}, "
                    f"AIC {sat.aic:.1f}, BIC {sat.bic:.1f}, held-out length MAPE {_pct(sat.heldout_mape)}")
        n_sat = sum(saturated(r) for r in g)
        if n_sat:
            try:
                excl = fit_rows(g, f"r{ratio}", eps=SATURATION_EPS, n_boot=n_boot)
                assert excl.fit is not None
                measured += (f"; the power law without the {n_sat} saturated points (selected on the outcome): R² {excl.fit.r2:.3f}, "
                             f"held-out length MAPE {_pct(excl.heldout_mape)} ({excl.n} points)")
            except ValueError as e:
                measured += f"; without the {n_sat} saturated: no fit ({' '.join(str(e).split())[:120]})"
        late = [x for r in g if (x := late_gain(r.get("curve") or [], float(r["loss_init"]))) is not None]
        if late:
            measured += (f"; share of ΔL gained in the last 20 % of the budget: median {100 * statistics.median(late):.1f} %, "
                         f"max {100 * max(late):.1f} % ({len(late)} curves; the learning rate decays to 0 there)")
        budget = budget_status(g, budgeted)
        d_aic = power.aic - sat.aic
        held_better = sat.heldout_mape is not None and (power.heldout_mape is None or sat.heldout_mape < power.heldout_mape)
        effect = f"ΔAIC (power − saturating) {d_aic:+.1f}, ΔBIC {power.bic - sat.bic:+.1f}; R² {power.r2:.3f} vs {sat.r2:.3f}"
        if power.r2 > LAW_R2 and d_aic < AIC_TIE:
            verdict, why = "reproduced", f"R² above {LAW_R2} on every point and the saturating form is not better by AIC"
        elif power.r2 <= LAW_R2 and d_aic >= AIC_DECISIVE and held_better:
            verdict = "refuted"
            why = (f"as a law of every point: R² {power.r2:.3f} ≤ {LAW_R2}, and the 3-parameter saturating form is better by "
                   f"ΔAIC {d_aic:.1f} and on held-out lengths; the power law fits only the unsaturated points, which selects on the outcome")
        else:
            verdict, why = "inconclusive", f"R² {power.r2:.3f}, ΔAIC {d_aic:+.1f}: neither form is decisively better"
        if verdict != "inconclusive" and budget.startswith("budget-bound"):
            why += "; a law of this budget (budget-bound)"
        seeds = sorted({r.get("seed") for r in g})
        out.append(Claim(name, paper, measured, f"{len(g)} runs ({span})", verdict, why, effect=effect,
                         seeds=f"{len(g)} points, seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))} (one run per cell)"
                         if len(seeds) == 1 else f"{len(g)} points, seeds {', '.join(map(str, seeds))}",
                         budget=budget, power="no seeds repeat a cell: no interval on ΔL per cell"))
    if not out:
        out.append(Claim("law at convergence", paper, "—", "no runs", "untested", "no fixed-budget SFT stress grid with 2+ ranks and ℓ spanning 10x"))
    return out


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f} %"


OT_SCOPE = "the paper reports OT ≈ SFT at rank 1 and claims its gains at higher ranks"


def paper_claims(rows: Sequence[Row], n_boot: int = 0) -> list[Claim]:
    """Every claim of the paper, in the paper's order, with memft's measurement and verdict (see module docstring)."""
    cells = method_cells(rows)
    beats = f"beats SFT where capacity binds (tested: +{100 * EFFECT:.0f} points)"
    ot = f"{beats}; OT's fallback in these runs: skip (the paper's formula), the reference code's sft not run"
    return [
        *law_claims(rows, n_boot),
        *transition_claims(rows),
        spearman_claim(rows),
        compare_claim(cells, "MemFT-OT vs SFT, stress (random tokens)", ot, "stress", ["memft-ot"], min_rank=2, scope=OT_SCOPE),
        compare_claim(cells, "MemFT-SW vs SFT, stress (random tokens)", beats, "stress", ["memft-sw", "memft-sw-curriculum"]),
        compare_claim(cells, "MemFT-OT vs SFT, PhoneBook", ot, "phonebook", ["memft-ot"], min_rank=2, scope=OT_SCOPE),
        compare_claim(cells, "MemFT-SW vs SFT, PhoneBook (curriculum x OT)", beats, "phonebook", ["memft-sw-phonebook"]),
        compare_claim(cells, "MemFT vs SFT, linear rule: held-out generalisation", "+7 to +15 points of held-out exact match",
                      "rule", ["memft-ot", "memft-sw"], size=0.07),
    ]


CELL_HEAD = ("cell", "method", "seeds", "exact %", "free-run prefix acc. %", "teacher-forced token acc. %", "ΔL (nats)",
             "verdict score", "Δ verdict score vs SFT, 95 % paired t (points)", "binds", "budget")


def cell_columns(c: MethodCell) -> list[str]:
    """One comparison cell as the text of CELL_HEAD's columns (the report escapes them, claims_markdown does not)."""
    def col(m: str) -> str:
        return pm(c.values[m], METRIC[m][2], 2 if m == "delta_loss" else 1) if m in c.values else "—"

    delta = interval_text(paired_interval(c.diff)) if c.diff and c.method != "sft" else "—"
    return [c.cell, c.method, ", ".join(map(str, c.seeds)), col("exact_match"), col("token_accuracy"), col("token_accuracy_tf"),
            col("delta_loss"), METRIC[c.score_name][1], delta, "yes" if c.binding else "no", c.budget]


CLAIM_HEAD = ("claim", "paper", "memft (this model)", "n", "effect [interval]", "seeds", "budget", "power", "verdict", "why")


def claim_columns(c: Claim) -> list[str]:
    return [c.claim, c.paper, c.measured, c.n, c.effect, c.seeds, c.budget, c.power, c.label, c.why]


def claims_document(stores: Sequence[str], claims: Sequence[Claim], cells: Sequence[MethodCell]) -> dict[str, Any]:
    """What `memft report` writes to claims.json: the stores, the rule, every claim and every comparison cell."""
    return {"stores": list(stores), "rule": RULE, "claims": [c.to_json() for c in claims], "cells": [c.to_json() for c in cells]}


def claims_markdown(claims: Sequence[Claim], cells: Sequence[MethodCell] = (), rule: bool = False) -> str:
    """The claims (and comparison cells) as Markdown tables, for a README or an issue note.

    >>> print(claims_markdown([Claim("c", "p", "m | x", "n", "reproduced", "w")]))
    | claim | paper | memft (this model) | n | effect [interval] | seeds | budget | power | verdict | why |
    |---|---|---|---|---|---|---|---|---|---|
    | c | p | m \\| x | n | — | — | — | — | **reproduced** | w |
    <BLANKLINE>
    """
    def esc(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    out = (RULE + "\n\n") if rule else ""
    out += "| " + " | ".join(CLAIM_HEAD) + " |\n|" + "---|" * len(CLAIM_HEAD) + "\n"
    for c in claims:
        cols = [esc(x) for x in claim_columns(c)]
        cols[8] = f"**{cols[8]}**"
        out += "| " + " | ".join(cols) + " |\n"
    if cells:
        out += "\n| " + " | ".join(CELL_HEAD) + " |\n|---|---|---|---:|---:|---:|---:|---|---:|---|---|\n"
        out += "".join("| " + " | ".join(map(esc, cell_columns(c))) + " |\n" for c in cells)
    return out
