import doctest
import json
import math

import numpy as np
import pytest

import memft.research.law as law_mod
from memft.research.law import (
    Grid,
    bootstrap,
    fit_law,
    fit_rows,
    fit_settings,
    law,
    leave_one_length_out,
    length_for_records,
    plan_rank,
    saturated,
    select,
    tokens_per_record,
)

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


def test_bootstrap_intervals_contain_the_true_values():
    ci = bootstrap(*points(noise=0.02, seed=0), n_boot=100, seed=0)
    widths = {"C": 0.5, "alpha": 0.1, "beta": 0.1, "b": 0.1}
    for p, v in TRUE.items():
        lo, hi = ci[p]
        assert lo <= v <= hi, (p, ci[p])
        assert 0 < hi - lo < widths[p], (p, ci[p])


def test_leave_one_length_out():
    clean = leave_one_length_out(*points())
    assert clean["folds"] == 5 and clean["reason"] is None
    assert clean["mape"] < 1e-8 and clean["rmse"] < 1e-8
    noisy = leave_one_length_out(*points(noise=0.02, seed=0))
    assert 0.005 < noisy["mape"] < 0.05
    r, l, y = points()
    two = np.isin(l, [64, 128])
    few = leave_one_length_out(r[two], l[two], y[two])
    assert few["mape"] is None and few["rmse"] is None and "needs 3" in few["reason"]


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


def test_saturation_rule_drops_exactly_the_right_rows():
    rows = [
        {"rank": 1, "length": 64, "loss_init": 2.0, "delta_loss": 1.85},  # 0: kept (1.85 < 0.95 * 2 = 1.9)
        {"rank": 1, "length": 64, "loss_init": 2.0, "delta_loss": 1.95},  # 1: saturated
        {"rank": 1, "length": 64, "loss_init": 2.0, "delta_loss": None, "loss_final": 0.05},  # 2: ΔL 1.95, saturated
        {"rank": 1, "length": 64, "loss_init": 2.0, "delta_loss": None, "loss_final": 0.5},  # 3: ΔL 1.5, kept
        {"rank": None, "length": 64, "loss_init": 2.0, "delta_loss": 1.0},  # 4: incomplete
        {"rank": 1, "length": 64, "loss_init": float("nan"), "delta_loss": 1.0},  # 5: incomplete
        {"rank": 1, "length": 64, "loss_init": 2.0},  # 6: incomplete
        {"rank": 0, "length": 64, "loss_init": 2.0, "delta_loss": 1.0},  # 7: rank must be > 0
    ]
    assert select(rows) == [rows[0], rows[3]]
    assert saturated(rows[1]) and saturated(rows[2]) and not saturated(rows[0])
    assert saturated(rows[0], eps=0.1)  # 1.85 >= 0.9 * 2
    assert select(rows, eps=0.1) == [rows[3]]
    with pytest.raises(ValueError, match="eps"):
        select(rows, eps=1.0)


def test_fit_settings_names_settings_like_the_paper():
    r, l, _ = points()
    pb = {"C": 1.0, "alpha": 0.5, "beta": 0.3, "b": 0.0}
    rows = (
        rows_for(*points(noise=0.01, seed=1), benchmark="stress", ratio=0.0)
        + rows_for(*points(noise=0.01, seed=2, params={**TRUE, "C": 1.5}), benchmark="stress", ratio=1.0)
        + rows_for(r[:3], l[:3], law(r[:3], l[:3], **TRUE), benchmark="stress", ratio=0.5)  # too few points
        + rows_for(*points(params=pb), benchmark="phonebook", ratio=None)
        + rows_for([4.0], [64.0], [3.9], benchmark="stress", ratio=0.0)  # saturated: 3.9 >= 0.95 * 4
    )
    fits = fit_settings(rows, n_boot=10)
    assert [f["setting"] for f in fits] == ["r0", "r50", "r100", "Combined", "PhoneBook"]
    by = {f["setting"]: f for f in fits}
    assert all(f["model"] == "m" and f["method"] == "ot" for f in fits)
    assert "at least 5" in by["r50"]["skipped"] and "alpha" not in by["r50"]
    assert by["r0"]["skipped"] is None and by["r0"]["n"] == 30 and by["r0"]["n_excluded"] == 1 and by["r0"]["n_saturated"] == 1
    assert by["r0"]["alpha"] == pytest.approx(0.6, abs=0.02) and by["r100"]["C"] == pytest.approx(1.5, rel=0.05)
    assert by["PhoneBook"]["beta"] == pytest.approx(0.3, abs=1e-6) and by["PhoneBook"]["n"] == 30
    assert by["Combined"]["n"] == 63 and by["Combined"]["n_excluded"] == 1
    assert by["r0"]["loss_init_median"] == 4.0 and by["r0"]["n_boot"] == 10
    lo, hi = by["r0"]["alpha_ci"]
    assert lo <= by["r0"]["alpha"] <= hi
    json.dumps(fits, allow_nan=False)  # JSON-able: plain floats, no NaN


