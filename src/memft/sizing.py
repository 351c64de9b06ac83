"""Default adapter size and training budget, chosen from the record set when the user does not set them.

One pure rule (`size_for`) used by `memft write`; its choice and its reasons are printed and saved in memft.json
(`sizing`), and any of --preset/--layers/--target-modules, --rank, --batch-size, --max-steps given explicitly wins.

- Up to FULL_BATCH records: the `probe` preset at rank 8, full batch, 300 steps: the setting the 40-record demo
  was tuned on.
- More records: the `upper` preset (the MLP of every layer from the probe's up: measured on 100 PhoneBook records,
  mini-batches of 32, it reached a mean loss of 1.18 after 75 steps where the probe alone was at 1.91, for 12 % more
  time per step), rank 8 per RECORDS_PER_RANK records (a power of two, at most MAX_RANK), mini-batches of MINI_BATCH
  (more updates per epoch at the same compute), and a step budget of BUDGET_EPOCHS epochs. With active-set training
  (memft.train) records that reach the bar stop costing backward passes, so those epochs bound the work from above.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

FULL_BATCH = 64
MINI_BATCH = 32  # records per step beyond FULL_BATCH: more updates per epoch at the same compute
BASE_RANK = 8
RECORDS_PER_RANK = 512  # records per rank-8 unit with the upper preset
MAX_RANK = 64
FULL_BATCH_STEPS = 300
BUDGET_EPOCHS = 150


@dataclass(frozen=True)
class Sizing:
    preset: str
    rank: int
    batch_size: int
    max_steps: int
    chosen: tuple[str, ...] = ()  # the settings this rule set (the others were given by the user)
    reasons: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "chosen": list(self.chosen)}


def sizing_rank(n_records: int) -> int:
    """Rank for n records: 8 up to RECORDS_PER_RANK records, then 8 x the next power of two of n / RECORDS_PER_RANK.

    >>> [sizing_rank(n) for n in (40, 100, 512, 1000, 3000, 10**6)]
    [8, 8, 8, 16, 64, 64]
    """
    return min(MAX_RANK, BASE_RANK * 2 ** max(0, math.ceil(math.log2(n_records / RECORDS_PER_RANK))))


def size_for(n_records: int, preset: str | None = None, rank: int | None = None, batch_size: int | None = None,
             max_steps: int | None = None) -> Sizing:
    """Fill the settings left as None from the record count.

    >>> s = size_for(40); (s.preset, s.rank, s.batch_size, s.max_steps)
    ('probe', 8, 64, 300)
    >>> s = size_for(1000); (s.preset, s.rank, s.batch_size, s.max_steps, s.chosen)
    ('upper', 16, 32, 4800, ('preset', 'rank', 'batch_size', 'max_steps'))
    >>> size_for(1000, preset="probe", rank=8, max_steps=50).chosen
    ('batch_size',)
    """
    chosen, reasons = [], {}
    small = n_records <= FULL_BATCH
    if preset is None:
        preset = "probe" if small else "upper"
        chosen.append("preset")
        reasons["preset"] = f"{preset} preset" + (" (the demo's)" if small else " (the MLP of every layer from the probe up)")
    if rank is None:
        rank = BASE_RANK if small else sizing_rank(n_records)
        chosen.append("rank")
        reasons["rank"] = f"rank {rank}"
    if batch_size is None:
        batch_size = FULL_BATCH if small else MINI_BATCH
        chosen.append("batch_size")
        reasons["batch_size"] = "full batch" if small else f"mini-batches of {MINI_BATCH}"
    if max_steps is None:
        steps_per_epoch = math.ceil(n_records / batch_size)
        max_steps = FULL_BATCH_STEPS if steps_per_epoch == 1 else BUDGET_EPOCHS * steps_per_epoch // 10 * 10
        chosen.append("max_steps")
        reasons["max_steps"] = f"at most {max_steps} steps" + ("" if steps_per_epoch == 1 else f" ({max_steps / steps_per_epoch:.0f} epochs)")
    return Sizing(preset, rank, batch_size, max_steps, tuple(chosen), reasons)
