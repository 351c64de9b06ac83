"""The "null" LoRA init (memft.training.null_init, memft.model.lora_init.null_rows): A's rows in the directions general
text's inputs barely use, scaled to the records; the adapter then barely acts on that text."""

import torch

from memft.config import LoraSettings, TrainConfig
from memft.model import lora_init, peft_lora
from memft.model.batching import collate
from memft.prompts.encoding import encode_all
from memft.research.bench.phonebook import phonebook
from memft.training import null_init
from memft.training.fit import fit
from tests.model.test_lora_init import layer_inputs


def _moments(x: torch.Tensor) -> lora_init.Moments:
    m = lora_init.Moments(x.shape[1])
    m.add(x)
    return m


def test_null_rows_pick_the_least_used_directions_smallest_first_and_scale_them_to_the_records():
    # Text: +-3, +-2, +-1, +-0.5 along the columns of a rotated basis q (8 rows: second moment s^2 / 4 along q_i);
    # records: +-4 along each axis (8 rows: second moment 4 I, RMS 2 in every direction).
    q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))
    text = torch.cat([s * q[:, i][None] * torch.tensor([[1.0], [-1.0]], dtype=torch.float64) for i, s in enumerate([3.0, 2.0, 1.0, 0.5])])
    recs = torch.cat([4 * torch.eye(4, dtype=torch.float64), -4 * torch.eye(4, dtype=torch.float64)])
    a = lora_init.null_rows(_moments(text), _moments(recs), torch.zeros(2, 4, dtype=torch.float64))
    # rows: +-q[:, 3] / 2 then +-q[:, 2] / 2 (the least text energy first; unit RMS on the records)
    assert torch.allclose((a @ q).abs(), torch.tensor([[0, 0, 0, 0.5], [0, 0, 0.5, 0]], dtype=torch.float64), atol=1e-9)
    feats = text @ a.T  # the text's features: RMS (0.5 / 2) / 2 and (1 / 2) / 2, against 1 for the records
    assert torch.allclose(feats.pow(2).mean(0).sqrt(), torch.tensor([0.125, 0.25], dtype=torch.float64))
    assert torch.allclose((recs @ a.T).pow(2).mean(0), torch.ones(2, dtype=torch.float64))


def _attached(tiny, rank=4):
    items = encode_all(phonebook(24, seed=3), tiny.tokenizer)
    model, place = peft_lora.attach(tiny.model, LoraSettings(rank=rank, layers=(2, 3)), seed=0)
    return model, items, min(place["layers"])


def _inputs(model, items, pad):
    """Every LoRA layer's inputs [N, d] (float64) at the target-predicting positions of `items` (a plain full forward)."""
    return {n: x.double() for n, x in layer_inputs(model, items, pad).items()}


def test_null_init_is_orthogonal_to_the_text_s_main_directions(tiny):
    model, items, start = _attached(tiny)
    pad, text = tiny.tokenizer.pad_token_id, null_init.text_items(tiny.tokenizer, windows=32, window=64)
    xt, xr = _inputs(model, text, pad), _inputs(model, items, pad)  # B is zero: the inputs do not depend on A
    rep = null_init.apply_null(model, tiny.tokenizer, items, start, text=text)
    assert rep.text_positions == 32 * 63 and rep.record_positions == sum(len(e.targets) for e in items)
    mods = lora_init.lora_layers(model)
    assert len(mods) == 6  # gate/up/down of layers 2 and 3
    for n, m in mods.items():
        a = m.lora_A["default"].weight.detach().double()
        _, evecs = torch.linalg.eigh(xt[n].T @ xt[n] / xt[n].shape[0])
        unit = a / a.norm(dim=1, keepdim=True)
        assert (unit @ evecs[:, a.shape[0]:]).abs().max() < 1e-4, n  # no part along the text's other directions
        assert torch.allclose((xr[n] @ a.T).pow(2).mean(0), torch.ones(a.shape[0], dtype=torch.float64), rtol=1e-4), n
        mine = ((xt[n] @ a.T).pow(2).mean(0) / (xr[n] @ a.T).pow(2).mean(0)).mean()
        assert abs(rep.text_to_records[n] - float(mine)) < 1e-3 * float(mine), n


def test_null_contrast_init_drives_the_adapter_far_less_on_text_than_the_centered_init_at_equal_b(tiny):
    model, items, start = _attached(tiny)
    pad, text = tiny.tokenizer.pad_token_id, null_init.text_items(tiny.tokenizer, windows=32, window=64)
    held = null_init.text_items(tiny.tokenizer, windows=48, window=64)[32:]  # windows the init did not see
    xt, xr = _inputs(model, held, pad), _inputs(model, items, pad)
    null_init.apply_null(model, tiny.tokenizer, items, start, text=text, contrast=True)
    for n, m in lora_init.lora_layers(model).items():
        a = m.lora_A["default"].weight.detach().double()
        centered = lora_init.centered_rows(_moments(xr[n]), a)
        b = torch.randn(3, a.shape[0], dtype=torch.float64)  # the same B behind either A

        def text_to_records(aa):  # mean squared output of B A x on the held-out text over that on the records
            return float((xt[n] @ aa.T @ b.T).pow(2).mean() / (xr[n] @ aa.T @ b.T).pow(2).mean())

        # The tiny random model's inputs are nearly isotropic, so no direction is far quieter on text than on the
        # records (the embedded model's are not: benchmarks/README.md, Locality); the contrast still halves it here.
        assert text_to_records(a) < 0.7 * text_to_records(centered), n


def test_fit_with_the_null_init_sets_a_before_training_and_starts_from_the_base(tiny):
    records = phonebook(8, seed=1)
    base_logits = None
    items = encode_all(records, tiny.tokenizer)
    b = collate(items, tiny.tokenizer.pad_token_id)
    with torch.no_grad():
        base_logits = tiny.model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
    f = fit(records, tiny, LoraSettings(rank=4, layers=(2, 3)), TrainConfig(max_steps=0, lora_init="null"))
    try:
        assert f.null is not None and len(f.null.text_to_records) == 6
        assert f.train.steps == 0
        with torch.no_grad():
            assert torch.equal(f.model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits, base_logits)  # B zero
        # A is no longer PEFT's random init: every row has unit RMS on the records' inputs
        xr = _inputs(f.model, items, tiny.tokenizer.pad_token_id)
        for n, m in lora_init.lora_layers(f.model).items():
            a = m.lora_A["default"].weight.detach().double()
            assert torch.allclose((xr[n] @ a.T).pow(2).mean(0), torch.ones(4, dtype=torch.float64), rtol=1e-3), n
    finally:
        f.model.unload()
