import math
import random
import subprocess
import sys

import pytest
import torch

from memft.errors import ConfigError
from memft.objectives import curriculum, window
from memft.objectives import EPS, OBJECTIVES, Tokens, get, option_problems, revision, stage_records, stage_starts


def toks(probs, correct=None, record=None, offset=None) -> Tokens:
    """Tokens with L_t = -ln p_t (leaf tensor with grad); default: one record, offsets 0.., correct iff p > 0.5."""
    n = len(probs)
    loss = torch.tensor([-math.log(p) for p in probs], requires_grad=True)
    correct = [p > 0.5 for p in probs] if correct is None else correct
    record = [0] * n if record is None else record
    offset = list(range(n)) if offset is None else offset
    return Tokens(loss=loss, correct=torch.tensor(correct), record=torch.tensor(record), offset=torch.tensor(offset))


def assert_weighted(out, t: Tokens, w: list[float]) -> None:
    """out == sum w L / (sum w + eps) and d out / d L_t == w_t / (sum w + eps): the weights are exactly w."""
    L = t.loss.detach().tolist()
    z = sum(w) + EPS
    assert out.item() == pytest.approx(sum(wi * li for wi, li in zip(w, L)) / z, rel=1e-6)
    out.backward()
    assert t.loss.grad.tolist() == pytest.approx([wi / z for wi in w], rel=1e-5, abs=1e-9)


def weights(name: str, t: Tokens, state: dict, **opts) -> list[float]:
    """The weights an objective gave: gradient of the loss times (sum w + eps)."""
    out, stats = get(name)(t, state, **opts)
    out.backward()
    return (t.loss.grad * (stats["weight_sum"] + EPS)).tolist()


def test_every_objective_is_registered():
    names = {"sft", "memft-ot", "memft-ot-margin", "memft-sw", "memft-sw-v01", "memft-sw-curriculum", "memft-sw-phonebook", "focal"}
    assert names <= set(OBJECTIVES)
    # memft-sw changed meaning (reference rule): its revision keeps stored results of the old rule apart
    assert revision("memft-sw") == revision("memft-sw-curriculum") == 2 and revision("memft-sw-v01") is None


def test_importing_objectives_does_not_import_torch():
    code = "import sys, memft.objectives, memft.objectives.window, memft.objectives.curriculum; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ---------------------------------------------------------------------------------------------------- memft-ot


def test_ot_trains_only_tokens_at_or_below_the_threshold():
    t = toks([0.9, 0.3, 0.6, 0.1, 0.51])
    out, stats = get("memft-ot")(t, state := {})
    assert_weighted(out, t, [0, 1, 0, 1, 0])
    assert out.item() == pytest.approx((-math.log(0.3) - math.log(0.1)) / 2, rel=1e-6)
    assert stats["trained_tokens"] == 2 and stats["weight_sum"] == 2
    assert state == {}  # the paper's OT keeps no memory between steps


def test_ot_threshold_option_moves_the_line():
    t = toks([0.9, 0.3, 0.6, 0.7])
    out, _ = get("memft-ot")(t, {}, threshold=0.65)
    assert_weighted(out, t, [0, 1, 1, 0])


def test_ot_skips_the_step_when_every_token_passed():
    out, stats = get("memft-ot")(toks([0.9, 0.6, 0.51]), {})
    assert out is None and stats["trained_tokens"] == 0 and stats["weight_sum"] == 0


def test_ot_floor_never_skips():
    t = toks([0.9, 0.6])
    out, stats = get("memft-ot")(t, {}, floor=0.1)
    assert_weighted(out, t, [0.1, 0.1])
    assert stats["trained_tokens"] == 2 and stats["active_tokens"] == 0


def test_ot_fallback_sft_trains_the_mean_when_no_token_is_below_the_line():
    t = toks([0.9, 0.6, 0.51])
    out, stats = get("memft-ot")(t, {}, fallback="sft")
    assert_weighted(out, t, [1, 1, 1])  # the reference code: plain SFT over the step's tokens
    assert stats["fallback"] == 1 and stats["trained_tokens"] == 3
    t = toks([0.9, 0.3])
    out, stats = get("memft-ot")(t, {}, fallback="sft")
    assert_weighted(out, t, [0, 1])  # a token below the line: the fallback does not apply
    assert "fallback" not in stats


