"""The paper-claims page: verdicts from hand-made rows whose answers are known."""

import math

import numpy as np
import pytest

from memft.research.claims import (
    BINDING, Claim, bind_name, claims_markdown, compare_claim, law_claims, mean_sd, method_cells, paper_claims, score_name,
    spearman_claim, transition_claims, transition_pairs,
)


def _row(method, seed, score, bench="phonebook", records=50, **kw):
    base = {"model": "m", "benchmark": bench, "length": 550, "ratio": None, "rank": 1, "max_steps": 100, "batch_size": 10,
            "lr": 0.01, "lr_schedule": "linear", "max_grad_norm": 1.0, "preset": "probe", "stop_when_certified": False,
            "method": method, "seed": seed, "records": records, "exact_match": score, "token_accuracy": score, "token_accuracy_tf": score}
    return base | kw


def test_method_cells_pair_seeds_with_sft_and_keep_every_metric():
    rows = [_row("sft", s, x, delta_loss=3.0) for s, x in ((0, 0.5), (1, 0.6), (2, 0.4))]
    rows += [_row("memft-ot", s, x, delta_loss=2.5) for s, x in ((0, 0.7), (1, 0.65), (2, 0.45))]
    rows += [_row("sft", 0, 1.0, stop_when_certified=True)]  # early-stopped: not an end-of-budget result
    cells = {c.method: c for c in method_cells(rows)}
    ot = cells["memft-ot"]
    assert ot.seeds == (0, 1, 2) and ot.score == (0.7, 0.65, 0.45) and ot.sft_score == (0.5, 0.6, 0.4)
    assert ot.diff == pytest.approx((0.2, 0.05, 0.05)) and ot.binding and not ot.floor  # SFT's mean 0.5 is in [0.2, 0.95]
    assert set(ot.values) == {"exact_match", "token_accuracy", "token_accuracy_tf", "delta_loss"}
    assert ot.diffs("delta_loss") == (-0.5, -0.5, -0.5) and ot.budget == "budget-bound (no run at twice the budget)"
    assert score_name("stress", 1) == "token_accuracy" and score_name("phonebook", 50) == "exact_match"
    assert score_name("rule", 50) == "heldout_exact_match"
    assert bind_name("stress", 1) == "token_accuracy_tf" and bind_name("rule", 50) == bind_name("phonebook", 50) == "exact_match"


def test_stress_is_judged_on_the_free_run_and_shows_the_other_metrics():
    def row(method, seed, free, tf, dl):
        return _row(method, seed, 0.0, bench="stress", records=1, ratio=1.0, length=256, token_accuracy=free, token_accuracy_tf=tf,
                    delta_loss=dl)

    rows = [row("sft", s, 0.0, tf, 8.0 + s / 10) for s, tf in enumerate((0.23, 0.32, 0.27))]
    rows += [row("memft-sw", s, free, tf, 4.0 - s / 10) for s, (free, tf) in enumerate(((0.22, 0.26), (0.26, 0.30), (0.2, 0.28)))]
    (sw,) = [c for c in method_cells(rows) if c.method == "memft-sw"]
    assert sw.binding and sw.sft_bind == (0.23, 0.32, 0.27) and sw.diff == (0.22, 0.26, 0.2)  # free run: SFT's is 0
    c = compare_claim(method_cells(rows), "SW vs SFT", "beats", "stress", ["memft-sw"])
    # free run: Δ mean 22.67, sd 3.06 points; t_{2,.975} = 4.3027: half 7.59 → [15.1, 30.3]
    assert c.verdict == "reproduced" and c.label == "reproduced (budget-bound)"
    assert "free-run prefix accuracy +22.7 points [+15.1, +30.3] (95 % paired t, 3 seeds)" in c.effect
    # ΔL: −4.0, −4.2, −4.4 nats: the interval lies below 0, the other side of the free-run gain
    assert "mixed: lower on ΔL -4.20 nats [-4.70, -3.70]" in c.why and "teacher-forced token accuracy 28.0 ± 2.0 vs 27.3 ± 4.5 %" in c.measured
    assert "3 seeds for a 10-point effect at the observed spread (sd 3.1 points; have 3)" in c.power
    # rule and PhoneBook points of one requested size share a cell even when their value tokens differ by seed
    rule = [_row(m, s, 0.5, bench="rule", length=197 + s, point={"length": 50}, heldout_token_accuracy=0.5 + (m != "sft") * 0.01,
                 heldout_exact_match=0.01) for m in ("sft", "memft-ot") for s in range(3)]
    cells = method_cells(rule)
    assert len(cells) == 2 and cells[0].cell == "rule 50 pairs r=1, 100 steps" and cells[0].seeds == (0, 1, 2)
    floor = compare_claim(cells, "rule", "+7", "rule", ["memft-ot"], size=0.07)
    assert floor.verdict == "untested" and "sits on its floor and cannot show +7 points" in floor.why


