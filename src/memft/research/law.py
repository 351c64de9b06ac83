"""The Parametric Memory Law: how much loss a LoRA adapter of rank r removes from an answer of ℓ tokens.

    ΔL(r, ℓ) = C · r^α · ℓ^(−β) + b,        ΔL = L_init − L_final

with L the mean loss over target tokens (value tokens + the end token) before and after training, r the LoRA rank
and ℓ the value tokens of the whole record set (rows' `length`). Pure numpy/scipy; no model, no torch.

Which rows are fitted (`select`):
- a row needs finite rank > 0, length > 0, loss_init and ΔL (`delta_loss`, or loss_init − loss_final when
  delta_loss is missing); rows without them are dropped;
- a row is *saturated* when ΔL ≥ (1 − ε)·L_init, i.e. L_final ≤ ε·L_init: the adapter learned (almost) everything,
  so ΔL is capped by L_init and no longer measures capacity. Saturated rows are dropped (ε = 0.05 by default).

Fitting (`fit_law`) is variable projection: for fixed (α, β) the model is linear in (C, b) with the feature
x = r^α·ℓ^(−β), so (C, b) are solved exactly (least squares, or Huber by IRLS); the projected loss is searched on
an (α, β) grid and refined with L-BFGS-B inside the grid's bounds.

Settings (`fit_settings`) follow the paper's table: "r0" … "r100" per stress ratio ρ (in percent), "Combined" (all
stress rows), "PhoneBook", and any other benchmark under its own name; one set per (model, method). A setting
that cannot be fitted is kept as an entry whose "skipped" field says why (fitted ones have "skipped": None), so a
table keeps its rows in order and shows the reason.

The planner (`plan_rank`) inverts the law: the smallest rank whose predicted final loss L_init − ΔL(r, ℓ) is
below a target (ln 2 by default: a mean target probability above one half).

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize

from memft.errors import ConfigError
from memft.metrics import L_CRIT

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
    """A fitted law. `residuals` = ΔL − ΔL̂ per point [n]; `mape` is a fraction (0.05 = 5 %)."""

    C: float
    alpha: float
    beta: float
    b: float
    r2: float
    mape: float
    n: int
    residuals: np.ndarray = field(repr=False)
    huber: float | None = None

    def predict(self, rank: Any, length: Any) -> Any:
        return law(rank, length, self.C, self.alpha, self.beta, self.b)

    def params(self) -> dict[str, float]:
        return {p: getattr(self, p) for p in PARAMS}


# ----------------------------------------------------------------------------------------------------------------
# rows


def delta_loss(row: dict[str, Any]) -> float | None:
    """A row's ΔL: `delta_loss`, or loss_init − loss_final when it is missing (None when neither is there)."""
    d = row.get("delta_loss")
    if d is None and row.get("loss_init") is not None and row.get("loss_final") is not None:
        d = row["loss_init"] - row["loss_final"]
    return d


def number(v: Any) -> float | None:
    """A finite float, or None for None / NaN / infinity / non-numbers (how rows and fits are read everywhere).

    >>> number("0.5"), number(None), number(float("nan")), number("x")
    (0.5, None, None, None)
    """
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _finite(v: Any) -> bool:
    return number(v) is not None


def _complete(row: dict[str, Any]) -> bool:
    try:
        vals = (row.get("rank"), row.get("length"), row.get("loss_init"), delta_loss(row))
    except TypeError:  # a non-numeric loss
        return False
    return all(_finite(v) for v in vals) and float(row["rank"]) > 0 and float(row["length"]) > 0


def saturated(row: dict[str, Any], eps: float = 0.05) -> bool:
    """ΔL ≥ (1 − ε)·L_init: the run learned (almost) everything, so ΔL no longer reflects capacity."""
    d, li = delta_loss(row), row.get("loss_init")
    if d is None or li is None:
        raise ConfigError(f"saturated: row needs loss_init and delta_loss (or loss_final); got {row!r}")
    return d >= (1.0 - eps) * li


def _check_options(eps: float, huber: float | None = None) -> None:
    if not 0.0 <= eps < 1.0:
        raise ConfigError(f"eps: the saturation margin is a fraction in [0, 1); got {eps}")
    if huber is not None and not huber > 0:
        raise ConfigError(f"huber: the Huber threshold is a positive ΔL; got {huber}")


