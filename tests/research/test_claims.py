"""The paper-claims page: verdicts from hand-made rows whose answers are known."""

import math

import numpy as np
import pytest

from memft.research.claims import (
    BINDING, Claim, bind_name, compare_claim, law_claims, mean_sd, method_cells, paper_claims, score_name, spearman_claim,
    transition_claims, transition_pairs,
)


def _row(method, seed, score, bench="phonebook", records=50, **kw):
    base = {"model": "m", "benchmark": bench, "length": 550, "ratio": None, "rank": 1, "max_steps": 100, "batch_size": 10,
            "lr": 0.01, "lr_schedule": "linear", "max_grad_norm": 1.0, "preset": "probe", "stop_when_certified": False,
            "method": method, "seed": seed, "records": records, "exact_match": score, "token_accuracy": score, "token_accuracy_tf": score}
    return base | kw


def test_method_cells_pair_seeds_with_sft_and_read_the_benchmarks_score():
    rows = [_row("sft", s, x) for s, x in ((0, 0.5), (1, 0.6), (2, 0.4))]
    rows += [_row("memft-ot", s, x) for s, x in ((0, 0.7), (1, 0.65), (2, 0.45))]
    rows += [_row("sft", 0, 1.0, stop_when_certified=True)]  # early-stopped: not an end-of-budget result
    cells = {c.method: c for c in method_cells(rows)}
    ot = cells["memft-ot"]
    assert ot.seeds == (0, 1, 2) and ot.score == (0.7, 0.65, 0.45) and ot.sft_score == (0.5, 0.6, 0.4)
    assert ot.diff == pytest.approx((0.2, 0.05, 0.05)) and ot.binding  # SFT's mean 0.5 is in [0.2, 0.95]
    assert score_name("stress", 1) == "token_accuracy" and score_name("phonebook", 50) == "exact_match"
    assert score_name("rule", 50) == "heldout_token_accuracy"
    assert bind_name("stress", 1) == "token_accuracy_tf" and bind_name("rule", 50) == bind_name("phonebook", 50) == "exact_match"


def test_stress_is_judged_on_the_free_run_where_the_held_share_binds():
    def row(method, seed, free, tf):
        return _row(method, seed, 0.0, bench="stress", records=1, ratio=1.0, length=256, token_accuracy=free, token_accuracy_tf=tf)

    rows = [row("sft", s, 0.0, tf) for s, tf in enumerate((0.23, 0.32, 0.27))]
    rows += [row("memft-sw", s, free, tf) for s, (free, tf) in enumerate(((0.22, 0.26), (0.26, 0.30), (0.2, 0.28)))]
    (sw,) = [c for c in method_cells(rows) if c.method == "memft-sw"]
    assert sw.binding and sw.sft_bind == (0.23, 0.32, 0.27) and sw.diff == (0.22, 0.26, 0.2)  # free run: SFT's is 0
    c = compare_claim(method_cells(rows), "SW vs SFT", "beats", "stress", ["memft-sw"])
    assert c.verdict == "reproduced" and "SFT's token_accuracy_tf 27.3 ± 4.5 %" in c.measured
    # rule and PhoneBook points of one requested size share a cell even when their value tokens differ by seed
    rule = [_row(m, s, 0.5, bench="rule", length=197 + s, point={"length": 50}, heldout_token_accuracy=0.5 + (m != "sft") * 0.01)
            for m in ("sft", "memft-ot") for s in range(3)]
    cells = method_cells(rule)
    assert len(cells) == 2 and cells[0].cell == "rule 50 pairs r=1, 100 steps" and cells[0].seeds == (0, 1, 2)


def test_compare_verdicts():
    def claim(sft, ot):
        rows = [_row("sft", s, x) for s, x in enumerate(sft)] + [_row("memft-ot", s, x) for s, x in enumerate(ot)]
        return compare_claim(method_cells(rows), "OT vs SFT", "beats", "phonebook", ["memft-ot"])

    win = claim([0.5, 0.6, 0.4], [0.7, 0.65, 0.45])
    assert win.verdict == "reproduced" and "Δ 10.0 ± 8.7 points" in win.measured  # mean 0.1, sd of (.2, .05, .05)
    assert claim([0.5, 0.6, 0.4], [0.7, 0.55, 0.45]).verdict == "not reproduced"  # one seed lower: no consistent gain
    lose = claim([0.5, 0.6, 0.4], [0.3, 0.5, 0.2])
    assert lose.verdict == "not reproduced" and "lower than SFT on every seed" in lose.why
    easy = claim([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])  # everything memorised: capacity does not bind
    assert easy.verdict == "not testable here" and easy.measured.startswith("phonebook ℓ=550 r=1, 100 steps: SFT exact_match 100.0")
    assert claim([0.5], [0.9]).verdict == "not reproduced"  # one seed is no evidence of a gain on every seed
    rows = [_row("sft", s, x) for s, x in enumerate((0.5, 0.6, 0.4))] + [_row("memft-ot", s, x) for s, x in enumerate((0.7, 0.65, 0.45))]
    small = compare_claim(method_cells(rows), "OT vs SFT", "+20 points", "phonebook", ["memft-ot"], min_gain=0.2)
    assert small.verdict == "not reproduced" and "by at most 10.0 points on average (the paper: at least 20)" in small.why
    none = compare_claim([], "OT vs SFT", "beats", "stress", ["memft-ot"])
    assert none.verdict == "not measured"


