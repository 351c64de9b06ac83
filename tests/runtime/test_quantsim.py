"""The simulated activation rounding equals gguf's own q8_0 round trip, passes gradients straight through, and
hooks the base's linear layers only (LoRA A/B stay exact, as in llama.cpp)."""

import numpy as np
import torch

from memft.runtime.quantsim import q8_blocks, simulate_q8_activations


def test_rounding_equals_the_gguf_q8_0_round_trip():
    from gguf import GGMLQuantizationType as T
    from gguf.quants import dequantize, quantize

    x = torch.randn(6, 128) * torch.logspace(-2, 1, 128)
    ref = dequantize(quantize(x.numpy(), T.Q8_0), T.Q8_0)
    ours = q8_blocks(x).numpy()
    d = np.abs(x.numpy().reshape(-1, 32)).max(axis=1) / 127
    diff = np.abs(ours - ref).reshape(-1, 32)
    # the same grid; rounding of exact halves (ties) may differ by one step of that block
    assert (diff <= d[:, None] * 1.001).all() and (diff == 0).mean() > 0.999


def test_gradient_is_straight_through():
    x = torch.randn(2, 64, requires_grad=True)
    q8_blocks(x).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_hooks_sit_on_the_base_layers_only(tiny):
    from memft.model.peft_lora import attach
    from memft.config import LoraSettings

    model, _ = attach(tiny.model, LoraSettings(rank=2, preset="all"))
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        plain = model(ids).logits
        with simulate_q8_activations(model) as n:
            sim = model(ids).logits
        again = model(ids).logits
    assert n == 4 * 7 + 1  # 4 layers x 7 projections, and the output head
    assert not torch.equal(plain, sim) and torch.equal(plain, again)  # rounding changes logits; removed on exit