def select(rows: Iterable[dict[str, Any]], eps: float = 0.05) -> list[dict[str, Any]]:
    """The rows the law is fitted to: complete (see module docstring) and not saturated."""
    _check_options(eps)
    return [r for r in rows if _complete(r) and not saturated(r, eps)]


def _arrays(rows: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.array([float(r["rank"]) for r in rows]),
        np.array([float(r["length"]) for r in rows]),
        np.array([float(delta_loss(r)) for r in rows]),  # type: ignore[arg-type]
    )


# ----------------------------------------------------------------------------------------------------------------
# fitting


def _check(rank: np.ndarray, length: np.ndarray, delta: np.ndarray) -> None:
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


def _fit_params(rank: np.ndarray, length: np.ndarray, y: np.ndarray, huber: float | None, grid: Grid) -> tuple[float, float, float, float]:
    lnr, lnl = np.log(rank), np.log(length)
    mr, ml = lnr.mean(), lnl.mean()  # centring keeps the feature O(1) whatever the units
    Cc, alpha, beta, b = _fit(lnr - mr, lnl - ml, y, huber, grid)
    return Cc * math.exp(-alpha * mr + beta * ml), alpha, beta, b


def _mape(resid: np.ndarray, y: np.ndarray) -> float:
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
    _check(r, l, y)
    _check_options(0.0, huber)
    C, alpha, beta, b = _fit_params(r, l, y, huber, grid)
    pred = law(r, l, C, alpha, beta, b)
    return LawFit(C, alpha, beta, b, r_squared(y, pred), _mape(y - pred, y), len(y), y - pred, huber)


def r_squared(y: Any, pred: Any) -> float:
    """R² = 1 − SS_res/SS_tot of predictions `pred` [n] for measured `y` [n]; nan when y is constant.

    >>> r_squared([1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    0.5
    """
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - pred) ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")


# Resamples start from a coarser grid (step 0.15) than a fit (step 0.05): L-BFGS-B refines either way, and the
# grid only has to land in the right basin; this makes a 200-resample bootstrap ~10x cheaper.
BOOT_GRID = Grid(n=21)


def bootstrap_samples(rank: Any, length: Any, delta: Any, n_boot: int = 200, seed: int = 0, huber: float | None = None,
                      grid: Grid = BOOT_GRID) -> np.ndarray:
    """Parameters (C, α, β, b) [m, 4] refitted on `n_boot` resamples of the points (with replacement).

    Resamples that cannot be fitted (fewer than 2 distinct ranks or lengths, constant ΔL) are skipped, so m ≤ n_boot.
    """
    r, l, y = (np.asarray(v, float) for v in (rank, length, delta))
    _check(r, l, y)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        if len(np.unique(r[i])) < 2 or len(np.unique(l[i])) < 2 or np.ptp(y[i]) == 0:
            continue
        out.append(_fit_params(r[i], l[i], y[i], huber, grid))
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


def leave_one_length_out(rank: Any, length: Any, delta: Any, huber: float | None = None) -> dict[str, Any]:
    """Predict every distinct ℓ from a fit to the other lengths: pooled held-out MAPE and RMSE.

    Needs ≥ 3 distinct lengths (each fit needs 2); otherwise, or when a fold cannot be fitted, the values are None
    and "reason" says why. MAPE skips points with ΔL = 0.
    """
    r, l, y = (np.asarray(v, float) for v in (rank, length, delta))
    lengths = np.unique(l)
    if len(lengths) < 3:
        return {"mape": None, "rmse": None, "folds": 0, "reason": f"{len(lengths)} distinct lengths; leave-one-length-out needs 3"}
    resid = np.empty_like(y)
    for ln in lengths:
        out = l == ln
        try:
            f = fit_law(r[~out], l[~out], y[~out], huber)
        except ValueError as e:
            return {"mape": None, "rmse": None, "folds": 0, "reason": f"fold without ℓ={ln:g}: {e}"}
        resid[out] = y[out] - f.predict(r[out], l[out])
    mape = _mape(resid, y)
    return {"mape": mape if math.isfinite(mape) else None, "rmse": float(np.sqrt(np.mean(resid**2))), "folds": len(lengths), "reason": None}


