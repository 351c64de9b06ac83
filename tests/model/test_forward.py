"""The frozen-prefix cache and target-only logits must equal the plain full forward, values and gradients."""

import torch
import torch.nn.functional as F

from memft.model import peft_lora
from memft.model.batching import collate
from memft.config import LoraSettings
from memft.prompts.encoding import encode_all
from memft.model.forward import Runner
from memft.prompts.records import Record

RECS = [Record("a:", "12345"), Record("longer key here:", "x"), Record("k", "some value, with {braces}\n")]


def _setup(tiny, layers=(2,)):
    items = encode_all(RECS, tiny.tokenizer)
    model, place = peft_lora.attach(tiny.model, LoraSettings(rank=4, layers=layers), seed=1)
    # Non-zero B so the adapter changes the output (B starts at zero).
    for n, p in model.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.5)
    return model, items, min(place["layers"])


def _full_logits(model, items, pad):
    b = collate(items, pad)
    logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits  # [B, T, V]
    return logits[b.rows, b.cols].float(), b


def test_cached_prefix_equals_full_forward_with_padding(tiny):
    model, items, start = _setup(tiny)
    pad = tiny.tokenizer.pad_token_id
    ref, b = _full_logits(model, items, pad)
    r = Runner(model, items, pad, start=start, cache=True)
    got, gb = r.logits([0, 1, 2])
    assert torch.equal(gb.targets, b.targets)
    assert torch.allclose(got, ref, atol=1e-5)
    again, _ = r.logits([2, 0])  # other order and padding length, from the cache now
    per = {i: s for i, s in zip([0, 1, 2], ref.split(b.lengths.tolist()))}
    assert torch.allclose(again, torch.cat([per[2], per[0]]), atol=1e-5)
    assert set(r._prefix) == {0, 1, 2}


def test_cached_gradients_equal_full_forward(tiny):
    model, items, start = _setup(tiny, layers=(1, 3))
    pad = tiny.tokenizer.pad_token_id
    params = [p for p in model.parameters() if p.requires_grad]
    ref, b = _full_logits(model, items, pad)
    F.cross_entropy(ref, b.targets).backward()
    g_ref = [p.grad.clone() for p in params]
    model.zero_grad()
    r = Runner(model, items, pad, start=start, cache=True)
    r.logits([0, 1, 2])  # fill the cache first, as training does
    got, gb = r.logits([0, 1, 2])
    F.cross_entropy(got, gb.targets).backward()
    for a, g in zip(g_ref, [p.grad for p in params]):
        assert torch.allclose(a, g, atol=1e-5, rtol=1e-4)
    assert any(a.abs().sum() > 0 for a in g_ref)


def test_uncached_runner_matches_too(tiny):
    model, items, start = _setup(tiny)
    pad = tiny.tokenizer.pad_token_id
    ref, _ = _full_logits(model, items, pad)
    got, _ = Runner(model, items, pad, start=start, cache=False).logits([0, 1, 2])
    assert torch.allclose(got, ref, atol=1e-5)


def test_adopted_prefixes_give_the_same_logits_and_wrong_lengths_are_refused(tiny):
    import pytest

    model, items, start = _setup(tiny)
    pad = tiny.tokenizer.pad_token_id
    ref = Runner(model, items, pad, start=start, cache=True)
    want, _ = ref.logits([0, 1, 2])
    # The last position of each record never predicts a target: a prefix one shorter gives the same logits.
    r = Runner(model, items, pad, start=start, cache=True)
    assert r.adopt({i: ref._prefix[i][:-1] for i in range(3)}) == 3
    got, _ = r.logits([0, 1, 2])
    assert torch.allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match="record 1"):
        r.adopt({1: ref._prefix[1][:-2]})
    assert Runner(model, items, pad, start=start, cache=False).adopt({0: ref._prefix[0]}) == 0


def test_length_groups_give_the_logits_and_gradients_of_one_padded_batch(tiny, monkeypatch):
    """A step over records of very different lengths runs as groups of similar length (forward.Runner.logits):
    the logits and the gradients are those of the single padded batch, in the same record order."""
    import memft.model.forward as fw
    from memft.model.batching import length_groups

    recs = [Record("a:", "1"), Record("key:", "x" * 3), Record("long note:", "word " * 40), Record("b:", "22"), Record("mid:", "y " * 9)]
    items = encode_all(recs, tiny.tokenizer)
    lengths = [len(e.ids) for e in items]
    idx = [2, 0, 4, 1, 3]
    assert len(length_groups([lengths[i] for i in idx])) >= 2  # the case under test: more than one group
    model, _ = peft_lora.attach(tiny.model, LoraSettings(rank=4, layers=(1, 3)), seed=1)
    for n, p in model.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.5)
    pad = tiny.tokenizer.pad_token_id
    params = [p for p in model.parameters() if p.requires_grad]

    def run(grouped):
        monkeypatch.setattr(fw, "length_groups", length_groups if grouped else (lambda ls: [list(range(len(ls)))]))
        model.zero_grad()
        r = Runner(model, items, pad, start=1, cache=True)
        logits, b = r.logits(idx)
        F.cross_entropy(logits, b.targets).backward()
        return logits.detach(), b, [p.grad.clone() for p in params]

    one, b1, g1 = run(False)
    grp, b2, g2 = run(True)
    assert torch.equal(b1.targets, b2.targets) and torch.equal(b1.rows, b2.rows)
    assert torch.allclose(one, grp, atol=1e-5)
    ref, _ = _full_logits(model, [items[i] for i in idx], pad)
    assert torch.allclose(grp, ref.detach(), atol=1e-5)
    assert any(g.abs().sum() > 0 for g in g1)
    for a, g in zip(g1, g2):
        assert torch.allclose(a, g, atol=1e-5, rtol=1e-4)