def hand_rank(C, alpha, beta, b, loss_init, length, target=math.log(2)):
    """Solve C·r^α·ℓ^(−β) + b = L_init − target for r."""
    return ((loss_init - target - b) * length**beta / C) ** (1 / alpha)


def test_planner_matches_a_hand_solved_case():
    fit = {"C": 2.0, "alpha": 0.5, "beta": 0.5, "b": 0.05, "loss_init_median": 3.0}
    for length in (100, 1000, 1024, 3000):
        r_star = hand_rank(2.0, 0.5, 0.5, 0.05, 3.0, length)
        assert r_star != int(r_star)
        p = plan_rank(fit, length)
        assert p["rank"] == math.ceil(r_star), length
        assert p["rank_pow2"] == 2 ** math.ceil(math.log2(math.ceil(r_star)))
        assert p["loss_final_pred"] < math.log(2) and p["reason"] is None
    # ℓ = 1024: r* = ((3 − 0.693147 − 0.05) · 32 / 2)² = 36.10965² = 1303.9… → 1304; 2048 as a power of two
    p = plan_rank(fit, 1024)
    assert (p["rank"], p["rank_pow2"]) == (1304, 2048)
    # loss_init overrides the fit's median; a lower start needs a smaller rank
    assert plan_rank(fit, 1024, loss_init=2.0)["rank"] == math.ceil(hand_rank(2.0, 0.5, 0.5, 0.05, 2.0, 1024))


def test_planner_rank_is_monotone_in_length_with_uncertainty():
    fit = fit_rows(rows_for(*points(noise=0.02, seed=0), benchmark="stress", ratio=0.0), "r0", n_boot=20)
    plans = [plan_rank(fit, float(n), max_rank=1 << 14) for n in np.geomspace(64, 1e6, 25)]
    ranks = [p["rank"] for p in plans]
    assert ranks[0] is not None and ranks[-1] is None and "even rank 16384" in plans[-1]["reason"]
    reached = [r for r in ranks if r is not None]
    assert reached == sorted(reached) and len(set(reached)) > 5
    assert ranks[len(reached):] == [None] * (len(ranks) - len(reached))  # once out of reach, it stays out
    for p in plans[: len(reached)]:
        assert p["uncertainty"].startswith("bootstrap")
        assert p["rank_optimistic"] <= p["rank"]
        assert p["rank_pessimistic"] is None or p["rank"] <= p["rank_pessimistic"]


def test_planner_uses_confidence_corners_without_samples():
    fit = {**TRUE, "loss_init_median": 4.0, "C_ci": [1.9, 2.1], "alpha_ci": [0.58, 0.62], "beta_ci": [0.39, 0.41], "b_ci": [0.08, 0.12]}
    p = plan_rank(fit, 4096)
    assert p["uncertainty"].startswith("confidence-box")
    # optimistic corner: the largest C, α, b and the smallest β; pessimistic: the reverse
    assert p["rank_optimistic"] == math.ceil(hand_rank(2.1, 0.62, 0.39, 0.12, 4.0, 4096))
    assert p["rank_pessimistic"] == math.ceil(hand_rank(1.9, 0.58, 0.41, 0.08, 4.0, 4096))
    assert p["rank_optimistic"] < p["rank"] < p["rank_pessimistic"]