def test_law_claims_fit_all_points_and_without_saturated_ones():
    rng = np.random.default_rng(0)
    rows = []
    for r in (1, 2, 4):
        for ell in (64, 128, 256, 640):
            d = 3.0 * r**0.8 * ell**-0.5 + 0.2
            d *= 1 + 0.001 * rng.standard_normal()
            curve = [{"step": 0, "loss": 12.0}, {"step": 80, "loss": 12.0 - 0.9 * d}, {"step": 100, "loss": 12.0 - d}]
            rows.append(_row("sft", 0, 0.0, bench="stress", records=1, ratio=1.0, rank=r, length=ell, loss_init=12.0, delta_loss=d, curve=curve))
    (c,) = law_claims(rows)
    assert c.verdict == "reproduced" and "all 12 points: R² 1.000" in c.measured and "saturated" not in c.measured
    assert "last 20 % of the budget: median 10.0 %, max 10.0 % (12 curves)" in c.measured  # 10 % of ΔL came after step 80
    rows.append(_row("sft", 0, 1.0, bench="stress", records=1, ratio=1.0, rank=8, length=64, loss_init=12.0, delta_loss=11.9))
    (c,) = law_claims(rows)  # one saturated point (ΔL = 0.99 L_init) far off the power law
    assert c.verdict == "not reproduced" and "without the 1 saturated: R² 1.000" in c.measured and "only after leaving out" in c.why
    short = [r for r in rows if r["length"] <= 256]  # 4x span: not a law test
    assert law_claims(short)[0].verdict == "not measured"
    # A run of one cell at twice the budget says whether the budget is a plateau; it is not a point of the grid.
    twice = [{**rows[0], "max_steps": 200, "delta_loss": 1.02 * rows[0]["delta_loss"]},
             {**rows[5], "max_steps": 200, "delta_loss": 1.30 * rows[5]["delta_loss"]}]
    (c,) = law_claims(rows[:12] + twice[:1])
    assert "ΔL at twice the budget: +2.0 % (ℓ=64, r=1), a plateau" in c.measured and c.measured.startswith("all 12 points")
    (c,) = law_claims(rows[:12] + twice)
    assert "+2.0 % (ℓ=64, r=1), +30.0 % (ℓ=128, r=2), not a plateau" in c.measured
    # Another placement at the same budget is another setting: its own fit, named for where the adapter sat.
    moved = [{**r, "delta_loss": 0.5 * r["delta_loss"], "point": {"layers": [28], "target_modules": ["down_proj"]}} for r in rows[:12]]
    a, b = law_claims(rows[:12] + moved)
    assert "batch " in a.claim and "down_proj@28" not in a.claim and a.measured.startswith("all 12 points: R² 1.000")
    assert b.claim.endswith(", down_proj@28)") and b.measured.startswith("all 12 points: R² 1.000") and b.verdict == "reproduced"


def test_transition_claims_count_positions_and_compare_free_runs():
    rows = [{"benchmark": "phonebook", "dtype": "fp32", "probs": [[0.9, 0.4, 0.6], [0.8, 0.7]], "correct": [[True, False, True], [True, True]],
             "first_failure": [1, None]}]
    p, eq = transition_claims(rows)
    assert p.verdict == "reproduced" and "0 of 4 teacher-forced positions" in p.measured
    assert eq.verdict == "reproduced" and "1 of 1" in eq.measured
    rows[0]["first_failure"] = [2, None]  # the free run failed later than teacher forcing did: not equivalent
    rows[0]["correct"][1][1] = False  # and a p = 0.7 position that is not the argmax
    p, eq = transition_claims(rows)
    assert p.verdict == "not reproduced" and eq.verdict == "not reproduced" and "fp32: 0 of 1" in eq.measured


def test_spearman_from_training_curves():
    curve = [{"first_error": f, "earliest_stubborn": s} for s, f in ((0, 0), (1, 3), (2, 2), (5, 9), (None, None), (3, None))]
    rows = [{"benchmark": "stress", "curve": curve}, {"benchmark": "phonebook", "curve": curve}]
    pairs, runs = transition_pairs(rows)
    assert pairs == [(0, 0), (1, 3), (2, 2), (5, 9)] and runs == 1  # certified steps and other benchmarks left out
    c = spearman_claim(rows)
    # by hand: the 3 pairs past position 0 rank (1, 2, 3) vs (2, 1, 3): ρ = 1 - 6·2 / (3·8) = 0.5; with (0, 0): 0.8
    assert c.verdict == "not testable here" and "ρ = 0.500 over the 3 pairs with the first error past position 0 (equal in 1)" in c.measured
    assert "ρ = 0.800 over all 4, 1 of them (0, 0)" in c.measured
    big = [{"benchmark": "stress", "curve": [{"first_error": i + (i % 3), "earliest_stubborn": i} for i in range(120)]}]
    assert spearman_claim(big).verdict == "reproduced"
    anti = [{"benchmark": "stress", "curve": [{"first_error": 200 - i, "earliest_stubborn": i} for i in range(120)]}]
    assert spearman_claim(anti).verdict == "not reproduced"


def test_every_claim_has_a_verdict_on_no_rows():
    claims = paper_claims([])
    assert len(claims) == 9 and {c.verdict for c in claims} == {"not measured"}
    assert all(isinstance(c, Claim) and set(c.to_json()) == {"claim", "paper", "measured", "n", "verdict", "why"} for c in claims)
    assert mean_sd([0.5, 0.7, 0.9]) == (0.7, 0.2) and BINDING == (0.2, 0.95) and math.isclose(mean_sd([0.3])[1], 0.0)
