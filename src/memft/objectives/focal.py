"""Focal loss (Lin et al. 2017) over target tokens.

Core layer: may import other core modules only.
"""

from __future__ import annotations

import math
from typing import Any

from memft.objectives.common import check_number, raise_problems
from memft.objectives.registry import Tokens, register


def _focal_problems(gamma: Any) -> list[str]:
    problems: list[str] = []
    check_number(problems, "gamma", gamma, 0, math.inf)
    return problems


@register("focal", check=_focal_problems)
def focal(tokens: Tokens, state: dict, *, gamma: float = 2.0) -> tuple[Any, dict[str, float]]:
    """Focal loss (Lin et al. 2017) over target tokens: mean_t (1 - p_t)^gamma * L_t, p_t = exp(-L_t) [N].

    As published, the gradient flows through the modulating factor too (it is not a detached weight).
    Stats: trained_tokens ((1 - p_t)^gamma > 0), weight_sum (sum of the factors).
    """
    import torch

    raise_problems(_focal_problems(gamma))
    p = torch.exp(-tokens.loss)  # [N], with grad
    factor = (1 - p).clamp_min(0) ** gamma  # clamp: a rounding p > 1 must not give NaN for fractional gamma
    f = factor.detach()
    return (factor * tokens.loss).mean(), {"trained_tokens": float((f > 0).sum()), "weight_sum": float(f.sum())}
