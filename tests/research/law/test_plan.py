"""The capacity planner (memft.research.law.plan): hand-solved ranks, monotone in ℓ, its uncertainty, why no rank works."""

import dataclasses
import math

import numpy as np
import pytest

from memft.research.law import LawFitEntry, fit_rows, length_for_records, plan_rank, tokens_per_record
from tests.research.law.test_fit import TRUE, points, rows_for


def entry(**d) -> LawFitEntry:
    """A fit entry as a law fit file would hold it."""
    return LawFitEntry.from_json({"setting": "r100", **d})


def hand_rank(C, alpha, beta, b, loss_init, length, target=math.log(2)):
    """Solve C·r^α·ℓ^(−β) + b = L_init − target for r."""
    return ((loss_init - target - b) * length**beta / C) ** (1 / alpha)


def test_planner_matches_a_hand_solved_case():
    fit = entry(C=2.0, alpha=0.5, beta=0.5, b=0.05, loss_init_median=3.0)
    for length in (100, 1000, 1024, 3000):
        r_star = hand_rank(2.0, 0.5, 0.5, 0.05, 3.0, length)
        assert r_star != int(r_star)
        p = plan_rank(fit, length)
        assert p.rank == math.ceil(r_star), length
        assert p.rank_pow2 == 2 ** math.ceil(math.log2(math.ceil(r_star)))
        assert p.loss_final_pred < math.log(2) and p.reason is None
    # ℓ = 1024: r* = ((3 − 0.693147 − 0.05) · 32 / 2)² = 36.10965² = 1303.9… → 1304; 2048 as a power of two
    p = plan_rank(fit, 1024)
    assert (p.rank, p.rank_pow2) == (1304, 2048)
    assert list(p.to_json()) == ["length", "loss_init", "target", "max_rank", "rank", "rank_pow2", "loss_final_pred",
                                 "rank_optimistic", "rank_pessimistic", "p_reachable", "uncertainty", "reason", "law",
                                 "heldout_mape", "refused"]
    # loss_init overrides the fit's median; a lower start needs a smaller rank
    assert plan_rank(fit, 1024, loss_init=2.0).rank == math.ceil(hand_rank(2.0, 0.5, 0.5, 0.05, 2.0, 1024))


def test_planner_rank_is_monotone_in_length_with_uncertainty():
    fit = fit_rows(rows_for(*points(noise=0.02, seed=0), benchmark="stress", ratio=0.0), "r0", n_boot=20)
    fit = dataclasses.replace(fit, lengths=None, ranks=None)  # the power law's arithmetic, beyond the measured range
    plans = [plan_rank(fit, float(n), max_rank=1 << 14, law_form="power") for n in np.geomspace(64, 1e6, 25)]
    ranks = [p.rank for p in plans]
    assert ranks[0] is not None and ranks[-1] is None and "even rank 16384" in plans[-1].reason
    reached = [r for r in ranks if r is not None]
    assert reached == sorted(reached) and len(set(reached)) > 5
    assert ranks[len(reached):] == [None] * (len(ranks) - len(reached))  # once out of reach, it stays out
    for p in plans[: len(reached)]:
        assert p.uncertainty.startswith("bootstrap")
        assert p.rank_optimistic <= p.rank
        assert p.rank_pessimistic is None or p.rank <= p.rank_pessimistic


def test_planner_uses_confidence_corners_without_samples():
    fit = entry(**TRUE, loss_init_median=4.0, C_ci=[1.9, 2.1], alpha_ci=[0.58, 0.62], beta_ci=[0.39, 0.41], b_ci=[0.08, 0.12])
    p = plan_rank(fit, 4096)
    assert p.uncertainty.startswith("confidence-box")
    # optimistic corner: the largest C, α, b and the smallest β; pessimistic: the reverse
    assert p.rank_optimistic == math.ceil(hand_rank(2.1, 0.62, 0.39, 0.12, 4.0, 4096))
    assert p.rank_pessimistic == math.ceil(hand_rank(1.9, 0.58, 0.41, 0.08, 4.0, 4096))
    assert p.rank_optimistic < p.rank < p.rank_pessimistic


def test_planner_says_why_no_rank_works():
    fit = entry(**TRUE, loss_init_median=4.0)
    p = plan_rank(fit, 1e6, max_rank=8)
    assert p.rank is None and p.rank_pow2 is None and "even rank 8" in p.reason
    flat = plan_rank(entry(**{**TRUE, "alpha": -0.2}, loss_init_median=4.0), 64)
    assert flat.rank is None and "does not grow with rank" in flat.reason
    with pytest.raises(ValueError, match="loss_init"):
        plan_rank(entry(**TRUE), 64)
    with pytest.raises(ValueError, match="no fitted law"):
        plan_rank(entry(n=3, skipped="3 points; need 5"), 64)


def test_records_helpers():
    assert length_for_records(500, 6.5) == 3250.0
    assert tokens_per_record([{"length": 600, "records": 100}, {"length": 1400, "records": 100}, {"length": None}]) == 10.0
    with pytest.raises(ValueError, match="--records 0"):
        length_for_records(0, 6.5)


def test_planner_refuses_outside_the_measured_range_and_has_a_ceiling():
    from memft.research.law import saturating

    rows = rows_for(*points(noise=0.0, seed=0), benchmark="stress", ratio=0.0)
    fit = fit_rows(rows, "r0", n_boot=0)
    lo, hi = fit.lengths
    assert fit.ranks[0] >= 1 and plan_rank(fit, hi * 2).refused and plan_rank(fit, lo / 2).refused
    assert "outside the lengths the fit was measured on" in plan_rank(fit, hi * 2).reason
    # a saturating law: final loss L_init·exp(−k·r^a·ℓ^(−g)); by hand with k = 1, a = 1, g = 1, L_init = e, ℓ = 10,
    # target 1: r* = ln(e/1)·10/1 = 10 → rank 10, where the final loss e·exp(−1) is the target itself
    sat = {"form": "saturating", "params": {"k": 1.0, "a": 1.0, "g": 1.0}, "p": 3, "n": 9, "r2": 1.0, "mape": 0.0,
           "aic": -50.0, "bic": -49.0, "heldout_mape": 0.01, "heldout_rmse": 0.1}
    e = entry(**TRUE, loss_init_median=math.e, forms=[sat], lengths=[5, 20], ranks=[1, 16])
    p = plan_rank(e, 10, target=1.0)
    assert (p.law, p.rank, p.rank_pow2, p.heldout_mape) == ("saturating", 10, 16, 0.01)
    assert p.loss_final_pred == pytest.approx(1.0) and saturating(10, 10, math.e, 1.0, 1.0, 1.0) == pytest.approx(math.e - 1.0)
    assert plan_rank(e, 20, target=1.0).refused  # needs rank 20 > 16, the largest measured
