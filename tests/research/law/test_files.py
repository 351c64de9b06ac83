"""Law fit files (memft.research.law.files): the committed files read into typed entries with their real numbers and
write back unchanged; old files that said "None"; picking a fit; the budget an entry holds for."""

import json
from pathlib import Path

import pytest

from memft.research.law import Budget, LawFitEntry, fit_settings, pick_fit, plan_rank, read_fits, write_fits
from tests.research.law.test_fit import points, rows_for

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "src" / "memft" / "research" / "data" / "law_smollm2-135m.json"  # `memft plan`'s default
COMMITTED = [SHIPPED, ROOT / "benchmarks" / "paper" / "law_fit.json", ROOT / "benchmarks" / "paper" / "law_conv_fit.json",
             ROOT / "benchmarks" / "law" / "fit.json"]


def test_every_committed_fit_file_is_listed():
    files = [p for base in ("src", "benchmarks") for p in (ROOT / base).glob("**/*.json")]
    found = {p for p in files if '"fits"' in p.read_text(encoding="utf-8")}
    assert found == set(COMMITTED)


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_fit_files_round_trip_exactly(path):
    """Every entry of every committed file reads into a LawFitEntry and writes back as the very same JSON (values,
    nulls, key order), so the types lose nothing a file holds."""
    raw = json.loads(path.read_text(encoding="utf-8"))["fits"]
    entries = read_fits(path)
    assert len(entries) == len(raw)
    for e, d in zip(entries, raw):
        assert e.to_json() == d
        assert list(e.to_json()) == list(d)
        assert LawFitEntry.from_json(e.to_json()) == e


def test_the_shipped_fit_reads_its_real_numbers():
    by = {f.setting: f for f in read_fits(SHIPPED)}
    assert list(by) == ["r100", "Combined", "PhoneBook", "r100@down_proj28"]
    pb = by["PhoneBook"]
    assert (pb.model, pb.method, pb.fitted) == ("smollm2-135m", "sft", True)
    assert (pb.fit.C, pb.fit.alpha, pb.fit.beta, pb.fit.b) == (8834.582277816786, 0.7826895708806565, 2.0, 2.236565495229898)
    assert (pb.fit.r2, pb.fit.mape, pb.fit.huber) == (0.9814246489978133, 0.018221498784921682, None)
    assert pb.ci["alpha"] == (0.5987551348788559, 0.9878793838488722) and pb.ci["beta"] == (1.8225885480054744, 2.0)
    assert (pb.n, pb.n_excluded, pb.n_saturated, pb.n_boot, len(pb.samples)) == (14, 2, 2, 200, 200)
    assert pb.samples[0] == (8238.263083730017, 0.9097518783283084, 2.0, 2.221815743502749)
    assert (pb.heldout_mape, pb.heldout_rmse, pb.heldout_reason) == (0.031183321782118086, 0.11031922769384488, None)
    assert (pb.loss_init_median, pb.eps) == (4.359654059735211, 0.05)
    assert pb.budget == Budget(max_steps=30, lr=0.01, lr_schedule="constant", max_grad_norm=None, batch_size=None, stop_when_certified=False)
    stress = by["Combined"]
    assert stress.fit.C == 89.11858024284062 and stress.n_boot == 187 and stress.budget.max_steps == 150
    assert stress.budget.describe() == ", at a budget of 150 steps (linear lr, batch 1)"
    assert pb.budget.describe() == ", at a budget of 30 steps (constant lr)"


def test_skipped_and_budgetless_entries_of_committed_files():
    skipped = [f for f in read_fits(ROOT / "benchmarks" / "paper" / "law_fit.json") if not f.fitted]
    assert [(f.method, f.setting) for f in skipped] == [("memft-ot", "r100"), ("memft-ot", "Combined"), ("memft-sw", "r100"), ("memft-sw", "Combined")]
    assert all(f.fit is None and f.n == 6 and f.n_excluded == 0 and "only one distinct value among the ranks" in f.skipped for f in skipped)
    old = {f.setting: f for f in read_fits(ROOT / "benchmarks" / "law" / "fit.json")}  # written before fits said their budget
    assert all(f.budget is None for f in old.values())
    assert old["r0"].heldout_mape is None and old["r0"].heldout_reason.startswith("fold without ℓ=1024")
    assert old["r100"].fit.alpha == 0.4297867786104788 and old["r100"].n == 19


