"""The failure forecast (memft.training.forecast) and its watch, on hand-made training histories."""

import math

from memft.cli.render import forecast_watch
from memft.training.forecast import advice, forecast, goal_loss


def test_forecast_extrapolates_the_recent_slope_to_the_goal_loss():
    assert forecast([{"step": 1, "epochs": 1.0, "mean_loss": 2.0}], 10, 0.5) is None  # under 2 epochs: no slope yet
    # a flat start then a straight fall of 0.2 per epoch, 4 steps an epoch: only the recent half is read
    rows = [{"step": 4 * e, "epochs": e, "mean_loss": 2.3} for e in range(4)] + \
           [{"step": 4 * e, "epochs": e, "mean_loss": 2.3 - 0.2 * (e - 3)} for e in range(4, 9)]
    f = forecast(rows, budget_steps=48, margin=0.5)
    now = 2.3 - 0.2 * 5
    epochs = 8 + (now - goal_loss(0.5)) / 0.2
    assert abs(f.epochs_needed - epochs) < 1e-9 and abs(f.steps_needed - 4 * epochs) < 1e-9 and not f.on_track
    assert forecast(rows, budget_steps=80, margin=0.5).on_track
    flat = forecast([{"step": e, "epochs": e, "mean_loss": 2.3} for e in range(6)], 10, 0.5)
    assert flat.epochs_needed is None and not flat.on_track and flat.window == 2  # epochs 3..5: the last half of 5
    line = advice(flat, seconds_per_step=2, rank=8)
    assert "improved over the last 2 epochs" in line and "--rank (e.g. 32)" in line and "--max-steps" not in line
    # a flat loss but a certified share rising 5 % an epoch: 20 epochs in all, so a 25-epoch budget is on track
    rising = forecast([{"step": e, "epochs": e, "mean_loss": 0.4, "certified": 0.05 * e} for e in range(11)], 25, 0.5)
    assert rising.epochs_needed == 20.0 and rising.on_track
    line = advice(f, seconds_per_step=2, rank=8)
    assert f"--max-steps {math.ceil(4 * epochs)}" in line


def test_forecast_never_advises_fewer_steps_than_were_taken():
    # Issue 22: the active set trains fewer records a step as records rest, so 300 steps held 160.7 epochs; the old
    # forecast divided epochs by a full batch's steps and advised "--max-steps 161" after 300 steps.
    rows = [{"step": s, "epochs": 0.55 * s if s < 150 else 82.5 + 0.52 * (s - 150), "mean_loss": max(0.4, 2.0 - 0.01 * s),
             "certified": min(0.79, s / 300)} for s in range(0, 301, 10)]
    f = forecast(rows, budget_steps=300, margin=0.5)
    assert f.steps_done == 300 and f.steps_needed > 300 and not f.on_track
    line = advice(f, seconds_per_step=1.0, rank=8)
    assert int(line.split("--max-steps ")[1].split()[0]) > 300
    # the loss at the goal and records still uncertified: no step count at all, and never one below the steps done
    stuck = forecast([{"step": s, "epochs": s / 2, "mean_loss": 0.05, "certified": 0.79} for s in range(0, 301, 10)], 300, 0.5)
    assert stuck.reached and "--max-steps above 300" in advice(stuck, 1.0, 8)


def test_the_watch_warns_once_and_only_after_its_start():
    said, seen = [], []
    w = forecast_watch(seen.append, max_steps=200, margin=0.5, rank=8, say=lambda line: said.append((seen[-1]["epochs"], line)))
    for e in range(12):  # the loss does not move: the forecast is "no progress"
        w({"step": e * 10, "epochs": float(e), "mean_loss": 2.3, "seconds": 3.0 * e + 1})
    assert len(seen) == 12 and len(said) == 1  # every row passed on, one warning
    assert said[0][0] == 5.0  # a quarter of the 200-step budget, not before
    assert "has improved" in said[0][1] and w.watch.last is not None and not w.watch.last.on_track


def test_with_a_time_limit_the_watch_reads_the_budget_from_the_speed_so_far():
    said = []
    # 1 s a step and a 60 s limit: 60 steps of budget, not the 1,000 of the step budget; the loss falls 0.1 an epoch
    w = forecast_watch(None, max_steps=1000, margin=0.5, rank=8, say=said.append, max_seconds=60)
    for e in range(1, 5):
        w({"step": e * 10, "epochs": float(e), "mean_loss": 2.3 - 0.1 * e, "seconds": 10.0 * e})
    assert len(said) == 1 and w.watch.last.budget_steps == 60.0 and not w.watch.last.on_track
    assert "the budget allows 60 steps" in said[0]


