"""Data-aware LoRA init (memft.model.lora_init): centered, whitened features; the adapter's output unchanged at init;
trained adapters untouched."""

import torch

from memft.model import peft_lora
from memft.model import lora_init
from memft.model.batching import collate
from memft.config import LoraSettings, TrainConfig
from memft.prompts.encoding import encode_all
from memft.research.bench.phonebook import phonebook
from memft.training.loop import train


def _fresh(tiny, n=40, rank=4):
    items = encode_all(phonebook(n, seed=4), tiny.tokenizer)
    model, place = peft_lora.attach(tiny.model, LoraSettings(rank=rank, layers=(2, 3)), seed=0)
    return model, items, min(place["layers"])


def layer_inputs(model, items, pad):
    """Every LoRA layer's inputs x [N, d] at the target-predicting positions of `items`, from a plain full forward
    (tests/training/test_null_init.py uses it too)."""
    b = collate(items, pad)
    got = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: got.__setitem__(n, inp[0][b.rows, b.cols]))
             for n, m in lora_init.lora_layers(model).items()]
    with torch.no_grad():
        model(input_ids=b.input_ids, attention_mask=b.attention_mask)
    for h in hooks:
        h.remove()
    return got


def _features(model, items, pad):
    """A x of every LoRA layer at the target-predicting positions, from a plain full forward."""
    mods = lora_init.lora_layers(model)
    return {n: x @ mods[n].lora_A["default"].weight.T for n, x in layer_inputs(model, items, pad).items()}


def test_centered_init_gives_zero_mean_unit_covariance_features_and_keeps_the_output(tiny):
    model, items, start = _fresh(tiny)
    pad = tiny.tokenizer.pad_token_id
    b = collate(items, pad)
    with torch.no_grad():
        before = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
    res = train(model, items, pad, TrainConfig(max_steps=0, lora_init="centered"), start)
    with torch.no_grad():
        after = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
    assert torch.equal(before, after)  # B is zero: A changed, the model did not
    feats = _features(model, items, pad)
    assert len(feats) == 6  # gate/up/down of layers 2 and 3
    for name, f in feats.items():
        f = f.double()
        assert f.mean(0).abs().max() < 1e-3, name
        cov = (f - f.mean(0)).T @ (f - f.mean(0)) / f.shape[0]
        assert torch.allclose(cov, torch.eye(cov.shape[0], dtype=cov.dtype), atol=1e-3), name
    assert res.steps == 0


def test_random_init_is_peft_s_and_a_trained_adapter_keeps_its_a(tiny):
    model, items, start = _fresh(tiny)
    pad = tiny.tokenizer.pad_token_id
    a0 = {n: m.lora_A["default"].weight.clone() for n, m in lora_init.lora_layers(model).items()}
    train(model, items, pad, TrainConfig(max_steps=0), start)  # lora_init="random": nothing changes
    assert all(torch.equal(a0[n], m.lora_A["default"].weight) for n, m in lora_init.lora_layers(model).items())
    for m in lora_init.lora_layers(model).values():
        m.lora_B["default"].weight.data.fill_(0.01)  # as if trained
    assert not lora_init.is_fresh(model)
    train(model, items, pad, TrainConfig(max_steps=0, lora_init="centered"), start)
    assert all(torch.equal(a0[n], m.lora_A["default"].weight) for n, m in lora_init.lora_layers(model).items())


def test_centered_init_trains_to_certification(tiny):
    model, items, start = _fresh(tiny, n=12, rank=8)
    res = train(model, items, tiny.tokenizer.pad_token_id,
                TrainConfig(lr=1e-2, max_steps=600, batch_size=4, lora_init="centered", head_vocab="restricted"), start)
    assert res.certified_at is not None and len(res.final) == 12
    assert all(all(st.correct) and min(st.prob) > 0.5 for st in res.final.values())