def _train_step(lin: torch.nn.Linear, name: str, **opts) -> None:
    """One step of the training loop's update rule on a tiny linear 'model' whose targets all have p > 0.5."""
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    y = torch.tensor([0, 1, 0])
    logits = lin(x)  # [3, 2]
    loss = torch.nn.functional.cross_entropy(logits, y, reduction="none")  # [3]
    assert bool((torch.exp(-loss) > 0.5).all())  # precondition: every token passed the line
    t = Tokens(loss=loss, correct=logits.argmax(-1) == y, record=torch.tensor([0, 1, 2]), offset=torch.tensor([0, 0, 0]))
    opt = torch.optim.SGD(lin.parameters(), lr=1.0)
    out, _ = get(name)(t, {}, **opts)
    if out is not None:  # as in train.train
        opt.zero_grad(set_to_none=True)
        out.backward()
        opt.step()


@pytest.mark.parametrize("name, opts, changes", [("memft-ot", {}, False), ("memft-ot", {"fallback": "sft"}, True), ("sft", {}, True)])
def test_ot_zero_backpropagation_step(name, opts, changes):
    lin = torch.nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[5.0, 0.0], [0.0, 5.0]]))
        lin.bias.zero_()
    before = [p.detach().clone() for p in lin.parameters()]
    _train_step(lin, name, **opts)
    same = all(torch.equal(a, b) for a, b in zip(before, lin.parameters()))
    assert same is not changes  # OT leaves the parameters bit-identical; SFT (the control) and the fallback move them


# ---------------------------------------------------------------------------------------------------- margin, hysteresis


def test_margin_trains_a_token_at_p06():
    t = toks([0.6, 0.75, 0.4])
    out, _ = get("memft-ot")(t, {}, margin=0.7)
    assert_weighted(out, t, [1, 0, 1])
    out, _ = get("memft-ot")(toks([0.6, 0.75]), {})  # without the margin p = 0.6 has passed: nothing to train
    assert out is None


def test_hysteresis_keeps_a_trained_token_until_it_clears_the_margin():
    # token A = (record 0, offset 0) goes 0.4 -> 0.6 -> 0.65 -> 0.75 -> 0.6 -> 0.45; token B = (1, 0) stays at 0.6.
    state: dict = {}
    seen = []
    for pa in [0.4, 0.6, 0.65, 0.75, 0.6, 0.45]:
        t = toks([pa, 0.6], record=[0, 1], offset=[0, 0])
        seen.append(weights("memft-ot-margin", t, state))  # floor 0.05 outside the trained set
    expected = [[1, 0.05], [1, 0.05], [1, 0.05], [0.05, 0.05], [0.05, 0.05], [1, 0.05]]
    assert seen == [pytest.approx(e, rel=1e-5) for e in expected]
    # A entered at 0.4, stays at 0.6 and 0.65, leaves at 0.75 and does not come back at 0.6 (only below 0.5);
    # B never fell under 0.5, so it is never in the trained set.
    assert state["ot_trained"] == {(0, 0)}


def test_margin_without_hysteresis_has_no_memory():
    t = toks([0.6, 0.75], record=[0, 1], offset=[0, 0])
    assert weights("memft-ot-margin", t, {}, hysteresis=False) == pytest.approx([1, 0.05], rel=1e-5)


# ---------------------------------------------------------------------------------------------------- memft-sw


def _base(p: float, s: float = 10.0) -> float:
    return 1 / (1 + math.exp(-s * (-math.log(p) - math.log(2))))


