"""The paper's claims, each set against what result rows measured on this model, with a verdict.

`paper_claims(rows)` -> [Claim]: one per claim of "How LoRA Remembers?" (law form and R², the p = 0.5 line, the
argmax equivalence, Spearman of earliest stubborn vs first failure, MemFT-OT and MemFT-SW vs SFT on stress and
PhoneBook, the linear rule). Each has the paper's number, memft's number with n and seeds, and a verdict:
"reproduced", "not reproduced", "not testable here" (the rows exist but cannot test it, e.g. capacity does not
bind) or "not measured" (no rows for it). Pure functions of rows; no model, no torch.

Rows are the runs of `memft sweep` stores (memft.research.rows.ResultRow: the row's fields plus the point's config keys,
e.g. lr_schedule, as memft.research.results.read_rows gives them; or mappings shaped like them),
optionally with `correct` (per record, per position: target == argmax, teacher-forced, final parameters) and
`curve` (the training curve; one-record steps carry first_error and earliest_stubborn).

Where capacity binds: a method comparison cell counts only when SFT's mean end-of-budget capacity score lies in
BINDING = [0.2, 0.95] (`bind_name`: exact match of the trained records, or for one stress record the share of its
tokens that are the argmax); the comparison itself reads what a user gets back (`score_name`: exact match, free-run
token accuracy of the one stress record, held-out token accuracy for the rule);
elsewhere every method reaches (or misses) the target together and the comparison says nothing about capacity.
MemFT "beats" SFT in a cell when its score is higher on every seed (the seeds pair data and initial adapter).

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from memft.certify.metrics import STUBBORN_P, first_false
from memft.research.law import fit_rows, number, saturated
from memft.research.rows import Row

VERDICTS = ("reproduced", "not reproduced", "not testable here", "not measured")
BINDING = (0.2, 0.95)
# A cell: rows that differ only in method and seed (same data size, rank, budget and training setup).
# Read with `point`, so that ℓ is the requested one (a PhoneBook or rule point gets a few more or fewer value tokens by seed).
CELL_KEYS = ("model", "benchmark", "length", "ratio", "rank", "max_steps", "batch_size", "lr", "lr_schedule", "max_grad_norm", "preset", "layers", "target_modules")
MIN_LAW_SPAN = 10.0  # a law fit needs ℓ spanning at least 10x within its setting
SPEARMAN_PAPER = 0.908
SPEARMAN_BAR = 0.8  # reproduced: rho >= this with at least MIN_PAIRS pairs
MIN_PAIRS = 100
LAW_R2 = 0.98


@dataclass(frozen=True)
class Claim:
    """One claim of the paper and what memft measured."""

    claim: str
    paper: str
    measured: str
    n: str  # what the measurement rests on: points, pairs, seeds
    verdict: str  # one of VERDICTS
    why: str

    def __post_init__(self) -> None:
        assert self.verdict in VERDICTS, self.verdict

    def to_json(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class MethodCell:
    """One method in one comparison cell, over seeds: end-of-budget scores and the paired difference to SFT."""

    cell: str  # e.g. "stress ℓ=256 ρ=1 r=1, 150 steps"
    benchmark: str
    method: str
    seeds: tuple[int, ...]
    exact: tuple[float, ...]  # per seed, in seed order
    token_accuracy: tuple[float, ...]  # free-run
    token_accuracy_tf: tuple[float, ...]  # teacher-forced (target = argmax)
    heldout_exact: tuple[float, ...]  # rule only (else empty)
    score_name: str  # the score the verdict reads (score_name)
    score: tuple[float, ...]
    sft_score: tuple[float, ...]  # SFT's score on the same seeds (empty when SFT did not run them)
    bind_name: str = "exact_match"  # the score that says whether capacity binds (bind_name)
    sft_bind: tuple[float, ...] = ()  # SFT's value of it on the same seeds

    @property
    def diff(self) -> tuple[float, ...]:
        return tuple(a - b for a, b in zip(self.score, self.sft_score))

    @property
    def binding(self) -> bool:
        """SFT's mean capacity score is inside BINDING: capacity binds in this cell."""
        return bool(self.sft_bind) and BINDING[0] <= statistics.fmean(self.sft_bind) <= BINDING[1]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "diff": list(self.diff), "binding": self.binding}


