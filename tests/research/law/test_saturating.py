"""The saturating alternative to the power law (memft.research.law.saturating): exact recovery, its ceiling, AIC/BIC
by hand, and the two forms compared on points that follow each."""

import math

import numpy as np
import pytest

from memft.research.law import compare_forms, fit_saturating, information, saturating

RANKS = [1, 2, 4, 8] * 4
LENGTHS = [16] * 4 + [64] * 4 + [160] * 4 + [320] * 4


def test_fit_recovers_a_saturating_law_with_saturated_points():
    li = np.full(16, 12.0)
    d = saturating(RANKS, LENGTHS, li, 20.0, 1.2, 0.9)
    assert (d >= 0.95 * li).sum() >= 3  # points at the ceiling are fitted, not dropped
    f = fit_saturating(RANKS, LENGTHS, li, d)
    assert (round(f.k, 6), round(f.a, 6), round(f.g, 6), round(f.r2, 9)) == (20.0, 1.2, 0.9, 1.0)
    assert f.final_loss(64, 16, 12.0) > 0 and f.predict(10**6, 16, 12.0) <= 12.0  # a ceiling: never past L_init


def test_rank_for_solves_the_target_by_hand():
    f = fit_saturating(RANKS, LENGTHS, [12.0] * 16, saturating(RANKS, LENGTHS, 12.0, 20.0, 1.2, 0.9))
    # L_init·exp(−k·r^a·ℓ^(−g)) = ln 2  ⇔  r = (ln(12/ln 2)·ℓ^0.9/20)^(1/1.2); ℓ = 64: (2.8515·42.22/20)^(1/1.2) = 6.020^0.8333 = 4.46
    r = f.rank_for(64, 12.0, math.log(2))
    assert r == pytest.approx((math.log(12 / math.log(2)) * 64**0.9 / 20) ** (1 / 1.2), rel=1e-6) and round(r, 2) == 4.46
    assert f.final_loss(r, 64, 12.0) == pytest.approx(math.log(2))


def test_information_criteria_by_hand():
    aic, bic = information(2.0, 10, 3)  # 10·ln(0.2) = −16.0944; + 6; + 3·ln 10 = 6.9078
    assert (round(aic, 4), round(bic, 4)) == (-10.0944, -9.1866)


def test_each_form_wins_on_its_own_points():
    rng = np.random.default_rng(0)
    li = np.full(16, 12.0)
    sat_pts = saturating(RANKS, LENGTHS, li, 20.0, 1.2, 0.9) * (1 + 0.002 * rng.standard_normal(16))
    power, sat = compare_forms(RANKS, LENGTHS, li, sat_pts)
    assert sat.r2 > 0.999 and sat.aic < power.aic - 10 and sat.heldout_mape < power.heldout_mape
    assert (power.p, sat.p, power.n, sat.n) == (4, 3, 16, 16)
    pw_pts = 2.0 * np.power(RANKS, 0.6) * np.power(LENGTHS, -0.4) + 0.1  # far from the ceiling L_init = 12
    pw_pts = pw_pts * (1 + 0.002 * rng.standard_normal(16))
    power, sat = compare_forms(RANKS, LENGTHS, li, pw_pts)
    assert power.r2 > 0.999 and power.aic < sat.aic


def test_bad_points_are_one_line_errors():
    with pytest.raises(ValueError, match="at least 4"):
        fit_saturating([1, 2, 4], [10, 10, 10], [5.0] * 3, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="one distinct value among the ranks"):
        fit_saturating([1] * 5, [10, 20, 30, 40, 50], [5.0] * 5, [1.0, 2.0, 3.0, 3.5, 4.0])
