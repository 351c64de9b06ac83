"""The temporal curriculum over records (MemFT-SW's inter-batch part): which records a step may train.

Pure Python on a `state` dict that persists across steps (no torch). The records' order is `order`: "shuffle"
(default: records 0..n-1 shuffled once with random.Random(seed)), or an explicit permutation of 0..n-1, easiest first
(`easy_first` builds one from per-record difficulties; the research runner resolves ORDER_SHORTEST, "shorter records
first", from the tokenized records: memft.research.runs.resolve_order). Stage k trains the first
stage_size(ratios[k], n) records of that order. A stage moves on, never
back, when any of these holds (checked at every step and whenever the training loop starts an epoch):
- schedule by step (stage_epochs None): the step reached boundaries[k] (default stage_starts(len(ratios), max_steps));
- schedule by epoch (stage_epochs E, the reference's unit): the stage's records have been trained E times each
  (E * stage_size records trained since the stage began; one epoch = one pass over the stage's records);
- early advance: every record of the stage was certified when last seen (all its tokens the argmax).
The objective calls `active` with the step's records; the loop calls `stage_records` at each epoch start and draws
its mini-batches from those records only (training the others would be wasted: the objective gives them weight 0).
State read: state["step"], state["max_steps"] (schedule by step), state["n_records"]; written: state["curriculum"].

Core layer: may import other core modules only; the memory store, checks, research tools, integrations and the CLI build on it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

RATIOS = (0.2, 0.4, 0.6, 0.8, 1.0)
ORDER_SHUFFLE, ORDER_SHORTEST = "shuffle", "shortest"


def easy_first(difficulty: Sequence[float]) -> list[int]:
    """Record indices by increasing difficulty (ties by index): the paper's easy-first order.

    >>> easy_first([12, 11, 15, 11])
    [1, 3, 0, 2]
    """
    return sorted(range(len(difficulty)), key=lambda i: (difficulty[i], i))


def stage_starts(n_stages: int, max_steps: int) -> list[int]:
    """Default curriculum boundaries: stage k starts at step round(k * max_steps / (2 * n_stages)) (Python round).

    The last stage (every record) starts before half the step budget. max_steps = 100, 5 stages: [0, 10, 20, 30, 40].
    """
    return [round(k * max_steps / (2 * n_stages)) for k in range(n_stages)]


def stage_size(ratio: float, n: int) -> int:
    """Records in a stage of `ratio` of n: ceil(ratio * n), at least 1. stage_size(0.6, 10) = 6 (not 7: the 1e-9)."""
    return max(1, math.ceil(ratio * n - 1e-9))


def problems(seed: Any, ratios: Any, boundaries: Any, stage_epochs: Any, order: Any = ORDER_SHUFFLE) -> list[str]:
    """Every invalid curriculum option, as messages."""
    out: list[str] = []
    if order not in (ORDER_SHUFFLE, ORDER_SHORTEST):
        ok = isinstance(order, Sequence) and not isinstance(order, str) and all(isinstance(i, int) and not isinstance(i, bool) for i in order)
        if not ok or sorted(order) != list(range(len(order))):
            out.append(f"method option order must be {ORDER_SHUFFLE!r}, {ORDER_SHORTEST!r} or a permutation of the record indices "
                       f"(easiest first), got {order!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        out.append(f"method option seed must be an integer, got {seed!r}")
    good = isinstance(ratios, Sequence) and len(ratios) > 0 and all(isinstance(r, (int, float)) and 0 < r <= 1 for r in ratios)
    if not good or list(ratios) != sorted(ratios) or ratios[-1] != 1:
        out.append(f"method option ratios must be non-decreasing fractions in (0, 1] ending at 1, got {ratios!r}")
    if boundaries is not None:
        ints = isinstance(boundaries, Sequence) and all(isinstance(b, int) and not isinstance(b, bool) for b in boundaries)
        if not ints or len(boundaries) != len(ratios) or boundaries[0] != 0 or list(boundaries) != sorted(boundaries):
            out.append(f"method option boundaries must be non-decreasing step numbers starting at 0, one per ratio, got {boundaries!r}")
    if stage_epochs is not None:
        if not isinstance(stage_epochs, int) or isinstance(stage_epochs, bool) or stage_epochs < 1:
            out.append(f"method option stage_epochs must be an integer >= 1 (epochs per stage) or null (stages by step), got {stage_epochs!r}")
        elif boundaries is not None:
            out.append("method options boundaries (steps) and stage_epochs (epochs per stage) exclude each other; give one")
    return out


def _advance(state: dict, ratios: Sequence[float], boundaries: Sequence[int] | None, stage_epochs: int | None) -> dict:
    """state["curriculum"] with its stage moved on as far as the schedule and early advance allow."""
    cur = state["curriculum"]
    n, last = state["n_records"], len(ratios) - 1
    stage = cur["stage"]
    if stage_epochs is None:
        starts = stage_starts(len(ratios), state["max_steps"]) if boundaries is None else boundaries
        stage = max(stage, max(k for k, b in enumerate(starts) if b <= state["step"]))
    if stage != cur["stage"]:
        cur["trained"] = 0
    while stage < last:
        epochs_done = stage_epochs is not None and cur["trained"] >= stage_epochs * stage_size(ratios[stage], n)
        if not (epochs_done or all(cur["certified"].get(r, False) for r in cur["order"][: stage_size(ratios[stage], n)])):
            break
        stage += 1
        cur["trained"] = 0
    cur["stage"] = stage
    return cur


def _init(state: dict, seed: int, order_opt: Any = ORDER_SHUFFLE) -> dict:
    cur = state.get("curriculum")
    if cur is None:
        n = state["n_records"]
        if order_opt == ORDER_SHUFFLE:
            order = list(range(n))
            random.Random(seed).shuffle(order)
        elif order_opt == ORDER_SHORTEST:
            raise ValueError(f"method option order {ORDER_SHORTEST!r} needs the records' lengths, which the training loop does not "
                             "see: train through memft sweep/bench/compare (memft.research.runs.resolve_order turns it into the "
                             "order), or give the order as a list of record indices, easiest first")
        else:
            order = list(order_opt)
            if sorted(order) != list(range(n)):
                raise ValueError(f"method option order: {len(order)} indices for {n} records; give a permutation of 0..{n - 1}")
        cur = state["curriculum"] = {"order": order, "rank": {r: i for i, r in enumerate(order)}, "stage": 0, "certified": {}, "trained": 0}
    return cur


def active(
    records: list[int], certified: list[bool], state: dict, seed: int, ratios: Sequence[float], boundaries: Sequence[int] | None,
    stage_epochs: int | None = None, order: Any = ORDER_SHUFFLE,
) -> tuple[list[bool], dict[str, float]]:
    """Which of `records` (this step's) are in the current stage; records the step's certification statuses first
    (so early advance happens within this same step) and counts the active ones as trained.

    A record never seen counts as not certified. Stats: curriculum_stage, active_ratio (stage size / n).
    """
    cur = _init(state, seed, order)
    cur["certified"].update(zip(records, certified))
    stage = _advance(state, ratios, boundaries, stage_epochs)["stage"]
    m = stage_size(ratios[stage], state["n_records"])
    on = [cur["rank"][r] < m for r in records]
    cur["trained"] += sum(on)
    return on, {"curriculum_stage": float(stage), "active_ratio": m / state["n_records"]}


def stage_records(state: dict, seed: int, ratios: Sequence[float], boundaries: Sequence[int] | None, stage_epochs: int | None = None,
                  order: Any = ORDER_SHUFFLE) -> list[int]:
    """The records of the current stage (sorted), after moving the stage on as `active` would at this step."""
    cur = _init(state, seed, order)
    stage = _advance(state, ratios, boundaries, stage_epochs)["stage"]
    return sorted(cur["order"][: stage_size(ratios[stage], state["n_records"])])