# ----------------------------------------------------------------------------------------------------------------
# settings


def fit_rows(rows: Sequence[dict[str, Any]], setting: str, eps: float = 0.05, n_boot: int = 200, seed: int = 0,
             huber: float | None = None) -> dict[str, Any]:
    """One setting's fit as a JSON-able dict (parameters, 95 % bootstrap intervals, fit quality, held-out error).

    "samples" keeps the bootstrap parameter vectors [[C, alpha, beta, b], …] for `plan_rank`'s uncertainty.
    Raises ConfigError when the selected rows cannot be fitted.
    """
    used = select(rows, eps)
    n_incomplete = sum(not _complete(r) for r in rows)
    r, l, y = _arrays(used)
    try:
        f = fit_law(r, l, y, huber)
    except ValueError as e:
        raise ConfigError(f"{setting}: {len(used)} usable rows of {len(rows)} ({n_incomplete} incomplete, "
                          f"{len(rows) - len(used) - n_incomplete} saturated at eps={eps}): {e}") from None
    samples = bootstrap_samples(r, l, y, n_boot, seed, huber) if n_boot > 0 else np.empty((0, 4))
    ci = intervals(samples) if len(samples) else {p: (None, None) for p in PARAMS}
    lolo = leave_one_length_out(r, l, y, huber)
    return {
        "setting": setting,
        **{p: float(v) for p, v in f.params().items()},
        **{f"{p}_ci": [number(ci[p][0]), number(ci[p][1])] for p in PARAMS},
        "r2": number(f.r2),
        "mape": number(f.mape),
        "n": f.n,
        "n_excluded": len(rows) - len(used),
        "n_saturated": len(rows) - len(used) - n_incomplete,
        "heldout_mape": lolo["mape"],
        "heldout_rmse": lolo["rmse"],
        "heldout_reason": lolo["reason"],
        "loss_init_median": float(np.median([float(x["loss_init"]) for x in used])),
        "eps": eps,
        "huber": huber,
        "n_boot": len(samples),
        "samples": samples.tolist(),
        "skipped": None,
    }


# Setting names (the paper's table), built here only; `in_setting` is their one reader.
COMBINED, PHONEBOOK = "Combined", "PhoneBook"


def ratio_setting(ratio: float) -> str:
    """The setting name of stress rows at replacement ratio ρ: "r0" … "r100".

    >>> ratio_setting(0.5), ratio_setting(1.0), ratio_setting(30)
    ('r50', 'r100', 'r30')
    """
    return f"r{round(100 * ratio if ratio <= 1 else ratio)}"  # like `memft bench --ratios`: above 1 is a percentage


def setting_names(row: dict[str, Any]) -> list[str]:
    """Every setting a row is fitted in: its stress ratio's and Combined (stress), PhoneBook, or its benchmark."""
    bench = row.get("benchmark")
    if bench == "stress":
        ratio = row.get("ratio")
        return ([ratio_setting(float(ratio))] if _finite(ratio) else []) + [COMBINED]
    return [PHONEBOOK] if bench == "phonebook" else [str(bench)]


def in_setting(row: dict[str, Any], setting: str) -> bool:
    """Whether `fit_settings` fits `row` in the setting named `setting`."""
    return setting in setting_names(row)


