"""The restricted training head (memft.model.vocab): exact restricted-softmax losses and gradients, growth from full
checks, and certification decided only by full-vocabulary passes."""

import torch
import torch.nn.functional as F

from memft.model import peft_lora
from memft.model.batching import collate
from memft.config import LoraSettings, TrainConfig
from memft.prompts.encoding import encode_all
from memft.certify.evaluate import teacher_forced, token_table
from memft.model.forward import Runner
from memft.research.bench.phonebook import phonebook
from memft.training.loop import train
from memft.model.vocab import TrainVocab


def _setup(tiny, n=5):
    items = encode_all(phonebook(n, seed=3), tiny.tokenizer)
    model, place = peft_lora.attach(tiny.model, LoraSettings(rank=4, layers=(2, 3)), seed=1)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.3)  # B starts at zero; make the adapter matter
    return model, items, min(place["layers"])


def test_restricted_logits_are_the_full_logits_at_its_ids(tiny):
    model, items, start = _setup(tiny)
    pad = tiny.tokenizer.pad_token_id
    r = Runner(model, items, pad, start=start, cache=True)
    full, b = r.logits(range(len(items)))
    vocab = TrainVocab(full.shape[1], b.targets.tolist() + [0, 1, 7])
    sub, sb = r.logits(range(len(items)), vocab=vocab)
    assert sub.shape == (full.shape[0], len(vocab))
    assert torch.allclose(sub, full[:, vocab.ids], atol=1e-6)
    assert torch.equal(vocab.ids[sb.targets], b.targets)  # targets map to their place in the subset
    # The restricted loss is the cross-entropy of the softmax over the subset, computed by hand.
    lp = full[:, vocab.ids] - torch.logsumexp(full[:, vocab.ids], dim=1, keepdim=True)
    want = -lp.gather(1, sb.targets[:, None]).squeeze(1)
    assert torch.allclose(token_table(sub, sb)["loss"], want, atol=1e-5)
    # and p over a subset bounds p over the vocabulary from above
    assert bool((token_table(sub, sb)["prob"] >= token_table(full, b)["prob"] - 1e-6).all())


def test_whole_vocabulary_as_the_subset_gives_the_full_gradients(tiny):
    model, items, start = _setup(tiny)
    pad = tiny.tokenizer.pad_token_id
    params = [p for p in model.parameters() if p.requires_grad]
    r = Runner(model, items, pad, start=start, cache=True)
    full, b = r.logits([0, 1, 2])
    F.cross_entropy(full, b.targets).backward()
    g_full = [p.grad.clone() for p in params]
    model.zero_grad()
    vocab = TrainVocab(full.shape[1], range(full.shape[1]))
    sub, sb = r.logits([0, 1, 2], vocab=vocab)
    F.cross_entropy(sub, sb.targets).backward()
    for a, g in zip(g_full, [p.grad for p in params]):
        assert torch.allclose(a, g, atol=1e-6)
    assert any(a.abs().sum() > 0 for a in g_full)


def test_competitors_of_a_full_check_join_the_vocabulary():
    v = TrainVocab(6, [0])
    logits = torch.tensor([[0.0, 5.0, 1.0, 4.0, -1.0, 0.5], [3.0, 0.0, 0.0, 0.0, 2.0, 0.0]])
    assert v.add_competitors(logits, k=2) == 3  # rows' top-2: {1, 3} and {0, 4}; 0 was in already
    assert v.ids.tolist() == [0, 1, 3, 4]
    assert v.add_competitors(logits, k=2) == 0


def test_restricted_training_certifies_only_through_a_full_pass(tiny):
    items = encode_all(phonebook(8, seed=5), tiny.tokenizer)
    model, place = peft_lora.attach(tiny.model, LoraSettings(rank=8, layers=(2,)), seed=0)
    cfg = TrainConfig(lr=2e-2, max_steps=600, batch_size=3, head_vocab="restricted")
    res = train(model, items, tiny.tokenizer.pad_token_id, cfg, min(place["layers"]))
    assert res.certified_at is not None
    # The statistics training certified on are those of a fresh full-vocabulary pass with the final parameters.
    fresh = teacher_forced(Runner(model, items, tiny.tokenizer.pad_token_id))
    assert set(res.final) == set(fresh)
    for i, st in fresh.items():
        assert all(st.correct) and min(st.prob) > cfg.margin
        assert res.final[i].targets == st.targets  # full ids, not subset indices
        assert max(abs(a - b) for a, b in zip(res.final[i].prob, st.prob)) < 1e-4


def test_restricted_and_full_training_reach_the_same_verdict(tiny):
    from memft.model.base import load_base

    items = encode_all(phonebook(6, seed=2), tiny.tokenizer)
    verdicts = []
    for head in ("full", "restricted"):
        base = tiny if head == "full" else load_base("tiny-random", device="cpu", dtype="fp32")
        model, place = peft_lora.attach(base.model, LoraSettings(rank=8, layers=(2,)), seed=0)
        res = train(model, items, base.tokenizer.pad_token_id, TrainConfig(lr=2e-2, max_steps=400, batch_size=2, head_vocab=head),
                    min(place["layers"]))
        verdicts.append(res.certified_at is not None)
    assert verdicts == [True, True]


def test_neighbours_are_the_tokens_whose_head_rows_score_highest_against_a_target():
    w = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0], [0.8, -0.1]])
    v = TrainVocab(5, [0])
    # scores against row 0: [1.0, 0.9, 0.0, -1.0, 0.8] -> top-3 = {0, 1, 4}
    assert v.add_neighbours(w, k=3) == 2 and v.ids.tolist() == [0, 1, 4]


def test_restricted_training_adds_the_targets_look_alikes_before_training(tiny):
    items = encode_all(phonebook(4, seed=1), tiny.tokenizer)
    model, place = peft_lora.attach(tiny.model, LoraSettings(rank=4, layers=(2,)), seed=0)
    seen = {}
    real = TrainVocab.add_neighbours

    def spy(self, weight, k=32):
        n = real(self, weight, k)
        seen["n"], seen["size"] = n, len(self)
        return n

    TrainVocab.add_neighbours = spy
    try:
        train(model, items, tiny.tokenizer.pad_token_id, TrainConfig(max_steps=0, head_vocab="restricted"), min(place["layers"]))
    finally:
        TrainVocab.add_neighbours = real
    targets = {t for e in items for t in e.targets}
    assert seen["n"] > 0 and seen["size"] > len(targets)
