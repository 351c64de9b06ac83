"""Comparison cells: the fixed-budget runs that differ only in method and seed, each method's metrics per seed beside
SFT's on the same seeds, and whether the cell's budget was shown converged.

A cell is the rows sharing CELL_KEYS (same data size, rank, budget and training setup), read with `point` so that ℓ is
the requested one. Every cell carries all the metrics its rows have, side by side (METRICS: exact match,
free-run prefix accuracy, teacher-forced token accuracy, ΔL, and for the rule the held-out scores), so that a method
that wins on one and loses on another shows it; the verdict reads one of them (`score_name`).

Where capacity binds: a cell counts only when SFT's mean capacity score (`bind_name`) lies in BINDING = [0.2, 0.95];
elsewhere every method reaches (or misses) the target together. A cell is on its floor when SFT and the method both
score below FLOOR on the verdict's score: then it cannot show a gain either.

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from memft.research.law import number
from memft.research.rows import Row

BINDING = (0.2, 0.95)
FLOOR = 0.05
PLATEAU_GAIN = 0.05  # ΔL grew by less than this share from the budget to twice it: the budget counts as converged
CELL_KEYS = ("model", "benchmark", "length", "ratio", "rank", "max_steps", "batch_size", "lr", "lr_schedule", "max_grad_norm", "preset", "layers", "target_modules")
# (row key, label, scale, unit): fractions shown in %, ΔL in nats
METRICS = (
    ("exact_match", "exact match", 100.0, "points"),
    ("token_accuracy", "free-run prefix accuracy", 100.0, "points"),
    ("token_accuracy_tf", "teacher-forced token accuracy", 100.0, "points"),
    ("delta_loss", "ΔL", 1.0, "nats"),
    ("heldout_exact_match", "held-out exact match", 100.0, "points"),
    ("heldout_token_accuracy", "held-out token accuracy", 100.0, "points"),
)
METRIC = {m[0]: m for m in METRICS}


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


def score_name(benchmark: str, records: int | None) -> str:
    """The end-of-budget score a comparison is judged on, what a user gets back: exact match for record sets, free-run
    prefix accuracy for a single stress record (its exact match is all or nothing: 0 for every method at every binding
    stress cell here), held-out exact match for the rule (the paper's generalisation: a right answer)."""
    if benchmark == "rule":
        return "heldout_exact_match"
    return "token_accuracy" if (records or 0) <= 1 else "exact_match"


def bind_name(benchmark: str, records: int | None) -> str:
    """The score that says whether capacity binds (SFT's mean in BINDING): for a single stress record the
    teacher-forced token accuracy, the share of its tokens the adapter holds (its free-run accuracy collapses to the
    first error's position); exact match of the trained records otherwise (for the rule: memory, not generalisation)."""
    return "token_accuracy_tf" if benchmark != "rule" and (records or 0) <= 1 else "exact_match"


def budget_rows(rows: Sequence[Row]) -> list[Row]:
    """Fixed-budget rows only (no early stop): the paper compares end-of-budget results."""
    return [r for r in rows if r.get("stop_when_certified") is False]


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


def budget_status(grid: Sequence[Row], rows: Sequence[Row]) -> str:
    """"converged (…)" when every run of `grid` that has a twin at twice its budget gained less than PLATEAU_GAIN of
    ΔL there (and at least one has); "budget-bound (…)" otherwise, saying what was or was not measured.

    >>> a = {"method": "sft", "benchmark": "stress", "length": 64, "rank": 2, "seed": 0, "max_steps": 600, "delta_loss": 10.0}
    >>> budget_status([a], [a, {**a, "max_steps": 1200, "delta_loss": 10.3}]), budget_status([a], [a])
    ('converged (ΔL +3.0 % at twice the budget)', 'budget-bound (no run at twice the budget)')
    """
    controls = budget_controls(grid, rows)
    if not controls:
        return "budget-bound (no run at twice the budget)"
    growth = ", ".join(f"{100 * x:+.1f} %" for _, _, x in controls)
    ok = all(x < PLATEAU_GAIN for _, _, x in controls)
    return f"{'converged' if ok else 'budget-bound'} (ΔL {growth} at twice the budget)"


@dataclass(frozen=True)
class MethodCell:
    """One method in one comparison cell, over seeds: its metrics per seed and SFT's on the same seeds.

    values / sft_values: metric -> per-seed values in seed order (only the metrics the rows have; sft_values is empty
    when SFT did not run every one of these seeds)."""

    cell: str  # e.g. "stress ℓ=256 ρ=1 r=1, 150 steps"
    benchmark: str
    method: str
    rank: int
    seeds: tuple[int, ...]
    values: dict[str, tuple[float, ...]]
    sft_values: dict[str, tuple[float, ...]]
    score_name: str  # the metric the verdict reads
    bind_name: str = "exact_match"  # the metric that says whether capacity binds
    budget: str = "budget-bound (no run at twice the budget)"
    rows: tuple[Row, ...] = field(default=(), repr=False, compare=False)

    @property
    def score(self) -> tuple[float, ...]:
        return self.values.get(self.score_name, ())

    @property
    def sft_score(self) -> tuple[float, ...]:
        return self.sft_values.get(self.score_name, ())

    @property
    def sft_bind(self) -> tuple[float, ...]:
        return self.sft_values.get(self.bind_name, ())

    def diffs(self, metric: str) -> tuple[float, ...]:
        """Paired differences method − SFT of one metric, in seed order (empty without SFT on these seeds)."""
        a, b = self.values.get(metric, ()), self.sft_values.get(metric, ())
        return tuple(x - y for x, y in zip(a, b)) if a and len(a) == len(b) else ()

    @property
    def diff(self) -> tuple[float, ...]:
        return self.diffs(self.score_name)

    @property
    def binding(self) -> bool:
        """SFT's mean capacity score is inside BINDING: capacity binds in this cell."""
        return bool(self.sft_bind) and BINDING[0] <= statistics.fmean(self.sft_bind) <= BINDING[1]

    @property
    def floor(self) -> bool:
        """Both SFT and the method score below FLOOR on the verdict's score: the cell cannot show a gain."""
        return bool(self.sft_score) and max(statistics.fmean(self.score), statistics.fmean(self.sft_score)) < FLOOR

    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "rows"}
        return {**d, "diff": list(self.diff), "binding": self.binding, "floor": self.floor}


