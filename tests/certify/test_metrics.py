import math

import pytest

from memft.certify.metrics import L_CRIT, TokenStats, free_run_compare, record_report, summarize


def test_l_crit_is_ln2():
    assert L_CRIT == math.log(2)


def test_free_run_compare_hand_computed():
    assert free_run_compare([5, 6, 2], [5, 6, 2]) == (True, 1.0, None)
    assert free_run_compare([5, 9, 2], [5, 6, 2]) == (False, 2 / 3, 1)
    assert free_run_compare([5], [5, 6, 2]) == (False, 1 / 3, 1)  # stopped early: missing tokens are wrong


def test_record_report_hand_computed():
    st = TokenStats(targets=[10, 11, 12, 2], prob=[0.9, 0.4, 0.6, 0.5], correct=[True, True, False, True], loss=[0.1, 0.9, 0.5, 0.7])
    r = record_report("k", st, generated=[10, 11, 13, 2])
    assert r.length == 3
    assert not r.certified and r.first_error_tf == 2 and r.first_failure == 2
    assert r.stubborn_positions == [1, 3] and r.earliest_stubborn == 1
    assert r.min_prob == 0.4 and not r.p_above_half
    assert r.token_accuracy_tf == 0.75 and r.token_accuracy == 0.75
    assert math.isclose(r.loss, 0.55)


def test_summary_weights_tokens_and_counts_records():
    a = record_report("a", TokenStats([1, 2], [0.9, 0.9], [True, True], [0.1, 0.1]), [1, 2])
    b = record_report("b", TokenStats([1, 1, 1, 2], [0.2, 0.9, 0.9, 0.9], [False, True, True, True], [1.0, 0.1, 0.1, 0.1]), [3, 1, 1, 2])
    s = summarize([a, b])
    assert s["records"] == 2 and s["certified"] == 0.5 and s["exact_match"] == 0.5
    assert math.isclose(s["token_accuracy_tf"], 5 / 6)
    assert math.isclose(s["loss"], (0.2 + 1.3) / 6)
    assert s["stubborn_tokens"] == 1 and s["min_prob"] == 0.2
    assert summarize([record_report("a", TokenStats([1], [0.9], [True], [0.1]))])["exact_match"] is None


def test_log_odds_from_prob_and_gap_match_the_logits():
    import math

    import torch

    from memft.certify.metrics import log_odds
    from memft.certify.evaluate import token_table
    from types import SimpleNamespace as S

    logits = torch.tensor([[3.0, 1.0, 0.5, -2.0], [0.0, 0.2, 0.1, 0.0]])
    t = token_table(logits, S(targets=torch.tensor([0, 2])))
    got = log_odds(t["prob"].tolist(), t["gap"].tolist())
    assert got[0] == pytest.approx(2.0, abs=1e-5)  # 3.0 - 1.0
    assert got[1] == pytest.approx(-0.1, abs=1e-5)  # 0.1 - 0.2: not the argmax
    assert log_odds([1.0], [1.0]) == [math.inf]


def test_meets_margin_with_an_allowance_needs_the_gaps():
    from memft.certify.metrics import meets_margin

    # p 0.6 over a runner-up at 0.3: ln 2 = 0.693 nats
    assert meets_margin([True], [0.6], 0.5, [0.3], 0.69) and not meets_margin([True], [0.6], 0.5, [0.3], 0.70)
    assert not meets_margin([True], [0.6], 0.5, [], 0.5)  # no gaps: cannot show the allowance
    assert meets_margin([True], [0.6], 0.5, [], 0.0)
