"""The statistics the paper-claims page rests on, one definition each: paired intervals over seeds, the power of a
paired comparison and the seeds it needs, and Spearman's ρ with its interval and the pairs it needs.

Pure functions of numbers (numpy/scipy); no rows, no model.

- `paired_interval(diffs)`: the paired t interval of the mean difference (method − SFT on the same seeds: same
  records, same initial adapter), a `PairedInterval`. With 3 seeds the bootstrap can give only 10 distinct means
  and no honest 95 % interval; the t interval is exact when the differences are normal, and wide when seeds are few,
  which is the point. `bootstrap_interval` is kept beside it for larger samples.
- `paired_power(sd, n, effect)` / `seeds_for_effect(sd, effect)`: the power of the two-sided paired t test at α = 0.05
  (noncentral t), and the smallest number of seeds that reaches 80 % power for `effect` at the spread `sd`.
- `spearman(x, y)`: ρ (scipy's, average ranks for ties) with a 95 % interval by Fisher's z with the Bonett–Wright
  standard error √((1 + ρ²/2)/(n − 3)), and `pairs_to_tell(rho, rho_paper)`: the pairs needed to tell the two apart at
  80 % power. Every Spearman on the page and in the figures is this function.

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

LEVEL = 0.95
POWER = 0.8
MAX_SEEDS = 10_000  # seeds_for_effect stops looking here (an effect this small against this spread is unmeasurable)


@dataclass(frozen=True)
class PairedInterval:
    """The mean of paired differences [n] and its two-sided `level` interval (lo, hi None below 2 pairs)."""

    n: int
    mean: float
    sd: float  # sample standard deviation of the differences (0 for one)
    lo: float | None
    hi: float | None
    method: str = "paired t"
    level: float = LEVEL

    @property
    def excludes_zero(self) -> bool:
        return self.lo is not None and self.hi is not None and (self.lo > 0 or self.hi < 0)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def paired_interval(diffs: Sequence[float], level: float = LEVEL) -> PairedInterval:
    """Paired t interval: mean ± t_{n−1, (1+level)/2} · sd/√n.

    >>> i = paired_interval([0.2, 0.05, 0.05])  # mean 0.1, sd 0.0866, t_{2, .975} = 4.3027
    >>> round(i.mean, 4), round(i.sd, 4), round(i.lo, 4), round(i.hi, 4)
    (0.1, 0.0866, -0.1151, 0.3151)
    """
    from scipy.stats import t

    x = np.asarray(diffs, float)
    n = len(x)
    if n == 0:
        raise ValueError("paired_interval: no differences")
    mean = float(x.mean())
    if n < 2:
        return PairedInterval(1, mean, 0.0, None, None, level=level)
    sd = float(x.std(ddof=1))
    half = float(t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n)
    return PairedInterval(n, mean, sd, mean - half, mean + half, level=level)


def bootstrap_interval(diffs: Sequence[float], n_boot: int = 10_000, seed: int = 0, level: float = LEVEL) -> PairedInterval:
    """Percentile bootstrap interval of the mean of paired differences (for many pairs; see the module docstring).

    >>> bootstrap_interval([1.0, 1.0, 1.0, 1.0]).lo
    1.0
    """
    x = np.asarray(diffs, float)
    if len(x) < 2:
        return paired_interval(x, level)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (n_boot, len(x)))].mean(1)
    q = 100 * (1 - level) / 2
    lo, hi = np.percentile(means, [q, 100 - q])
    return PairedInterval(len(x), float(x.mean()), float(x.std(ddof=1)), float(lo), float(hi), "bootstrap", level)


def paired_power(sd: float, n: int, effect: float, alpha: float = 1 - LEVEL) -> float:
    """Power of the two-sided paired t test at level `alpha` to detect a true mean difference `effect` with `n` pairs
    whose differences have standard deviation `sd` (noncentral t with n − 1 degrees of freedom and
    noncentrality effect·√n/sd). 1 when sd is 0 and the effect is not; 0 below 2 pairs.

    >>> round(paired_power(0.1, 10, 0.1), 4), round(_power_by_integral(2.262157, 9, 10 ** 0.5), 4)  # d = 1, 10 pairs: 80 %
    (0.8031, 0.8031)
    """
    from scipy.stats import nct, t

    if n < 2:
        return 0.0
    if sd <= 0:
        return 1.0 if effect != 0 else alpha
    crit = float(t.ppf(1 - alpha / 2, n - 1))
    nc = abs(effect) * math.sqrt(n) / sd
    got = float(nct.sf(crit, n - 1, nc) + nct.cdf(-crit, n - 1, nc))
    return got if math.isfinite(got) else _power_by_integral(crit, n - 1, nc)


def _power_by_integral(crit: float, df: int, nc: float) -> float:
    """P(|Z + nc| > crit·√(V/df)) with V ~ χ²(df), by quadrature: scipy's noncentral t returns nan for a large
    noncentrality at few degrees of freedom, which is where the answer is close to 1."""
    from scipy.integrate import quad
    from scipy.stats import chi2, norm

    def at(v: float) -> float:
        c = crit * math.sqrt(v / df)
        return float((norm.sf(c - nc) + norm.cdf(-c - nc)) * chi2.pdf(v, df))

    return min(1.0, float(quad(at, 0, math.inf, limit=200)[0]))


def seeds_for_effect(sd: float, effect: float, power: float = POWER, alpha: float = 1 - LEVEL) -> int | None:
    """The smallest number of paired seeds (≥ 2) whose paired t test has `power` to detect `effect` at spread `sd`;
    None when even MAX_SEEDS would not.

    >>> seeds_for_effect(0.1, 0.1), seeds_for_effect(0.2, 0.1), seeds_for_effect(0.0, 0.1)
    (10, 34, 2)
    """
    if sd <= 0:
        return 2
    n = 2
    # the normal approximation is a lower bound: start there, then walk up with the exact (noncentral t) power
    z = 1.959963984540054 + 0.8416212335729143 if (alpha, power) == (0.05, 0.8) else None
    if z is not None:
        n = max(2, math.floor((z * sd / effect) ** 2))
    while n <= MAX_SEEDS:
        if paired_power(sd, n, effect, alpha) >= power:
            return n
        n += 1
    return None


@dataclass(frozen=True)
class Spearman:
    """Spearman's ρ over n pairs with its 95 % interval (Fisher z, Bonett–Wright); rho nan when undefined (fewer
    than 2 distinct values on a side), lo/hi None when n ≤ 3."""

    rho: float
    n: int
    lo: float | None
    hi: float | None

    def to_json(self) -> dict[str, Any]:
        return {"rho": None if math.isnan(self.rho) else self.rho, "n": self.n, "lo": self.lo, "hi": self.hi}


def spearman(x: Sequence[float], y: Sequence[float], level: float = LEVEL) -> Spearman:
    """Spearman's rank correlation of x [n] and y [n] (average ranks for ties) with its interval.

    >>> s = spearman([1, 2, 3], [2, 1, 3]); round(s.rho, 6), s.n, s.lo
    (0.5, 3, None)
    >>> s = spearman(range(10), [0, 2, 1, 3, 4, 6, 5, 7, 9, 8]); round(s.rho, 4), round(s.lo, 4), round(s.hi, 4)
    (0.9636, 0.7998, 0.9939)
    """
    from scipy.stats import norm, spearmanr

    x, y = list(x), list(y)
    if len(x) != len(y):
        raise ValueError(f"spearman: {len(x)} x values but {len(y)} y values")
    n = len(x)
    if n < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return Spearman(math.nan, n, None, None)
    rho = float(spearmanr(x, y).statistic)
    if n <= 3 or abs(rho) >= 1:
        return Spearman(rho, n, None, None) if n <= 3 else Spearman(rho, n, rho, rho)
    se = math.sqrt((1 + rho * rho / 2) / (n - 3))
    z, q = math.atanh(rho), float(norm.ppf((1 + level) / 2))
    return Spearman(rho, n, math.tanh(z - q * se), math.tanh(z + q * se))


def pairs_to_tell(rho: float, rho_paper: float, power: float = POWER, level: float = LEVEL) -> int | None:
    """Pairs needed for a two-sided test at `level` to tell ρ from the paper's ρ with `power` (Fisher z, the
    Bonett–Wright variance at the observed ρ): 3 + (z_a + z_b)²·(1 + ρ²/2) / (atanh ρ_paper − atanh ρ)². None when
    they are equal.

    >>> pairs_to_tell(0.72, 0.908)  # atanh gap 1.5161 − 0.9076; 3 + 7.849·1.2592/0.3702 = 29.7
    30
    """
    from scipy.stats import norm

    if abs(rho) >= 1 or abs(rho_paper) >= 1:
        return None
    gap = math.atanh(rho_paper) - math.atanh(rho)
    if gap == 0:
        return None
    za, zb = float(norm.ppf((1 + level) / 2)), float(norm.ppf(power))
    return math.ceil(3 + (za + zb) ** 2 * (1 + rho * rho / 2) / gap**2)