def test_compare_verdicts_by_the_rule():
    def claim(sft, ot, **kw):
        rows = [_row("sft", s, x) for s, x in enumerate(sft)] + [_row("memft-ot", s, x) for s, x in enumerate(ot)]
        return compare_claim(method_cells(rows), "OT vs SFT", "beats", "phonebook", ["memft-ot"], **kw)

    # +10 points, sd 8.66: [−11.5, +31.5] holds both 0 and 10 points; 10 seeds would see 10 points
    unsure = claim([0.5, 0.6, 0.4], [0.7, 0.65, 0.45])
    assert unsure.verdict == "inconclusive" and "+10.0 points [-11.5, +31.5]" in unsure.effect and "holds both no effect and 10 points" in unsure.why
    # d = 10/8.66 = 1.155: 8 seeds give 77 % power (noncentral t), 9 give 83 %
    assert "9 seeds for a 10-point effect at the observed spread (sd 8.7 points; have 3)" in unsure.power
    win = claim([0.5, 0.6, 0.4, 0.5, 0.3], [0.7, 0.75, 0.6, 0.65, 0.5])  # +17 ± 2.7 points on 5 seeds
    assert win.verdict == "reproduced" and win.label == "reproduced (budget-bound)" and "seeds 0, 1, 2, 3, 4 (paired)" in win.seeds
    # no gain, tight: −1, 0, +1 points; the interval [−2.5, +2.5] excludes +10 with power ≈ 1
    none = claim([0.5, 0.6, 0.4], [0.49, 0.6, 0.41])
    assert none.verdict == "refuted" and "excludes 10 points (no gain)" in none.why
    # the paper's size: +1.3 points where the paper says +20: refuted on the size
    small = claim([0.5, 0.6, 0.4], [0.513, 0.607, 0.419], size=0.2)
    assert small.verdict == "refuted" and "excludes 20 points" in small.why
    easy = claim([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])  # everything memorised: capacity does not bind
    assert easy.verdict == "untested" and easy.measured.startswith("phonebook ℓ=550 r=1, 100 steps: SFT exact match 100.0")
    one = claim([0.5], [0.9])
    assert one.verdict == "inconclusive" and "1 seed: no interval" in one.why
    same = claim([0.5, 0.6, 0.4], [0.5, 0.6, 0.4])
    assert same.verdict == "inconclusive" and "no estimate of the spread" in same.why
    scoped = claim([0.5, 0.6, 0.4], [0.7, 0.65, 0.45], min_rank=2, scope="the paper reports OT ≈ SFT at rank 1")
    assert scoped.verdict == "untested" and "outside the claim (the paper reports OT ≈ SFT at rank 1)" in scoped.measured
    assert compare_claim([], "OT vs SFT", "beats", "stress", ["memft-ot"]).verdict == "untested"


def test_two_cells_share_a_familywise_level():
    rows = []
    for ell in (300, 600):
        rows += [_row("sft", s, x, length=ell) for s, x in enumerate((0.5, 0.6, 0.4))]
        rows += [_row("memft-ot", s, x, length=ell) for s, x in enumerate((0.7, 0.8, 0.55))]
    c = compare_claim(method_cells(rows), "OT", "beats", "phonebook", ["memft-ot"])
    # Δ 0.2, 0.2, 0.15: mean 18.33, sd 2.89 points; Bonferroni over 2 cells: 97.5 %, t_{2,.9875} = 6.2053 → half 10.35
    assert "2 binding cells, 97.5 % intervals (Bonferroni over 2 cells)" == c.n and c.verdict == "reproduced"
    assert "+18.3 points [+8.0, +28.7] (97.5 % paired t, 3 seeds)" in c.effect


