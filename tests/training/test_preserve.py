"""The preservation term (memft.training.preserve): its math against a reference KL, where its gradient goes, its text, its options."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from memft.model import peft_lora
from memft import api
from memft.config import LoraSettings, TrainConfig
from memft.errors import ConfigError
from memft.training.preserve import Preserver, base_targets, bucket_kl, default_text, support_ids, support_kl, support_targets, target_ids, windows_of
from memft.research.bench.phonebook import phonebook
from tests.cli.test_cli import memft
from tests.conftest import write_jsonl


def reference_kl(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row with torch's own kl_div (input log q, target log p)."""
    return F.kl_div(F.log_softmax(logits_q, -1), F.log_softmax(logits_p, -1), reduction="none", log_target=True).sum(-1)


def test_bucket_kl_with_k_equal_vocabulary_is_the_full_kl():
    p, q = torch.randn(5, 11), torch.randn(5, 11)
    got = bucket_kl(q, base_targets(p, k=11))
    assert torch.allclose(got, reference_kl(p, q), atol=1e-6)


def test_bucket_kl_by_hand_and_a_lower_bound_of_the_full_kl():
    # p = (1/2, 1/4, 1/4), q = (1/4, 1/2, 1/4); k = 1 keeps token 0 and one tail bucket {1, 2}:
    # 1/2 ln(2) + 1/2 ln((1/2) / (3/4)) = 0.5 ln 2 + 0.5 ln(2/3)
    p = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    q = torch.log(torch.tensor([[0.25, 0.5, 0.25]]))
    got = bucket_kl(q, base_targets(p, k=1)).item()
    assert got == pytest.approx(0.5 * torch.log(torch.tensor(2.0)).item() + 0.5 * torch.log(torch.tensor(2 / 3)).item(), abs=1e-6)
    assert got <= reference_kl(p, q).item()
    pr, qr = torch.randn(50, 40) * 3, torch.randn(50, 40) * 3
    for k in (1, 5, 20):
        assert (bucket_kl(qr, base_targets(pr, k)) <= reference_kl(pr, qr) + 1e-5).all()


def test_bucket_kl_is_zero_on_the_base_itself():
    p = torch.randn(4, 30)
    assert bucket_kl(p, base_targets(p, k=7)).abs().max().item() < 1e-6


def test_support_kl_on_the_whole_vocabulary_is_the_full_kl_and_zero_on_the_base():
    p, q = torch.randn(5, 11) * 2, torch.randn(5, 11) * 2
    ids = support_ids(p, k=11)
    assert ids.tolist() == list(range(11))
    assert torch.allclose(support_kl(q, support_targets(p, ids)), reference_kl(p, q), atol=1e-6)
    u = support_ids(p, k=3, extra=torch.tensor([10, 0]))
    assert {0, 10} <= set(u.tolist()) and set(p.topk(3, -1).indices.flatten().tolist()) <= set(u.tolist())
    assert support_kl(p[:, u], support_targets(p[:, u], u)).abs().max().item() == 0.0


def test_support_kl_by_hand_restricted_and_renormalized():
    # p = (1/2, 1/4, 1/8, 1/8), k = 1 keeps token 0, extra adds token 2: U = {0, 2}, p_U = (4/5, 1/5).
    # q = (1/4, 1/4, 1/4, 1/4): q_U = (1/2, 1/2). KL = 4/5 ln(8/5) + 1/5 ln(2/5)
    p = torch.log(torch.tensor([[0.5, 0.25, 0.125, 0.125]]))
    ids = support_ids(p, k=1, extra=torch.tensor([2]))
    assert ids.tolist() == [0, 2]
    t = support_targets(p[:, ids], ids)
    assert torch.allclose(t.logp.exp(), torch.tensor([[0.8, 0.2]]))
    q = torch.zeros(1, 4)
    got = support_kl(q[:, ids], t).item()
    assert got == pytest.approx(0.8 * math.log(1.6) + 0.2 * math.log(0.4), abs=1e-6)
    # the union over positions: each position's top-1
    assert support_ids(torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 3.0]]), k=1).tolist() == [0, 2]


def test_windows_spread_over_the_text_and_short_text_is_an_error():
    assert windows_of(list(range(10)), window=2, n=3) == [[0, 1], [2, 3], [6, 7]]
    assert windows_of(list(range(5)), window=2, n=9) == [[0, 1], [2, 3]]
    with pytest.raises(ConfigError, match="shorter than one preservation window"):
        windows_of([1, 2], window=4, n=2)


