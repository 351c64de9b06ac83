"""The one rule every claim of the paper is judged by, and the `Claim` it produces.

Verdicts (VERDICTS):
- **identity**: the claim is true by construction (p > 0.5 is the largest probability; argmax at every position is
  what greedy decoding reproduces); the stores check the implementation, they reproduce nothing.
- **reproduced**: the paper's direction with a 95 % interval that excludes no effect (and, where the paper gives a
  size, does not exclude that size), at a budget shown converged, or labelled budget-bound (`Claim.budget`).
- **refuted**: an interval that excludes the paper's effect, with the power to see it (≥ 80 % power for that effect
  at the observed spread; for a correlation, at least the pairs needed to tell the two values apart).
- **inconclusive**: measured, but neither of the above (too few seeds for the spread, or an interval that holds both
  no effect and the paper's).
- **untested**: nothing here bears on it (no runs, capacity does not bind, the benchmark sits on its floor, or the
  runs are outside the claim's scope).

Comparisons (`judge`) read paired differences over seeds (method − SFT on the same seed: same records, same
initial adapter) with a paired t interval; the paper's effect is its own size where it gives one, else EFFECT
(10 points), the smallest gain this page calls "beats". When a claim rests on several cells, each interval is at
the Bonferroni level 1 − 0.05/m, so that the family of m intervals holds 95 %.

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from memft.research.stats import LEVEL, POWER, PairedInterval, paired_interval, paired_power, seeds_for_effect

VERDICTS = ("identity", "reproduced", "refuted", "inconclusive", "untested")
EFFECT = 0.10  # the effect tested where the paper gives no size, and the effect of the power line: 10 points
RULE = (
    "The rule: identity = true by construction (the stores check the implementation); reproduced = the paper's "
    "direction with a 95 % interval that excludes no effect (and holds the paper's size, where it gives one); refuted = "
    "an interval that excludes the paper's effect (its size, else a 10-point gain) with at least 80 % power to see it "
    "at the observed spread; inconclusive = measured, neither; untested = nothing here bears on it (no runs, capacity "
    "does not bind, the benchmark sits on its floor, or the runs are outside the claim). Comparisons pair seeds "
    "(method − SFT on the same records and initial adapter) with a paired t interval, Bonferroni over a claim's cells; "
    "a verdict at a budget not shown converged (ΔL growing by 5 % or more at twice the budget, or not checked) is "
    "labelled budget-bound; the power line gives the seeds a 10-point effect needs at the observed spread. The law's "
    "form is judged on every point, saturated ones included, against the saturating alternative "
    "L_init·(1 − exp(−k·r^a·ℓ^(−g))): reproduced when the power law reaches R² > 0.98 and the alternative is not better "
    "by AIC (ΔAIC < 2); refuted when it does not and the alternative is better by ΔAIC ≥ 10 and on held-out lengths."
)


@dataclass(frozen=True)
class Claim:
    """One claim of the paper, what memft measured, and its verdict under the rule above.

    effect: the effect size with its interval (e.g. "+26.3 points [10.1, 42.5], 97.5 % paired t"); seeds: the seeds
    (or points, pairs) it rests on; budget: "converged …" or "budget-bound …"; power: the seeds (pairs) needed to see
    the tested effect at the observed spread."""

    claim: str
    paper: str
    measured: str
    n: str
    verdict: str
    why: str
    effect: str = "—"
    seeds: str = "—"
    budget: str = "—"
    power: str = "—"

    def __post_init__(self) -> None:
        assert self.verdict in VERDICTS, self.verdict

    @property
    def label(self) -> str:
        """The verdict as the page shows it: "reproduced (budget-bound)" when it rests on a budget not shown converged.

        >>> Claim("c", "p", "m", "n", "reproduced", "w", budget="x: budget-bound (no run at twice the budget)").label
        'reproduced (budget-bound)'
        """
        bound = self.verdict in ("reproduced", "refuted") and "budget-bound" in self.budget
        return f"{self.verdict} (budget-bound)" if bound else self.verdict

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def level_for(m: int) -> float:
    """The per-interval level of a family of m intervals that holds LEVEL together (Bonferroni).

    >>> level_for(1), level_for(2)
    (0.95, 0.975)
    """
    return 1 - (1 - LEVEL) / max(m, 1)


@dataclass(frozen=True)
class Judgement:
    """A verdict on paired differences: the interval, the power at the tested effect, the seeds that effect needs."""

    verdict: str
    interval: PairedInterval
    effect: float  # the effect tested (fraction: 0.1 = 10 points)
    power: float | None  # power of the paired t test at `effect` with the observed spread (None: no spread estimate)
    seeds_needed: int | None  # seeds for POWER at EFFECT and the observed spread (None: no spread estimate)
    why: str


def judge(diffs: Sequence[float], size: float | None = None, level: float = LEVEL, scale: float = 100.0, unit: str = "points") -> Judgement:
    """The rule on paired differences (method − SFT, fractions) where the paper claims a gain (of `size`, if given).

    reproduced: lo > 0 and, with a size, hi ≥ size; refuted: hi < the tested effect (size, else EFFECT) with power
    ≥ POWER at the observed spread; inconclusive otherwise (and always below 2 seeds or with a spread of 0, which
    3 seeds cannot tell from luck).

    >>> judge([0.2, 0.05, 0.05]).verdict  # +10 points, interval [−11.5, 31.5]
    'inconclusive'
    >>> j = judge([0.013, 0.007, 0.019], size=0.07); j.verdict, round(j.interval.hi, 4)  # +1.3 points, far below 7
    ('refuted', 0.0279)
    """
    iv = paired_interval(diffs, level)
    tested = size if size is not None else EFFECT
    if iv.lo is None or iv.hi is None:
        return Judgement("inconclusive", iv, tested, None, None, f"{iv.n} seed: no interval")
    if iv.sd == 0:
        return Judgement("inconclusive", iv, tested, None, None, f"the same difference on all {iv.n} seeds: no estimate of the spread")
    power = paired_power(iv.sd, iv.n, tested, 1 - level)
    need = seeds_for_effect(iv.sd, EFFECT, POWER, 1 - level)
    at = f"{scale * tested:.0f} {unit}"
    if iv.lo > 0 and (size is None or iv.hi >= size):
        return Judgement("reproduced", iv, tested, power, need, "the interval excludes no effect" + (f" and holds the paper's {at}" if size else ""))
    if iv.hi < tested and power >= POWER:
        what = "the gain is real but smaller" if iv.lo > 0 else "no gain"
        return Judgement("refuted", iv, tested, power, need, f"the interval excludes {at} ({what}), power {100 * power:.0f} % to see it")
    if iv.hi < tested:
        return Judgement("inconclusive", iv, tested, power, need, f"the interval excludes {at} but the power to see it is {100 * power:.0f} %")
    return Judgement("inconclusive", iv, tested, power, need, f"the interval holds both no effect and {at}")


def interval_text(iv: PairedInterval, scale: float = 100.0, unit: str = "points", digits: int = 1) -> str:
    """e.g. "+10.0 points [−11.5, +31.5] (95 % paired t, 3 seeds)".

    >>> interval_text(paired_interval([0.2, 0.05, 0.05]))
    '+10.0 points [-11.5, +31.5] (95 % paired t, 3 seeds)'
    """
    m = f"{scale * iv.mean:+.{digits}f} {unit}"
    if iv.lo is None or iv.hi is None:
        return f"{m} (1 seed, no interval)"
    lvl = f"{100 * iv.level:.4g} %"
    return f"{m} [{scale * iv.lo:+.{digits}f}, {scale * iv.hi:+.{digits}f}] ({lvl} {iv.method}, {iv.n} seeds)"


def power_text(j: Judgement, scale: float = 100.0, unit: str = "points") -> str:
    """e.g. "8 seeds for a 10-point effect at the observed spread (sd 8.4 points; have 3)"."""
    if j.seeds_needed is None:
        return "no spread estimate (fewer than 2 seeds, or the same difference on every seed)"
    return (f"{j.seeds_needed} seeds for a {scale * EFFECT:.0f}-{unit[:-1]} effect at the observed spread "
            f"(sd {scale * j.interval.sd:.1f} {unit}; have {j.interval.n})")


def combine(verdicts: Sequence[str]) -> str:
    """A claim's verdict from its cells' (each at the family level): reproduced when some cell reproduces and none
    refutes; refuted when every cell refutes; inconclusive otherwise; untested with no cells.

    >>> combine(["reproduced", "inconclusive"]), combine(["refuted", "refuted"]), combine(["reproduced", "refuted"]), combine([])
    ('reproduced', 'refuted', 'inconclusive', 'untested')
    """
    if not verdicts:
        return "untested"
    if "reproduced" in verdicts and "refuted" not in verdicts:
        return "reproduced"
    if all(v == "refuted" for v in verdicts):
        return "refuted"
    return "inconclusive"
