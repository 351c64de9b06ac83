import pytest
import torch

from memft.model import peft_lora
from memft.config import LoraSettings, TrainConfig
from memft.prompts.encoding import encode_all
from memft.certify.evaluate import teacher_forced
from memft.model.forward import Runner
from memft.research.bench.phonebook import phonebook
from memft.training.loop import train


def _run(tiny, cfg, n=6, lora=None):
    items = encode_all(phonebook(n, seed=5), tiny.tokenizer)
    model, place = peft_lora.attach(tiny.model, lora or LoraSettings(rank=8, layers=(2,)), seed=cfg.seed)
    res = train(model, items, tiny.tokenizer.pad_token_id, cfg, min(place["layers"]))
    return model, items, res


def test_stops_at_certification_and_params_certify(tiny):
    model, items, res = _run(tiny, TrainConfig(lr=2e-2, max_steps=200))
    assert res.certified_at is not None and res.steps == res.certified_at
    assert res.history[-1]["certified"] == 1.0 and len(res.history) == res.steps + 1
    stats = teacher_forced(Runner(model, items, tiny.tokenizer.pad_token_id))
    assert all(all(s.correct) for s in stats.values())
    assert res.loss_init > res.history[-1]["loss"]


def test_deterministic_for_a_seed(tiny):
    from memft.model.base import load_base

    _, _, a = _run(tiny, TrainConfig(lr=2e-2, max_steps=15, seed=3))
    _, _, b = _run(load_base("tiny-random", device="cpu", dtype="fp32"), TrainConfig(lr=2e-2, max_steps=15, seed=3))
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]


def test_max_steps_zero_makes_no_update(tiny):
    model, _, res = _run(tiny, TrainConfig(max_steps=0))
    assert res.steps == 0 and res.certified_at is None
    assert all(torch.count_nonzero(p) == 0 for n, p in model.named_parameters() if "lora_B" in n)


def test_minibatch_mode_certifies_all_records(tiny):
    model, items, res = _run(tiny, TrainConfig(lr=2e-2, max_steps=400, batch_size=3), n=9)
    assert res.certified_at is not None
    stats = teacher_forced(Runner(model, items, tiny.tokenizer.pad_token_id))
    assert all(all(s.correct) for s in stats.values())


def test_batches_cover_each_epoch():
    import random

    from memft.training.batches import active_batches

    nxt = active_batches(lambda: list(range(7)), 3, random.Random(1))
    epoch = nxt() + nxt() + nxt()
    assert sorted(epoch) == list(range(7)) and [len(b) for b in (nxt(), nxt())] == [3, 3]
    assert active_batches(lambda: [0, 1, 2, 3], 10, random.Random(0), full=True)() == [0, 1, 2, 3]


def test_fixed_budget_trains_past_certification_and_records_first_certified_step(tiny):
    from memft.model.base import load_base

    _, _, early = _run(tiny, TrainConfig(lr=2e-2, max_steps=200))
    _, _, full = _run(load_base("tiny-random", device="cpu", dtype="fp32"), TrainConfig(lr=2e-2, max_steps=early.steps + 10, stop_when_certified=False))
    assert full.steps == early.steps + 10 and full.certified_at == early.certified_at
    assert [h["loss"] for h in full.history[: early.steps + 1]] == [h["loss"] for h in early.history]


def test_minibatch_certification_is_confirmed_at_the_end(tiny):
    # At step 22 the last-seen statuses (up to an epoch old) still show a failing record, but the parameters as
    # they are certify all 9: the final check must see that (it once reported "never certified").
    model, items, res = _run(tiny, TrainConfig(lr=2e-2, max_steps=22, batch_size=3, margin=0.0, active_set=False), n=9,
                             lora=LoraSettings(rank=8, preset="all"))
    assert res.history[-2]["certified"] < 1.0  # stale statuses one step before
    assert res.history[-1]["certified"] == 1.0  # the row of the final step reports the confirming pass
    stats = teacher_forced(Runner(model, items, tiny.tokenizer.pad_token_id))
    assert all(all(s.correct) for s in stats.values())
    assert res.certified_at == res.steps == 22


