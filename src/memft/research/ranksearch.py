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

from memft import adapters
from memft.api import WriteResult, fit, save_fit
from memft.config import LoraSettings, RuntimeConfig, TrainConfig
from memft.errors import ConfigError
from memft.modeling import load_base
from memft.records import Record

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
    out = Path(out)
    adapters.check_out_dir(out)
    base = load_base(model, runtime.device, runtime.dtype, seed=train.seed)
    guess = planned_guess(records, base.tokenizer, train.template, law_fit)
    tried: dict[int, bool] = {}
    tries: list[dict[str, Any]] = []
    best: WriteResult | None = None
    while (r := next_rank(tried, guess, max_rank)) is not None:
        lo = dataclasses.replace(lora, rank=r)
        f = fit(records, base, lo, train)
        try:
            ok = f.summary["certified"] == 1.0
            tried[r] = ok
            tries.append({"rank": r, "certified": f.summary["certified"], "steps": f.train.steps, "seconds": round(f.train.seconds, 3)})
            if on_try:
                on_try(tries[-1])
            if ok and (best is None or r < best.meta.lora.rank):
                best = save_fit(f, records, base, lo, train, out, extra={"rank_search": {"guess": guess, "tries": tries}})
        finally:
            f.model.unload()
    if best is not None:  # the saved memft.json lists every try, also those made after it was saved
        best.meta = best.meta.with_extra(rank_search={"guess": guess, "tries": tries})
        adapters.update_meta(out, best.meta)
    return best, tries


def planned_guess(records: Sequence[Record], tokenizer: Any, template: str, law_fit: LawFitEntry | None) -> int:
    """The planner's rank (power of two) for the records' answer length; 1 without a usable fit."""
    from memft.encoding import encode_all
    from memft.research.law import plan_rank

    if law_fit is None:
        return 1
    ell = sum(e.n_value for e in encode_all(records, tokenizer, template))
    return plan_rank(law_fit, ell).rank_pow2 or 1