def _settings(rows: Sequence[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    stress = [r for r in rows if r.get("benchmark") == "stress"]
    ratios = sorted({float(r["ratio"]) for r in stress if _finite(r.get("ratio"))})
    names = dict.fromkeys(ratio_setting(rho) for rho in ratios)  # in ratio order, each name once
    out = [(name, [r for r in stress if in_setting(r, name)]) for name in names]
    if stress:
        out.append((COMBINED, stress))
    pb = [r for r in rows if r.get("benchmark") == "phonebook"]
    if pb:
        out.append((PHONEBOOK, pb))
    for name in sorted({str(r.get("benchmark")) for r in rows} - {"stress", "phonebook"}):
        out.append((name, [r for r in rows if in_setting(r, name)]))
    return out


def fit_settings(rows: Sequence[dict[str, Any]], eps: float = 0.05, n_boot: int = 200, seed: int = 0,
                 huber: float | None = None) -> list[dict[str, Any]]:
    """One fit per setting and (model, method), in the paper's table order: r0 … r100, Combined, PhoneBook, others.

    Every entry has "setting", "model", "method" and "skipped": None for a fit, else the reason it could not be
    fitted (then "n" and "n_excluded" count the rows, and no parameters are given).
    """
    _check_options(eps, huber)  # before any fit: a bad option is an error, not a skipped setting
    groups: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for r in rows:  # a row without a model or method is grouped (and reported) under None, never the string "None"
        groups.setdefault((r.get("model"), r.get("method")), []).append(r)
    out = []
    for (model, method), grows in sorted(groups.items(), key=lambda g: (str(g[0][0]), str(g[0][1]))):
        for name, srows in _settings(grows):
            try:
                entry = fit_rows(srows, name, eps, n_boot, seed, huber)
            except ValueError as e:
                used = len(select(srows, eps))
                entry = {"setting": name, "n": used, "n_excluded": len(srows) - used, "skipped": str(e)}
            out.append({"model": model, "method": method, **entry})
    return out


def fit_from_json(entry: dict[str, Any]) -> dict[str, Any]:
    """A fit entry read from a file: fits written before memft 0.2 stored a missing model or method as the string
    "None"; it reads as None, as fit_settings gives it now."""
    return {**entry, **{k: None for k in ("model", "method") if entry.get(k) == "None"}}


def read_fits(path: str | Path) -> list[dict[str, Any]]:
    """The fits of a `memft law fit --json` file; ConfigError saying how to make one when it is missing or foreign."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such law fit; make one with `memft law fit STORE.db --json {path}`")
    try:
        fits = json.loads(path.read_text(encoding="utf-8"))["fits"]
        return [fit_from_json(f) for f in fits]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        raise ConfigError(f"{path}: not a law fit file (expected {{\"fits\": [...]}} from `memft law fit --json`)") from None


def pick_fit(path: str | Path, setting: str, method: str | None = None) -> dict[str, Any]:
    """The first usable (not skipped) fit of `setting` (and `method`, when given) in a law fit file."""
    fits = read_fits(path)
    ok = [f for f in fits if f.get("setting") == setting and not f.get("skipped") and (method is None or f.get("method") == method)]
    if not ok:
        have = sorted({f"{f.get('setting')}/{f.get('method')}" for f in fits if not f.get("skipped")})
        raise ConfigError(f"{path}: no usable fit for setting {setting!r}" + (f" method {method!r}" if method else "") + f"; it has {', '.join(have) or 'none'}")
    return ok[0]


# ----------------------------------------------------------------------------------------------------------------
# capacity planner


def length_for_records(n_records: int, tokens_per_record: float) -> float:
    """ℓ for `--records N`: N × (mean value tokens per record), the unit rows' `length` is in."""
    if n_records < 1 or not tokens_per_record > 0:
        raise ConfigError(f"--records {n_records}: need ≥ 1 record and a positive mean tokens per record (got {tokens_per_record})")
    return float(n_records) * float(tokens_per_record)


def tokens_per_record(rows: Sequence[dict[str, Any]]) -> float:
    """Mean value tokens per record over rows that carry both `length` and `records` (Σ length / Σ records)."""
    ok = [r for r in rows if r.get("length") and r.get("records")]
    if not ok:
        raise ConfigError("tokens_per_record: no row has both 'length' and 'records'; give the tokens per record explicitly")
    return sum(float(r["length"]) for r in ok) / sum(float(r["records"]) for r in ok)


def _min_rank(p: np.ndarray, length: float, need: float, ranks: np.ndarray) -> np.ndarray:
    """Smallest entry of `ranks` with ΔL(r, ℓ) > need, per parameter row p [m, 4]; inf where none is."""
    dl = law(ranks[None, :], length, p[:, :1], p[:, 1:2], p[:, 2:3], p[:, 3:4])  # [m, R]
    hit = dl > need
    return np.where(hit.any(1), ranks[np.argmax(hit, 1)], np.inf)


def _rank_or_none(x: float) -> int | None:
    return int(x) if math.isfinite(x) else None


def plan_rank(fit: dict[str, Any], length: float, loss_init: float | None = None, target: float = L_CRIT,
              max_rank: int = 4096) -> dict[str, Any]:
    """Smallest rank r ≥ 1 whose predicted final loss L_init − ΔL(r, ℓ) is below `target`.

    Returns "rank" (smallest integer), "rank_pow2" (smallest power of two ≥ rank; the law is increasing in r),
    "loss_final_pred" (the predicted final loss at "rank"), and the rank under the fit's
    uncertainty: "rank_optimistic"/"rank_pessimistic" are the 2.5 %/97.5 % quantiles of the rank each bootstrap
    sample needs (samples that need more than max_rank count as infinitely large; None = beyond max_rank), with
    "p_reachable" the fraction of samples reaching the target within max_rank. A fit without samples uses the 16
    corners of its confidence box instead (min and max): wider, since C, α, β and b are strongly correlated.
    The uncertainty of L_init itself is not included. rank is None, with "reason", when the fit's ΔL does not grow
    with rank (C·α ≤ 0) or when max_rank does not reach the target.

    >>> fit = {"C": 2.0, "alpha": 0.5, "beta": 0.5, "b": 0.0, "loss_init_median": 3.0}
    >>> p = plan_rank(fit, 1024)
    >>> p["rank"], p["rank_pow2"]
    (1363, 2048)
    """
    if not length > 0 or max_rank < 1:
        raise ConfigError(f"plan_rank: need length > 0 and max_rank ≥ 1; got length={length}, max_rank={max_rank}")
    li = fit.get("loss_init_median") if loss_init is None else loss_init
    if li is None:
        raise ConfigError("plan_rank: the fit has no loss_init_median; pass loss_init")
    need = float(li) - target  # L_init − ΔL < target  ⇔  ΔL > L_init − target
    out: dict[str, Any] = {"length": float(length), "loss_init": float(li), "target": target, "max_rank": max_rank,
                           "rank": None, "rank_pow2": None, "loss_final_pred": None, "rank_optimistic": None, "rank_pessimistic": None,
                           "p_reachable": None, "uncertainty": None, "reason": None}
    best = np.array([[fit[p] for p in PARAMS]], float)
    ranks = np.arange(1, max_rank + 1, dtype=float)
    if best[0, 0] * best[0, 1] <= 0:
        out["reason"] = f"ΔL does not grow with rank in this fit (C={best[0, 0]:.3g}, alpha={best[0, 1]:.3g}); no rank can be planned from it"
        return out
    r = float(_min_rank(best, length, need, ranks)[0])
    if not math.isfinite(r):
        pred = float(li - law(max_rank, length, *best[0]))
        out["reason"] = f"even rank {max_rank} predicts a final loss of {pred:.3g} ≥ target {target:.3g} at ℓ={length:g}"
    else:
        out.update(rank=int(r), rank_pow2=2 ** math.ceil(math.log2(r)), loss_final_pred=float(li - law(r, length, *best[0])))
    if fit.get("samples"):
        need_r = _min_rank(np.asarray(fit["samples"], float), length, need, ranks)
        lo, hi = np.percentile(need_r, 2.5, method="lower"), np.percentile(need_r, 97.5, method="higher")
        out.update(uncertainty="bootstrap samples, 2.5 %–97.5 %", p_reachable=float(np.isfinite(need_r).mean()),
                   rank_optimistic=_rank_or_none(float(lo)), rank_pessimistic=_rank_or_none(float(hi)))
    elif all(fit.get(f"{p}_ci") and None not in fit[f"{p}_ci"] for p in PARAMS):
        corners = np.array(np.meshgrid(*[fit[f"{p}_ci"] for p in PARAMS], indexing="ij")).reshape(4, -1).T  # [16, 4]
        need_r = _min_rank(corners, length, need, ranks)
        out.update(uncertainty="confidence-box corners, min–max", p_reachable=None,
                   rank_optimistic=_rank_or_none(float(need_r.min())), rank_pessimistic=_rank_or_none(float(need_r.max())))
    return out