def test_margin_goal_trains_past_bare_certification(tiny):
    from memft.model.base import load_base

    _, _, bare = _run(tiny, TrainConfig(lr=2e-2, max_steps=300, margin=0.0))
    model, items, held = _run(load_base("tiny-random", device="cpu", dtype="fp32"), TrainConfig(lr=2e-2, max_steps=300, margin=0.9))
    assert held.certified_at is not None and held.steps > bare.steps
    stats = teacher_forced(Runner(model, items, tiny.tokenizer.pad_token_id))
    assert all(all(s.correct) and min(s.prob) > 0.9 for s in stats.values())
    # the run with margin 0.9 passed bare certification on the way, at the same step (same seed, same updates)
    assert bare.history[-1]["min_prob"] <= 0.9


def test_forget_trains_a_record_away_and_keeps_the_others(tiny):
    from memft.certify.metrics import forgotten

    model, items, res = _run(tiny, TrainConfig(lr=2e-2, max_steps=300))
    assert res.certified_at is not None
    res2 = train(model, items, tiny.tokenizer.pad_token_id, TrainConfig(lr=2e-2, max_steps=300), 2, forget={0, 3})
    assert res2.certified_at is not None and 0 < res2.steps < 300
    assert "forget_tokens" in res2.history[0] and res2.history[0]["forget_tokens"] == len(items[0].targets) + len(items[3].targets)
    stats = teacher_forced(Runner(model, items, tiny.tokenizer.pad_token_id))
    for i, s in stats.items():
        if i in (0, 3):
            assert forgotten(s.correct, s.prob) and not all(s.correct)
        else:
            assert all(s.correct) and min(s.prob) > 0.5


def test_active_set_certifies_with_fewer_trained_passes_than_plain(tiny):
    from memft.model.base import load_base

    cfg = dict(lr=2e-2, max_steps=400, batch_size=3, margin=0.5)
    _, _, plain = _run(tiny, TrainConfig(**cfg, active_set=False), n=9)
    model, items, act = _run(load_base("tiny-random", device="cpu", dtype="fp32"), TrainConfig(**cfg, active_set=True), n=9)
    assert plain.certified_at is not None and act.certified_at is not None
    assert act.trained < plain.trained  # records at the bar got no backward pass
    assert act.checked >= 2 * len(items)  # the first pass and at least the confirming one
    stats = teacher_forced(Runner(model, items, tiny.tokenizer.pad_token_id))
    assert all(all(s.correct) and min(s.prob) > 0.5 for s in stats.values())  # the goal holds for the final parameters


def test_active_set_trains_only_what_is_new(tiny):
    # Certify 6 records, then train on them plus 3 new ones: only the 3 new ones start active (the 6 held ones meet
    # their goal, so they rest until they fail it, even below the training bar: StatusBook.settle), the held ones
    # are re-checked with forward passes and every record is certified at the end.
    model, items, res = _run(tiny, TrainConfig(lr=2e-2, max_steps=300, margin=0.5), n=6)
    assert res.certified_at is not None
    new = [r for r in phonebook(12, seed=99) if r.key not in {e.key for e in items}][:3]
    more = list(items) + encode_all(new, tiny.tokenizer)
    stats = teacher_forced(Runner(model, more, tiny.tokenizer.pad_token_id))
    held_ok = sum(min(stats[i].prob) > 0.5 and all(stats[i].correct) for i in range(6))
    below_bar = sum(min(stats[i].prob) <= 0.75 for i in range(6))
    res2 = train(model, more, tiny.tokenizer.pad_token_id, TrainConfig(lr=2e-2, max_steps=300, margin=0.5, batch_size=4), 2)
    assert res2.certified_at is not None
    assert held_ok == 6 and below_bar >= 1  # certified, and some below the bar: the case where settling matters
    assert res2.history[0]["active"] == 3
    stats = teacher_forced(Runner(model, more, tiny.tokenizer.pad_token_id))
    assert all(all(s.correct) and min(s.prob) > 0.5 for s in stats.values())