def _preserver(tiny, weight=1.0, head="support", extra_ids=()):
    model, place = peft_lora.attach(tiny.model, LoraSettings(rank=4, layers=(2,)), seed=0)
    ids = tiny.tokenizer(default_text()[:4000], add_special_tokens=False)["input_ids"]
    return model, Preserver(model, windows_of(ids, window=32, n=6), tiny.tokenizer.pad_token_id, min(place["layers"]), weight, per_step=2,
                            head=head, extra_ids=extra_ids)


@pytest.mark.parametrize("head", ["support", "full"])
def test_term_is_zero_at_init_and_with_the_adapter_disabled(tiny, head):
    model, keep = _preserver(tiny, head=head)
    loss, stats = keep.loss(0)
    assert loss.item() == 0.0 and stats["preserve_kl"] == 0.0  # B = 0: the adapter adds exactly nothing
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    assert keep.loss(0)[0].item() > 1e-3
    with model.disable_adapter():
        assert keep.loss(0)[0].item() == 0.0


@pytest.mark.parametrize("head", ["support", "full"])
def test_term_equals_weight_times_reference_kl_on_its_windows(tiny, head):
    model, keep = _preserver(tiny, weight=2.5, head=head)
    keep.k = 10_000  # more than the vocabulary: buckets (or the support) = every token, so the term is the exact KL
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    loss, stats = keep.loss(1)  # step 1 uses windows 2 and 3
    ids = torch.tensor([keep.runner.items[i].ids for i in keep.batch(1)])
    with torch.no_grad():
        q = model(input_ids=ids).logits[:, :-1].reshape(-1, model.config.vocab_size)
        with model.disable_adapter():
            p = model(input_ids=ids).logits[:, :-1].reshape(-1, model.config.vocab_size)
    assert keep.batch(1) == [2, 3]
    assert stats["preserve_kl"] == pytest.approx(reference_kl(p, q).mean().item(), rel=1e-4)
    assert loss.item() == pytest.approx(2.5 * stats["preserve_kl"], rel=1e-6)


def test_support_head_scores_each_windows_likely_tokens_and_the_records_targets(tiny):
    from memft.prompts.encoding import encode_all

    extra = target_ids(encode_all(phonebook(3, seed=5), tiny.tokenizer))
    assert extra == sorted(set(extra)) and len(extra) >= 3
    model, keep = _preserver(tiny, head="support", extra_ids=extra)
    keep._base()
    V = model.config.vocab_size
    for i, t in keep.targets.items():
        ids = t.ids.tolist()
        assert ids == sorted(set(ids)) and set(extra) <= set(ids) and len(ids) < V
        # every position's base top-k is in its window's support, and p_U sums to 1 there
        with torch.no_grad(), model.disable_adapter():
            logits, _ = keep.runner.logits([i])
        assert set(logits.topk(keep.k, -1).indices.flatten().tolist()) <= set(ids)
        assert torch.allclose(t.logp.exp().sum(-1), torch.ones(t.logp.shape[0]), atol=1e-5)
    # with B moved, the support term is the exact KL of the distributions restricted to each window's support
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    loss, stats = keep.loss(0)
    want = []
    for i in keep.batch(0):
        with torch.no_grad():
            q, _ = keep.runner.logits([i])
            with model.disable_adapter():
                p, _ = keep.runner.logits([i])
        u = keep.targets[i].ids
        want.append(reference_kl(p[:, u], q[:, u]))
    assert stats["preserve_kl"] == pytest.approx(torch.cat(want).mean().item(), rel=1e-4)


def test_gradient_reaches_only_the_lora_parameters(tiny):
    model, keep = _preserver(tiny)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    keep.loss(0)[0].backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is None for n, g in grads.items() if "lora_" not in n)
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "lora_" in n)


def test_default_text_is_disjoint_from_the_audit_windows(tiny):
    from memft.checks.audit import plan_windows
    from memft.research.bench.stress import default_text as audit_text

    mine = default_text()
    assert len(mine) > 100_000
    plan = plan_windows(audit_text(), tiny.tokenizer, n_windows=32, window=128, seed=0)  # the audit's defaults
    L = 80
    shingles = {mine[i : i + L] for i in range(len(mine) - L)}
    for w in plan.windows:
        text = tiny.tokenizer.decode(w)
        assert not any(text[i : i + L] in shingles for i in range(len(text) - L))
    # and the whole audit source, not just today's windows
    whole = audit_text()
    assert not any(whole[i : i + L] in shingles for i in range(0, len(whole) - L, 7))