# A 12-token record whose first argmax error (the anchor) is offset 3. With s = 1 the base weight is
# b = sigmoid(L - ln 2) = 1 / (1 + 2p), and with tau = 1 / ln 2 the decay exp(-d / tau) is 2^-d, so every weight
# below is a fraction computed by hand.
PROBS12 = [0.5, 0.25, 1.0, 0.1, 0.25, 0.5, 0.05, 0.5, 0.25, 0.1, 1.0, 0.5]
CORRECT12 = [True, True, True, False, True, False, True, True, True, False, True, True]
BASE12 = [1 / 2, 2 / 3, 1 / 3, 5 / 6, 2 / 3, 1 / 2, 10 / 11, 1 / 2, 2 / 3, 5 / 6, 1 / 3, 1 / 2]  # 1 / (1 + 2p)
# reference, W = 4: before the anchor b (decay 1); window 3..6 (d < 4): b * 2^-d; past it (7..11): b * 0.01
REF12 = [1 / 2, 2 / 3, 1 / 3] + [5 / 6, 1 / 3, 1 / 8, 5 / 44] + [1 / 200, 1 / 150, 1 / 120, 1 / 300, 1 / 200]
# v01, W = 4: window 3..7 (d <= 4, both ends): b * 2^-d, so offset 7 gets 1/2 * 1/16; elsewhere a flat 0.01
V01_12 = [0.01] * 3 + [5 / 6, 1 / 3, 1 / 8, 5 / 44, 1 / 32] + [0.01] * 4
HAND = dict(s=1.0, tau=1 / math.log(2), window=4, floor=0.01)


def test_sw_base_is_one_over_one_plus_2p_at_s1():
    t = toks(PROBS12)
    assert window.sw_base(t.loss.detach(), 1.0).tolist() == pytest.approx(BASE12, rel=1e-6)


@pytest.mark.parametrize("rule, expected", [(window.window_weights, REF12), (window.window_weights_v01, V01_12)])
def test_window_rules_by_hand(rule, expected):
    d = torch.arange(12) - 3  # offsets minus the anchor
    w = rule(torch.tensor(BASE12), d, torch.full((12,), 4.0), 1 / math.log(2), 0.01)
    assert w.tolist() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name, expected", [("memft-sw", REF12), ("memft-sw-v01", V01_12)])
def test_sw_objective_weights_by_hand(name, expected):
    t = toks(PROBS12, correct=CORRECT12)
    out, stats = get(name)(t, {}, **HAND)
    assert_weighted(out, t, expected)
    assert stats["anchored_records"] == 1 and stats["max_window"] == 4 and stats["trained_tokens"] == 12


def test_sw_v01_anchor_decay_and_floor_by_hand():
    # record 0: offset 1 has p = 0.3 but is still the argmax; the first argmax error (the anchor) is offset 2.
    probs0 = [0.9, 0.3, 0.2, 0.6, 0.4, 0.1]
    correct0 = [True, True, False, True, False, False]
    probs1 = [0.45, 0.8]  # record 1: no error -> base weights
    t = toks(probs0 + probs1, correct=correct0 + [True, True], record=[0] * 6 + [1] * 2, offset=[*range(6), 0, 1])
    out, stats = get("memft-sw-v01")(t, {}, window=2)  # window [2, 4]; tau = 20, floor = 0.01
    w = [0.01, 0.01, _base(0.2), _base(0.6) * math.exp(-1 / 20), _base(0.4) * math.exp(-2 / 20), 0.01, _base(0.45), _base(0.8)]
    assert_weighted(out, t, w)
    assert stats["anchored_records"] == 1 and stats["max_window"] == 2 and stats["trained_tokens"] == 8


def _factor_run(rule: str, anchors: list[int]) -> list[float]:
    """The window factor of one record observed once per step with these anchors (patience 3, grow 0.5, cap 4)."""
    state: dict = {}
    return [window.factors([0], [a], [True], state, rule, 3, 0.5, 4.0)[0] for a in anchors]


def test_growth_factor_by_hand():
    # steps 1..8, anchor 3 for five steps, then 5: stuck counts 0, 1, 2, 3, 4, 0, 1, 2
    anchors = [3, 3, 3, 3, 3, 5, 5, 5]
    assert [window.stuck_count(p, 0, a) for p, a in [(None, 3), (3, 3), (3, 5)]] == [0, 1, 0]
    assert _factor_run("reference", anchors) == [1, 1, 1, 1.5, 2, 1, 1, 1]  # +0.5 every step once the count is >= 3
    assert _factor_run("v01", anchors) == [1, 1, 1, 1.5, 1.5, 1, 1, 1]  # +0.5 once per 3 stuck steps
    assert _factor_run("reference", [3] * 10) == [1, 1, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4]  # capped at 4
    assert _factor_run("v01", [3] * 22) == [1, 1, 1, 1.5, 1.5, 1.5, 2, 2, 2, 2.5, 2.5, 2.5, 3, 3, 3, 3.5, 3.5, 3.5, 4, 4, 4, 4]


