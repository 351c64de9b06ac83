"""How sure a fit is: percentile bootstrap intervals of its parameters, and the held-out error of predicting each
length from a fit to the others.

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from memft.errors import ConfigError
from memft.research.law.fit import PARAMS, Grid, check_points, fit_law, fit_params, mape_of


# Resamples start from a coarser grid (step 0.15) than a fit (step 0.05): L-BFGS-B refines either way, and the
# grid only has to land in the right basin; this makes a 200-resample bootstrap ~10x cheaper.
BOOT_GRID = Grid(n=21)


def bootstrap_samples(rank: Any, length: Any, delta: Any, n_boot: int = 200, seed: int = 0, huber: float | None = None,
                      grid: Grid = BOOT_GRID) -> np.ndarray:
    """Parameters (C, α, β, b) [m, 4] refitted on `n_boot` resamples of the points (with replacement).

    Resamples that cannot be fitted (fewer than 2 distinct ranks or lengths, constant ΔL) are skipped, so m ≤ n_boot.
    """
    r, l, y = (np.asarray(v, float) for v in (rank, length, delta))
    check_points(r, l, y)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        if len(np.unique(r[i])) < 2 or len(np.unique(l[i])) < 2 or np.ptp(y[i]) == 0:
            continue
        out.append(fit_params(r[i], l[i], y[i], huber, grid))
    return np.array(out, float).reshape(-1, 4)


def intervals(samples: np.ndarray, level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile intervals per parameter from samples [m, 4]."""
    if len(samples) == 0:
        raise ConfigError("bootstrap: no resample could be fitted; add points with more distinct ranks and lengths")
    q = 100 * (1 - level) / 2
    lo, hi = np.percentile(samples, [q, 100 - q], axis=0)
    return {p: (float(lo[j]), float(hi[j])) for j, p in enumerate(PARAMS)}


def bootstrap(rank: Any, length: Any, delta: Any, n_boot: int = 200, seed: int = 0,
              huber: float | None = None) -> dict[str, tuple[float, float]]:
    """95 % percentile bootstrap intervals {"C", "alpha", "beta", "b": (lo, hi)}."""
    return intervals(bootstrap_samples(rank, length, delta, n_boot, seed, huber))


@dataclass(frozen=True)
class HeldOut:
    """The leave-one-length-out error: pooled MAPE (a fraction) and RMSE over `folds` lengths; None, with `reason`,
    when it could not be computed."""

    mape: float | None
    rmse: float | None
    folds: int
    reason: str | None = None


def leave_one_length_out(rank: Any, length: Any, delta: Any, huber: float | None = None) -> HeldOut:
    """Predict every distinct ℓ from a fit to the other lengths: pooled held-out MAPE and RMSE.

    Needs ≥ 3 distinct lengths (each fit needs 2); otherwise, or when a fold cannot be fitted, the values are None
    and `reason` says why. MAPE skips points with ΔL = 0.
    """
    r, l, y = (np.asarray(v, float) for v in (rank, length, delta))
    lengths = np.unique(l)
    if len(lengths) < 3:
        return HeldOut(None, None, 0, f"{len(lengths)} distinct lengths; leave-one-length-out needs 3")
    resid = np.empty_like(y)
    for ln in lengths:
        out = l == ln
        try:
            f = fit_law(r[~out], l[~out], y[~out], huber)
        except ValueError as e:
            return HeldOut(None, None, 0, f"fold without ℓ={ln:g}: {e}")
        resid[out] = y[out] - f.predict(r[out], l[out])
    mape = mape_of(resid, y)
    return HeldOut(mape if math.isfinite(mape) else None, float(np.sqrt(np.mean(resid**2))), len(lengths))