def test_law_claims_set_the_power_law_beside_the_saturating_one():
    from memft.research.law import saturating

    rng = np.random.default_rng(0)
    rows = []
    for r in (1, 2, 4):
        for ell in (64, 128, 256, 640):
            d = 3.0 * r**0.8 * ell**-0.5 + 0.2
            d *= 1 + 0.001 * rng.standard_normal()
            curve = [{"step": 0, "loss": 12.0}, {"step": 80, "loss": 12.0 - 0.9 * d}, {"step": 100, "loss": 12.0 - d}]
            rows.append(_row("sft", 0, 0.0, bench="stress", records=1, ratio=1.0, rank=r, length=ell, loss_init=12.0, delta_loss=d, curve=curve))
    (c,) = law_claims(rows)  # a power law far from the ceiling: it fits, and the saturating form is no better
    assert c.verdict == "reproduced" and c.measured.startswith("on all 12 points — power law: R² 1.000") and "saturated points" not in c.measured
    assert "last 20 % of the budget: median 10.0 %, max 10.0 % (12 curves" in c.measured  # 10 % of ΔL came after step 80
    assert c.label == "reproduced (budget-bound)" and c.budget == "budget-bound (no run at twice the budget)"
    # A run of one cell at twice the budget says whether the budget is a plateau; it is not a point of the grid.
    twice = [{**rows[0], "max_steps": 200, "delta_loss": 1.02 * rows[0]["delta_loss"]},
             {**rows[5], "max_steps": 200, "delta_loss": 1.30 * rows[5]["delta_loss"]}]
    (c,) = law_claims(rows + twice[:1])
    assert c.budget == "converged (ΔL +2.0 % at twice the budget)" and c.label == "reproduced" and c.measured.startswith("on all 12 points")
    (c,) = law_claims(rows + twice)
    assert c.budget == "budget-bound (ΔL +2.0 %, +30.0 % at twice the budget)"
    # Points on a saturating law, half of them at the ceiling: the power law fits only after dropping them; refuted
    sat = []
    for r in (1, 2, 4, 8):
        for ell in (16, 32, 64, 160, 320):
            d = float(saturating(r, ell, 12.0, 20.0, 1.2, 0.9)) * (1 + 0.002 * rng.standard_normal())
            sat.append(_row("sft", 0, 0.0, bench="stress", records=1, ratio=1.0, rank=r, length=ell, loss_init=12.0, delta_loss=min(d, 12.0)))
    (c,) = law_claims(sat)
    assert c.verdict == "refuted" and "the 3-parameter saturating form is better by ΔAIC" in c.why
    assert "the power law without the" in c.measured and "(selected on the outcome)" in c.measured
    short = [r for r in rows if r["length"] <= 256]  # 4x span: not a law test
    assert law_claims(short)[0].verdict == "untested"
    # Another placement at the same budget is another setting: its own fit, named for where the adapter sat.
    moved = [{**r, "delta_loss": 0.5 * r["delta_loss"], "point": {"layers": [28], "target_modules": ["down_proj"]}} for r in rows]
    a, b = law_claims(rows + moved)
    assert "batch " in a.claim and "down_proj@28" not in a.claim and a.measured.startswith("on all 12 points — power law: R² 1.000")
    assert b.claim.endswith(", down_proj@28)") and b.verdict == "reproduced"


def test_the_identities_count_positions_and_compare_free_runs():
    rows = [{"benchmark": "phonebook", "dtype": "fp32", "probs": [[0.9, 0.4, 0.6], [0.8, 0.7]], "correct": [[True, False, True], [True, True]],
             "first_failure": [1, None]}]
    p, eq = transition_claims(rows)
    assert p.verdict == "identity" and "0 of 4 teacher-forced positions" in p.measured and "reproduces nothing" in p.why
    assert eq.verdict == "identity" and "1 of 1" in eq.measured
    rows[0]["first_failure"] = [2, None]  # the free run failed later than teacher forcing did: a bug, not a finding
    rows[0]["correct"][1][1] = False  # and a p = 0.7 position that is not the argmax
    p, eq = transition_claims(rows)
    assert p.verdict == eq.verdict == "inconclusive" and "fp32: 0 of 1" in eq.measured and "a bug" in p.why