def test_records_at_the_bar_have_zero_ot_gradient_so_skipping_them_changes_nothing(tiny):
    # Under memft-ot (threshold 0.5 <= the exit bar 0.75) a record whose every target has p > 0.75 has weight 0:
    # the gradient over a batch with it equals the gradient over the batch without it (record-level zero backprop).
    from memft import objectives
    from memft.certify.evaluate import token_table
    from memft.certify.metrics import exit_margin

    model, items, res = _run(tiny, TrainConfig(lr=2e-2, max_steps=300, margin=0.9), n=6)
    new = [r for r in phonebook(12, seed=99) if r.key not in {e.key for e in items}][:3]
    more = list(items) + encode_all(new, tiny.tokenizer)  # 6 held at p > 0.9, 3 new ones far below
    runner = Runner(model, more, tiny.tokenizer.pad_token_id, start=2)
    stats = teacher_forced(runner)
    at_bar = [i for i in range(9) if all(stats[i].correct) and min(stats[i].prob) > exit_margin(0.5)]
    assert len(at_bar) == 6

    def grads(idx):
        logits, batch = runner.logits(idx)
        tab = token_table(logits, batch)
        record = torch.tensor(idx)[batch.rows]
        loss, _ = objectives.get("memft-ot")(objectives.Tokens(tab["loss"], tab["correct"], record, batch.offset), {})
        params = [p for p in model.parameters() if p.requires_grad]
        return torch.autograd.grad(loss, params)

    full = grads(list(range(9)))
    active = grads([i for i in range(9) if i not in at_bar])
    assert all(torch.allclose(a, b, atol=1e-7, rtol=1e-5) for a, b in zip(full, active))
    assert any(a.abs().max() > 0 for a in full)


class _Recording(torch.optim.AdamW):
    """AdamW that records, at each step, the learning rate it is about to use and the gradient's global L2 norm."""

    seen: list[tuple[float, float]] = []

    def step(self, closure=None):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        _Recording.seen.append((self.param_groups[0]["lr"], float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(x) for x in grads])))))
        return super().step(closure)


def _recorded(tiny, monkeypatch, **cfg):
    _Recording.seen = []
    monkeypatch.setattr(torch.optim, "AdamW", _Recording)
    _run(tiny, TrainConfig(lr=2e-2, max_steps=10, stop_when_certified=False, **cfg))
    return _Recording.seen


def test_defaults_are_a_constant_lr_without_clipping(tiny, monkeypatch):
    cfg = TrainConfig()
    assert cfg.lr_schedule == "constant" and cfg.max_grad_norm is None
    seen = _recorded(tiny, monkeypatch)
    assert [lr for lr, _ in seen] == [2e-2] * 10
    assert max(norm for _, norm in seen) > 1e-3  # so the clipping test below has something to clip


def test_linear_schedule_decays_to_zero_over_max_steps(tiny, monkeypatch):
    seen = _recorded(tiny, monkeypatch, lr_schedule="linear")
    # lr * (1 - step / 10) at steps 0..9: 0.02, 0.018, ..., 0.002
    assert [lr for lr, _ in seen] == pytest.approx([0.02, 0.018, 0.016, 0.014, 0.012, 0.01, 0.008, 0.006, 0.004, 0.002], rel=1e-12)


def test_clipping_bounds_the_gradient_norm(tiny, monkeypatch):
    seen = _recorded(tiny, monkeypatch, max_grad_norm=1e-3)
    assert len(seen) == 10 and all(norm <= 1e-3 * (1 + 1e-5) for _, norm in seen)