def method_cells(rows: Sequence[Row]) -> list[MethodCell]:
    """Every (cell, method) of the fixed-budget rows, metrics per seed, paired with SFT on the same seeds."""
    fixed = budget_rows(rows)
    groups: dict[tuple[Any, ...], dict[str, dict[int, Row]]] = defaultdict(lambda: defaultdict(dict))
    for r in fixed:
        groups[tuple(str(point(r, k)) for k in CELL_KEYS)][str(r["method"])][int(r["seed"])] = r
    out = []
    for methods in groups.values():
        sft = methods.get("sft", {})
        budget = budget_status(list(sft.values()), fixed) if sft else "budget-bound (no SFT runs)"
        for method, by_seed in sorted(methods.items()):
            seeds = tuple(sorted(by_seed))
            first = by_seed[seeds[0]]
            have = [m for m, *_ in METRICS if all(number(by_seed[s].get(m)) is not None for s in seeds)]
            paired = all(s in sft for s in seeds)
            out.append(MethodCell(
                cell=cell_label(first), benchmark=str(first["benchmark"]), method=method, rank=int(first["rank"]), seeds=seeds,
                values={m: tuple(float(by_seed[s][m]) for s in seeds) for m in have},
                sft_values={m: tuple(float(sft[s][m]) for s in seeds) for m in have
                            if paired and all(number(sft[s].get(m)) is not None for s in seeds)},
                score_name=score_name(str(first["benchmark"]), first.get("records")),
                bind_name=bind_name(str(first["benchmark"]), first.get("records")), budget=budget,
                rows=tuple(by_seed[s] for s in seeds),
            ))
    return out