def test_spearman_by_the_papers_definition_with_the_pooled_variant_labelled():
    curve = [{"first_error": f, "earliest_stubborn": s} for s, f in ((0, 0), (1, 3), (2, 2), (5, 9), (None, None), (3, None))]
    rows = [{"benchmark": "stress", "curve": curve}, {"benchmark": "phonebook", "curve": curve}]
    pairs, runs = transition_pairs(rows)
    assert pairs == [(0, 0), (1, 3), (2, 2), (5, 9)] and runs == 1  # certified steps and other benchmarks left out
    # one pair per uncertified record at the end of training: (1, 3), (2, 2), (5, 9) of the stress run ranks
    # (1, 2, 3) vs (2, 1, 3): ρ = 1 − 6·2/(3·8) = 0.5, n = 3 (no interval below 4)
    rows[0] |= {"earliest_stubborn": [1], "first_failure": [3]}
    rows[1] |= {"earliest_stubborn": [2, 5, None], "first_failure": [2, 9, None]}
    c = spearman_claim(rows)
    assert c.verdict == "untested" and "every benchmark: ρ = 0.500 (n = 3)" in c.measured
    assert "pooled variant (every uncertified training step of 1 one-record runs" in c.measured and "not the paper's definition" in c.measured
    # 120 records on a near-identity: ρ ≈ 1 with an interval that holds 0.908 → reproduced
    big = [{"benchmark": "stress", "earliest_stubborn": list(range(120)), "first_failure": [i + (i % 3) for i in range(120)]}]
    assert spearman_claim(big).verdict == "reproduced"
    # 200 records at ρ ≈ 0.6: the interval excludes 0.908 and 200 ≥ the 18 records needed → refuted (positive, weaker)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(200)
    y = 0.75 * x + 0.66 * rng.standard_normal(200)
    mid = [{"benchmark": "stress", "earliest_stubborn": list(np.argsort(np.argsort(x))), "first_failure": list(np.argsort(np.argsort(y)))}]
    c = spearman_claim(mid)
    assert c.verdict == "refuted" and "positive, but weaker" in c.why and "records to tell ρ" in c.power


def test_every_claim_has_a_verdict_on_no_rows():
    claims = paper_claims([])
    assert len(claims) == 9 and {c.verdict for c in claims} == {"untested"}
    keys = {"claim", "paper", "measured", "n", "verdict", "why", "effect", "seeds", "budget", "power"}
    assert all(isinstance(c, Claim) and set(c.to_json()) == keys for c in claims)
    assert mean_sd([0.5, 0.7, 0.9]) == (0.7, 0.2) and BINDING == (0.2, 0.95) and math.isclose(mean_sd([0.3])[1], 0.0)
    assert claims_markdown(claims[:1], rule=True).startswith("The rule: identity = true by construction")


@pytest.mark.slow  # reads the 13 committed stores with their positions and curves and refits every law claim
def test_the_committed_claims_page_is_what_the_committed_stores_give():
    """benchmarks/paper/report/claims.json, rebuilt from the stores it names: the same claims, verdicts and cells."""
    import json
    from pathlib import Path

    from memft.research.claims import claims_document
    from memft.research.results import read_rows

    root = Path(__file__).resolve().parents[2]
    committed = json.loads((root / "benchmarks/paper/report/claims.json").read_text(encoding="utf-8"))
    rows = [r for s in committed["stores"] for r in read_rows(root / s, full=True)]
    doc = claims_document(committed["stores"], paper_claims(rows), method_cells(rows))
    assert json.loads(json.dumps(doc, ensure_ascii=False)) == committed
    verdicts = {c["claim"]: c["verdict"] for c in committed["claims"]}
    assert verdicts["p > 0.5 is sufficient for greedy decoding"] == "identity"
    assert verdicts["earliest stubborn position predicts the first free-run failure (Spearman)"] == "refuted"
