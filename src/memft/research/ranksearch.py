"""`memft write --rank auto`: the smallest LoRA rank that actually certifies every record.

Start from a guess (the law planner's rank for the set's answer length, else 1), then double until a rank
certifies (or `max_rank` fails), then bisect between the largest failing and the smallest certifying rank. Each
try is a real training run on one loaded base. The adapter of the smallest certifying rank is the one saved.
Certification need not be monotone in rank for a fixed budget; the search assumes it is (as the law says) and
reports every rank it tried, so a user can see what was and was not tested.

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memft.store import adapters, folders
from memft.model import peft_lora
from memft.store.saving import WriteResult, save_fit
from memft.training.fit import Fit, fit, prepare
from memft.config import LoraSettings, RuntimeConfig, TrainConfig
from memft.errors import ConfigError
from memft.model.base import load_base
from memft.prompts.records import Record

if TYPE_CHECKING:
    from memft.research.law import LawFitEntry


def next_rank(tried: dict[int, bool], guess: int, max_rank: int) -> int | None:
    """The next rank to try given {rank: certified} so far, or None when the search is over (pure function).

    >>> next_rank({}, 4, 64), next_rank({4: False}, 4, 64), next_rank({4: False, 8: True}, 4, 64)
    (4, 8, 6)
    >>> next_rank({4: True}, 4, 64), next_rank({4: True, 2: True, 1: False}, 4, 64) is None
    (2, True)
    """
    if not tried:
        return min(max(guess, 1), max_rank)
    ok = [r for r, c in tried.items() if c]
    bad = [r for r, c in tried.items() if not c]
    if not ok:  # nothing certifies yet: double
        top = max(bad)
        return None if top >= max_rank else min(2 * top, max_rank)
    hi = min(ok)
    lo = max([r for r in bad if r < hi], default=0)
    if hi - lo <= 1:
        return None
    if lo == 0:  # no failure below the smallest success yet: halve
        return max(hi // 2, 1) if hi > 1 else None
    return (lo + hi) // 2


def write_auto_rank(
    records: Sequence[Record],
    out: str | Path,
    model: str,
    lora: LoraSettings,
    train: TrainConfig,
    runtime: RuntimeConfig,
    law_fit: LawFitEntry | None = None,
    max_rank: int = 256,
    on_try: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[WriteResult | None, list[dict[str, Any]]]:
    """Search ranks (see module doc); save the smallest certifying one to `out`. Returns (result or None, tries)."""
    if max_rank < 1:
        raise ConfigError(f"--max-rank must be >= 1, got {max_rank}")
    out = folders.check_location(out)
    adapters.check_out_dir(out)
    base = load_base(model, runtime.device, runtime.dtype, seed=train.seed)
    items = prepare(records, base, dataclasses.replace(lora, rank=1), train)  # input errors before the lock
    guess = planned_guess(records, base.tokenizer, train.template, law_fit)
    tried: dict[int, bool] = {}
    tries: list[dict[str, Any]] = []
    best: tuple[LoraSettings, Fit, dict[str, Any]] | None = None  # the smallest certifying try and its LoRA weights
    with folders.locked(out):
        adapters.check_out_dir(out)
        while (r := next_rank(tried, guess, max_rank)) is not None:
            lo = dataclasses.replace(lora, rank=r)
            f = fit(records, base, lo, train, generate="divergence", items=items)
            try:
                ok = f.summary["certified"] == 1.0
                tried[r] = ok
                tries.append({"rank": r, "certified": f.summary["certified"], "steps": f.train.steps, "seconds": round(f.train.seconds, 3)})
                if on_try:
                    on_try(tries[-1])
                if ok and (best is None or r < best[0].rank):
                    best = (lo, f, lora_weights(f.model))
            finally:
                f.model.unload()
        if best is None:
            return None, tries
        lo, f, weights = best
        f.model = restore(base, lo, train.seed, weights)
        try:
            return save_fit(f, records, base, lo, train, out, extra={"rank_search": {"guess": guess, "tries": tries}}), tries
        finally:
            f.model.unload()


def lora_weights(peft_model: Any) -> dict[str, Any]:
    """A copy of the LoRA weights of `peft_model` (PEFT's state-dict names), to put back with `restore`."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(peft_model).items()}


def restore(base: Any, lora: LoraSettings, seed: int, weights: dict[str, Any]) -> Any:
    """A fresh adapter of `lora` on `base` holding `weights` (lora_weights of an adapter of the same settings)."""
    from peft import set_peft_model_state_dict

    from memft.prompts.keyed import invocation_ids

    tokens = invocation_ids(lora.key_prefix, base.tokenizer) if lora.key_prefix else None
    model, _ = peft_lora.attach(base.model, lora, seed=seed, invocation_tokens=tokens)
    result = set_peft_model_state_dict(model, weights)
    assert not getattr(result, "unexpected_keys", None), result.unexpected_keys
    return model


def planned_guess(records: Sequence[Record], tokenizer: Any, template: str, law_fit: LawFitEntry | None) -> int:
    """The planner's rank (power of two) for the records' answer length; 1 without a usable fit."""
    from memft.prompts.encoding import encode_all
    from memft.research.law import plan_rank

    if law_fit is None:
        return 1
    ell = sum(e.n_value for e in encode_all(records, tokenizer, template))
    return plan_rank(law_fit, ell).rank_pow2 or 1
