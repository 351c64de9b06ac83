"""One-pass certification must agree with real greedy generation, record by record."""



from memft.model import peft_lora
from memft.config import LoraSettings, TrainConfig
from memft.prompts.encoding import encode_all
from memft.certify.evaluate import evaluate, greedy, teacher_forced
from memft.model.forward import Runner
from memft.research.bench.phonebook import phonebook
from memft.training.loop import train


def test_certification_equals_generation_on_many_records(tiny):
    recs = phonebook(40, seed=3)
    items = encode_all(recs, tiny.tokenizer)
    model, place = peft_lora.attach(tiny.model, LoraSettings(rank=4, preset="all"), seed=0)
    # Stop part-way so that the set holds certified and uncertified records.
    res = train(model, items, tiny.tokenizer.pad_token_id, TrainConfig(lr=2e-2, max_steps=12), 0)
    assert res.certified_at is None
    stats = teacher_forced(Runner(model, items, tiny.tokenizer.pad_token_id), batch_size=7)
    gens = greedy(model, items, tiny.tokenizer, batch_size=9)
    certified = [all(stats[i].correct) for i in range(len(items))]
    assert 0 < sum(certified) < len(items), "fixture should mix certified and uncertified records"
    for i, e in enumerate(items):
        exact = gens[i] == list(e.targets)
        assert certified[i] == exact, e.key
        if not exact:  # greedy follows the teacher-forced path until the first argmax error, and fails exactly there
            first_tf = stats[i].correct.index(False)
            first_gen = next(j for j, t in enumerate(e.targets) if j >= len(gens[i]) or gens[i][j] != t)
            assert first_tf == first_gen


def test_evaluate_reports(tiny):
    recs = phonebook(6, seed=1)
    items = encode_all(recs, tiny.tokenizer)
    model, _ = peft_lora.attach(tiny.model, LoraSettings(rank=4, preset="all"), seed=0)
    reps = evaluate(model, tiny.tokenizer, items, generate="always")
    for r, e in zip(reps, items):
        assert r.length == len(e.targets) - 1 == 10
        assert r.certified == bool(r.exact)
        assert r.first_failure == r.first_error_tf
        assert r.earliest_stubborn == (r.stubborn_positions[0] if r.stubborn_positions else None)
    never = evaluate(model, tiny.tokenizer, items, generate="never")
    assert all(r.exact is None and r.token_accuracy is None for r in never)
    assert [r.min_prob for r in never] == [r.min_prob for r in reps]


def test_greedy_left_padding_matches_single_record(tiny):
    recs = phonebook(5, seed=2)
    items = encode_all(recs, tiny.tokenizer)
    model = tiny.model
    together = greedy(model, items, tiny.tokenizer, batch_size=5)
    alone = [greedy(model, [e], tiny.tokenizer, batch_size=1)[0] for e in items]
    assert together == alone


def test_divergence_generates_only_to_just_past_the_first_failure(tiny, monkeypatch):
    """A write's reports: a failing record is generated to its first teacher-forced error plus a few tokens, not over
    its whole value (a 2,000-character value that was not learned cost minutes of generation after training)."""
    import memft.certify.evaluate as ev
    from memft.prompts.records import Record

    recs = phonebook(4, seed=1) + [Record("long:", "q8" * 100)]  # 200 characters, never learned here
    items = encode_all(recs, tiny.tokenizer)
    model, _ = peft_lora.attach(tiny.model, LoraSettings(rank=4, preset="all"), seed=0)
    asked = []
    real = ev.generate
    monkeypatch.setattr(ev, "generate", lambda m, p, t, limits, *a, **k: asked.append(list(limits)) or real(m, p, t, limits, *a, **k))
    full = evaluate(model, tiny.tokenizer, items, generate="uncertified")
    short = evaluate(model, tiny.tokenizer, items, generate="divergence")
    assert asked[0][-1] == len(items[-1].targets) + 1 > 200  # "uncertified": the whole value
    want = [r.first_error_tf + 1 + ev.DIVERGENCE_SLACK for r in full if not r.certified]
    assert asked[1] == [min(w, len(e.targets) + 1) for w, e in zip(want, [e for e, r in zip(items, full) if not r.certified])]
    assert max(asked[1]) < 40
    for a, b in zip(full, short):  # the same verdicts and failure positions
        assert (a.certified, a.exact, a.first_failure, a.first_error_tf, a.min_prob) == (b.certified, b.exact, b.first_failure, b.first_error_tf, b.min_prob)


def test_token_table_equals_log_softmax_scatter_and_argmax_with_ties():
    """The reduced table (logsumexp, top-2) gives what the log-softmax, scatter-and-max and argmax give, for targets
    at the top, tied at the top (argmax takes the lowest id), and below it; gradients too."""
    from types import SimpleNamespace

    import torch

    from memft.certify.evaluate import token_table

    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 30, generator=g) * 2
    x[1, [2, 5]] = 9.0  # tied top; target 2 (lowest: correct) in row 1, target 5 (not argmax) in row 2
    x[2] = x[1]
    x[3] = 0.0  # all tied: target 0 correct
    x[4] = 0.0
    targets = x.argmax(-1)
    targets[1], targets[2], targets[3], targets[4], targets[5] = 2, 5, 0, 7, (targets[5] + 1) % 30
    x.requires_grad_(True)
    tab = token_table(x, SimpleNamespace(targets=targets))
    lp = torch.log_softmax(x, -1)
    want_lp = lp.gather(1, targets[:, None]).squeeze(1)
    other = lp.scatter(1, targets[:, None], float("-inf")).max(-1).values
    assert tab["correct"].tolist() == (x.argmax(-1) == targets).tolist() == [True, True, False, True, False, False, True, True]
    assert torch.allclose(tab["loss"], -want_lp, atol=1e-6) and torch.allclose(tab["prob"], want_lp.exp(), atol=1e-6)
    assert torch.allclose(tab["gap"], want_lp.exp() - other.exp(), atol=1e-6)
    (ga,) = torch.autograd.grad(tab["loss"].sum() + tab["prob"].sum(), x)  # what objectives train on
    (gb,) = torch.autograd.grad(-want_lp.sum() + want_lp.exp().sum(), x)
    assert torch.allclose(ga, gb, atol=1e-5)
