"""The saturating alternative to the power law, and the two compared on the same points.

    ΔL(r, ℓ) = L_init · (1 − exp(−k · r^a · ℓ^(−g)))

ΔL can never exceed L_init (a run cannot remove more loss than there is), so this form has a ceiling, where the power
law C·r^α·ℓ^(−β) + b has none: a power law fitted to the unsaturated points predicts a negative final loss as soon as
it is asked about a cell that saturates. It has 3 parameters (k, a, g) against the power law's 4, and it is fitted
to every point, saturated ones included, so nothing is selected on the outcome.

`fit_saturating` fits it (least squares in ΔL, from the linearised fit ln(−ln(1 − ΔL/L_init)) = ln k + a·ln r − g·ln ℓ);
`compare_forms` fits both forms on the same points and gives each its AIC, BIC (Gaussian errors: n·ln(RSS/n) + 2p and
+ p·ln n, p the parameters of the mean) and its leave-one-length-out error.

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from memft.errors import ConfigError
from memft.research.law.fit import fit_law, mape_of, r_squared

CLIP = 1e-6  # ΔL/L_init is clipped into [CLIP, 1 − CLIP] for the linearised start only


def saturating(rank: Any, length: Any, loss_init: Any, k: float, a: float, g: float) -> Any:
    """ΔL = L_init·(1 − exp(−k·r^a·ℓ^(−g))), elementwise."""
    r, ell, li = (np.asarray(v, float) for v in (rank, length, loss_init))
    return li * -np.expm1(-k * np.power(r, a) * np.power(ell, -g))


@dataclass(frozen=True)
class SatFit:
    """A fitted saturating law: k, a, g and how well it fits (r2, mape a fraction, rss) on n points."""

    k: float
    a: float
    g: float
    r2: float
    mape: float
    rss: float
    n: int

    def predict(self, rank: Any, length: Any, loss_init: Any) -> Any:
        return saturating(rank, length, loss_init, self.k, self.a, self.g)

    def final_loss(self, rank: Any, length: Any, loss_init: Any) -> Any:
        """L_init − ΔL = L_init·exp(−k·r^a·ℓ^(−g)): positive, whatever the rank."""
        return np.asarray(loss_init, float) * np.exp(-self.k * np.power(np.asarray(rank, float), self.a) * np.power(np.asarray(length, float), -self.g))

    def rank_for(self, length: float, loss_init: float, target: float) -> float | None:
        """The real rank r at which the final loss equals `target` (< L_init): r = (ln(L_init/target)·ℓ^g/k)^(1/a).
        None when the law does not grow with rank (a ≤ 0 or k ≤ 0).

        >>> SatFit(k=1.0, a=1.0, g=1.0, r2=1.0, mape=0.0, rss=0.0, n=5).rank_for(10.0, math.e, 1.0)
        10.0
        """
        if self.a <= 0 or self.k <= 0:
            return None
        if loss_init <= target:
            return 0.0
        return float((math.log(loss_init / target) * length**self.g / self.k) ** (1 / self.a))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SatFit:
        return cls(**{k: d[k] for k in ("k", "a", "g", "r2", "mape", "rss", "n")})


def _check(rank: np.ndarray, length: np.ndarray, loss_init: np.ndarray, delta: np.ndarray) -> None:
    if not rank.shape == length.shape == loss_init.shape == delta.shape or rank.ndim != 1:
        raise ConfigError("fit_saturating: rank, length, loss_init, delta must be 1-D of one length")
    if len(delta) < 4:
        raise ConfigError(f"fit_saturating: {len(delta)} points; the saturating law has 3 parameters, so at least 4 are needed")
    if (rank <= 0).any() or (length <= 0).any() or (loss_init <= 0).any():
        raise ConfigError("fit_saturating: ranks, lengths and initial losses must be positive")
    for name, v in (("ranks", rank), ("lengths", length)):
        if len(np.unique(v)) < 2:
            raise ConfigError(f"fit_saturating: only one distinct value among the {name}; a and g need at least 2")


def fit_saturating(rank: Sequence[float] | np.ndarray, length: Sequence[float] | np.ndarray,
                   loss_init: Sequence[float] | np.ndarray, delta: Sequence[float] | np.ndarray) -> SatFit:
    """Least-squares fit of ΔL = L_init·(1 − exp(−k·r^a·ℓ^(−g))) to every point (saturated ones included).

    >>> r, l = [1, 2, 4, 1, 2, 4], [10, 10, 10, 100, 100, 100]
    >>> d = saturating(r, l, 10.0, 2.0, 0.5, 0.5)
    >>> f = fit_saturating(r, l, [10.0] * 6, d); round(f.k, 6), round(f.a, 6), round(f.g, 6), round(f.r2, 6)
    (2.0, 0.5, 0.5, 1.0)
    """
    from scipy.optimize import least_squares

    r, ell, li, y = (np.asarray(v, float) for v in (rank, length, loss_init, delta))
    _check(r, ell, li, y)
    lr, ll = np.log(r), np.log(ell)
    mr, ml = lr.mean(), ll.mean()  # centred logs: k' = k·exp(a·mr − g·ml) is O(1)
    z = np.log(-np.log1p(-np.clip(y / li, CLIP, 1 - CLIP)))  # = ln k' + a·(ln r − mr) − g·(ln ℓ − ml)
    X = np.column_stack([np.ones_like(z), lr - mr, -(ll - ml)])
    start = np.linalg.lstsq(X, z, rcond=None)[0]

    def resid(theta: np.ndarray) -> np.ndarray:
        return li * -np.expm1(-np.exp(theta[0] + theta[1] * (lr - mr) - theta[2] * (ll - ml))) - y

    best = None
    for s in (start, np.array([start[0], 1.0, 1.0]), np.array([0.0, 0.5, 0.5])):
        got = least_squares(resid, s, method="lm", xtol=1e-14, ftol=1e-14, gtol=1e-14, max_nfev=20_000)
        if best is None or got.cost < best.cost:
            best = got
    assert best is not None
    lk, a, g = (float(v) for v in best.x)
    k = math.exp(lk - a * mr + g * ml)
    pred = saturating(r, ell, li, k, a, g)
    return SatFit(k, a, g, r_squared(y, pred), mape_of(y - pred, y), float(((y - pred) ** 2).sum()), len(y))


def information(rss: float, n: int, p: int) -> tuple[float, float]:
    """(AIC, BIC) of a least-squares fit with Gaussian errors: n·ln(RSS/n) + 2p, n·ln(RSS/n) + p·ln n.

    >>> [round(v, 4) for v in information(2.0, 10, 3)]
    [-10.0944, -9.1866]
    """
    base = n * math.log(max(rss, 1e-300) / n)
    return base + 2 * p, base + p * math.log(n)


@dataclass(frozen=True)
class FormFit:
    """One form of the law on a set of points: its quality, information criteria and held-out length error."""

    form: str  # "power" or "saturating"
    params: dict[str, float]
    p: int
    n: int
    r2: float
    mape: float
    aic: float
    bic: float
    heldout_mape: float | None
    heldout_rmse: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FormFit:
        return cls(**{f: d.get(f) for f in ("form", "params", "p", "n", "r2", "mape", "aic", "bic", "heldout_mape", "heldout_rmse")})  # type: ignore[arg-type]

    def sat(self) -> SatFit | None:
        """The saturating law this form holds (None for the power law)."""
        if self.form != "saturating":
            return None
        return SatFit(self.params["k"], self.params["a"], self.params["g"], self.r2, self.mape, math.nan, self.n)


def _heldout(rank: np.ndarray, length: np.ndarray, li: np.ndarray, y: np.ndarray, form: str) -> tuple[float | None, float | None]:
    """Leave-one-length-out: every distinct ℓ predicted from a fit to the other lengths (None when a fold cannot fit)."""
    lengths = np.unique(length)
    if len(lengths) < 3:
        return None, None
    res = np.empty_like(y)
    for ln in lengths:
        out = length == ln
        try:
            if form == "power":
                res[out] = y[out] - fit_law(rank[~out], length[~out], y[~out]).predict(rank[out], length[out])
            else:
                res[out] = y[out] - fit_saturating(rank[~out], length[~out], li[~out], y[~out]).predict(rank[out], length[out], li[out])
        except ValueError:
            return None, None
    m = mape_of(res, y)
    return (m if math.isfinite(m) else None), float(np.sqrt(np.mean(res**2)))


def compare_forms(rank: Any, length: Any, loss_init: Any, delta: Any) -> tuple[FormFit, FormFit]:
    """(power law, saturating law), each fitted to all the points, with AIC, BIC and held-out length error."""
    r, ell, li, y = (np.asarray(v, float) for v in (rank, length, loss_init, delta))
    pw = fit_law(r, ell, y)
    aic, bic = information(float((pw.residuals**2).sum()), len(y), 4)  # type: ignore[operator]
    hm, hr = _heldout(r, ell, li, y, "power")
    power = FormFit("power", pw.params(), 4, len(y), pw.r2, pw.mape, aic, bic, hm, hr)
    st = fit_saturating(r, ell, li, y)
    aic, bic = information(st.rss, len(y), 3)
    hm, hr = _heldout(r, ell, li, y, "saturating")
    sat = FormFit("saturating", {"k": st.k, "a": st.a, "g": st.g}, 3, len(y), st.r2, st.mape, aic, bic, hm, hr)
    return power, sat