def _window_run(name: str, anchors: list[int]) -> list[int]:
    """Steps of `name` (W = 4, tau large) on a 12-token record whose first error is anchors[step]; returns the
    number of positions from the anchor on with a window weight (base ~ 1 >> base * floor or floor)."""
    state: dict = {}
    seen = []
    for a in anchors:
        w = weights(name, toks([0.1] * 12, correct=[i != a for i in range(12)]), state, window=4, tau=1e6)
        inside = [i for i, x in enumerate(w) if i >= a and x > 0.5]
        assert inside == list(range(a, inside[-1] + 1))
        seen.append(len(inside))
    return seen


def test_sw_window_span_follows_the_factor():
    anchors = [3, 3, 3, 3, 3, 5, 5, 5]
    assert _window_run("memft-sw", anchors) == [4, 4, 4, 6, 8, 4, 4, 4]  # a .. a + 4 * factor - 1
    assert _window_run("memft-sw-v01", anchors) == [5, 5, 5, 7, 7, 5, 5, 5]  # a .. a + 4 * factor (both ends)


def test_sw_certified_record_forgets_its_window():
    state: dict = {}
    for _ in range(4):
        weights("memft-sw", toks([0.1] * 3, correct=[True, False, True]), state)
    assert state["sw_windows"] == {0: [1, 3, 1.5]}  # [anchor, stuck count, factor]
    weights("memft-sw", toks([0.9] * 3), state)
    assert state["sw_windows"] == {}


def test_sw_window_none_is_plain_mean():
    t = toks([0.9, 0.3], correct=[True, False])
    out, _ = get("memft-sw")(t, {}, window=None)
    assert_weighted(out, t, [1, 1])


# ---------------------------------------------------------------------------------------------------- curriculum


def test_default_boundaries_end_at_half_the_budget():
    assert stage_starts(5, 100) == [0, 10, 20, 30, 40]
    assert stage_starts(5, 300) == [0, 30, 60, 90, 120]


def _curriculum_step(state: dict, step: int, correct: list[bool], **opts) -> tuple[list[int], dict]:
    n = len(correct)
    state.update(step=step, max_steps=100, n_records=n)
    t = toks([0.9 if c else 0.1 for c in correct], correct=correct, record=list(range(n)), offset=[0] * n)
    out, stats = get("memft-sw-curriculum")(t, state, **opts)
    out.backward()
    return [r for r in range(n) if t.loss.grad[r] != 0], stats


def test_curriculum_prefix_grows_at_the_boundaries():
    order = list(range(10))
    random.Random(0).shuffle(order)
    state: dict = {}
    expected = {0: 2, 9: 2, 10: 4, 19: 4, 20: 6, 29: 6, 30: 8, 40: 10, 99: 10}
    for step, m in expected.items():
        trained, stats = _curriculum_step(state, step, [False] * 10)  # nothing certified: no early advance
        assert sorted(trained) == sorted(order[:m]), step
        assert stats["active_ratio"] == m / 10 and stats["curriculum_stage"] == m // 2 - 1


def test_curriculum_alone_is_sft_on_the_active_records():
    state = {"step": 0, "max_steps": 100, "n_records": 5}
    order = list(range(5))
    random.Random(3).shuffle(order)
    t = toks([0.1, 0.2, 0.3, 0.4, 0.45], correct=[False] * 5, record=list(range(5)), offset=[0] * 5)
    out, stats = get("memft-sw")(t, state, window=None, curriculum=True, seed=3)
    assert_weighted(out, t, [1.0 if r == order[0] else 0.0 for r in range(5)])
    assert stats["active_ratio"] == 0.2 and stats["trained_tokens"] == 1


