"""Will this run certify within its budget? A forecast from the running loss curve, early enough to act on.

Pure functions of the training history (rows of memft.training.loop: `epochs` of training done, `mean_loss` = the mean
target loss over every record kept, each from its latest teacher-forced statistics). The forecast extrapolates the
recent slope of mean_loss in epochs down to the loss at which runs certify, so it says "at the current rate";
memorization curves often drop faster later (a phase transition), so a forecast of failure is on the safe side of
telling the user early, and one of success is not a promise.

Core layer: may import other core modules only; the memory store, checks, research tools, integrations and the CLI build on it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# The mean target loss at which a run certifies every record: every token needs p > margin (loss < -ln margin),
# and the mean sits well under the worst token. Seen on the embedded model (margin 0.5): the 40-record demo
# certified at a mean loss of 0.055, 100 PhoneBook records at 0.017; half of -ln(0.5) is a deliberately early
# line (a forecast of failure should come early), and the certified share takes over once records pass.
def goal_loss(margin: float) -> float:
    """Mean target loss to reach before every record can certify with `margin`.

    >>> round(goal_loss(0.5), 3), round(goal_loss(0.0), 3)
    (0.347, 0.347)
    """
    return 0.5 * -math.log(max(margin, 0.5))


@dataclass(frozen=True)
class Forecast:
    """Where a run stands and, at the recent rate, when it reaches the goal: in epochs of training (record passes
    over the record count: the measure progress is read in) and in optimizer steps (the budget's unit; with the
    active set a step trains fewer records as records rest, so epochs per step is read from the history too)."""

    steps_done: int
    steps_needed: float | None  # total steps to reach the goal at the recent rate; None: no progress to extrapolate
    budget_steps: float
    epochs_done: float
    epochs_needed: float | None
    mean_loss: float
    certified: float = 0.0  # fraction of records at their goal (latest statistics)
    window: float = 0.0  # epochs the slopes were read over

    @property
    def reached(self) -> bool:
        """The progress measures are at the goal (yet a record may still hold a stubborn token)."""
        return self.epochs_needed is not None and self.epochs_needed <= self.epochs_done

    @property
    def on_track(self) -> bool:
        return self.steps_needed is not None and self.steps_needed <= self.budget_steps

    @property
    def budget_epochs(self) -> float:
        """The step budget in epochs at the rate of epochs per step seen so far."""
        return self.budget_steps * self.epochs_done / max(self.steps_done, 1)


def _slope(pts: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 when x does not vary).

    >>> _slope([(0, 1.0), (1, 3.0), (2, 5.0)]), _slope([(1, 1.0), (1, 2.0)])
    (2.0, 0.0)
    """
    if len({x for x, _ in pts}) < 2:
        return 0.0
    return statistics.linear_regression([x for x, _ in pts], [y for _, y in pts]).slope


def forecast(rows: Sequence[dict[str, Any]], budget_steps: float, margin: float, window: float = 0.5) -> Forecast | None:
    """Forecast from history rows (step, epochs, mean_loss, certified); None until there are at least 2 epochs of
    training to read a slope from.

    Two progress measures, each extrapolated along its least-squares line over the last `window` share of the
    epochs done: the mean loss down to `goal_loss(margin)`, and the certified fraction up to 1 (which moves only
    late, when records start to pass; then it is the better guide). The run needs the sooner of the two, in epochs;
    the steps that takes follow from the epochs per step of the same recent rows. A forecast never names fewer
    steps than were taken: once the measures are at the goal, steps_needed is the steps done (see `advice`).

    >>> rows = [{"step": 2 * e, "epochs": e, "mean_loss": 2.0 - 0.1 * e, "certified": 0.0} for e in range(0, 5)]
    >>> f = forecast(rows, budget_steps=20, margin=0.5); round(f.epochs_needed, 1), round(f.steps_needed, 1), f.on_track
    (16.5, 33.1, False)
    >>> rows = [{"step": e, "epochs": e, "mean_loss": 0.5, "certified": 0.1 * e} for e in range(0, 5)]
    >>> f = forecast(rows, budget_steps=10, margin=0.5); round(f.epochs_needed, 1), f.on_track
    (10.0, True)
    """
    pts = [(float(r.get("step", r["epochs"])), float(r["epochs"]), float(r["mean_loss"]), float(r.get("certified", 0.0)))
           for r in rows if "epochs" in r and "mean_loss" in r]
    if not pts or pts[-1][1] < 2:
        return None
    step, done, now, cert = pts[-1]
    recent = [p for p in pts if p[1] >= done * (1 - window)]
    span = done - recent[0][1]
    target = goal_loss(margin)
    if now <= target or cert >= 1.0:
        return Forecast(int(step), step, budget_steps, done, done, now, cert, span)
    options = []
    slope = _slope([(e, y) for _, e, y, _ in recent])
    if slope < 0:
        options.append(done + (now - target) / -slope)
    slope_c = _slope([(e, c) for _, e, _, c in recent])
    if slope_c > 0:
        options.append(done + (1.0 - cert) / slope_c)
    if not options:
        return Forecast(int(step), None, budget_steps, done, None, now, cert, span)
    needed = min(options)
    rate = _slope([(s, e) for s, e, _, _ in recent])  # epochs per step lately
    steps = step + (needed - done) / rate if rate > 0 else None
    return Forecast(int(step), steps, budget_steps, done, needed, now, cert, span)


