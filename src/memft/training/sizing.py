"""Default adapter size and training budget, chosen from the record set when the user does not set them.

One pure rule (`size_for`) used by `memft write`; its choice and its reasons are printed and saved in memft.json
(`sizing`), and any of --preset/--layers/--target-modules, --rank, --batch-size, --max-steps, --lr, --head-vocab,
--lora-init given explicitly wins.

- Up to FULL_BATCH records: the `probe` preset at rank 8, full batch, 300 steps, lr 1e-2, PEFT's init and the full
  head: the setting the 40-record demo was tuned on.
- More records (the measurements behind each choice are in benchmarks/README.md, Scale):
  - the `top` preset (the MLP of the top 4 of SmolLM2's 30 layers): a training pass runs 4 layers, not the 10 of
    `upper`;
  - the `centered` LoRA init (memft.model.lora_init): it leaves the "digit format" plateau sooner;
  - lr 3e-3 (at 1e-2 the top-4 adapter's loss fell and jumped back) and the "progress" schedule
    (memft.training.step.lr_at: lr x max(0.1, 1 - certified share)), against late collapses of the certified share;
  - the restricted training head (memft.model.vocab): the full vocabulary's head is a large share of a training pass;
  - rank 8 per RECORDS_PER_RANK records (a power of two, at most MAX_RANK), mini-batches of MINI_BATCH, and a step
    budget of BUDGET_EPOCHS epochs; with active-set training records at the bar stop costing backward passes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from memft.config import LoraSettings, TrainConfig

# Up to FULL_BATCH records, the defaults of LoraSettings and TrainConfig (defined once, there).
FULL_BATCH = TrainConfig.batch_size
MINI_BATCH = 32  # records per step beyond FULL_BATCH: more updates per epoch at the same compute
BASE_RANK = LoraSettings.rank
RECORDS_PER_RANK = 512  # records per rank-8 unit with the upper preset
# Value tokens per rank-8 unit: RECORDS_PER_RANK PhoneBook numbers (10 tokens each). Records of other kinds carry
# more tokens (and more bits) each: 1,000 varied records (benchmarks/bench_varied.py) hold twice the tokens of 1,000
# phone numbers, so the rank follows whichever of the two counts asks for more.
TOKENS_PER_RANK = RECORDS_PER_RANK * 10
MAX_RANK = 64
FULL_BATCH_STEPS = TrainConfig.max_steps
BUDGET_EPOCHS = 150


SMALL_LR = TrainConfig.lr
LARGE_LR = 3e-3


@dataclass(frozen=True)
class Sizing:
    preset: str
    rank: int
    batch_size: int
    max_steps: int
    lr: float = SMALL_LR
    lr_schedule: str = "constant"
    head_vocab: str = "full"
    lora_init: str = "random"
    chosen: tuple[str, ...] = ()  # the settings this rule set (the others were given by the user)
    reasons: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "chosen": list(self.chosen)}

    def line(self, n: int) -> str | None:
        """The one line that says what this rule chose for n records and how to override it (None: nothing chosen).

        >>> Sizing(rank=8, preset="probe", batch_size=16, max_steps=300, lr=0.01, chosen=("rank",),
        ...        reasons={"rank": "rank 8"}).line(40)
        'sized for 40 records: rank 8 (give --rank to override)'
        """
        if not self.chosen:
            return None
        return (f"sized for {n} records: " + "; ".join(self.reasons[k] for k in self.chosen)
                + " (give " + ", ".join("--" + k.replace("_", "-") for k in self.chosen) + " to override)")


def sizing_rank(n_records: int, value_tokens: int | None = None) -> int:
    """Rank for n records: 8 up to RECORDS_PER_RANK records, then 8 x the next power of two of n / RECORDS_PER_RANK;
    with their value tokens known, of the larger of that and value_tokens / TOKENS_PER_RANK.

    >>> [sizing_rank(n) for n in (40, 100, 512, 1000, 3000, 10**6)]
    [8, 8, 8, 16, 64, 64]
    >>> sizing_rank(1000, value_tokens=10_000), sizing_rank(1000, value_tokens=21_848), sizing_rank(300, value_tokens=6_351)
    (16, 64, 16)
    """
    units = max(n_records / RECORDS_PER_RANK, (value_tokens or 0) / TOKENS_PER_RANK)
    return min(MAX_RANK, BASE_RANK * 2 ** max(0, math.ceil(math.log2(units))))


def value_tokens(records: Any, tokenizer: Any) -> int:
    """Total value tokens of `records` (end-of-sequence excluded) as `tokenizer` splits them; token-id records count
    their ids. No round-trip check here: encoding does that, with its own error, when the records are encoded.

    >>> from memft.model.base import tiny_tokenizer
    >>> from memft.prompts.records import Record
    >>> value_tokens([Record("a:", "0123456789"), Record("b:", value_ids=(5, 6))], tiny_tokenizer())
    12
    """
    return sum(len(r.value_ids) if r.value_ids is not None else len(tokenizer(r.value, add_special_tokens=False)["input_ids"])
               for r in records)


def size_for(n_records: int, preset: str | None = None, rank: int | None = None, batch_size: int | None = None,
             max_steps: int | None = None, lr: float | None = None, head_vocab: str | None = None,
             lora_init: str | None = None, lr_schedule: str | None = None, value_tokens: int | None = None) -> Sizing:
    """Fill the settings left as None from the record count (and, for the rank, their value tokens when given).

    >>> s = size_for(40); (s.preset, s.rank, s.batch_size, s.max_steps, s.lr, s.lr_schedule, s.head_vocab, s.lora_init)
    ('probe', 8, 64, 300, 0.01, 'constant', 'full', 'random')
    >>> s = size_for(1000); (s.preset, s.rank, s.batch_size, s.max_steps, s.lr, s.lr_schedule, s.head_vocab, s.lora_init)
    ('top', 16, 32, 4800, 0.003, 'progress', 'restricted', 'centered')
    >>> size_for(1000, preset="probe", rank=8, max_steps=50, lr=0.01, head_vocab="full", lora_init="random", lr_schedule="constant").chosen
    ('batch_size',)
    """
    chosen, reasons = [], {}
    small = n_records <= FULL_BATCH
    if preset is None:
        preset = "probe" if small else "top"
        chosen.append("preset")
        reasons["preset"] = f"{preset} preset" + (" (the demo's)" if small else " (the MLP of the top layers)")
    if rank is None:
        rank = BASE_RANK if small else sizing_rank(n_records, value_tokens)
        chosen.append("rank")
        reasons["rank"] = f"rank {rank}" + (f" ({value_tokens} value tokens)" if value_tokens and not small else "")
    if batch_size is None:
        batch_size = FULL_BATCH if small else MINI_BATCH
        chosen.append("batch_size")
        reasons["batch_size"] = "full batch" if small else f"mini-batches of {MINI_BATCH}"
    if max_steps is None:
        steps_per_epoch = math.ceil(n_records / batch_size)
        max_steps = FULL_BATCH_STEPS if steps_per_epoch == 1 else BUDGET_EPOCHS * steps_per_epoch // 10 * 10
        chosen.append("max_steps")
        reasons["max_steps"] = f"at most {max_steps} steps" + ("" if steps_per_epoch == 1 else f" ({max_steps / steps_per_epoch:.0f} epochs)")
    if lr is None:
        lr = SMALL_LR if small else LARGE_LR
        chosen.append("lr")
        reasons["lr"] = f"lr {lr:g}"
    if lr_schedule is None:
        lr_schedule = "constant" if small else "progress"
        chosen.append("lr_schedule")
        reasons["lr_schedule"] = "constant lr" if small else "lr shrinking as records certify"
    if head_vocab is None:
        head_vocab = "full" if small else "restricted"
        chosen.append("head_vocab")
        reasons["head_vocab"] = "full head" if small else "restricted training head"
    if lora_init is None:
        lora_init = "random" if small else "centered"
        chosen.append("lora_init")
        reasons["lora_init"] = f"{lora_init} LoRA init"
    return Sizing(preset, rank, batch_size, max_steps, lr, lr_schedule, head_vocab, lora_init, tuple(chosen), reasons)


def sized_settings(records: Any, tokenizer: Any, lora: Any = None, train: Any = None) -> tuple[Any, Any, Sizing | None]:
    """The settings of a write: `lora` (LoraSettings) and `train` (TrainConfig) as given, and what is left out (None)
    filled by `size_for` from the records, as `memft write` does. Returns (lora, train, the Sizing or None when both
    were given). A LoraSettings left out gets the write's default activation (config.write_activation)."""
    from memft.config import write_activation

    if lora is not None and train is not None:
        return lora, train, None
    given = {} if train is None else {"batch_size": train.batch_size, "max_steps": train.max_steps, "lr": train.lr,
                                      "head_vocab": train.head_vocab, "lora_init": train.lora_init, "lr_schedule": train.lr_schedule}
    size = size_for(len(records), preset=lora.preset if lora else None, rank=lora.rank if lora else None,
                    value_tokens=value_tokens(records, tokenizer) if lora is None else None, **given)
    if lora is None:
        lora = LoraSettings(rank=size.rank, preset=size.preset, activation=write_activation(None, train.preserve if train else 0.0))
    if train is None:
        train = TrainConfig(lr=size.lr, max_steps=size.max_steps, batch_size=size.batch_size, head_vocab=size.head_vocab,
                            lora_init=size.lora_init, lr_schedule=size.lr_schedule)
    return lora, train, size
