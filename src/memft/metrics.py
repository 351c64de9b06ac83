"""Pure functions from per-token target statistics to per-record verdicts. No model, no torch.

Definitions (targets = value tokens + eos, positions counted from 0 at the first value token):
- certified: under teacher forcing the target is the argmax at every position. This holds iff greedy decoding
  reproduces the record (by induction over positions: each greedy step sees exactly the teacher-forced prefix).
- stubborn position: target probability p <= 0.5 (loss >= ln 2). p > 0.5 everywhere is the paper's sufficient
  condition; certification is the exact one (a target with p = 0.4 can still be the argmax).
- first failure: the first position where free-run (greedy) output differs from the target, None if it never does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

L_CRIT = math.log(2.0)  # loss of a token with p = 0.5: the certification line of the paper


@dataclass
class TokenStats:
    """Teacher-forced statistics of one record, one entry per target position."""

    targets: list[int]  # target token ids (value ids + eos)
    prob: list[float]  # p(target)
    correct: list[bool]  # target == argmax
    loss: list[float]  # -log p(target)


@dataclass
class RecordReport:
    key: str
    length: int  # value tokens (ℓ), eos excluded
    certified: bool
    exact: bool | None  # free-run exact match; None when generation was not run
    token_accuracy_tf: float
    token_accuracy: float | None  # free-run, None when not generated
    first_failure: int | None  # free-run; None when exact or not generated
    first_error_tf: int | None  # first teacher-forced argmax error
    stubborn_positions: list[int]
    earliest_stubborn: int | None
    min_prob: float
    p_above_half: bool
    loss: float  # mean target loss
    recalled: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def first_false(flags: Sequence[bool]) -> int | None:
    for i, f in enumerate(flags):
        if not f:
            return i
    return None


def free_run_compare(generated: Sequence[int], targets: Sequence[int]) -> tuple[bool, float, int | None]:
    """(exact, token accuracy, first failure) of generated ids against targets (which end with eos).

    Token accuracy is position-wise agreement over the target length; missing positions count as wrong.
    """
    n = len(targets)
    agree = [i < len(generated) and generated[i] == t for i, t in enumerate(targets)]
    exact = all(agree)
    return exact, sum(agree) / n, first_false(agree)


def record_report(key: str, stats: TokenStats, generated: Sequence[int] | None = None, recalled: str | None = None) -> RecordReport:
    n = len(stats.prob)
    stubborn = [i for i, p in enumerate(stats.prob) if p <= 0.5]
    exact = acc = ff = None
    if generated is not None:
        exact, acc, ff = free_run_compare(generated, stats.targets)
    return RecordReport(
        key=key,
        length=n - 1,
        certified=all(stats.correct),
        exact=exact,
        token_accuracy_tf=sum(stats.correct) / n,
        token_accuracy=acc,
        first_failure=ff,
        first_error_tf=first_false(stats.correct),
        stubborn_positions=stubborn,
        earliest_stubborn=stubborn[0] if stubborn else None,
        min_prob=min(stats.prob),
        p_above_half=not stubborn,
        loss=sum(stats.loss) / n,
        recalled=recalled,
    )


def summarize(reports: Sequence[RecordReport]) -> dict[str, Any]:
    """Fractions over records (exact_match and token_accuracy only when generation ran for every record)."""
    n = len(reports)
    gen = all(r.exact is not None for r in reports)
    tokens = sum(r.length + 1 for r in reports)
    return {
        "records": n,
        "certified": sum(r.certified for r in reports) / n,
        "p_above_half": sum(r.p_above_half for r in reports) / n,
        "exact_match": sum(bool(r.exact) for r in reports) / n if gen else None,
        "token_accuracy": sum(r.token_accuracy * (r.length + 1) for r in reports) / tokens if gen else None,
        "token_accuracy_tf": sum(r.token_accuracy_tf * (r.length + 1) for r in reports) / tokens,
        "stubborn_tokens": sum(len(r.stubborn_positions) for r in reports),
        "min_prob": min(r.min_prob for r in reports),
        "loss": sum(r.loss * (r.length + 1) for r in reports) / tokens,
    }