def test_training_with_the_term_certifies_and_keeps_the_base_closer(tiny):
    from memft.checks.audit import divergence

    recs = phonebook(6, seed=5)
    lora = LoraSettings(rank=8, layers=(2,))
    ids = tiny.tokenizer(default_text()[-20000:], add_special_tokens=False)["input_ids"]
    held_out = windows_of(ids, window=64, n=16)
    figures = {}
    for w in (0.0, 3.0):
        f = api.fit(recs, tiny, lora, TrainConfig(lr=2e-2, max_steps=300, preserve=w))
        assert f.summary["certified"] == 1.0 and f.train.certified_at is not None
        assert ("preserve_kl" in f.train.history[0]) == (w > 0)
        figures[w] = divergence(f.model, held_out)["kl_mean"]
        f.model.unload()
    assert figures[3.0] < 0.5 * figures[0.0], figures


def test_options_are_checked_up_front(tmp_path):
    with pytest.raises(ConfigError, match="--preserve must be a finite number >= 0"):
        TrainConfig(preserve=-1.0)
    with pytest.raises(ConfigError, match="preserve_head must be one of support, full"):
        TrainConfig(preserve=1.0, preserve_head="topk")
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ConfigError, match="preserve_windows must be a positive integer"):
            TrainConfig(preserve=1.0, preserve_windows=bad)
    with pytest.raises(ConfigError, match="--preserve-text .*no such file"):
        TrainConfig(preserve=1.0, preserve_text=str(tmp_path / "missing.txt"))
    f = write_jsonl(tmp_path / "r.jsonl", [json.dumps({"key": "a:", "value": "1"})])
    for bad in (["--preserve", "-2"], ["--preserve", "1", "--preserve-text", tmp_path / "missing.txt"]):
        r = memft("write", f, "--out", tmp_path / "ad", "--model", "tiny-random", "--quiet", *bad)  # in-process: same exit code, stderr
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--preserve" in r.stderr, r.stderr
        assert not (tmp_path / "ad").exists()


def test_a_non_utf8_preserve_text_is_one_line_naming_the_file(tmp_path, tiny):
    from memft.training.preserve import build

    bad = tmp_path / "t.txt"
    bad.write_bytes(b"fine\n\xff\xfe")
    model, _ = peft_lora.attach(tiny.model, LoraSettings(rank=4, layers=(2,)), seed=0)
    with pytest.raises(ConfigError, match=r"t.txt:2: bytes that are not UTF-8"):
        build(model, tiny.tokenizer, 1.0, str(bad), 2)
    assert build(model, tiny.tokenizer, 0.0, str(bad), 2) is None
    assert len(build(model, tiny.tokenizer, 1.0, None, 2).runner.items) == 256 == TrainConfig().preserve_windows  # the default pool
    kept = build(model, tiny.tokenizer, 1.0, None, 2, windows=5, extra_ids=[7, 3, 7])
    assert len(kept.runner.items) == 5 and kept.extra.tolist() == [3, 7] and kept.head == "support"
    from memft.prompts.encoding import Encoded
    from memft.training.preserve import from_config

    items = [Encoded(key="a:", prompt=(1,), targets=(9, 4)), Encoded(key="b:", prompt=(1,), targets=(4,))]
    cfg = TrainConfig(preserve=2.5, preserve_head="full", preserve_windows=7)
    got = from_config(model, tiny.tokenizer, cfg, 2, items)
    assert (got.weight, got.head, len(got.runner.items), got.extra.tolist()) == (2.5, "full", 7, [4, 9])
    assert from_config(model, tiny.tokenizer, TrainConfig(), 2, items) is None


def test_trainer_loss_adds_the_term_once_per_accumulated_step(tiny):
    from memft.integrations import Collator, MemFTLoss, features

    model, keep = _preserver(tiny, weight=2.0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    rows = features(phonebook(4, seed=5), tiny.tokenizer)
    batch = Collator(tiny.tokenizer.pad_token_id)(rows)
    labels = batch.pop("labels")
    out = model(**batch)
    plain = MemFTLoss("sft")(out, labels).item()
    term = keep.loss(0)[0].item()
    assert term > 0
    with_term = MemFTLoss("sft", preserve=keep)
    assert with_term(out, labels).item() == pytest.approx(plain + term, rel=1e-5)
    assert with_term.stats["preserve_kl"] == pytest.approx(term / 2.0, rel=1e-5)
    # two micro-batches of one step (Trainer's num_items_in_batch): the term counts once in all
    total = int((labels[:, 1:] != -100).sum())
    parts = [with_term(model(**{k: v[s] for k, v in batch.items()}), labels[s], num_items_in_batch=total).item()
             for s in (slice(0, 2), slice(2, 4))]
    assert sum(parts) == pytest.approx(plain + term, rel=1e-5)
