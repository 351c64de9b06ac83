"""Pure functions from per-token target statistics to per-record verdicts. No model, no torch.

Definitions (targets = value tokens + eos, positions counted from 0 at the first value token):
- certified: under teacher forcing the target is the argmax at every position. This holds iff greedy decoding
  reproduces the record (by induction over positions: each greedy step sees exactly the teacher-forced prefix).
- stubborn position: target probability p <= 0.5 (loss >= ln 2). p > 0.5 everywhere is the paper's sufficient
  condition; certification is the exact one (a target with p = 0.4 can still be the argmax).
- first failure: the first position where free-run (greedy) output differs from the target, None if it never does.

Core layer: may import other core modules only; the memory store, checks, research tools, integrations and the CLI build on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypedDict

L_CRIT = math.log(2.0)  # loss of a token with p = 0.5: the certification line of the paper
# A record is forgotten when some position's target is not the argmax AND has p < FORGET_P: greedy decoding then
# leaves the value there, with headroom so that a precision shift cannot flip a near-tie back.
FORGET_P = 0.1

# The log-odds (nats) a target must hold over the best other token, at every position, before a write calls its record
# certified in that precision: how far the shapes a record is computed in can move it. bf16 rounds each layer's output
# to 8 bits and the result depends on the matrix shapes the kernels get (batch size, padding): scoring the records of
# two PhoneBook adapters (1,000 and 1,050 records) in batches of 64, 17 and 5 (benchmarks/results/precision.json) moved a target's
# log-odds by 0.25 nats at the median, 1.1 at the 99th percentile, 1.6 at the 99.9th and 2.8 at the worst position
# in bf16; in fp32 by at most 0.0013. A record an append certified at p 0.5003 was not the argmax in the next verify.
# 2.5 covers all but the worst few moves, and a flip needs a target near the allowance and such a move at once (none
# of 11,000 flipped). fp16 was not measured: it rounds to 11 bits, and gets bf16's allowance until it is.
PRECISION_LOG_ODDS = {"fp32": 0.0, "bf16": 2.5, "fp16": 2.5}


@dataclass
class TokenStats:
    """Teacher-forced statistics of one record, one entry per target position."""

    targets: list[int]  # target token ids (value ids + eos)
    prob: list[float]  # p(target)
    correct: list[bool]  # target == argmax
    loss: list[float]  # -log p(target)
    gap: list[float] = field(default_factory=list)  # p(target) - p(best other token); > 0 iff target is the argmax


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
    recalled: str | None = None  # the generated text; a secret when the record is one: reports leave it out
    min_gap: float | None = None  # smallest p(target) - p(best other token); None when gaps were not computed
    # smallest log p(target) - log p(best other token) (log_odds); what PRECISION_LOG_ODDS is held against
    min_log_odds: float | None = None

    def to_json(self, reveal: bool = False) -> dict[str, Any]:
        """The report as JSON. reveal=False (the default) leaves out the recalled text and everything that says how
        much of it a guess got right: what was generated is the stored value (or, for a wrong guess, the true one),
        and its length or the first position where a guess fails would narrow a search for it. `certified` and
        `exact` still say whether it differs.

        >>> r = RecordReport("pin", 4, False, False, 0.5, 0.5, 2, 2, [2], 2, 0.1, False, 0.9, recalled="0099")
        >>> d = r.to_json(); [d[k] for k in REDACTED], d["exact"]
        ([None, None, None, None, None, None, None, None], False)
        >>> r.to_json(reveal=True)["recalled"], r.to_json(reveal=True)["recalled_chars"], r.to_json(reveal=True)["first_failure"]
        ('0099', 4, 2)
        """
        d = asdict(self)
        d["recalled_chars"] = None if self.recalled is None else len(self.recalled)
        if not reveal:
            d.update(dict.fromkeys(REDACTED))
        return d


# Fields of a record's JSON report left out unless --reveal: the recalled text, its length, and where / how much of a
# given value matches what the adapter holds.
REDACTED = ("recalled", "recalled_chars", "first_failure", "first_error_tf", "token_accuracy", "token_accuracy_tf",
            "stubborn_positions", "earliest_stubborn")


def first_false(flags: Sequence[bool]) -> int | None:
    for i, f in enumerate(flags):
        if not f:
            return i
    return None


STUBBORN_P = 0.5  # a target token with p <= this is stubborn: p > 0.5 is the paper's sufficient line for greedy


def earliest_stubborn(prob: Sequence[float]) -> int | None:
    """The first position whose target probability is at most STUBBORN_P (None: every p > 0.5).

    >>> earliest_stubborn([0.9, 0.5, 0.2]), earliest_stubborn([0.9, 0.6])
    (1, None)
    """
    return first_false([p > STUBBORN_P for p in prob])


def free_run_compare(generated: Sequence[int], targets: Sequence[int]) -> tuple[bool, float, int | None]:
    """(exact, token accuracy, first failure) of generated ids against targets (which end with eos).

    Token accuracy is position-wise agreement over the target length; missing positions count as wrong.
    """
    n = len(targets)
    agree = [i < len(generated) and generated[i] == t for i, t in enumerate(targets)]
    exact = all(agree)
    return exact, sum(agree) / n, first_false(agree)


def log_odds(prob: Sequence[float], gap: Sequence[float]) -> list[float]:
    """log p(target) - log p(best other token) at each position, from p and gap = p - p(other) (TokenStats):
    > 0 exactly where the target is the strict argmax; inf where no other token has any probability.

    >>> [round(x, 4) for x in log_odds([0.8, 0.5, 0.3], [0.7, 0.0, -0.4])]
    [2.0794, 0.0, -0.8473]
    """
    out = []
    for p, g in zip(prob, gap):
        other = p - g
        out.append(math.inf if other <= 0 else (-math.inf if p <= 0 else math.log(p) - math.log(other)))
    return out


def meets_margin(correct: Sequence[bool], prob: Sequence[float], margin: float, gap: Sequence[float] = (),
                 min_log_odds: float = 0.0) -> bool:
    """Certified with headroom: the target is the argmax everywhere, every p(target) > margin (0: argmax only) and,
    when min_log_odds > 0, every target's log-odds over the best other token >= min_log_odds (PRECISION_LOG_ODDS;
    a record whose gaps were not computed cannot show it).

    >>> meets_margin([True, True], [0.9, 0.45], 0.0), meets_margin([True, True], [0.9, 0.45], 0.5)
    (True, False)
    >>> meets_margin([True], [0.6], 0.5, [0.2], 1.0), meets_margin([True], [0.9], 0.5, [0.85], 2.5), meets_margin([True], [0.9], 0.5, (), 2.5)
    (False, True, False)
    """
    if not (all(correct) and min(prob) > margin):
        return False
    return min_log_odds <= 0 or (len(gap) == len(prob) and min(log_odds(prob, gap)) >= min_log_odds)


def exit_margin(margin: float) -> float:
    """The probability every target of a record must exceed before active-set training stops updating on it: halfway
    from the goal margin to 1, so a record that leaves the active set has headroom before it could fail the goal
    again (0 -> the paper's sufficient line 0.5, 0.5 -> 0.75).

    >>> exit_margin(0.0), exit_margin(0.5)
    (0.5, 0.75)
    """
    return (1.0 + margin) / 2


def exit_log_odds(log_odds: float) -> float:
    """The active set's bar for a precision allowance: ln 3 above it, the headroom exit_margin gives p 0.5 against one
    competitor (0.75 / 0.25); 0 stays 0 (exit_margin's p bar already keeps the argmax with headroom).

    >>> round(exit_log_odds(2.5), 4), exit_log_odds(0.0)
    (3.5986, 0.0)
    """
    return log_odds + math.log(3) if log_odds > 0 else 0.0


def forgotten(correct: Sequence[bool], prob: Sequence[float]) -> bool:
    """Greedy decoding cannot reproduce the record, with headroom: some target is not the argmax and has p < FORGET_P.

    >>> forgotten([True, False], [0.9, 0.05]), forgotten([True, False], [0.9, 0.3]), forgotten([True, True], [0.9, 0.05])
    (True, False, False)
    """
    return any(not c and p < FORGET_P for c, p in zip(correct, prob))


def record_report(key: str, stats: TokenStats, generated: Sequence[int] | None = None, recalled: str | None = None) -> RecordReport:
    n = len(stats.prob)
    stubborn = [i for i, p in enumerate(stats.prob) if p <= STUBBORN_P]
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
        min_gap=min(stats.gap) if stats.gap else None,
        min_log_odds=min(log_odds(stats.prob, stats.gap)) if stats.gap else None,
    )


def within_allowance(reports: Sequence[RecordReport], allowance: float) -> list[str]:
    """Keys of the certified records some target of which is closer to its runner-up than `allowance` nats: exact in
    the pass that scored them, but another batch shape or precision may flip them (PRECISION_LOG_ODDS).

    >>> r = [RecordReport("a", 1, True, None, 1, None, None, None, [], None, 0.9, True, 0.1, min_log_odds=3.1),
    ...      RecordReport("b", 1, True, None, 1, None, None, None, [], None, 0.6, True, 0.5, min_log_odds=0.4),
    ...      RecordReport("c", 1, False, None, 0.5, None, None, 0, [0], 0, 0.3, False, 1.2, min_log_odds=-0.2)]
    >>> within_allowance(r, 2.5), within_allowance(r, 0.0)
    (['b'], [])
    """
    if allowance <= 0:
        return []
    return [r.key for r in reports if r.certified and r.min_log_odds is not None and r.min_log_odds < allowance]


class Summary(TypedDict):
    """A record set's verdict in numbers (summarize): what write, verify, append and forget report and save."""

    records: int
    certified: float  # share of records certified
    p_above_half: float  # share with every target at p > 0.5
    exact_match: float | None  # share exact by generation (None unless generation ran for every record)
    token_accuracy: float | None  # free-run token accuracy (idem)
    token_accuracy_tf: float  # teacher-forced token accuracy
    stubborn_tokens: int  # target tokens at p <= 0.5
    min_prob: float
    min_gap: float | None
    min_log_odds: float | None
    loss: float  # mean target loss over every token (end of sequence included)


def summarize(reports: Sequence[RecordReport]) -> Summary:
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
        "min_gap": min((r.min_gap for r in reports if r.min_gap is not None), default=None),
        "min_log_odds": min((r.min_log_odds for r in reports if r.min_log_odds is not None), default=None),
        "loss": sum(r.loss * (r.length + 1) for r in reports) / tokens,
    }