def test_curriculum_advances_early_when_the_active_records_are_certified():
    order = list(range(5))
    random.Random(0).shuffle(order)

    def certified(k):  # the first k records of the order are certified
        return [order.index(r) < k for r in range(5)]

    state: dict = {}
    _, stats = _curriculum_step(state, 0, certified(0))
    assert stats["active_ratio"] == 0.2  # step 0, nothing certified: 1 of 5
    _, stats = _curriculum_step(state, 1, certified(1))
    assert stats["active_ratio"] == 0.4  # its only active record is certified: stage 1 at once
    trained, stats = _curriculum_step(state, 2, certified(3))
    assert stats["active_ratio"] == 0.8 and sorted(trained) == sorted(order[:4])  # two stages in one step
    _, stats = _curriculum_step(state, 3, certified(0))
    assert stats["active_ratio"] == 0.8  # a stage once reached is kept


def test_explicit_boundaries():
    state: dict = {}
    _, stats = _curriculum_step(state, 7, [False] * 5, ratios=[0.4, 1.0], boundaries=[0, 8])
    assert stats["active_ratio"] == 0.4
    _, stats = _curriculum_step(state, 8, [False] * 5, ratios=[0.4, 1.0], boundaries=[0, 8])
    assert stats["active_ratio"] == 1.0


def test_stages_by_epoch_when_the_loop_draws_stage_records():
    # 10 records, 5 stages of 2/4/6/8/10 records, 2 epochs per stage; each step trains the whole stage (one epoch),
    # as the loop does with a full batch drawn from stage_records.
    order = list(range(10))
    random.Random(0).shuffle(order)
    state: dict = {"n_records": 10, "max_steps": 100}
    stages = []
    for step in range(10):
        state["step"] = step
        recs = curriculum.stage_records(state, 0, curriculum.RATIOS, None, 2)
        on, stats = curriculum.active(recs, [False] * len(recs), state, 0, curriculum.RATIOS, None, 2)
        assert all(on) and recs == sorted(order[: len(recs)])
        stages.append(int(stats["curriculum_stage"]))
    assert stages == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]  # the step schedule (stage 1 from step 10) is not used


def test_stage_records_for_the_loop():
    order = list(range(10))
    random.Random(0).shuffle(order)
    state = {"n_records": 10, "max_steps": 100, "step": 0}
    assert stage_records("sft", state, {}) is None and stage_records("memft-sw", state, {}) is None
    assert stage_records("memft-sw-curriculum", state, {}) == sorted(order[:2])
    state["step"] = 20  # the third default boundary (0, 10, 20, 30, 40)
    assert stage_records("memft-sw-curriculum", state, {}) == sorted(order[:6])


def test_phonebook_is_ot_on_the_stage_records():
    order = list(range(5))
    random.Random(0).shuffle(order)
    first = order[0]  # the one record of stage 0 (20 % of 5)

    def run(probs, **opts):
        state = {"step": 0, "max_steps": 100, "n_records": 5}
        t = toks(probs, correct=[False] * 5, record=list(range(5)), offset=[0] * 5)
        return t, *get("memft-sw-phonebook")(t, state, **opts)

    t, out, stats = run([0.3] * 5)
    assert_weighted(out, t, [1.0 if r == first else 0.0 for r in range(5)])  # OT weight 1, stage mask
    assert stats["active_ratio"] == 0.2 and stats["trained_tokens"] == 1
    probs = [0.9 if r == first else 0.3 for r in range(5)]  # the stage's only token passed the line
    _, out, stats = run(probs)
    assert out is None and stats["weight_sum"] == 0  # zero back-propagation (the paper's formula)
    t, out, stats = run(probs, fallback="sft")
    assert_weighted(out, t, [1.0 if r == first else 0.0 for r in range(5)])  # SFT on the stage's tokens only
    assert stats["fallback"] == 1


# ---------------------------------------------------------------------------------------------------- focal


