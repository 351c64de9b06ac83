"""The spatial window (the paper's MemFT-SW) with an optional temporal curriculum; memft-sw-v01 and
memft-sw-curriculum, its variants. The weights' rules live in memft.objectives.window, the stages in memft.objectives.curriculum.

Core layer: may import other core modules only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from memft.objectives import window as sw
from memft.objectives.curriculum import RATIOS
from memft.objectives.curriculum import active as curriculum_active
from memft.objectives.curriculum import problems as curriculum_problems
from memft.objectives.common import check_flag, check_number, raise_problems, weighted
from memft.objectives.registry import Tokens, register, register_variant


def _sw_problems(
    s: Any, window: Any, tau: Any, floor: Any, patience: Any, grow: Any, max_window_factor: Any, rule: Any, curriculum: Any, seed: Any,
    ratios: Any, boundaries: Any, stage_epochs: Any, order: Any = "shuffle",
) -> list[str]:
    problems: list[str] = []
    inf = math.inf
    check_number(problems, "s", s, 0, inf, lo_open=True)
    if window is not None:
        check_number(problems, "window", window, 0, inf)
    check_number(problems, "tau", tau, 0, inf, lo_open=True)
    check_number(problems, "floor", floor, 0, 1)
    if not isinstance(patience, int) or isinstance(patience, bool) or patience < 1:
        problems.append(f"method option patience must be an integer >= 1, got {patience!r}")
    check_number(problems, "grow", grow, 0, inf)
    check_number(problems, "max_window_factor", max_window_factor, 1, inf)
    if rule not in sw.RULES:
        problems.append(f"method option rule must be one of {', '.join(sw.RULES)}, got {rule!r}")
    check_flag(problems, "curriculum", curriculum)
    return problems + curriculum_problems(seed, ratios, boundaries, stage_epochs, order)


@register("memft-sw", check=_sw_problems)
def memft_sw(
    tokens: Tokens,
    state: dict,
    *,
    s: float = 10.0,
    window: float | None = 50,
    tau: float = 20.0,
    floor: float = 0.01,
    patience: int = 3,
    grow: float = 0.5,
    max_window_factor: float = 4.0,
    rule: str = "reference",
    curriculum: bool = False,
    seed: int = 0,
    ratios: Sequence[float] = RATIOS,
    boundaries: Sequence[int] | None = None,
    stage_epochs: int | None = None,
    order: str | Sequence[int] = "shuffle",
) -> tuple[Any, dict[str, float]]:
    """Spatial window (intra-record) with an optional temporal curriculum (inter-batch).

    Spatial, per record: anchor a = the first offset whose target is not the argmax; base weights b_t = sw_base(L, s)
    (memft.objectives.window).
    A record without error: w_t = b_t. A record with one, rule "reference" (the paper's code): window_weights, i.e.
    b_t before a, b_t * exp(-(t - a) / tau) on a .. a + W_cur - 1, b_t * floor after. Rule "v01" (memft 0.1, kept
    as memft-sw-v01): window_weights_v01. W_cur = factor * `window`; the factor follows grow_factor (reference:
    +grow at every observation once the anchor has stayed put `patience` times, back to 1 when it moves or the
    count is below patience) or grow_factor_v01 (+grow once per `patience` stuck observations), capped at
    max_window_factor; see memft.objectives.window.factors. window=None: no spatial weighting, w_t = 1.

    Temporal (curriculum=True): only tokens of records in the current stage keep their weight, the others get 0;
    see memft.objectives.curriculum (options seed, ratios, boundaries, stage_epochs, order: "shuffle", "shortest" or an
    explicit easiest-first permutation). Stats: trained_tokens, weight_sum,
    anchored_records, max_window; with the curriculum active_ratio and curriculum_stage. All weights 0 -> (None, stats).
    """
    import torch

    raise_problems(_sw_problems(s, window, tau, floor, patience, grow, max_window_factor, rule, curriculum, seed, ratios, boundaries, stage_epochs, order))
    loss = tokens.loss.detach()  # [N]
    records, inv, anchor = _first_errors(tokens)  # [R], [N], [R]
    recs, anchors = records.tolist(), anchor.tolist()
    stats: dict[str, float] = {}
    active = [True] * len(recs)
    if curriculum:
        active, cstats = curriculum_active(recs, [a < 0 for a in anchors], state, seed, ratios, boundaries, stage_epochs, order)
        stats.update(cstats)
    if window is None:
        w = torch.ones_like(loss)
    else:
        factor = sw.factors(recs, anchors, active, state, rule, patience, grow, max_window_factor)
        base = sw.sw_base(loss, s)  # [N]
        a = anchor[inv]  # [N] anchor of each token's record, -1: none
        width = torch.tensor(factor, dtype=loss.dtype, device=loss.device)[inv] * window  # [N] W_cur
        rule_fn = sw.window_weights if rule == "reference" else sw.window_weights_v01
        w = torch.where(a < 0, base, rule_fn(base, tokens.offset - a, width, tau, floor))
        stats["max_window"] = max(factor, default=0.0) * window
    w = w * torch.tensor(active, dtype=loss.dtype, device=loss.device)[inv]
    out, wstats = weighted(tokens.loss, w)
    stats.update(wstats, anchored_records=float(sum(x >= 0 and on for x, on in zip(anchors, active))))
    return out, stats


def _first_errors(tokens: Tokens) -> tuple[Any, Any, Any]:
    """records [R] (sorted, unique), inv [N] (index of each token's record in `records`), anchor [R]: the offset of
    the record's first argmax error, -1 when the record has none (certified)."""
    import torch

    records, inv = torch.unique(tokens.record, return_inverse=True)
    none = int(tokens.offset.max()) + 1
    wrong = torch.where(tokens.correct, none, tokens.offset)  # [N] offset of errors, `none` elsewhere
    anchor = torch.full((len(records),), none, dtype=wrong.dtype, device=wrong.device).scatter_reduce(0, inv, wrong, "amin")
    return records, inv, torch.where(anchor == none, -1, anchor)


register_variant(
    "memft-sw-v01", "memft-sw",
    "memft-sw as memft 0.1 defined it (rule v01: flat floor outside a .. a + W, growth once per 3 stuck steps). Kept "
    "under its own name, pending a measurement against the reference rule, so runs that used it keep their meaning.",
    rule="v01",
)
register_variant("memft-sw-curriculum", "memft-sw", "memft-sw with the temporal curriculum on (and the spatial window, W = 50).", curriculum=True)
