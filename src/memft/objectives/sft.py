"""Plain SFT (the mean cross-entropy) and the unlikelihood loss that forgetting trains with.

Core layer: may import other core modules only.
"""

from __future__ import annotations

from typing import Any

from memft.objectives.registry import Tokens, register


@register("sft")
def sft(tokens: Tokens, state: dict, **_: Any) -> tuple[Any, dict[str, float]]:
    """Plain supervised fine-tuning: the mean cross-entropy over every target token."""
    return tokens.loss.mean(), {"trained_tokens": float(tokens.loss.numel())}


def unlikelihood(prob: Any, mask: Any) -> tuple[Any, dict[str, float]]:
    """The forgetting loss (Welleck et al. 2019's unlikelihood): mean over masked tokens of -log(1 - p_t).

    prob [N] target probabilities (with grad), mask [N] bool: tokens of records still to be forgotten. It pushes the
    stored value's tokens down until greedy decoding leaves the value; None when no token is masked.
    Stats: forget_tokens.
    """
    import torch

    n = int(mask.sum())
    if n == 0:
        return None, {"forget_tokens": 0.0}
    p = prob[mask].clamp(max=1 - 1e-6)  # p = 1 would give an infinite loss
    return -torch.log1p(-p).sum() / n, {"forget_tokens": float(n)}