def test_plain_loop_draws_only_the_curriculum_stage(tiny, monkeypatch):
    import random

    from memft.training import batches as train_module

    drawn: list[list[int]] = []

    real = train_module.active_batches

    def recording(*args, **kwargs):
        nxt = real(*args, **kwargs)
        return lambda: drawn.append(nxt()) or drawn[-1]

    monkeypatch.setattr(train_module, "active_batches", recording)
    cfg = TrainConfig(method="memft-sw-curriculum", lr=2e-2, max_steps=8, batch_size=1, active_set=False, stop_when_certified=False,
                      method_options={"boundaries": [0, 100, 200, 300, 400]})  # stage 0 for the whole run
    _, _, res = _run(tiny, cfg, n=6)
    order = list(range(6))
    random.Random(0).shuffle(order)
    assert all(h["curriculum_stage"] == 0 for h in res.history[:-1])
    # 8 updates and the final step's forward (the plain loop draws it too), all from ceil(0.2 * 6) = 2 records
    assert len(drawn) == 9 and {i for idx in drawn for i in idx} == set(order[:2])


def test_a_frozen_or_slower_by_a_lr_scale(tiny):
    from memft.model.lora_init import lora_layers

    items = encode_all(phonebook(4, seed=5), tiny.tokenizer)
    model, place = peft_lora.attach(tiny.model, LoraSettings(rank=4, layers=(2,)), seed=0)
    a0 = {n: m.lora_A["default"].weight.clone() for n, m in lora_layers(model).items()}
    train(model, items, tiny.tokenizer.pad_token_id, TrainConfig(lr=1e-2, max_steps=5, a_lr_scale=0.0), min(place["layers"]))
    for n, m in lora_layers(model).items():
        assert torch.equal(m.lora_A["default"].weight, a0[n])  # frozen
        assert m.lora_B["default"].weight.abs().sum() > 0  # B trained
    from memft.training.step import lr_at, param_groups

    for m in lora_layers(model).values():
        m.lora_A["default"].weight.requires_grad_(True)  # as a trainable load gives it back
    groups = param_groups(model, 0.25)
    assert [g["scale"] for g in groups] == [1.0, 0.25] and len(groups[1]["params"]) == 3  # A of gate/up/down
    assert lr_at(0, TrainConfig(lr=0.02)) * groups[1]["scale"] == 0.005


def test_progress_schedule_rolls_back_a_collapse_and_still_certifies(tiny):
    items = encode_all(phonebook(6, seed=5), tiny.tokenizer)
    model, place = peft_lora.attach(tiny.model, LoraSettings(rank=8, layers=(2,)), seed=0)
    hit = {"done": False}

    def scramble(row):  # a collapse: once half the records certify, the LoRA weights are replaced by noise
        if not hit["done"] and row["certified"] >= 0.5:
            hit["done"] = True
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.data.normal_(0, 1.0)  # .data: between this step's forward and backward, outside autograd

    cfg = TrainConfig(lr=2e-2, max_steps=400, lr_schedule="progress", active_set=False)
    res = train(model, items, tiny.tokenizer.pad_token_id, cfg, min(place["layers"]), on_step=scramble)
    assert hit["done"]
    rolled = [h for h in res.history if h.get("rolled_back")]
    assert len(rolled) == 1 and rolled[0]["rolled_back"] == 1
    before = res.history[res.history.index(rolled[0]) - 1]
    assert before["certified"] >= 0.5 and rolled[0]["certified"] < 0.3  # the scrambled parameters were seen as a collapse
    assert res.certified_at is not None


def test_one_record_steps_carry_the_phase_transition_positions(tiny):
    """Each step of a one-record run records, before its update, the first argmax error and the first p <= 0.5 of
    that record; the last row (the final parameters) equals an independent teacher-forced pass."""
    from memft.certify.metrics import earliest_stubborn, first_false
    from memft.research.bench.stress import stress

    items = encode_all([stress(24, 1.0, tiny.tokenizer, seed=1)], tiny.tokenizer)
    model, place = peft_lora.attach(tiny.model, LoraSettings(rank=2, layers=(2,)), seed=0)
    cfg = TrainConfig(lr=2e-2, max_steps=12, stop_when_certified=False, margin=0.0, active_set=False, batch_size=1)
    res = train(model, items, tiny.tokenizer.pad_token_id, cfg, min(place["layers"]))
    st = teacher_forced(Runner(model, items, tiny.tokenizer.pad_token_id))[0]
    last = res.history[-1]
    assert (last["first_error"], last["earliest_stubborn"]) == (first_false(st.correct), earliest_stubborn(st.prob))
    assert all("first_error" in h for h in res.history) and res.history[0]["first_error"] == 0  # random tokens: wrong at once
    # The first stubborn token can never come after the first error (an argmax error implies p <= 0.5).
    assert all(h["first_error"] is None or h["earliest_stubborn"] <= h["first_error"] for h in res.history)
    model.unload()
    _, _, many = _run(tiny, TrainConfig(lr=2e-2, max_steps=2, batch_size=2, active_set=False))
    assert not any("first_error" in h for h in many.history)  # several records per step: no single record's positions


