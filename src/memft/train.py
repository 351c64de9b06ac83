"""The training loop: one optimizer step per batch of records, stopping as soon as every record is certified."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from memft import objectives
from memft.config import TrainConfig
from memft.encoding import Encoded
from memft.evaluate import split_per_record, teacher_forced, token_table
from memft.forward import Runner
from memft.metrics import forgotten, meets_margin


@dataclass
class TrainResult:
    steps: int  # optimizer updates made
    certified_at: int | None  # first step at which every record was certified (None: never)
    loss_init: float  # mean target-token loss before training
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)  # one row per step


def step_batches(n: int, batch_size: int, seed: int) -> Callable[[], list[int]]:
    """Yields the record indices of each step: all of them (full batch) or seeded reshuffled epochs."""
    if batch_size >= n:
        return lambda: list(range(n))
    rng = random.Random(seed)
    queue: list[int] = []

    def nxt() -> list[int]:
        nonlocal queue
        if not queue:
            queue = list(range(n))
            rng.shuffle(queue)
        take, queue = queue[:batch_size], queue[batch_size:]
        return take

    return nxt


def train(
    model: Any,
    items: Sequence[Encoded],
    pad_id: int,
    cfg: TrainConfig,
    start_layer: int,
    on_step: Callable[[dict[str, float]], None] | None = None,
    forget: Collection[int] = (),
) -> TrainResult:
    """Train the adapter of `model` (a PEFT model) on `items` until every record meets its goal or cfg.max_steps.

    Goals: a record to keep is certified with cfg.margin (argmax everywhere and every p > margin); a record whose
    index is in `forget` must stop being recalled (metrics.forgotten), and its tokens get the unlikelihood loss
    instead of the objective's. "certified" in the history and `certified_at` mean: every goal met.
    """
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    objective = objectives.get(cfg.method)
    runner = Runner(model, items, pad_id, start=start_layer, cache=True)
    n = len(items)
    forget = frozenset(forget)
    full_batch = cfg.batch_size >= n

    def goal(i: int, correct: Sequence[bool], prob: Sequence[float]) -> bool:
        return forgotten(correct, prob) if i in forget else meets_margin(correct, prob, cfg.margin)

    next_batch = step_batches(n, cfg.batch_size, cfg.seed)
    # Per-record "last seen meeting its goal"; exact for full batch, at most one epoch stale otherwise (then confirmed).
    stats0 = teacher_forced(runner, cfg.batch_size)
    ok = {i: goal(i, st.correct, st.prob) for i, st in stats0.items()}
    losses0 = [x for i, st in stats0.items() if i not in forget for x in st.loss]
    loss_init = sum(losses0) / max(len(losses0), 1)
    state: dict[str, Any] = {}
    history: list[dict[str, float]] = []
    certified_at = None
    step = 0
    while True:
        idx = next_batch()
        logits, batch = runner.logits(idx)  # [N, V]
        tab = token_table(logits, batch)
        seen = {k: v.detach() for k, v in tab.items()}
        for i, st in zip(idx, split_per_record(seen, batch)):
            ok[i] = goal(i, st.correct, st.prob)
        record = torch.tensor(idx, device=batch.rows.device)[batch.rows]  # [N] record index of each token
        drop = torch.tensor([i in forget for i in idx], dtype=torch.bool, device=record.device)[batch.rows]  # [N]
        row = {
            "step": step,
            "loss": float(seen["loss"][~drop].mean()) if (~drop).any() else 0.0,
            "certified": sum(ok.values()) / n,
            "stubborn": int((seen["prob"][~drop] <= 0.5).sum()),
            "min_prob": float(seen["prob"][~drop].min()) if (~drop).any() else 1.0,
            "seconds": time.perf_counter() - t0,
        }
        last = step >= cfg.max_steps
        # Mini-batch mode: statuses may be an epoch stale, so confirm when they all pass, and always at the end.
        certified = (all(ok.values()) or (last and not full_batch)) and (full_batch or _confirm(runner, ok, cfg.batch_size, goal))
        if certified and certified_at is None:
            certified_at = step  # the first parameters that meet every goal
        if (certified and cfg.stop_when_certified) or last:  # stop before changing them
            history.append(row)
            break
        keep = ~drop
        tokens = objectives.Tokens(loss=tab["loss"][keep], correct=tab["correct"][keep], record=record[keep], offset=batch.offset[keep])
        state.update(step=step, max_steps=cfg.max_steps, n_records=n)  # what schedules (curricula) may read
        loss, ostats = objective(tokens, state, **cfg.method_options) if keep.any() else (None, {})
        if forget:
            still = torch.tensor([not ok[i] for i in idx], dtype=torch.bool, device=record.device)[batch.rows] & drop  # [N]
            floss, fstats = objectives.unlikelihood(tab["prob"], still)
            ostats.update(fstats)
            loss = floss if loss is None else (loss if floss is None else loss + floss)
        row.update(ostats)
        history.append(row)
        if on_step:
            on_step(row)
        if loss is not None:  # None: the objective has nothing to learn from this batch
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        step += 1
    if on_step:
        on_step(history[-1])
    return TrainResult(steps=step, certified_at=certified_at, loss_init=loss_init, seconds=time.perf_counter() - t0, history=history)


def _confirm(runner: Runner, ok: dict[int, bool], batch_size: int, goal: Callable[[int, Any, Any], bool]) -> bool:
    """Mini-batch mode: re-check every record with the current parameters before declaring success."""
    fresh = teacher_forced(runner, batch_size)
    for i, st in fresh.items():
        ok[i] = goal(i, st.correct, st.prob)
    return all(ok.values())

