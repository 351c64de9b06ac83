"""llama.cpp's 8-bit activation quantisation, simulated in a PyTorch forward.

For a quantised weight type (Q4_1, Q8_0, ...) llama.cpp's CPU matrix product first quantises the activation rows
to 8 bits in blocks of 32 along the input dimension (q8_0 / q8_1: per block a scale d = absmax / 127, values
round(x / d), d kept in fp16), then multiplies in integers. `simulate_q8_activations(model)` puts the same rounding on the
input of every base linear layer (and the output head), with a straight-through gradient (the rounding is treated
as the identity when differentiating), so a training or certification pass sees the runtime's arithmetic. LoRA
A/B products stay unrounded, as llama.cpp keeps LoRA tensors in f32 and multiplies them in f32.

Runtime layer: may import the core only (torch inside the functions).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

BLOCK = 32


def q8_blocks(x: Any) -> Any:
    """x rounded as llama.cpp's q8_0 activation blocks (last dimension in blocks of 32; a remainder is left as is),
    the gradient passed straight through. [..., n] -> [..., n]

    >>> import torch
    >>> x = torch.tensor([[1.0, -0.5] + [0.001] * 30])
    >>> y = q8_blocks(x); float(y[0, 0]), float(y[0, 1]), float(y[0, 2])  # d = 1/127 in fp16: 0.001 rounds to 0
    (0.99993896484375, -0.50390625, 0.0)
    """
    import torch

    n = x.shape[-1] - x.shape[-1] % BLOCK
    if n == 0:
        return x
    head = x[..., :n]
    blocks = head.reshape(*head.shape[:-1], n // BLOCK, BLOCK).float()
    d = blocks.abs().amax(dim=-1, keepdim=True) / 127  # ggml divides by the fp32 scale and keeps it as fp16
    safe = torch.where(d > 0, d, torch.ones_like(d))
    q = torch.round(blocks / safe).clamp(-127, 127) * d.to(torch.float16).float()
    rounded = q.reshape(head.shape).to(x.dtype)
    out = head + (rounded - head).detach()
    return torch.cat([out, x[..., n:]], dim=-1) if n < x.shape[-1] else out


def _base_linears(model: Any) -> list[Any]:
    """The base model's linear layers whose weights llama.cpp holds quantised: every nn.Linear that is not a LoRA
    A/B matrix (PEFT's lora.Linear keeps the frozen one as `base_layer`)."""
    from torch import nn

    return [m for name, m in model.named_modules() if isinstance(m, nn.Linear) and ".lora_" not in name and "lora_A" not in name
            and "lora_B" not in name]


@contextmanager
def simulate_q8_activations(model: Any) -> Iterator[int]:
    """Within the block, the inputs of the base's linear layers are rounded as llama.cpp's q8 blocks (-> how many
    layers are hooked). Removed on exit."""
    hooks = [m.register_forward_pre_hook(lambda mod, args: (q8_blocks(args[0]), *args[1:])) for m in _base_linears(model)]
    try:
        yield len(hooks)
    finally:
        for h in hooks:
            h.remove()
