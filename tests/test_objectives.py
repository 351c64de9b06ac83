import math
import random
import subprocess
import sys

import pytest
import torch

from memft.errors import ConfigError
from memft.objectives import EPS, OBJECTIVES, Tokens, get, option_problems, stage_starts


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
    assert {"sft", "memft-ot", "memft-ot-margin", "memft-sw", "memft-sw-curriculum", "focal"} <= set(OBJECTIVES)


def test_importing_objectives_does_not_import_torch():
    code = "import sys, memft.objectives; sys.exit('torch' in sys.modules)"
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


def _train_step(lin: torch.nn.Linear, name: str) -> None:
    """One step of the training loop's update rule on a tiny linear 'model' whose targets all have p > 0.5."""
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    y = torch.tensor([0, 1, 0])
    logits = lin(x)  # [3, 2]
    loss = torch.nn.functional.cross_entropy(logits, y, reduction="none")  # [3]
    assert bool((torch.exp(-loss) > 0.5).all())  # precondition: every token passed the line
    t = Tokens(loss=loss, correct=logits.argmax(-1) == y, record=torch.tensor([0, 1, 2]), offset=torch.tensor([0, 0, 0]))
    opt = torch.optim.SGD(lin.parameters(), lr=1.0)
    out, _ = get(name)(t, {})
    if out is not None:  # as in train.train
        opt.zero_grad(set_to_none=True)
        out.backward()
        opt.step()


@pytest.mark.parametrize("name, changes", [("memft-ot", False), ("sft", True)])
def test_ot_zero_backpropagation_step(name, changes):
    lin = torch.nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[5.0, 0.0], [0.0, 5.0]]))
        lin.bias.zero_()
    before = [p.detach().clone() for p in lin.parameters()]
    _train_step(lin, name)
    same = all(torch.equal(a, b) for a, b in zip(before, lin.parameters()))
    assert same is not changes  # OT leaves the parameters bit-identical; SFT (the control) moves them


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


def test_sw_anchor_decay_and_floor_by_hand():
    # record 0: offset 1 has p = 0.3 but is still the argmax; the first argmax error (the anchor) is offset 2.
    probs0 = [0.9, 0.3, 0.2, 0.6, 0.4, 0.1]
    correct0 = [True, True, False, True, False, False]
    probs1 = [0.45, 0.8]  # record 1: no error -> base weights
    t = toks(probs0 + probs1, correct=correct0 + [True, True], record=[0] * 6 + [1] * 2, offset=[*range(6), 0, 1])
    out, stats = get("memft-sw")(t, {}, window=2)  # window [2, 4]; tau = 20, floor = 0.01
    w = [0.01, 0.01, _base(0.2), _base(0.6) * math.exp(-1 / 20), _base(0.4) * math.exp(-2 / 20), 0.01, _base(0.45), _base(0.8)]
    assert_weighted(out, t, w)
    assert stats["anchored_records"] == 1 and stats["max_window"] == 2 and stats["trained_tokens"] == 8


def _window_run(state: dict, anchor: int, steps: int, n: int = 12) -> list[int]:
    """Steps of memft-sw (W = 2, grow 0.5 -> +1, cap 4 * 2 = 8) on one record whose first error is `anchor`;
    returns the window seen each step: the last offset whose weight is the decayed base, minus the anchor."""
    seen = []
    for _ in range(steps):
        correct = [i != anchor for i in range(n)]
        w = weights("memft-sw", toks([0.1] * n, correct=correct), state, window=2)  # base ~ 1 >> floor
        inside = [i for i, x in enumerate(w) if x > 0.5]
        assert inside == list(range(anchor, inside[-1] + 1))
        seen.append(inside[-1] - anchor)
    return seen


def test_sw_window_grows_after_three_unchanged_steps_and_resets_when_the_anchor_moves():
    state: dict = {}
    # same anchor at steps 0..21: unchanged at steps 1, 2, 3 -> grows at step 3, then at 6, 9, ..., capped at 8
    assert _window_run(state, 0, 22) == [2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6, 7, 7, 7, 8, 8, 8, 8]
    assert state["sw_windows"][0] == [0, 0, 8.0]  # 21 - 18 = 3 unchanged steps since the cap, streak restarted
    assert _window_run(state, 1, 4) == [2, 2, 2, 3]  # anchor moved: back to W, grows again after 3 unchanged steps


def test_sw_certified_record_forgets_its_window():
    state: dict = {}
    _window_run(state, 0, 4)
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
        "method option 'treshold' is not an option of memft-ot (its options: threshold, margin, hysteresis, floor)"
    ]
    assert option_problems("memft-ot", {"threshold": 0.8, "margin": 0.7}) == ["method option margin must be a number in [0.8, 1), got 0.7"]
    assert len(option_problems("memft-sw", {"tau": 0, "patience": 2.5, "ratios": [0.5, 0.9]})) == 3
    with pytest.raises(ConfigError, match="gamma"):
        get("focal")(toks([0.5]), {}, gamma=-1)
