"""Training objectives: pure functions of per-token losses -> (loss, stats), picked by name.

Signature of every objective:  fn(tokens: Tokens, state: dict, **options) -> (loss | None, stats)
`tokens` covers every target token of the step (all micro-batches); `state` persists across steps (for objectives
that track anchors or curricula); a loss of None means "no update this step" (nothing to learn).
Losses are sums over tokens divided by the number (or total weight) of tokens, never averaged twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

OBJECTIVES: dict[str, Callable[..., tuple[Any, dict[str, float]]]] = {}


@dataclass
class Tokens:
    """All target tokens of one step, [N] each: loss (with grad), correct (argmax == target), record index, offset."""

    loss: Any  # torch.Tensor [N]
    correct: Any  # torch.Tensor [N] bool
    record: Any  # torch.Tensor [N] long
    offset: Any  # torch.Tensor [N] long


def register(name: str) -> Callable:
    def deco(fn: Callable) -> Callable:
        OBJECTIVES[name] = fn
        return fn

    return deco


@register("sft")
def sft(tokens: Tokens, state: dict, **_: Any) -> tuple[Any, dict[str, float]]:
    """Plain supervised fine-tuning: the mean cross-entropy over every target token."""
    return tokens.loss.mean(), {"trained_tokens": float(tokens.loss.numel())}


def get(name: str) -> Callable[..., tuple[Any, dict[str, float]]]:
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise KeyError(f"unknown objective {name!r}; known: {', '.join(OBJECTIVES)}") from None