def mean_sd(xs: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation; 0 for one value).

    >>> mean_sd([0.5, 0.7, 0.9])
    (0.7, 0.2)
    """
    m = statistics.fmean(xs)
    return round(m, 12), round(statistics.stdev(xs), 12) if len(xs) > 1 else 0.0


def pm(xs: Sequence[float], scale: float = 100.0) -> str:
    """'mean ± sd' in percent (or another scale), one decimal.

    >>> pm([0.5, 0.7, 0.9])
    '70.0 ± 20.0'
    """
    if not xs:
        return "—"
    m, s = mean_sd(xs)
    return f"{scale * m:.1f} ± {scale * s:.1f}"


def score_name(benchmark: str, records: int | None) -> str:
    """The end-of-budget score a comparison is judged on, what a user gets back: exact match for record sets, free-run
    token accuracy for a single stress record (its exact match is all or nothing), held-out token accuracy for the
    rule (generalisation; held-out exact match is near 0 for every method here)."""
    if benchmark == "rule":
        return "heldout_token_accuracy"
    return "token_accuracy" if (records or 0) <= 1 else "exact_match"


def bind_name(benchmark: str, records: int | None) -> str:
    """The score that says whether capacity binds (SFT's mean in BINDING): for a single stress record the
    teacher-forced token accuracy, the share of its tokens the adapter holds (its free-run accuracy collapses to the
    first error's position: SFT at ℓ = 256, rank 1 held 23-32 % of the tokens with a free-run accuracy of 0); exact
    match of the trained records otherwise (for the rule: memory, not generalisation)."""
    return "token_accuracy_tf" if benchmark != "rule" and (records or 0) <= 1 else "exact_match"


def point(row: Row, key: str) -> Any:
    """A key of the run's requested point (row["point"], the sweep config) when the row has one, else of the row:
    a row's `length` is the value tokens it got (PhoneBook and the rule vary by seed), the point's what was asked."""
    p = row.get("point")
    return p[key] if isinstance(p, dict) and key in p else row.get(key)


def placement(row: Row) -> str:
    """Where a run's adapter sat when its sweep named layers or modules, e.g. "down_proj@28"; "" for the preset's own.

    >>> placement({"preset": "probe", "point": {"layers": [28], "target_modules": ["down_proj"]}}), placement({"preset": "probe"})
    ('down_proj@28', '')
    >>> placement({"preset": "top", "point": {"layers": [26, 27]}})
    'top@26,27'
    """
    layers, modules = point(row, "layers"), point(row, "target_modules")
    if not layers and not modules:
        return ""
    what = "+".join(modules) if modules else str(row.get("preset"))
    return f"{what}@{','.join(map(str, layers))}" if layers else what


def cell_label(row: Row) -> str:
    """e.g. "stress ℓ=256 ρ=1 r=1, 150 steps", "phonebook ℓ=300 r=4, 120 steps" or "rule 50 pairs r=1, 150 steps".

    >>> cell_label({"benchmark": "rule", "records": 50, "length": 198, "rank": 1, "max_steps": 150, "point": {"length": 50}})
    'rule 50 pairs r=1, 150 steps'
    """
    rho = f" ρ={row['ratio']:g}" if number(row.get("ratio")) is not None else ""
    size = f"{point(row, 'length')} pairs" if row.get("benchmark") == "rule" else f"ℓ={point(row, 'length')}"
    where = f" {placement(row)}" if placement(row) else ""
    return f"{row.get('benchmark')} {size}{rho} r={row.get('rank')}{where}, {row.get('max_steps')} steps"


def _budget_rows(rows: Sequence[Row]) -> list[Row]:
    """Fixed-budget rows only (no early stop): the paper compares end-of-budget results."""
    return [r for r in rows if r.get("stop_when_certified") is False]


def method_cells(rows: Sequence[Row]) -> list[MethodCell]:
    """Every (cell, method) of the fixed-budget rows, scores per seed, paired with SFT on the same seeds."""
    groups: dict[tuple[Any, ...], dict[str, dict[int, Row]]] = defaultdict(lambda: defaultdict(dict))
    for r in _budget_rows(rows):
        groups[tuple(str(point(r, k)) for k in CELL_KEYS)][str(r["method"])][int(r["seed"])] = r
    out = []
    for methods in groups.values():
        sft = methods.get("sft", {})
        for method, by_seed in sorted(methods.items()):
            seeds = tuple(sorted(by_seed))
            first = by_seed[seeds[0]]
            name = score_name(str(first["benchmark"]), first.get("records"))
            bind = bind_name(str(first["benchmark"]), first.get("records"))
            score = tuple(float(by_seed[s][name]) for s in seeds)
            paired = all(s in sft for s in seeds)
            out.append(MethodCell(
                cell=cell_label(first), benchmark=str(first["benchmark"]), method=method, seeds=seeds,
                exact=tuple(float(by_seed[s]["exact_match"]) for s in seeds),
                token_accuracy=tuple(float(by_seed[s]["token_accuracy"]) for s in seeds),
                token_accuracy_tf=tuple(float(by_seed[s]["token_accuracy_tf"]) for s in seeds),
                heldout_exact=tuple(float(by_seed[s]["heldout_exact_match"]) for s in seeds if by_seed[s].get("heldout_exact_match") is not None),
                score_name=name, score=score, sft_score=tuple(float(sft[s][name]) for s in seeds) if paired else (),
                bind_name=bind, sft_bind=tuple(float(sft[s][bind]) for s in seeds) if paired else (),
            ))
    return out


def compare_claim(cells: Sequence[MethodCell], claim: str, paper: str, benchmark: str, methods: Sequence[str], min_gain: float = 0.0) -> Claim:
    """Verdict on "`methods` beat SFT where capacity binds" for one benchmark: reproduced when, in at least one
    binding cell with at least 2 seeds, the method scores higher than SFT on every seed and in no binding cell
    does worse on every seed; not reproduced when binding cells exist but no such gain; not testable when cells exist
    but none binds. `min_gain` (a fraction): where the paper gives the size of its gain, a consistent gain whose mean
    is below it does not reproduce the claim."""
    mine = [c for c in cells if c.benchmark == benchmark and c.method in methods and c.sft_score]
    if not mine:
        return Claim(claim, paper, "—", "no runs", "not measured", f"no fixed-budget {benchmark} runs of {' / '.join(methods)} with SFT on the same seeds")
    binding = [c for c in mine if c.binding]
    if not binding:
        sft = "; ".join(f"{c.cell}: SFT {c.bind_name} {pm(c.sft_bind)} %" for c in mine)
        return Claim(claim, paper, sft, f"{len(mine)} cells", "not testable here",
                     f"capacity does not bind in any cell (SFT's mean score outside {BINDING[0]:.0%}–{BINDING[1]:.0%})")
    parts, wins, losses = [], [], []
    for c in binding:
        d = c.diff
        extra = f", SFT's {c.bind_name} {pm(c.sft_bind)} %" if c.bind_name != c.score_name else ""
        parts.append(f"{c.cell}: {c.method} {pm(c.score)} vs SFT {pm(c.sft_score)} % ({c.score_name}; Δ {pm(d)} points{extra})")
        if len(d) >= 2 and all(x > 0 for x in d):
            wins.append(c)
        elif len(d) >= 2 and all(x < 0 for x in d):
            losses.append(c)
    seeds = sorted({len(c.seeds) for c in binding})
    n = f"{len(binding)} binding cell{'s' * (len(binding) > 1)}, {'/'.join(map(str, seeds))} seeds"
    of = f"{len(binding)} binding comparison{'s' * (len(binding) > 1)} (cell × method)"
    big = [c for c in wins if statistics.fmean(c.diff) >= min_gain]
    if big and not losses:
        return Claim(claim, paper, "; ".join(parts), n, "reproduced", f"higher than SFT on every seed in {len(big)} of {of}")
    if wins and not losses:
        best = max(statistics.fmean(c.diff) for c in wins)
        return Claim(claim, paper, "; ".join(parts), n, "not reproduced",
                     f"higher than SFT on every seed in {len(wins)} of {of}, but by at most {100 * best:.1f} points on average "
                     f"(the paper: at least {100 * min_gain:.0f})")
    why = (f"lower than SFT on every seed in {len(losses)} of {of}" if losses
           else f"higher than SFT on every seed in none of {of}")
    return Claim(claim, paper, "; ".join(parts), n, "not reproduced", why)


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


PLATEAU_GAIN = 0.05  # ΔL grew by less than this share from the budget to twice it: the budget counts as a plateau


def budget_controls(grid: Sequence[Row], rows: Sequence[Row]) -> list[tuple[Row, Row, float]]:
    """(run of the grid, the same cell and seed at twice its budget, relative ΔL growth) for every such pair in `rows`.

    >>> a = {"method": "sft", "benchmark": "stress", "length": 64, "rank": 2, "seed": 0, "max_steps": 600, "delta_loss": 10.0}
    >>> [round(g, 3) for _, _, g in budget_controls([a], [a, {**a, "max_steps": 1200, "delta_loss": 10.5}])]
    [0.05]
    """
    same = [k for k in CELL_KEYS if k != "max_steps"] + ["seed", "method"]
    out = []
    for g in grid:
        for r in rows:
            if r.get("max_steps") == 2 * int(g["max_steps"]) and all(str(point(r, k)) == str(point(g, k)) for k in same) \
                    and number(g.get("delta_loss")) and number(r.get("delta_loss")) is not None:
                out.append((g, r, float(r["delta_loss"]) / float(g["delta_loss"]) - 1))
    return out


def law_claims(rows: Sequence[Row], n_boot: int = 0) -> list[Claim]:
    """The law's form and R² on fixed-budget SFT stress runs, per (ratio, budget) with ℓ spanning >= 10x and at least
    2 ranks: fitted on all points, and again without the saturated ones (ΔL >= 0.95 L_init)."""
    paper = f"ΔL = C·r^α·ℓ^(−β) + b, R² > {LAW_R2}"
    groups: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    budgeted = _budget_rows(rows)
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
        full = fit_rows(g, f"r{ratio}", eps=0.0, n_boot=n_boot)
        sat = sum(saturated(r) for r in g)
        assert full.fit is not None  # fit_rows raises when it cannot fit
        measured = f"all {full.n} points: R² {full.fit.r2:.3f}, MAPE {100 * full.fit.mape:.1f} %, α {full.fit.alpha:.2f}, β {full.fit.beta:.2f}"
        excl = None
        if sat:
            try:
                excl = fit_rows(g, f"r{ratio}", eps=0.05, n_boot=n_boot)
                assert excl.fit is not None
                measured += f"; without the {sat} saturated: R² {excl.fit.r2:.3f}, MAPE {100 * excl.fit.mape:.1f} % ({excl.n} points)"
            except ValueError as e:
                measured += f"; without the {sat} saturated: no fit ({' '.join(str(e).split())[:120]})"
        late = [x for r in g if (x := late_gain(r.get("curve") or [], float(r["loss_init"]))) is not None]
        if late:
            measured += (f"; share of ΔL gained in the last 20 % of the budget: median {100 * statistics.median(late):.1f} %, "
                         f"max {100 * max(late):.1f} % ({len(late)} curves)")
        controls = budget_controls(g, budgeted)
        if controls:
            growth = ", ".join(f"{100 * x:+.1f} % (ℓ={point(a, 'length')}, r={a.get('rank')})" for a, _, x in controls)
            plateau = all(x < PLATEAU_GAIN for _, _, x in controls)
            measured += (f"; ΔL at twice the budget: {growth}, "
                         f"{'a plateau' if plateau else 'not a plateau'} (less than {100 * PLATEAU_GAIN:g} % is one)")
        r2 = number(full.fit.r2) or -math.inf
        if r2 > LAW_R2:
            verdict, why = "reproduced", f"R² above {LAW_R2} on every point"
        elif excl is not None and excl.fit is not None and (number(excl.fit.r2) or -math.inf) > LAW_R2:
            verdict, why = "not reproduced", f"R² above {LAW_R2} only after leaving out the {sat} saturated points"
        else:
            verdict, why = "not reproduced", f"R² {r2:.3f} ≤ {LAW_R2}"
        out.append(Claim(name, paper, measured, f"{len(g)} runs ({span}), seed(s) {sorted({r.get('seed') for r in g})}", verdict, why))
    if not out:
        out.append(Claim("law at convergence", paper, "—", "no runs", "not measured",
                         "no fixed-budget SFT stress grid with 2+ ranks and ℓ spanning 10x"))
    return out


def transition_claims(rows: Sequence[Row]) -> list[Claim]:
    """p > 0.5 suffices for greedy (no position above the line that is not the argmax) and the equivalence of
    argmax-at-every-position with greedy exact recall (free-run first failure = first teacher-forced argmax error)."""
    above = wrong_above = 0
    agree = total = 0
    by_dtype: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # dtype -> [agree, total]
    for r in rows:
        correct = r.get("correct")
        probs = r.get("probs")
        if correct is None:
            continue
        for rec, flags in enumerate(correct):
            ps = probs[rec] if probs else []
            for p, c in zip(ps, flags):
                if p > STUBBORN_P:
                    above += 1
                    wrong_above += not c
            ff = (r.get("first_failure") or [None] * len(correct))[rec]
            tf = first_false(flags)
            if tf is not None and ff is not None:  # uncertified and generated: the free run is compared
                total += 1
                agree += ff == tf
                tally = by_dtype[str(r.get("dtype"))]
                tally[0] += ff == tf
                tally[1] += 1
    out = []
    if above:
        verdict = "reproduced" if wrong_above == 0 else "not reproduced"
        out.append(Claim("p > 0.5 is sufficient for greedy decoding", "sufficient (a probability above one half is the largest)",
                         f"{wrong_above} of {above} teacher-forced positions with p > 0.5 were not the argmax", f"{above} positions",
                         verdict, "holds at every position" if not wrong_above else "a position above the line lost the argmax"))
    else:
        out.append(Claim("p > 0.5 is sufficient for greedy decoding", "sufficient", "—", "no positions", "not measured", "no stored positions"))
    if total:
        # In exact arithmetic the two are the same computation up to the first divergence; a base in bf16 rounds the
        # cached (generation) and full (teacher-forced) logits differently, so a near-tie can flip: counted per dtype.
        split = "; ".join(f"{d}: {a} of {t}" for d, (a, t) in sorted(by_dtype.items()))
        verdict = "reproduced" if agree == total else "not reproduced"
        out.append(Claim("target = argmax everywhere ⇔ greedy exact recall", "equivalent",
                         f"free-run first failure = first teacher-forced argmax error in {agree} of {total} uncertified records ({split})",
                         f"{total} records", verdict, "every failing record fails where teacher forcing first loses the argmax"
                         if agree == total else "some free runs failed elsewhere (see the split by base dtype)"))
    else:
        out.append(Claim("target = argmax everywhere ⇔ greedy exact recall", "equivalent", "—", "no records", "not measured",
                         "no uncertified records with a free run and stored positions"))
    return out


def transition_pairs(rows: Sequence[Row], benchmark: str = "stress") -> tuple[list[tuple[int, int]], int]:
    """(earliest stubborn, first failure) at every uncertified step of one-record runs, and how many runs gave pairs.
    The first teacher-forced argmax error is the free run's first failure (the equivalence above)."""
    pairs, runs = [], 0
    for r in rows:
        if r.get("benchmark") != benchmark:
            continue
        got = [(int(c["earliest_stubborn"]), int(c["first_error"])) for c in r.get("curve") or []
               if c.get("first_error") is not None and c.get("earliest_stubborn") is not None]
        pairs += got
        runs += bool(got)
    return pairs, runs


def spearman_claim(rows: Sequence[Row]) -> Claim:
    from scipy.stats import spearmanr

    paper = f"{SPEARMAN_PAPER} (n = 155)"
    pairs, runs = transition_pairs(rows)
    name = "earliest stubborn position predicts the first free-run failure (Spearman, stress)"
    if len(pairs) < 2 or len({s for s, _ in pairs}) < 2 or len({f for _, f in pairs}) < 2:
        return Claim(name, paper, "—", f"{len(pairs)} pairs", "not measured", "fewer than 2 distinct pairs from stress training curves")
    def rho_of(ps: list[tuple[int, int]]) -> float:
        if len(ps) < 2 or len({s for s, _ in ps}) < 2 or len({f for _, f in ps}) < 2:
            return math.nan
        return float(spearmanr([s for s, _ in ps], [f for _, f in ps]).statistic)

    # A step whose very first token is wrong gives (0, 0): true, but it says nothing about prediction, and a run that
    # never gets its first token right gives nothing else. The verdict reads the pairs with the first error past 0.
    moving = [(s, f) for s, f in pairs if f > 0]
    rho, rho_all = rho_of(moving), rho_of(pairs)
    equal = sum(s == f for s, f in moving)
    measured = (f"ρ = {rho:.3f} over the {len(moving)} pairs with the first error past position 0 (equal in {equal}); "
                f"ρ = {rho_all:.3f} over all {len(pairs)}, {len(pairs) - len(moving)} of them (0, 0)")
    n = f"{len(moving)} pairs (uncertified training steps of {runs} runs; steps of one run are not independent)"
    if len(moving) < MIN_PAIRS or math.isnan(rho):
        return Claim(name, paper, measured, n, "not testable here", f"fewer than {MIN_PAIRS} pairs with the first error past position 0")
    ok = rho >= SPEARMAN_BAR
    return Claim(name, paper, measured, n, "reproduced" if ok else "not reproduced", f"ρ {'≥' if ok else '<'} {SPEARMAN_BAR}")


def paper_claims(rows: Sequence[Row], n_boot: int = 0) -> list[Claim]:
    """Every claim of the paper, in the paper's order, with memft's measurement and verdict (see module docstring)."""
    cells = method_cells(rows)
    beats = "beats SFT where capacity binds"
    return [
        *law_claims(rows, n_boot),
        *transition_claims(rows),
        spearman_claim(rows),
        compare_claim(cells, "MemFT-OT vs SFT, stress (random tokens)", beats, "stress", ["memft-ot"]),
        compare_claim(cells, "MemFT-SW vs SFT, stress (random tokens)", beats, "stress", ["memft-sw"]),
        compare_claim(cells, "MemFT-OT vs SFT, PhoneBook", beats, "phonebook", ["memft-ot"]),
        compare_claim(cells, "MemFT-SW vs SFT, PhoneBook (curriculum x OT)", beats, "phonebook", ["memft-sw-phonebook"]),
        compare_claim(cells, "MemFT vs SFT, linear rule: held-out generalisation", "+7 to +15 points", "rule", ["memft-ot", "memft-sw"], min_gain=0.07),
    ]


CELL_HEAD = ("cell", "method", "seeds", "exact %", "free-run token acc. %", "teacher-forced token acc. %", "score",
             "Δ score vs SFT (points)", "binds")


def cell_columns(c: MethodCell) -> list[str]:
    """One comparison cell as the text of CELL_HEAD's columns (the report escapes them, claims_markdown does not)."""
    return [c.cell, c.method, ", ".join(map(str, c.seeds)), pm(c.exact), pm(c.token_accuracy), pm(c.token_accuracy_tf), c.score_name,
            pm(c.diff) if c.sft_score else "—", "yes" if c.binding else "no"]


def claims_markdown(claims: Sequence[Claim], cells: Sequence[MethodCell] = ()) -> str:
    """The claims (and comparison cells) as Markdown tables, for a README or an issue note.

    >>> print(claims_markdown([Claim("c", "p", "m | x", "n", "reproduced", "w")]))
    | claim | paper | memft (this model) | n | verdict | why |
    |---|---|---|---|---|---|
    | c | p | m \\| x | n | **reproduced** | w |
    <BLANKLINE>
    """
    def esc(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    out = "| claim | paper | memft (this model) | n | verdict | why |\n|---|---|---|---|---|---|\n"
    out += "".join(f"| {esc(c.claim)} | {esc(c.paper)} | {esc(c.measured)} | {esc(c.n)} | **{esc(c.verdict)}** | {esc(c.why)} |\n" for c in claims)
    if cells:
        out += "\n| " + " | ".join(CELL_HEAD) + " |\n|---|---|---|---:|---:|---:|---|---:|---|\n"
        out += "".join("| " + " | ".join(map(esc, cell_columns(c))) + " |\n" for c in cells)
    return out
