"""Will this run certify within its budget? A forecast from the running loss curve, early enough to act on.

Pure functions of the training history (rows of memft.train: `epochs` of training done, `mean_loss` = the mean
target loss over every record kept, each from its latest teacher-forced statistics). The forecast extrapolates the
recent slope of mean_loss in epochs down to the loss at which runs certify, so it says "at the current rate";
memorization curves often drop faster later (a phase transition), so a forecast of failure is on the safe side of
telling the user early, and one of success is not a promise.

Core layer: may import other core modules only; the memory store, checks, research tools, integrations and the CLI build on it.
"""

from __future__ import annotations

import math
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
    epochs_done: float
    epochs_needed: float | None  # total epochs of training to reach the goal at the recent rate; None: no progress
    budget_epochs: float
    mean_loss: float
    certified: float = 0.0  # fraction of records at their goal (latest statistics)
    window: float = 0.0  # epochs the slopes were read over

    @property
    def on_track(self) -> bool:
        return self.epochs_needed is not None and self.epochs_needed <= self.budget_epochs


def _slope(pts: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    n = len(pts)
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    var = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / var if var > 0 else 0.0


def forecast(rows: Sequence[dict[str, Any]], budget_epochs: float, margin: float, window: float = 0.5) -> Forecast | None:
    """Forecast from history rows; None until there are at least 2 epochs of training to read a slope from.

    Two progress measures, each extrapolated along its least-squares line over the last `window` share of the
    epochs done: the mean loss down to `goal_loss(margin)`, and the certified fraction up to 1 (which moves only
    late, when records start to pass; then it is the better guide). The run needs the sooner of the two.

    >>> rows = [{"epochs": e, "mean_loss": 2.0 - 0.1 * e, "certified": 0.0} for e in range(0, 5)]
    >>> f = forecast(rows, budget_epochs=10, margin=0.5); round(f.epochs_needed, 1), f.on_track
    (16.5, False)
    >>> rows = [{"epochs": e, "mean_loss": 0.5, "certified": 0.1 * e} for e in range(0, 5)]
    >>> f = forecast(rows, budget_epochs=10, margin=0.5); round(f.epochs_needed, 1), f.on_track
    (10.0, True)
    """
    pts = [(float(r["epochs"]), float(r["mean_loss"]), float(r.get("certified", 0.0))) for r in rows if "epochs" in r and "mean_loss" in r]
    if not pts or pts[-1][0] < 2:
        return None
    done, now, cert = pts[-1]
    recent = [p for p in pts if p[0] >= done * (1 - window)]
    target = goal_loss(margin)
    span = done - recent[0][0]
    if now <= target or cert >= 1.0:
        return Forecast(done, done, budget_epochs, now, cert, span)
    options = []
    slope = _slope([(e, y) for e, y, _ in recent])
    if slope < 0:
        options.append(done + (now - target) / -slope)
    slope_c = _slope([(e, c) for e, _, c in recent])
    if slope_c > 0:
        options.append(done + (1.0 - cert) / slope_c)
    return Forecast(done, min(options) if options else None, budget_epochs, now, cert, span)


def advice(f: Forecast, steps_per_epoch: float, seconds_per_epoch: float, rank: int) -> str:
    """One line for the user when a forecast says the budget will not do (or did not)."""
    state = f"{100 * f.certified:.1f}% certified, mean loss {f.mean_loss:.3f} after {f.epochs_done:.1f} epochs"
    if f.epochs_needed is None:
        return (f"forecast: neither the mean loss nor the certified share has improved over the last {f.window:.0f} epochs "
                f"({state}); to hold these records give a larger --rank (e.g. {rank * 4}), or split them over several adapters")
    steps = math.ceil(f.epochs_needed * steps_per_epoch)
    return (f"forecast: at the current rate certifying every record needs ~{f.epochs_needed:.0f} epochs (~{steps} steps, "
            f"~{f.epochs_needed * seconds_per_epoch / 60:.0f} min at this speed), the budget allows {f.budget_epochs:.0f} ({state}); "
            f"give --max-steps {steps} (and --time-limit to match), a larger --rank (e.g. {rank * 4}), or split the records "
            "over several adapters")
