"""Fitting ΔL(r, ℓ) = C · r^α · ℓ^(−β) + b to points by variable projection: for fixed (α, β) the model is linear in
(C, b), solved exactly (least squares, or Huber by IRLS); the projected loss is searched on an (α, β) grid and refined
with L-BFGS-B inside the grid's bounds.

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize

from memft.errors import ConfigError
from memft.research.law.select import check_options


PARAMS = ("C", "alpha", "beta", "b")
MIN_POINTS = 5


@dataclass(frozen=True)
class Grid:
    """The (α, β) search grid: `n` evenly spaced values per axis; the refinement stays inside these bounds."""

    alpha: tuple[float, float] = (-1.0, 2.0)
    beta: tuple[float, float] = (-1.0, 2.0)
    n: int = 61

    def __post_init__(self) -> None:
        for name in ("alpha", "beta"):
            lo, hi = getattr(self, name)
            if not lo < hi:
                raise ConfigError(f"Grid.{name}: need lo < hi, got ({lo}, {hi})")
        if self.n < 2:
            raise ConfigError(f"Grid.n: need at least 2 values per axis, got {self.n}")


def law(rank: Any, length: Any, C: float, alpha: float, beta: float, b: float) -> Any:
    """ΔL(r, ℓ) = C·r^α·ℓ^(−β) + b, elementwise (floats or arrays)."""
    return C * np.power(np.asarray(rank, float), alpha) * np.power(np.asarray(length, float), -beta) + b


@dataclass
class LawFit:
    """A fitted law: its parameters and how well it fits. `residuals` = ΔL − ΔL̂ per point [n] (None for a fit read
    from a file, which keeps no residuals); `mape` is a fraction (0.05 = 5 %); r2 and mape are nan when undefined.
    A law fit file's entry (memft.research.law.files.LawFitEntry) holds one, with the intervals and counts around it."""

    C: float
    alpha: float
    beta: float
    b: float
    r2: float
    mape: float
    n: int
    residuals: np.ndarray | None = field(default=None, repr=False)
    huber: float | None = None

    def predict(self, rank: Any, length: Any) -> Any:
        return law(rank, length, self.C, self.alpha, self.beta, self.b)

    def params(self) -> dict[str, float]:
        return {p: getattr(self, p) for p in PARAMS}



def check_points(rank: np.ndarray, length: np.ndarray, delta: np.ndarray) -> None:
    if not rank.shape == length.shape == delta.shape or rank.ndim != 1:
        raise ConfigError(f"fit_law: rank, length, delta must be 1-D of one length; got {rank.shape}, {length.shape}, {delta.shape}")
    if len(delta) < MIN_POINTS:
        raise ConfigError(f"fit_law: {len(delta)} points; the law has 4 parameters, so at least {MIN_POINTS} are needed (run more ranks/lengths)")
    if not (np.isfinite(rank).all() and np.isfinite(length).all() and np.isfinite(delta).all()):
        raise ConfigError("fit_law: rank, length and delta must be finite (drop incomplete rows with `select`)")
    if (rank <= 0).any() or (length <= 0).any():
        raise ConfigError("fit_law: ranks and lengths must be positive")
    for name, v in (("ranks", rank), ("lengths", length)):
        if len(np.unique(v)) < 2:
            raise ConfigError(f"fit_law: only one distinct value among the {name} ({v[0]:g}); α and β need at least 2 (vary the {name[:-1]})")
    if np.ptp(delta) == 0:
        raise ConfigError(f"fit_law: ΔL is the same ({delta[0]:g}) at every point; the law is not identifiable")