def test_focal_by_hand():
    probs = [0.9, 0.5, 0.2]
    t = toks(probs)
    out, stats = get("focal")(t, {})
    L = [-math.log(p) for p in probs]
    assert out.item() == pytest.approx(sum((1 - p) ** 2 * li for p, li in zip(probs, L)) / 3, rel=1e-6)
    assert stats["trained_tokens"] == 3 and stats["weight_sum"] == pytest.approx(0.01 + 0.25 + 0.64, rel=1e-6)
    out.backward()
    # d/dL [(1 - e^-L)^g L] = g (1 - p)^(g - 1) p L + (1 - p)^g: the factor is differentiated too
    grad = [(2 * (1 - p) * p * li + (1 - p) ** 2) / 3 for p, li in zip(probs, L)]
    assert t.loss.grad.tolist() == pytest.approx(grad, rel=1e-5)


def test_focal_gamma0_is_sft():
    t = toks([0.9, 0.5, 0.2])
    out, _ = get("focal")(t, {}, gamma=0)
    assert out.item() == pytest.approx(sum(-math.log(p) for p in [0.9, 0.5, 0.2]) / 3, rel=1e-6)


# ---------------------------------------------------------------------------------------------------- options


def test_option_problems():
    assert option_problems("memft-ot", {}) == [] and option_problems("memft-sw-curriculum", {}) == []
    assert option_problems("memft-ot", {"treshold": 0.5}) == [
        "method option 'treshold' is not an option of memft-ot (its options: threshold, margin, hysteresis, floor, fallback)"
    ]
    assert option_problems("memft-ot", {"threshold": 0.8, "margin": 0.7}) == ["method option margin must be a number in [0.8, 1), got 0.7"]
    assert len(option_problems("memft-sw", {"tau": 0, "patience": 2.5, "ratios": [0.5, 0.9]})) == 3
    assert option_problems("memft-sw", {"rule": "v02"}) == ["method option rule must be one of reference, v01, got 'v02'"]
    assert option_problems("memft-sw-phonebook", {"boundaries": [0, 5, 10, 15, 20], "stage_epochs": 2}) == [
        "method options boundaries (steps) and stage_epochs (epochs per stage) exclude each other; give one"
    ]
    assert option_problems("memft-ot", {"fallback": "sgd"}) == ["method option fallback must be one of skip, sft, got 'sgd'"]
    with pytest.raises(ConfigError, match="gamma"):
        get("focal")(toks([0.5]), {}, gamma=-1)


def test_curriculum_easy_first_order_trains_the_easiest_records_first():
    from memft.objectives.curriculum import easy_first

    order = easy_first([7, 3, 9, 3, 5])  # by difficulty, ties by index
    assert order == [1, 3, 4, 0, 2]
    state: dict = {}
    # 5 records, stages of 1, 2, 3, 4, 5 records from steps 0, 10, 20, 30, 40: the given order, not a shuffle
    trained, _ = _curriculum_step(state, 0, [False] * 5, order=order)
    assert trained == [1]
    trained, _ = _curriculum_step(state, 10, [False] * 5, order=order)
    assert sorted(trained) == [1, 3]
    trained, _ = _curriculum_step(state, 20, [False] * 5, order=order)
    assert sorted(trained) == [1, 3, 4]
    # stages per epochs: with stage_epochs 2, stage 0 (1 record) lasts 2 passes over it, whatever the step
    state = {}
    got = [_curriculum_step(state, step, [False] * 5, order=order, stage_epochs=2)[1]["active_ratio"] for step in range(4)]
    assert got == [0.2, 0.2, 0.4, 0.4]  # 1 record trained twice, then 2 records: 2 passes = 4 record-steps


def test_curriculum_order_is_checked_up_front():
    from memft.objectives import option_problems

    assert option_problems("memft-sw-curriculum", {"order": "shortest"}) == []
    assert option_problems("memft-sw-phonebook", {"order": [2, 0, 1]}) == []
    bad = option_problems("memft-sw-curriculum", {"order": [0, 0, 1]})
    assert len(bad) == 1 and "a permutation of the record indices (easiest first)" in bad[0]
    state: dict = {}
    with pytest.raises(ValueError, match="needs the records' lengths"):
        _curriculum_step(state, 0, [False] * 3, order="shortest")  # the research runner resolves it, the loop cannot
    with pytest.raises(ValueError, match="3 indices for 5 records"):
        _curriculum_step({}, 0, [False] * 5, order=[2, 0, 1])
