"""Default adapter size and training budget, chosen from the record set when the user does not set them.

One pure rule (`size_for`) used by `memft write`; its choice and its reasons are printed and saved in memft.json
(`sizing`), and any of --rank, --batch-size, --max-steps given explicitly wins over it.

- Up to FULL_BATCH records: rank 8, full batch, 300 steps: the setting the 40-record demo was tuned on.
- More records: mini-batches of FULL_BATCH (more updates per epoch at the same compute), a rank that grows with
  the bits to hold (RECORDS_PER_RANK records per rank unit, at least 8, a power of two, at most MAX_RANK), and a
  step budget of BUDGET_EPOCHS epochs. With active-set training (memft.train) records that reach the bar stop
  costing backward passes, so those epochs are an upper bound on the work, not its expected value.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

FULL_BATCH = 64
BASE_RANK = 8
RECORDS_PER_RANK = 8  # records per unit of rank beyond the full-batch size (see sizing_rank)
MAX_RANK = 128
FULL_BATCH_STEPS = 300
BUDGET_EPOCHS = 150


@dataclass(frozen=True)
class Sizing:
    rank: int
    batch_size: int
    max_steps: int
    chosen: tuple[str, ...] = ()  # the settings this rule set (the others were given by the user)
    reasons: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "chosen": list(self.chosen)}


def sizing_rank(n_records: int) -> int:
    """Rank for n records: 8 up to the full-batch size, then the next power of two of n / RECORDS_PER_RANK.

    >>> [sizing_rank(n) for n in (40, 64, 100, 300, 1000, 3000)]
    [8, 8, 16, 64, 128, 128]
    """
    if n_records <= FULL_BATCH:
        return BASE_RANK
    return min(MAX_RANK, max(BASE_RANK, 2 ** math.ceil(math.log2(n_records / RECORDS_PER_RANK))))


def size_for(n_records: int, rank: int | None = None, batch_size: int | None = None, max_steps: int | None = None) -> Sizing:
    """Fill the settings left as None from the record count.

    >>> s = size_for(40); (s.rank, s.batch_size, s.max_steps)
    (8, 64, 300)
    >>> s = size_for(1000); (s.rank, s.batch_size, s.max_steps, s.chosen)
    (128, 64, 2400, ('rank', 'batch_size', 'max_steps'))
    >>> size_for(1000, rank=8, max_steps=50).chosen
    ('batch_size',)
    """
    chosen, reasons = [], {}
    if rank is None:
        rank = sizing_rank(n_records)
        chosen.append("rank")
        reasons["rank"] = f"rank {rank}" + (" (the demo's)" if n_records <= FULL_BATCH else f" (~{RECORDS_PER_RANK} records per rank unit)")
    if batch_size is None:
        batch_size = FULL_BATCH
        chosen.append("batch_size")
        reasons["batch_size"] = "full batch" if n_records <= FULL_BATCH else f"mini-batches of {FULL_BATCH}: more updates per epoch at the same compute"
    if max_steps is None:
        steps_per_epoch = math.ceil(n_records / batch_size)
        max_steps = FULL_BATCH_STEPS if steps_per_epoch == 1 else BUDGET_EPOCHS * steps_per_epoch // 10 * 10
        chosen.append("max_steps")
        reasons["max_steps"] = f"{max_steps} steps = {max_steps / steps_per_epoch:.0f} epochs of {steps_per_epoch} steps"
    return Sizing(rank, batch_size, max_steps, tuple(chosen), reasons)
