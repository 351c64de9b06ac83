"""The paper's settings and one fit per setting (memft.research.law.settings), as law fit file entries."""

import json

import pytest

from memft.research.law import COMBINED, PHONEBOOK, Budget, fit_settings, in_setting, law, ratio_setting, setting_names
from tests.research.law.test_fit import TRUE, points, rows_for


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
    budget = Budget(max_steps=150, lr=0.01, lr_schedule="linear", batch_size=1, stop_when_certified=False)
    fits = fit_settings(rows, n_boot=10, budget=budget)
    assert [f.setting for f in fits] == ["r0", "r50", "r100", "Combined", "PhoneBook"]
    by = {f.setting: f for f in fits}
    assert all(f.model == "m" and f.method == "ot" and f.budget == budget for f in fits)
    assert "at least 5" in by["r50"].skipped and by["r50"].fit is None and "alpha" not in by["r50"].to_json()
    assert by["r0"].skipped is None and by["r0"].n == 30 and by["r0"].n_excluded == 1 and by["r0"].n_saturated == 1
    assert by["r0"].fit.alpha == pytest.approx(0.6, abs=0.02) and by["r100"].fit.C == pytest.approx(1.5, rel=0.05)
    assert by["PhoneBook"].fit.beta == pytest.approx(0.3, abs=1e-6) and by["PhoneBook"].n == 30
    assert by["Combined"].n == 63 and by["Combined"].n_excluded == 1
    assert by["r0"].loss_init_median == 4.0 and by["r0"].n_boot == 10 and len(by["r0"].samples) == 10
    lo, hi = by["r0"].ci["alpha"]
    assert lo <= by["r0"].fit.alpha <= hi
    assert by["r0"].fit.residuals is None  # an entry holds what a file holds
    json.dumps([f.to_json() for f in fits], allow_nan=False)  # JSON-able: plain floats, no NaN


def test_setting_names_are_built_and_read_by_one_rule():
    assert [ratio_setting(x) for x in (0.0, 0.25, 1.0, 50)] == ["r0", "r25", "r100", "r50"]
    assert setting_names({"benchmark": "stress", "ratio": 0.5}) == ["r50", COMBINED]
    assert setting_names({"benchmark": "stress", "ratio": None}) == [COMBINED]
    assert setting_names({"benchmark": "phonebook"}) == [PHONEBOOK] and setting_names({"benchmark": "rule"}) == ["rule"]
    # the rows fit_settings fits in a setting are exactly those in_setting says belong to it
    rows = (rows_for(*points(noise=0.01, seed=1), benchmark="stress", ratio=0.0)
            + rows_for(*points(noise=0.01, seed=2), benchmark="stress", ratio=1.0)
            + rows_for(*points(noise=0.01, seed=3), benchmark="rule", ratio=None))
    for f in fit_settings(rows, n_boot=0):
        assert f.n + f.n_excluded == sum(in_setting(r, f.setting) for r in rows), f.setting