def _project(X: np.ndarray, y: np.ndarray, huber: float | None, iters: int = 200,
             w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Best (C, b) for each row of features X [G, n] against y [n]: (C [G], b [G], mean loss [G], weights [G, n]).

    Weighted least squares in closed form; Huber repeats it with weights min(1, δ/|resid|) (IRLS, which decreases
    the convex Huber loss monotonically), starting from weights `w` when given. A constant feature gives C = 0.
    """
    w = np.ones_like(X) if w is None or huber is None else w
    C = b = np.full(len(X), np.nan)
    for _ in range(iters if huber is not None else 1):
        sw = w.sum(1)
        xm, ym = (w * X).sum(1) / sw, (w * y[None, :]).sum(1) / sw
        dx = X - xm[:, None]
        sxx = (w * dx * dx).sum(1)
        ok = sxx > 1e-12 * (w * X * X).sum(1)
        C_new = np.where(ok, (w * dx * (y[None, :] - ym[:, None])).sum(1) / np.where(ok, sxx, 1.0), 0.0)
        b_new = ym - C_new * xm
        step = np.abs(C_new - C) + np.abs(b_new - b)
        done = bool((step <= 1e-13 * (np.abs(C_new) + np.abs(b_new)) + 1e-15).all())  # False while C, b are nan
        C, b = C_new, b_new
        if huber is None or done:
            break
        a = np.abs(y[None, :] - C[:, None] * X - b[:, None])
        w = np.where(a <= huber, 1.0, huber / np.maximum(a, 1e-300))
    r = y[None, :] - C[:, None] * X - b[:, None]
    return C, b, _rho(r, huber).mean(1), w


def _rho(r: np.ndarray, huber: float | None) -> np.ndarray:
    if huber is None:
        return 0.5 * r * r
    a = np.abs(r)
    return np.where(a <= huber, 0.5 * r * r, huber * (a - 0.5 * huber))


def _fit(lr: np.ndarray, ll: np.ndarray, y: np.ndarray, huber: float | None, grid: Grid) -> tuple[float, float, float, float]:
    """(C', α, β, b) on centred logs lr = ln r − m_r, ll = ln ℓ − m_ℓ: x = exp(α·lr − β·ll)."""
    A, B = np.meshgrid(np.linspace(*grid.alpha, grid.n), np.linspace(*grid.beta, grid.n), indexing="ij")
    A, B = A.ravel(), B.ravel()
    X = np.exp(A[:, None] * lr[None, :] - B[:, None] * ll[None, :])  # [G, n]
    _, _, loss, _ = _project(X, y, huber, iters=10)  # the grid only has to find the basin
    k = int(np.argmin(loss))
    scale = 1.0 / max(float(np.var(y)), 1e-300)  # objective ~ 1 − R², so L-BFGS-B's tolerances are meaningful

    last: list[np.ndarray | None] = [None]  # IRLS weights of the previous evaluation: a warm start, since L-BFGS-B moves in small steps

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        # Envelope theorem: at the optimal (C, b) the projected gradient is the partial gradient in (α, β).
        x = np.exp(theta[0] * lr - theta[1] * ll)
        C, b, f, last[0] = _project(x[None, :], y, huber, w=last[0])
        r = y - C[0] * x - b[0]
        psi = r if huber is None else np.clip(r, -huber, huber)
        g = np.array([-(psi * C[0] * x * lr).mean(), (psi * C[0] * x * ll).mean()])
        return float(f[0]) * scale, g * scale

    res = minimize(objective, np.array([A[k], B[k]]), jac=True, method="L-BFGS-B", bounds=[grid.alpha, grid.beta],
                   options={"ftol": 1e-13, "gtol": 1e-9, "maxiter": 500})
    theta = res.x if res.fun <= loss[k] * scale else np.array([A[k], B[k]])
    x = np.exp(theta[0] * lr - theta[1] * ll)
    C, b, _, _ = _project(x[None, :], y, huber)
    return float(C[0]), float(theta[0]), float(theta[1]), float(b[0])


def fit_params(rank: np.ndarray, length: np.ndarray, y: np.ndarray, huber: float | None, grid: Grid) -> tuple[float, float, float, float]:
    lnr, lnl = np.log(rank), np.log(length)
    mr, ml = lnr.mean(), lnl.mean()  # centring keeps the feature O(1) whatever the units
    Cc, alpha, beta, b = _fit(lnr - mr, lnl - ml, y, huber, grid)
    return Cc * math.exp(-alpha * mr + beta * ml), alpha, beta, b


def mape_of(resid: np.ndarray, y: np.ndarray) -> float:
    nz = y != 0
    return float(np.mean(np.abs(resid[nz]) / np.abs(y[nz]))) if nz.any() else float("nan")


def fit_law(rank: Sequence[float] | np.ndarray, length: Sequence[float] | np.ndarray, delta: Sequence[float] | np.ndarray,
            huber: float | None = None, grid: Grid = Grid()) -> LawFit:
    """Fit ΔL = C·r^α·ℓ^(−β) + b to points (rank [n], length [n], delta [n]).

    Loss: least squares (huber=None) or Huber with threshold `huber` in units of ΔL. R² = 1 − SS_res/SS_tot and
    MAPE = mean |resid|/|ΔL| use the plain residuals either way; MAPE skips points with ΔL = 0 (nan if all are).
    Raises ConfigError (a ValueError) for < 5 points, < 2 distinct ranks or lengths, or a constant ΔL.

    >>> f = fit_law([1, 2, 4, 1, 2, 4], [10, 10, 10, 100, 100, 100], [1.0, 2.0, 4.0, 0.1, 0.2, 0.4])
    >>> round(f.C, 6), round(f.alpha, 6), round(f.beta, 6), round(f.b, 6), round(f.r2, 6)
    (10.0, 1.0, 1.0, 0.0, 1.0)
    """
    r, l, y = (np.asarray(v, float) for v in (rank, length, delta))
    check_points(r, l, y)
    check_options(0.0, huber)
    C, alpha, beta, b = fit_params(r, l, y, huber, grid)
    pred = law(r, l, C, alpha, beta, b)
    return LawFit(C, alpha, beta, b, r_squared(y, pred), mape_of(y - pred, y), len(y), y - pred, huber)


def r_squared(y: Any, pred: Any) -> float:
    """R² = 1 − SS_res/SS_tot of predictions `pred` [n] for measured `y` [n]; nan when y is constant.

    >>> r_squared([1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    0.5
    """
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - pred) ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")
