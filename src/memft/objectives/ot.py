"""Only-threshold (the paper's MemFT-OT): train only the tokens that have not passed the probability line;
memft-ot-margin, its stabilised variant.

Core layer: may import other core modules only.
"""

from __future__ import annotations

import math
from typing import Any

from memft.objectives.common import check_flag, check_number, raise_problems, weighted
from memft.objectives.registry import Tokens, register, register_variant


FALLBACKS = ("skip", "sft")


def ot_problems(threshold: Any, margin: Any, hysteresis: Any, floor: Any, fallback: Any) -> list[str]:
    problems: list[str] = []
    check_number(problems, "threshold", threshold, 0, 1, lo_open=True, hi_open=True)
    if margin is not None:
        check_number(problems, "margin", margin, threshold if isinstance(threshold, (int, float)) else 0, 1, hi_open=True)
    check_flag(problems, "hysteresis", hysteresis)
    check_number(problems, "floor", floor, 0, 1)
    if fallback not in FALLBACKS:
        problems.append(f"method option fallback must be one of {', '.join(FALLBACKS)}, got {fallback!r}")
    return problems


def with_fallback(loss: Any, w: Any, mask: Any, fallback: str) -> tuple[Any, dict[str, float]]:
    """weighted(loss, w); when every w_t is 0 and fallback is "sft", the mean loss over the tokens with mask_t > 0
    instead (stats then say fallback = 1). loss [N] with grad, w and mask [N] detached."""
    out, stats = weighted(loss, w)
    if out is None and fallback == "sft":
        out, stats = weighted(loss, mask)
        stats["fallback"] = 1.0
    return out, stats


@register("memft-ot", check=ot_problems)
def memft_ot(
    tokens: Tokens, state: dict, *, threshold: float = 0.5, margin: float | None = None, hysteresis: bool = False, floor: float = 0.0,
    fallback: str = "skip",
) -> tuple[Any, dict[str, float]]:
    """Only-threshold: train the tokens that have not passed the probability line, nothing else.

    Paper form (the defaults): w_t = 1[p_t <= p*] with p* = `threshold`, i.e. 1[L_t >= -ln p*]; a token exactly at
    p* is trained, as metrics counts p <= 0.5 as stubborn. No token to train -> (None, stats): zero back-propagation.
    fallback="sft" instead back-props the plain mean loss of the step there (what the reference code does; stats
    fallback = 1). "skip" is the default: it is the paper's formula, and it is what makes skipping records at the
    bar exact (memft.training.loop's active set) and lets a certified batch cost no update.

    Stabilised form (exact OT lets passed tokens drift back below the line, so exact match oscillates):
    - margin m: the line a token must clear to stop being trained; without hysteresis w_t = 1[p_t <= m].
    - hysteresis: a Schmitt trigger per token, identified by (record, offset) in state["ot_trained"]. A token
      enters the trained set when p_t <= threshold and leaves it only when p_t > margin; so a token at p = 0.6
      (margin 0.7) is trained if it came from below the threshold, not if it never fell under it.
    - floor f: weight of every token outside the trained set (w_t = f instead of 0); f > 0 never skips a step.
    Stats: trained_tokens (w_t > 0), active_tokens (in the trained set, w_t = 1), weight_sum.
    """
    import torch

    raise_problems(ot_problems(threshold, margin, hysteresis, floor, fallback))
    loss = tokens.loss.detach()  # [N]
    enter = loss >= -math.log(threshold)  # [N] p_t <= threshold
    stay = loss >= -math.log(threshold if margin is None else margin)  # [N] p_t <= margin
    if hysteresis:
        held: set[tuple[int, int]] = state.setdefault("ot_trained", set())
        keys = list(zip(tokens.record.tolist(), tokens.offset.tolist()))
        was = torch.tensor([k in held for k in keys], dtype=torch.bool, device=loss.device)
        active = enter | (was & stay)
        for k, a in zip(keys, active.tolist()):
            if a:
                held.add(k)
            else:
                held.discard(k)
    else:
        active = stay
    w = torch.full_like(loss, float(floor)).masked_fill(active, 1.0)  # [N]
    out, stats = with_fallback(tokens.loss, w, torch.ones_like(loss), fallback)
    stats["active_tokens"] = float(active.sum())
    return out, stats


register_variant(
    "memft-ot-margin", "memft-ot", "memft-ot with the hysteresis defaults: enter at p <= 0.5, train until p > 0.7, weight 0.05 elsewhere.",
    margin=0.7, hysteresis=True, floor=0.05,
)