def test_the_shipped_law_at_convergence_plans_the_ranks_its_runs_needed():
    """benchmarks/paper/ship_law.py copied law_conv_fit.json's r100 under its placement's name, adding both forms of
    the law on all 20 points; its plans agree with the runs (600 steps, down_proj of layer 28): rank 4 held all 64
    random tokens and rank 2 40 %; rank 8 held all 320 and rank 4 36 % (benchmarks/paper/law_conv*.db)."""
    conv = pick_fit(SHIPPED, "r100@down_proj28")
    added = ("forms", "lengths", "ranks")
    mine = {k: v for k, v in conv.to_json().items() if k not in added}
    assert mine | {"setting": "r100"} == next(f.to_json() for f in read_fits(ROOT / "benchmarks/paper/law_conv_fit.json") if f.setting == "r100")
    assert (conv.fit.alpha, conv.fit.beta, conv.fit.r2) == (0.6084703515582472, 0.4598287691918355, 0.9904927500023447)
    assert (conv.n, conv.n_saturated, conv.budget.max_steps) == (10, 10, 600)
    assert conv.lengths == (16.0, 320.0) and conv.ranks == (1.0, 8.0)
    power, sat = conv.form("power"), conv.form("saturating")
    assert (power.n, sat.n, round(power.r2, 3), round(sat.r2, 3), round(power.aic - sat.aic, 1)) == (20, 20, 0.915, 0.996, 62.0)
    # the saturating law plans (lower AIC): by hand r* = (ln(13.406/ln 2)·64^g/k)^(1/a) = (2.962·33.87/27.80)^(1/1.2618) = 2.77
    p = plan_rank(conv, 64)
    assert (p.law, p.rank, p.rank_pow2, p.refused) == ("saturating", 3, 4, False) and 0 < p.loss_final_pred < 0.6931471805599453
    assert round(p.heldout_mape, 3) == 0.027
    assert [plan_rank(conv, ell, law_form="power").rank_pow2 for ell in (64, 320)] == [4, 8]  # the power law as before
    assert plan_rank(conv, 320).refused and "above the largest the fit was measured on (8)" in plan_rank(conv, 320).reason
    assert plan_rank(conv, 640).refused and "outside the lengths the fit was measured on (16–320)" in plan_rank(conv, 640).reason


def test_the_shipped_planner_never_predicts_a_negative_loss():
    """The 150-step power law (fitted without its saturated points) predicted a final loss of −2.64 at ℓ = 64, rank 3
    (issue 27): the saturating law plans there now, and the power law's ΔL is capped at L_init."""
    comb = pick_fit(SHIPPED, "Combined")
    for ell in (64, 100, 128, 200, 640):
        for form in ("auto", "power", "saturating"):
            p = plan_rank(comb, ell, law_form=form)
            assert p.loss_final_pred is None or p.loss_final_pred >= 0
    assert plan_rank(comb, 64, law_form="power").loss_final_pred == 0.0  # at the ceiling, not −2.64
    assert plan_rank(comb, 64).law == "saturating" and plan_rank(comb, 2000).refused


def test_plan_from_the_shipped_fit():
    fit = pick_fit(SHIPPED, "PhoneBook")  # the 30-step PhoneBook points: the power law has the lower AIC there
    p = plan_rank(fit, 100)
    assert p.law == "power" and p.rank == 2 and p.rank_pow2 == 2 and p.loss_final_pred < 0.6931471805599453
    assert p.uncertainty.startswith("bootstrap") and p.rank_optimistic <= p.rank and p.heldout_mape == fit.heldout_mape
    assert plan_rank(fit, 500).refused  # needs more than rank 8, the largest measured


def test_write_fits_writes_what_read_fits_reads(tmp_path):
    rows = rows_for(*points(noise=0.01), benchmark="phonebook")
    fits = fit_settings(rows, n_boot=5, budget=Budget.of_rows(rows))
    out = tmp_path / "fit.json"
    write_fits(out, fits, ["a.db", "b.db"], 0.05, None)
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert (doc["store"], doc["stores"], doc["eps"], doc["huber"]) == ("a.db", ["a.db", "b.db"], 0.05, None)
    assert read_fits(out) == fits


def test_budget_of_rows_is_one_budget():
    assert Budget.of_rows([]) is None
    rows = [{"max_steps": 30, "lr": 0.01, "lr_schedule": None, "stop_when_certified": False}, {"max_steps": 30, "stop_when_certified": False}]
    assert Budget.of_rows(rows) == Budget(max_steps=30, lr=0.01, stop_when_certified=False)  # the first row's
    with pytest.raises(ValueError, match="2 training budgets"):
        Budget.of_rows(rows + [{"max_steps": 150, "stop_when_certified": False}])


def test_a_missing_model_is_none_and_old_files_saying_none_read_as_none(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "model"} for r in rows_for(*points(noise=0.01), benchmark="phonebook")]
    (fit,) = fit_settings(rows, n_boot=0)
    assert fit.model is None and fit.method == "ot" and fit.setting == "PhoneBook"
    old = tmp_path / "fit.json"  # as fit files of memft 0.1.0 stored it
    old.write_text(json.dumps({"fits": [{**fit.to_json(), "model": "None", "method": "None"}]}))
    assert read_fits(old)[0].model is None and read_fits(old)[0].method is None
    assert pick_fit(old, "PhoneBook").fit.C == fit.fit.C
    with pytest.raises(ValueError, match="no usable fit for setting 'r0'; it has PhoneBook/None"):
        pick_fit(old, "r0")
    old.write_text("[]")
    with pytest.raises(ValueError, match="not a law fit file"):
        read_fits(old)
