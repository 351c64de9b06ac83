"""StatusBook: what the latest statistics say about each record, and whether they can be trusted.

Per record: its latest teacher-forced statistics, goal met (`ok`: certified with the margin, or forgotten for a record
to forget) and training bar reached (`done`: the active set's exit margin). The book owns the one invariant the loop
must never get wrong: `fresh` is True only while every record's statistics come from a full-vocabulary pass with
the current parameters, and only then does "every goal met" mean certified.

Core layer (training).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from memft.certify.metrics import forgotten, meets_margin


class StepRow(TypedDict, total=False):
    """One row of a training history (TrainResult.history; what on_step callbacks, the forecast and the progress
    display read): the step's batch statistics, then the statuses after it, then what the objective reports."""

    step: int
    loss: float  # mean target loss of the step's batch (records to keep)
    stubborn: int  # target tokens of the batch at p <= 0.5
    min_prob: float
    first_error: int | None  # one record per step only (the stress test): first offset not the argmax
    earliest_stubborn: int | None  # ... and first offset at p <= 0.5
    certified: float  # share of records whose goal is met by their latest statistics
    active: int  # records below the training bar
    epochs: float  # record passes trained / records
    mean_loss: float  # mean over records of their latest mean target loss (the forecast's progress measure)
    seconds: float
    rolled_back: int  # the progress schedule's rollbacks so far, on a step that rolled back


@dataclass
class Work:
    """Record passes so far: trained (with a backward pass), checked (forward only), target tokens trained, and
    record passes trained since the last check."""

    trained: int = 0
    checked: int = 0
    tokens: int = 0
    since_check: int = 0

    def step(self, records: int, tokens: int) -> None:
        """An optimizer step trained `records` record passes holding `tokens` target tokens."""
        self.trained += records
        self.since_check += records
        self.tokens += tokens


class StatusBook:
    """Statuses of n records; `forget`: indices whose goal is to stop being recalled; `margin`: the certification
    margin; `bar`: a function from a margin to its training bar (the margin itself, or the active set's higher exit
    margin); `margins`: {index: margin} for records that need more than `margin` (a runtime's arithmetic lost them);
    `log_odds`: the goal's and the bar's least log-odds of a target over the best other token (the precision's
    allowance, metrics.PRECISION_LOG_ODDS; 0: none).

    >>> from types import SimpleNamespace as S
    >>> b = StatusBook(2, frozenset(), margin=0.5, bar=lambda m: 0.8)
    >>> b.see(0, S(correct=[True], prob=[0.7], loss=[0.3])); b.see(1, S(correct=[True], prob=[0.9], loss=[0.1]))
    >>> b.all_ok, b.done, b.resting(), b.certified
    (True, {0: False, 1: True}, [1], True)
    >>> b.parameters_changed(); b.certified
    False
    >>> b.full_pass(2); b.certified, round(b.mean_loss, 3)
    (True, 0.2)
    >>> b = StatusBook(1, frozenset(), margin=0.5, log_odds=(2.0, 3.0))
    >>> b.see(0, S(correct=[True], prob=[0.8], loss=[0.2], gap=[0.7])); b.ok[0], b.done[0]  # log-odds ln 8 = 2.08
    (True, False)
    """

    def __init__(self, n: int, forget: frozenset[int], margin: float, bar: Callable[[float], float] = lambda m: m,
                 margins: Mapping[int, float] | None = None, log_odds: tuple[float, float] = (0.0, 0.0)):
        self.n, self.forget = n, forget
        self.log_odds, self.bar_log_odds = log_odds
        self.settled: set[int] = set()  # records resting at their goal, not the bar (settle)
        self.margin = {i: (margins or {}).get(i, margin) for i in range(n)}  # each record's certification margin
        self.bar = {i: bar(m) for i, m in self.margin.items()}  # ... and its training bar
        self.ok: dict[int, bool] = {}
        self.done: dict[int, bool] = {}
        self.latest: dict[int, Any] = {}  # TokenStats of each record's latest pass (at the end: the final full pass)
        self.loss: dict[int, float] = {}  # latest mean target loss of each record kept (the forecast's progress measure)
        self.fresh = True

    def goal(self, i: int, st: Any, margin: float, log_odds: float) -> bool:
        if i in self.forget:
            return forgotten(st.correct, st.prob)
        return meets_margin(st.correct, st.prob, margin, getattr(st, "gap", ()), log_odds)

    def see(self, i: int, st: Any) -> None:
        self.latest[i] = st
        self.ok[i] = self.goal(i, st, self.margin[i], self.log_odds)
        if i in self.settled and not self.ok[i]:
            self.settled.discard(i)  # it failed its goal: trained to the bar like any other from now on
        self.done[i] = self.ok[i] if i in self.settled else self.goal(i, st, self.bar[i], self.bar_log_odds)
        if i not in self.forget:
            self.loss[i] = sum(st.loss) / len(st.loss)

    def settle(self, indices: Iterable[int]) -> None:
        """Records that come in meeting their goal (a rewrite's held records, recovered from the adapter that holds
        them) rest until they fail it: their bar is their goal, not the higher training bar, so an append does not
        train again what is already certified. One that fails its goal is trained to the bar like any other. The
        final full check still decides.

        >>> from types import SimpleNamespace as S
        >>> b = StatusBook(2, frozenset(), margin=0.5, bar=lambda m: 0.8)
        >>> b.see_all({0: S(correct=[True], prob=[0.7], loss=[0.3]), 1: S(correct=[True], prob=[0.4], loss=[0.9])})
        >>> b.settle([0, 1]); b.done, sorted(b.settled)
        ({0: True, 1: False}, [0])
        >>> b.see(0, S(correct=[True], prob=[0.45], loss=[0.8])); b.see(0, S(correct=[True], prob=[0.7], loss=[0.3]))
        >>> b.done[0], b.settled  # it failed once: back to the bar
        (False, set())
        """
        for i in indices:
            if i not in self.forget and self.ok.get(i):
                self.settled.add(i)
                self.done[i] = True

    def see_all(self, stats: Mapping[int, Any]) -> None:
        for i, st in stats.items():
            self.see(i, st)

    # What makes the statuses fresh or stale.
    def full_pass(self, count: int) -> None:
        """A full-vocabulary pass over `count` records with the current parameters: fresh if it covered every one."""
        self.fresh = self.fresh or count == self.n

    def optimistic(self) -> None:
        """Statuses from the restricted head (p over a subset of the vocabulary, an upper bound) or from greedy decoding:
        the next "every goal met" must be confirmed by a full pass."""
        self.fresh = False

    def parameters_changed(self) -> None:
        self.fresh = False

    @property
    def all_ok(self) -> bool:
        return all(self.ok.values())

    @property
    def all_done(self) -> bool:
        return all(self.done.values())

    @property
    def certified(self) -> bool:
        return self.fresh and self.all_ok

    @property
    def share(self) -> float:
        return sum(self.ok.values()) / self.n

    @property
    def mean_loss(self) -> float:
        return sum(self.loss.values()) / max(len(self.loss), 1)

    def resting(self) -> list[int]:
        return [i for i in range(self.n) if self.done[i]]

    def active(self) -> list[int]:
        return [i for i in range(self.n) if not self.done[i]]
