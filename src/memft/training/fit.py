"""fit(): records and a base in, a trained and evaluated adapter out (not saved). write, append, forget and the
research runs share it; the input checks a write can fail on before it trains (prepare) live here too.

Core layer (training).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from memft.certify.metrics import RecordReport, summarize
from memft.config import LoraSettings, TrainConfig
from memft.errors import ConfigError, RecordsError, TrainingError
from memft.model.base import Base
from memft.model.peft_lora import Placement
from memft.prompts.encoding import Encoded, encode_all
from memft.prompts.keyed import invocation_ids
from memft.prompts.parity import check_parity
from memft.prompts.records import Record
from memft.model import peft_lora
from memft.training import null_init, preserve
from memft.training.status import StepRow


@dataclass
class Fit:
    """An adapter trained in memory (not saved): the PEFT model, its records' reports and the training result."""

    model: Any
    placement: Placement
    reports: list[RecordReport]
    summary: dict[str, Any]
    train: Any  # memft.training.loop.TrainResult
    value_tokens: int
    max_target_tokens: int
    null: Any = None  # memft.training.null_init.NullReport of a lora_init="null"/"null-contrast" write (None otherwise)


def fit(
    records: Sequence[Record],
    base: Base,
    lora: LoraSettings,
    train: TrainConfig,
    on_step: Callable[[StepRow], None] | None = None,
    generate: str = "uncertified",
    items: Sequence[Encoded] | None = None,
) -> Fit:
    """Attach a fresh adapter to `base`, train it on `records`, evaluate every record. Call `fit.model.unload()`
    to give the base back without LoRA layers. `items`: the records already encoded and checked (prepare)."""
    from memft.certify.evaluate import evaluate
    from memft.training.loop import train as train_loop

    items = list(items) if items is not None else prepare(records, base, lora, train)
    tokens = invocation_ids(lora.key_prefix, base.tokenizer) if lora.key_prefix else None
    peft_model, placement = peft_lora.attach(base.model, lora, seed=train.seed, invocation_tokens=tokens)
    try:
        start = min(placement["layers"])
        null = None
        if train.lora_init in null_init.INITS:  # A set before training; the loop's first check leaves it alone
            null = null_init.apply_null(peft_model, base.tokenizer, items, start, contrast=null_init.INITS[train.lora_init])
        keep = preserve.from_config(peft_model, base.tokenizer, train, start, items)
        res = train_loop(peft_model, items, base.tokenizer.pad_token_id, train, start, on_step, preserve=keep)
        reports = evaluate(peft_model, base.tokenizer, items, generate=generate, batch_size=train.batch_size, stats=res.final)
    except BaseException:
        peft_model.unload()  # never leave LoRA layers in a base the caller may reuse
        raise
    return Fit(peft_model, placement, reports, summarize(reports), res, sum(e.n_value for e in items), max(len(e.targets) for e in items), null)


def prepare(records: Sequence[Record], base: Base, lora: LoraSettings, train: TrainConfig) -> list[Encoded]:
    """The records encoded and every check made before training (check_items, the rank against the adapted
    layers, --preserve against keyed activation): the input errors a write can meet, raised before it locks or
    trains anything."""
    if lora.activation == "keyed" and train.preserve:
        raise ConfigError("--preserve has nothing to do with --activation keyed: text without the invocation gets the base's "
                          "predictions exactly; leave --preserve out (or use --activation always)")
    items = encode_all(records, base.tokenizer, train.template, lora.key_prefix)
    check_items(items, base, train.template, lora.key_prefix)
    _, names = peft_lora.target_names(base.model, lora)
    peft_lora.check_rank(base.model, names, lora.rank, warn_narrow=False)
    return items


def check_items(items: Sequence[Encoded], base: Base, template: str, invocation: str = "") -> None:
    """Everything checked before training: reachable targets, no two records needing different tokens after the
    same text, and train/recall parity (one-line errors by record; with a keyed adapter's `invocation`, also that
    it switches on where it was trained to)."""
    from memft.prompts.encoding import target_conflicts

    check_reachable(items, base)
    clash = target_conflicts(items)
    if clash:
        a, b, pos = clash
        raise RecordsError(f"records {a!r} and {b!r} need different tokens after the same text (at value position {pos} of "
                           f"{b!r}), so greedy decoding cannot give back both; change one of the keys so neither key+value "
                           "starts with the other key")
    check_parity(items, base.tokenizer, template, base.model, invocation)


def check_reachable(items: Sequence[Encoded], base: Base) -> None:
    """Refuse targets that greedy decoding can never produce with this base (see modeling.unreachable_tokens)."""
    from memft.model.base import unreachable_tokens

    twins = unreachable_tokens(base.model)
    for e in items:
        for pos, t in enumerate(e.targets):
            if t in twins:
                # the key and a position only: a token id of the value would give part of the value away
                raise RecordsError(
                    f"record {e.key!r}: the value's token at position {pos} can never be produced by greedy decoding with "
                    f"{base.spec} (its output-layer row equals another token's, and ties go to the lower id); "
                    "no adapter can memorize it: change the value there"
                )




def stop_on_divergence(on_step: Callable[[StepRow], None] | None) -> Callable[[StepRow], None]:
    """Wrap a training callback: a non-finite loss stops training at once with a TrainingError (nothing saved),
    instead of running the whole budget into NaN weights."""

    def guarded(row: dict[str, float]) -> None:
        if not math.isfinite(row["loss"]):
            raise TrainingError(f"training diverged at step {int(row['step'])} (loss {row['loss']}); nothing was saved and no "
                                "adapter was replaced; lower --lr (or --alpha)")
        if on_step is not None:
            on_step(row)

    return guarded