def test_warm_start_from_greedy_recall_trains_as_a_cold_start(tiny):
    # A rewrite starts from what recovering the held records computed (memft.certify.decode): their statistics and frozen
    # prefixes. Training must go as if it had computed them itself, with one first check fewer per warm record.
    import copy

    from memft.certify.decode import greedy_recall
    from memft.training.loop import Warm

    model, items, res = _run(tiny, TrainConfig(lr=2e-2, max_steps=300, margin=0.5), n=6)
    assert res.certified_at is not None
    new = [r for r in phonebook(12, seed=99) if r.key not in {e.key for e in items}][:3]
    more = list(items) + encode_all(new, tiny.tokenizer)
    tok = tiny.tokenizer
    recalls = greedy_recall(model, [e.prompt for e in items], tok.eos_token_id, tok.pad_token_id, 20, start=2)
    assert [tuple(r.ids) for r in recalls] == [e.targets for e in items]  # certified: recall gives the targets
    warm = Warm(stats={i: r.stats for i, r in enumerate(recalls)}, prefix={i: r.prefix for i, r in enumerate(recalls)},
                competitors={t for r in recalls for t in r.competitors})
    cfg = TrainConfig(lr=2e-2, max_steps=40, margin=0.5, batch_size=4, active_set=True)
    twin = copy.deepcopy(model)
    cold = train(model, more, tok.pad_token_id, cfg, 2)
    hot = train(twin, more, tok.pad_token_id, cfg, 2, warm=warm)
    assert hot.checked == cold.checked - len(items)
    assert [h["active"] for h in hot.history] == [h["active"] for h in cold.history]
    assert [h["loss"] for h in hot.history] == pytest.approx([h["loss"] for h in cold.history], rel=1e-3, abs=1e-5)
    assert hot.loss_init == pytest.approx(cold.loss_init, rel=1e-4)
    a = {n: p for n, p in model.named_parameters() if "lora_" in n}
    for n, p in twin.named_parameters():
        if "lora_" in n:
            assert (p - a[n]).abs().max() < 1e-3 * a[n].abs().max(), n  # Adam: float noise, not another path


def test_a_full_batch_trains_every_record_at_every_step(tiny):
    # Issue 22: with a full batch the active set saved little and let resting records drift (a 38-record write swung
    # between 21 % and 97 % certified); a full batch now trains every record at every step, as memft 0.1 did, and
    # its forward passes are the checks (the first pass is the only forward-only one).
    model, items, res = _run(tiny, TrainConfig(lr=2e-2, max_steps=200, margin=0.5), n=6)
    assert res.certified_at is not None and res.trained == res.steps * len(items)
    assert res.checked == len(items)
    stats = teacher_forced(Runner(model, items, tiny.tokenizer.pad_token_id))
    assert all(all(s.correct) and min(s.prob) > 0.5 for s in stats.values())


@pytest.mark.parametrize("lr, margin", [(2e-2, 0.5), (6e-2, 0.9)])
def test_active_set_rechecks_stay_within_their_bound(tiny, lr, margin):
    # The bound in memft.training.batches.CheckBudget: full checks at most once per n * FORWARD_COST trained record passes, the
    # cheap re-checks of resting records at most once per n: checked passes <= 4 x trained passes, plus the first
    # and the last full check.
    from memft.training.batches import CheckBudget

    n = 12
    model, items, res = _run(tiny, TrainConfig(lr=lr, max_steps=300, batch_size=4, margin=margin), n=n)
    assert res.checked <= 4 * res.trained + 2 * n, (res.checked, res.trained)
    assert CheckBudget(n).needed == 4  # ceil(12 / 3)
    if res.certified_at is not None:
        stats = teacher_forced(Runner(model, items, tiny.tokenizer.pad_token_id))
        assert all(all(s.correct) and min(s.prob) > margin for s in stats.values())


