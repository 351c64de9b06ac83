"""The paper's MemFT-SW for PhoneBook: the temporal curriculum over records times the paper's OT.

Core layer: may import other core modules only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from memft.objectives.curriculum import RATIOS
from memft.objectives.curriculum import active as curriculum_active
from memft.objectives.curriculum import problems as curriculum_problems
from memft.objectives.common import check_flag, raise_problems
from memft.objectives.ot import ot_problems, with_fallback
from memft.objectives.registry import Tokens, register


def _pb_problems(threshold: Any, fallback: Any, curriculum: Any, seed: Any, ratios: Any, boundaries: Any, stage_epochs: Any,
                 order: Any = "shuffle") -> list[str]:
    problems = ot_problems(threshold, None, False, 0.0, fallback)
    check_flag(problems, "curriculum", curriculum)
    return problems + curriculum_problems(seed, ratios, boundaries, stage_epochs, order)


@register("memft-sw-phonebook", check=_pb_problems)
def memft_sw_phonebook(
    tokens: Tokens,
    state: dict,
    *,
    threshold: float = 0.5,
    fallback: str = "skip",
    curriculum: bool = True,
    seed: int = 0,
    ratios: Sequence[float] = RATIOS,
    boundaries: Sequence[int] | None = None,
    stage_epochs: int | None = None,
    order: str | Sequence[int] = "shuffle",
) -> tuple[Any, dict[str, float]]:
    """The paper's MemFT-SW for PhoneBook: the temporal curriculum over records times the paper's OT, no spatial window.

    w_t = 1[p_t <= threshold] * 1[the token's record is in the current stage] (memft.objectives.curriculum). No such token:
    `fallback` "skip" -> (None, stats), zero back-propagation (the paper's formula); "sft" -> the mean loss over the
    stage's tokens (the reference code). The training loop draws mini-batches from the stage's records only
    (objectives.stage_records). Stages go by step (the last from half the budget) unless stage_epochs = E is given:
    then each stage lasts E passes over its records, the reference's unit (its per-stage epoch counts are not
    encoded here: set E for a reproduction). `order`: the curriculum's record order (memft.objectives.curriculum): "shuffle",
    "shortest" (the paper's easy-first, resolved from the records by the research runner) or a permutation. Stats: trained_tokens, weight_sum, active_tokens, active_ratio,
    curriculum_stage, and fallback = 1 when the fallback was used.
    """
    import torch

    raise_problems(_pb_problems(threshold, fallback, curriculum, seed, ratios, boundaries, stage_epochs, order))
    loss = tokens.loss.detach()  # [N]
    records, inv = torch.unique(tokens.record, return_inverse=True)  # [R], [N]
    stats: dict[str, float] = {}
    mask = torch.ones_like(loss)  # [N] 1: the token's record is in the stage
    if curriculum:
        correct = torch.ones(len(records), dtype=torch.bool, device=loss.device).scatter_reduce(0, inv, tokens.correct, "amin")  # [R]
        on, stats = curriculum_active(records.tolist(), correct.tolist(), state, seed, ratios, boundaries, stage_epochs, order)
        mask = torch.tensor(on, dtype=loss.dtype, device=loss.device)[inv]
    trained = loss >= -math.log(threshold)  # [N] p_t <= threshold
    out, wstats = with_fallback(tokens.loss, trained.to(loss.dtype) * mask, mask, fallback)
    return out, {**stats, **wstats, "active_tokens": float((trained & (mask > 0)).sum())}
