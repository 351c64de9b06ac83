"""Will this run certify within its budget? A forecast from the running loss curve, early enough to act on.

Pure functions of the training history (rows of memft.train: `epochs` of training done, `mean_loss` = the mean
target loss over every record kept, each from its latest teacher-forced statistics). The forecast extrapolates the
recent slope of mean_loss in epochs down to the loss at which runs certify, so it says "at the current rate";
memorization curves often drop faster later (a phase transition), so a forecast of failure is on the safe side of
telling the user early, and one of success is not a promise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# The mean target loss at which a run certifies every record: every token needs p > margin (loss < -ln margin),
# and the mean sits well under the worst token. Measured on the embedded model: the 40-record demo certifies
# (margin 0.5) at a mean loss of about 0.1; half of -ln(0.5) leaves room for the spread between records.
def goal_loss(margin: float) -> float:
    """Mean target loss to reach before every record can certify with `margin`.

    >>> round(goal_loss(0.5), 3), round(goal_loss(0.0), 3)
    (0.347, 0.347)
    """
    return 0.5 * -math.log(max(margin, 0.5))


@dataclass(frozen=True)
class Forecast:
    epochs_done: float
    epochs_needed: float | None  # total epochs of training to reach the goal loss at the recent rate; None: no progress
    budget_epochs: float
    mean_loss: float

    @property
    def on_track(self) -> bool:
        return self.epochs_needed is not None and self.epochs_needed <= self.budget_epochs


def forecast(rows: Sequence[dict[str, Any]], budget_epochs: float, margin: float, window: float = 0.5) -> Forecast | None:
    """Forecast from history rows; None until there are at least 2 epochs of training to read a slope from.

    The slope is a least-squares line through (epochs, mean_loss) over the last `window` share of the epochs done.

    >>> rows = [{"epochs": e, "mean_loss": 2.0 - 0.1 * e} for e in range(0, 5)]
    >>> f = forecast(rows, budget_epochs=10, margin=0.5); round(f.epochs_needed, 1), f.on_track
    (16.5, False)
    """
    pts = [(float(r["epochs"]), float(r["mean_loss"])) for r in rows if "epochs" in r and "mean_loss" in r]
    if not pts or pts[-1][0] < 2:
        return None
    done, now = pts[-1]
    recent = [(e, y) for e, y in pts if e >= done * (1 - window)]
    target = goal_loss(margin)
    if now <= target:
        return Forecast(done, done, budget_epochs, now)
    n = len(recent)
    me = sum(e for e, _ in recent) / n
    my = sum(y for _, y in recent) / n
    var = sum((e - me) ** 2 for e, _ in recent)
    slope = sum((e - me) * (y - my) for e, y in recent) / var if var > 0 else 0.0
    needed = done + (now - target) / -slope if slope < 0 else None
    return Forecast(done, needed, budget_epochs, now)


def advice(f: Forecast, steps_per_epoch: float, seconds_per_epoch: float, rank: int) -> str:
    """One line for the user when a forecast says the budget will not do."""
    if f.epochs_needed is None:
        where = f"the mean loss has not fallen over the last {f.epochs_done:.0f} epochs"
        steps = None
    else:
        steps = math.ceil(f.epochs_needed * steps_per_epoch)
        where = (f"at the current rate certifying every record needs ~{f.epochs_needed:.0f} epochs (~{steps} steps, "
                 f"~{f.epochs_needed * seconds_per_epoch / 60:.0f} min at this speed), the budget allows {f.budget_epochs:.0f}")
    fix = f"--max-steps {steps}, " if steps else ""
    return (f"forecast: {where} (mean loss {f.mean_loss:.3f} after {f.epochs_done:.1f} epochs); to hold these records give "
            f"{fix}a larger --rank (e.g. {rank * 4}), or split them over several adapters")
