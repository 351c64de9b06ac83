"""Which records a step trains, and when every record is checked again.

Two ways to pick the records of a step (TrainConfig.active_set):
- plain (research runs): every record, full batch or seeded reshuffled epochs. Each step's gradient is the
  objective's over all the records of its batch, as the paper trains. Under a curriculum an epoch is drawn from
  the records of its current stage only (objectives.stage_records), as the reference code draws them.
- active set (memft write, mini-batches only): an epoch is one pass over the records that have not yet reached
  the training bar; the others get no backward pass. They are re-checked with forward-only passes at least once per
  epoch's worth of trained records and whenever the active set runs empty, and any that slipped join it again.
  A full batch trains every record at every step instead: resting records without a gradient drift back.
The cost of those checks is bounded by CheckBudget.

Core layer (training).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from memft import objectives
from memft.config import TrainConfig
from memft.training.checking import Checker
from memft.training.status import StatusBook, Work


# A forward-only pass over a record costs about a third of a training pass over it (no backward pass, no
# optimizer step; measured in benchmarks/README.md, Scale).
FORWARD_COST = 1 / 3


@dataclass
class CheckBudget:
    """Rations the active set's full confirmation checks, so that a record set that hovers at the bar cannot spend
    its time re-checking (issue 22: a full check of every record ran on almost every step).

    The bound: a full check of the n records is allowed once the record passes trained since the last full check
    reach n * FORWARD_COST, so full checks cost at most as much compute as the training they follow. Until then, a
    run whose resting records are all at the bar trains those nearest it (`nearest_bar`, from `train`'s epoch pool),
    which is what keeps them from drifting back.

    >>> b = CheckBudget(n=90); b.allowed, b.needed
    (False, 30)
    >>> b.trained(29); b.allowed
    False
    >>> b.trained(1); b.allowed, b.needed
    (True, 0)
    >>> b.spent(); b.allowed
    False
    """

    n: int
    since: int = 0  # record passes trained since the last full check

    @property
    def needed(self) -> int:
        """Record passes still to train before the next full check is allowed."""
        return max(0, math.ceil(self.n * FORWARD_COST) - self.since)

    @property
    def allowed(self) -> bool:
        return self.needed == 0

    def trained(self, k: int) -> None:
        self.since += k

    def spent(self) -> None:
        self.since = 0


def active_batches(pool: Callable[[], list[int]], batch_size: int, rng: random.Random, full: bool = False) -> Callable[[], list[int]]:
    """Yields the record indices of each step from epochs over `pool()` (called anew at each epoch start), shuffled
    by `rng`; full=True: the whole pool every step. An empty pool gives an empty step."""
    queue: list[int] = []

    def nxt() -> list[int]:
        nonlocal queue
        if full:
            return pool()
        if not queue:
            queue = pool()
            rng.shuffle(queue)
        take, queue = queue[:batch_size], queue[batch_size:]
        return take

    return nxt


def with_replay(active: list[int], resting: list[int], share: float, rng: random.Random) -> list[int]:
    """The active records plus resting ones drawn at random, so that `share` of the result rests (experience
    replay: their gradients say what must not move); as many as there are, and none when nothing is active.

    >>> out = with_replay([0, 1, 2], list(range(3, 20)), 0.5, random.Random(0))
    >>> out[:3], len(out), all(3 <= i < 20 for i in out[3:]), len(set(out))
    ([0, 1, 2], 6, True, 6)
    >>> sorted(with_replay([0], [5, 6], 0.9, random.Random(0))), with_replay([], [5], 0.5, random.Random(0))
    ([0, 5, 6], [])
    """
    if not share or not active:
        return list(active)
    k = min(len(resting), round(len(active) * share / (1 - share)))
    return list(active) + rng.sample(resting, k)


def nearest_bar(ids: Sequence[int], latest: dict[int, Any], k: int) -> list[int]:
    """The k records of `ids` whose latest statistics have the lowest minimum target probability (ties: lower index).

    >>> from types import SimpleNamespace as S
    >>> nearest_bar([0, 1, 2, 3], {0: S(prob=[0.9, 0.8]), 1: S(prob=[0.99]), 2: S(prob=[0.76]), 3: S(prob=[0.8])}, 2)
    [2, 0]
    """
    return sorted(ids, key=lambda i: (min(latest[i].prob), i))[:k]


class BatchPolicy:
    """The record indices of each step. `state`: the objective's memory (a curriculum's stage decides the plain
    loop's pool); `active`: the active set is on (mini-batches of a write)."""

    def __init__(self, cfg: TrainConfig, book: StatusBook, check: Checker, work: Work, active: bool, state: dict[str, Any]):
        self.cfg, self.book, self.check, self.work, self.active, self.state = cfg, book, check, work, active, state
        self.step = 0
        self.replay_rng = random.Random(cfg.seed + 1)
        self.next_batch = active_batches(self.pool, cfg.batch_size, random.Random(cfg.seed), full=cfg.batch_size >= book.n)

    def draw(self, step: int, last: bool) -> list[int]:
        """The records step `step` trains. Active set: none once every goal is met with these parameters, nor at the
        end of the budget."""
        self.step = step
        if self.active and (last or (self.book.fresh and self.book.all_ok)):
            return []
        return self.next_batch()

    def pool(self) -> list[int]:
        """The records of the next epoch. Active set: once an epoch's worth of records has been trained since the
        last check, the records resting at the bar are re-checked (the active ones were just seen in their
        batches), so each re-check costs at most a third of the training it follows; when none is left active,
        every record is checked as the budget allows."""
        book, n = self.book, self.book.n
        if not self.active:
            # A curriculum trains only its current stage; drawing the others would waste steps on weight-0 records.
            self.state.update(step=self.step, max_steps=self.cfg.max_steps, n_records=n)
            return objectives.stage_records(self.cfg.method, self.state, self.cfg.method_options) or list(range(n))
        if book.all_done and self.check.budget.allowed:
            self.check()
        elif self.work.since_check >= n:
            self.check(book.resting(), full=False)
        resting = book.resting()
        if len(resting) == n and not book.certified:
            # Every record rests, by statuses that may be stale, and the check budget does not yet allow the full
            # check that would confirm them: train those nearest the bar until it does (consolidation).
            return nearest_bar(resting, book.latest, max(self.check.budget.needed, 1))
        return with_replay(book.active(), resting, self.cfg.replay, self.replay_rng)