def advice(f: Forecast, seconds_per_step: float, rank: int) -> str:
    """One line for the user when a forecast says the budget will not do (or did not). It names a step count only
    when the curve gives one, and that count is always more than the steps already taken.

    >>> f = Forecast(100, 250.0, 120, 50.0, 125.0, 0.9, 0.4, 25.0)
    >>> advice(f, 2.0, 8)[:98]
    'forecast: at the current rate certifying every record needs ~125 epochs (~250 steps, ~5 min more a'
    >>> advice(Forecast(300, 300.0, 300, 160.7, 160.7, 0.05, 0.79, 80.0), 1.0, 8).split("(give ")[1][:27]
    '--max-steps above 300), a l'
    """
    state = f"{100 * f.certified:.1f}% certified, mean loss {f.mean_loss:.3f} after {f.steps_done} steps ({f.epochs_done:.1f} epochs)"
    if f.epochs_needed is None or f.steps_needed is None:
        return (f"forecast: neither the mean loss nor the certified share has improved over the last {f.window:.0f} epochs "
                f"({state}); to hold these records give a larger --rank (e.g. {rank * 4}), or split them over several adapters")
    if f.reached or f.steps_needed <= f.steps_done:
        # The loss is where runs certify, yet some records are not: a few stubborn tokens, which the curve cannot time.
        return (f"forecast: the mean loss is at the level where runs certify, but some records still hold stubborn tokens "
                f"({state}); more steps may certify them (give --max-steps above {f.steps_done}), a larger --rank "
                f"(e.g. {rank * 2}) is the surer remedy")
    steps = math.ceil(f.steps_needed)
    return (f"forecast: at the current rate certifying every record needs ~{f.epochs_needed:.0f} epochs (~{steps} steps, "
            f"~{(steps - f.steps_done) * seconds_per_step / 60:.0f} min more at this speed), the budget allows {f.budget_steps:.0f} "
            f"steps ({state}); give --max-steps {steps} (and --time-limit to match), a larger --rank (e.g. {rank * 4}), or split "
            "the records over several adapters")


# Not before MIN_EPOCHS epochs: the first ones learn the values' format (digits, say), a fast fall that says nothing
# about memorizing them (1,000 phone numbers: loss 4.3 -> 2.1 in 3 epochs, then flat for 16).
MIN_EPOCHS = 3.0
WATCH_START = 0.25  # share of the step budget trained before the first forecast


class Watch:
    """Reads the training rows as they come and forecasts, once per epoch of training from a share `start` of the
    budget (and MIN_EPOCHS) on, whether the budget will certify every record. Calling it with a row returns the
    advice line the first time the forecast says the budget will not do, else None; `.last` is the latest forecast.
    With a time limit the budget is the smaller of the step budget and the steps the limit allows at the speed so far.

    >>> w = Watch(max_steps=20, margin=0.5, rank=8)
    >>> lines = [w({"step": 2 * e, "epochs": float(e), "mean_loss": 2.3, "seconds": e + 1.0}) for e in range(12)]
    >>> [i for i, line in enumerate(lines) if line], w.last.on_track
    ([3], False)
    """

    def __init__(self, max_steps: int, margin: float, rank: int, max_seconds: float | None = None, start: float = WATCH_START):
        self.max_steps, self.margin, self.rank, self.max_seconds, self.start = max_steps, margin, rank, max_seconds, start
        self.rows: list[dict[str, Any]] = []
        self.last: Forecast | None = None
        self.warned = False
        self._seen_epoch = -1.0

    def budget(self, row: dict[str, Any]) -> float:
        if self.max_seconds is None or row.get("seconds", 0) <= 0:
            return float(self.max_steps)
        return min(float(self.max_steps), self.max_seconds * max(row["step"], 1) / row["seconds"])

    def __call__(self, row: dict[str, Any]) -> str | None:
        self.rows.append(row)
        if "epochs" not in row or row["epochs"] <= 0 or row["epochs"] < self._seen_epoch + 1:
            return None  # forecasts are read once per epoch of training
        self._seen_epoch = row["epochs"]
        budget = self.budget(row)
        if row["epochs"] < MIN_EPOCHS or row["step"] < self.start * budget:
            return None
        self.last = f = forecast(self.rows, budget, self.margin)
        if f is None or f.on_track or self.warned:
            return None
        self.warned = True
        return advice(f, row["seconds"] / max(row["step"], 1), self.rank)

    def final_advice(self, seconds: float) -> str | None:
        """The advice for a run that ended uncertified, from the latest forecast (None before the first)."""
        f = self.last
        return None if f is None else advice(f, seconds / max(f.steps_done, 1), self.rank)