def test_planner_says_why_no_rank_works():
    fit = {**TRUE, "loss_init_median": 4.0}
    p = plan_rank(fit, 1e6, max_rank=8)
    assert p["rank"] is None and p["rank_pow2"] is None and "even rank 8" in p["reason"]
    flat = plan_rank({**fit, "alpha": -0.2}, 64)
    assert flat["rank"] is None and "does not grow with rank" in flat["reason"]
    with pytest.raises(ValueError, match="loss_init"):
        plan_rank(TRUE, 64)


def test_records_helpers():
    assert length_for_records(500, 6.5) == 3250.0
    assert tokens_per_record([{"length": 600, "records": 100}, {"length": 1400, "records": 100}, {"length": None}]) == 10.0
    with pytest.raises(ValueError, match="--records 0"):
        length_for_records(0, 6.5)


def test_grid_is_validated():
    with pytest.raises(ValueError, match="Grid.alpha"):
        Grid(alpha=(1.0, 1.0))


def test_docstring_examples():
    import importlib
    import pkgutil

    mods = [importlib.import_module(f"{law_mod.__name__}.{m.name}") for m in pkgutil.iter_modules(law_mod.__path__)]
    results = [doctest.testmod(m) for m in mods]
    assert sum(r.attempted for r in results) >= 5 and sum(r.failed for r in results) == 0


def test_setting_names_are_built_and_read_by_one_rule():
    from memft.research.law import COMBINED, PHONEBOOK, in_setting, ratio_setting, setting_names

    assert [ratio_setting(x) for x in (0.0, 0.25, 1.0, 50)] == ["r0", "r25", "r100", "r50"]
    assert setting_names({"benchmark": "stress", "ratio": 0.5}) == ["r50", COMBINED]
    assert setting_names({"benchmark": "stress", "ratio": None}) == [COMBINED]
    assert setting_names({"benchmark": "phonebook"}) == [PHONEBOOK] and setting_names({"benchmark": "rule"}) == ["rule"]
    # the rows fit_settings fits in a setting are exactly those in_setting says belong to it
    rows = (rows_for(*points(noise=0.01, seed=1), benchmark="stress", ratio=0.0)
            + rows_for(*points(noise=0.01, seed=2), benchmark="stress", ratio=1.0)
            + rows_for(*points(noise=0.01, seed=3), benchmark="rule", ratio=None))
    for f in fit_settings(rows, n_boot=0):
        assert f["n"] + f["n_excluded"] == sum(in_setting(r, f["setting"]) for r in rows), f["setting"]


def test_a_missing_model_is_none_and_old_files_saying_none_read_as_none(tmp_path):
    from memft.research.law import pick_fit, read_fits

    rows = [{k: v for k, v in r.items() if k != "model"} for r in rows_for(*points(noise=0.01), benchmark="phonebook")]
    (fit,) = fit_settings(rows, n_boot=0)
    assert fit["model"] is None and fit["method"] == "ot" and fit["setting"] == "PhoneBook"
    old = tmp_path / "fit.json"  # as fit files of memft 0.1.0 stored it
    old.write_text(json.dumps({"fits": [{**fit, "model": "None", "method": "None"}]}))
    assert read_fits(old)[0]["model"] is None and read_fits(old)[0]["method"] is None
    assert pick_fit(old, "PhoneBook")["C"] == fit["C"]
    with pytest.raises(ValueError, match="no usable fit for setting 'r0'; it has PhoneBook/None"):
        pick_fit(old, "r0")
    old.write_text("[]")
    with pytest.raises(ValueError, match="not a law fit file"):
        read_fits(old)


def test_r_squared_and_number():
    from memft.research.law import number, r_squared

    assert r_squared([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 1.0
    assert r_squared([1.0, 2.0, 3.0], [2.0, 2.0, 2.0]) == 0.0  # the mean as prediction
    assert math.isnan(r_squared([2.0, 2.0], [1.0, 3.0]))
    assert (number("1e-3"), number(True), number(float("inf")), number([1])) == (0.001, 1.0, None, None)
