"""The law and its fit (memft.research.law.fit): known parameters back from clean and noisy points, R² and MAPE by
hand, Huber, unusable points, the grid; and the package's docstring examples."""

import doctest
import importlib
import math
import pkgutil

import numpy as np
import pytest

import memft.research.law as law_mod
from memft.research.law import Grid, fit_law, fit_settings, law

TRUE = {"C": 2.0, "alpha": 0.6, "beta": 0.4, "b": 0.1}
RANKS = [1, 2, 4, 8, 16, 32]
LENGTHS = [64, 128, 256, 512, 1024]


def points(noise: float = 0.0, seed: int = 0, params: dict = TRUE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 6 x 5 grid of (rank, length, ΔL), with multiplicative Gaussian noise of relative size `noise`."""
    r, l = (a.ravel().astype(float) for a in np.meshgrid(RANKS, LENGTHS, indexing="ij"))
    y = law(r, l, **params)
    return r, l, y * (1 + noise * np.random.default_rng(seed).standard_normal(len(y)))


def rows_for(r, l, y, loss_init=4.0, **extra) -> list[dict]:
    return [{"rank": int(a), "length": int(b), "loss_init": loss_init, "loss_final": loss_init - d, "delta_loss": d,
             "records": int(b) // 8, "model": "m", "method": "ot", **extra} for a, b, d in zip(r, l, y)]


@pytest.mark.parametrize("huber", [None, 0.01])
@pytest.mark.parametrize("params", [TRUE, {"C": 2.0, "alpha": 0.63, "beta": 0.37, "b": 0.1}, {"C": 0.5, "alpha": 1.234, "beta": 0.777, "b": -0.05}])
def test_recovers_known_parameters_from_clean_data(params, huber):
    # TRUE lies on the (α, β) grid; the other two do not, so they need the L-BFGS-B refinement.
    f = fit_law(*points(params=params), huber=huber)
    for p, v in params.items():
        assert getattr(f, p) == pytest.approx(v, abs=1e-6), p
    assert f.n == 30 and f.r2 > 1 - 1e-12 and f.mape < 1e-6
    C, a, b_, c = params["C"], params["alpha"], params["beta"], params["b"]
    assert float(f.predict(8, 256)) == pytest.approx(C * 8**a * 256**-b_ + c, rel=1e-6)


def test_recovers_parameters_from_2_percent_noise():
    f = fit_law(*points(noise=0.02, seed=0))
    # Tolerances are ~5 bootstrap standard errors for this design (30 points, 2 % noise).
    assert f.alpha == pytest.approx(0.6, abs=0.02)
    assert f.beta == pytest.approx(0.4, abs=0.02)
    assert f.C == pytest.approx(2.0, rel=0.05)
    assert f.b == pytest.approx(0.1, abs=0.02)
    assert 0.99 < f.r2 < 1.0 and 0.005 < f.mape < 0.03  # the noise is visible, and small


def test_r2_and_mape_match_a_plain_python_computation():
    rank = [1, 2, 4, 1, 2, 4, 8]
    length = [10, 10, 10, 100, 100, 100, 30]
    delta = [1.0, 2.1, 3.9, 0.0, 0.25, 0.45, 2.0]
    f = fit_law(rank, length, delta)
    pred = [f.C * math.pow(r, f.alpha) * math.pow(n, -f.beta) + f.b for r, n in zip(rank, length)]
    res = [d - p for d, p in zip(delta, pred)]
    mean = sum(delta) / len(delta)
    r2 = 1 - sum(e * e for e in res) / sum((d - mean) ** 2 for d in delta)
    nonzero = [(e, d) for e, d in zip(res, delta) if d != 0]  # ΔL = 0 is skipped by MAPE
    mape = sum(abs(e) / abs(d) for e, d in nonzero) / len(nonzero)
    assert f.r2 == pytest.approx(r2, rel=1e-12)
    assert f.mape == pytest.approx(mape, rel=1e-12)
    assert f.residuals == pytest.approx(res, abs=1e-12)
    assert f.r2 < 1.0  # not an exact fit: the comparison is not 1 == 1


def test_huber_is_less_affected_than_least_squares_by_one_outlier():
    r, l, y = points()
    y[7] *= 3.0  # one gross outlier
    errs = {}
    for huber in (None, 0.05):
        f = fit_law(r, l, y, huber=huber)
        errs[huber] = max(abs(f.alpha - 0.6), abs(f.beta - 0.4), abs(f.b - 0.1))
    assert errs[0.05] < 0.01
    assert errs[None] > 0.02


def test_fit_law_rejects_unusable_points():
    r, l, y = points()
    with pytest.raises(ValueError, match="at least 5"):
        fit_law(r[:4], l[:4], y[:4])
    one_rank = r == 4
    with pytest.raises(ValueError, match="distinct value among the ranks"):
        fit_law(r[one_rank], l[one_rank], y[one_rank])
    with pytest.raises(ValueError, match="Huber threshold"):
        fit_law(r, l, y, huber=0.0)
    with pytest.raises(ValueError, match="eps"):  # an option error is raised, not reported as a skipped setting
        fit_settings(rows_for(r, l, y, benchmark="stress", ratio=0.0), eps=1.5)


def test_grid_is_validated():
    with pytest.raises(ValueError, match="Grid.alpha"):
        Grid(alpha=(1.0, 1.0))


def test_docstring_examples():
    mods = [importlib.import_module(f"{law_mod.__name__}.{m.name}") for m in pkgutil.iter_modules(law_mod.__path__)]
    results = [doctest.testmod(m) for m in mods]
    assert sum(r.attempted for r in results) >= 5 and sum(r.failed for r in results) == 0


def test_r_squared_and_number():
    from memft.research.law import number, r_squared

    assert r_squared([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 1.0
    assert r_squared([1.0, 2.0, 3.0], [2.0, 2.0, 2.0]) == 0.0  # the mean as prediction
    assert math.isnan(r_squared([2.0, 2.0], [1.0, 3.0]))
    assert (number("1e-3"), number(True), number(float("inf")), number([1])) == (0.001, 1.0, None, None)