def test_a_rewrite_with_nothing_to_train_is_certified_by_a_teacher_forced_pass(tiny):
    # Issue 22: warm statistics come from greedy recall (a KV-cached decode); a rewrite that needs no training must
    # still be certified by the teacher-forced pass over every record, whose statistics are what `final` holds.
    from memft.certify.decode import greedy_recall
    from memft.training.loop import Warm

    model, items, res = _run(tiny, TrainConfig(lr=2e-2, max_steps=300, margin=0.5), n=6)
    assert res.certified_at is not None
    tok = tiny.tokenizer
    recalls = greedy_recall(model, [e.prompt for e in items], tok.eos_token_id, tok.pad_token_id, 20, start=2)
    warm = Warm(stats={i: r.stats for i, r in enumerate(recalls)}, prefix={i: r.prefix for i, r in enumerate(recalls)})
    tf = teacher_forced(Runner(model, items, tok.pad_token_id))
    # Full batch: the step's own forward pass is that teacher-forced pass. Mini-batches (active set): a full check.
    for batch_size, checked in ((64, 0), (2, len(items))):
        again = train(model, items, tok.pad_token_id, TrainConfig(lr=2e-2, max_steps=40, margin=0.5, batch_size=batch_size), 2, warm=warm)
        assert again.steps == 0 and again.certified_at == 0 and again.trained == 0 and again.checked == checked
        final = [p for i in tf for p in again.final[i].prob]
        assert final == pytest.approx([p for i in tf for p in tf[i].prob], abs=1e-6)
        assert again.final[0] is not warm.stats[0]  # the statistics certification was decided on are not the greedy ones


def test_a_log_odds_allowance_trains_every_target_that_far_above_its_runner_up(tiny):
    """margin 0 and allowance 3 nats: the run goes on past bare certification until each target's logit is 3 above
    the best other token's, read back from an independent teacher-forced pass."""
    from memft.certify.metrics import log_odds
    from memft.model.base import load_base

    _, _, bare = _run(tiny, TrainConfig(lr=2e-2, max_steps=300, margin=0.0, precision_log_odds=0.0))
    model, items, held = _run(load_base("tiny-random", device="cpu", dtype="fp32"),
                              TrainConfig(lr=2e-2, max_steps=300, margin=0.0, precision_log_odds=3.0))
    assert held.certified_at is not None and held.steps > bare.steps and held.log_odds == 3.0 and bare.log_odds == 0.0
    stats = teacher_forced(Runner(model, items, tiny.tokenizer.pad_token_id))
    assert min(min(log_odds(s.prob, s.gap)) for s in stats.values()) >= 3.0
    assert bare.final and min(min(log_odds(s.prob, s.gap)) for s in bare.final.values()) < 3.0


@pytest.mark.parametrize("dtype, expected", [("fp32", 0.0), ("bf16", 2.5)])
def test_the_allowance_follows_the_precision_the_base_computes_in(dtype, expected):
    from memft.certify.metrics import PRECISION_LOG_ODDS
    from memft.model.base import load_base
    from memft.training.loop import allowance

    from memft.model.base import compute_dtype

    base = load_base("tiny-random", device="cpu", dtype=dtype)
    model, _ = peft_lora.attach(base.model, LoraSettings(rank=4, layers=(1,)))  # LoRA weights are fp32 either way
    assert compute_dtype(model) == dtype
    assert PRECISION_LOG_ODDS[dtype] == expected
    assert allowance(model, TrainConfig()) == expected
    assert allowance(model, TrainConfig(precision_log_odds=1.25)) == 1.25  # the config's, whatever the precision
