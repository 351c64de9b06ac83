"""Choosing a placement for the law at convergence (issue 14): one stress point (rho = 1, SFT, batch 1, clipping 1.0)
with the given layers and modules, printed as ΔL, teacher-forced accuracy and the loss curve. Output kept in
placement_probe.txt.

    python benchmarks/paper/placement_probe.py LAYERS L STEPS [RANK] [SCHEDULE] [MODULES]   e.g. 28 64 300 1 linear down_proj
"""

from __future__ import annotations

import json
import sys
import time

from memft.research.sweep.config import SweepConfig
from memft.research.sweep.worker import Worker


def main(argv: list[str]) -> None:
    layers = [int(x) for x in argv[0].split(",")]
    length, steps = int(argv[1]), int(argv[2])
    rank = int(argv[3]) if len(argv) > 3 else 1
    schedule = argv[4] if len(argv) > 4 else "linear"
    modules = argv[5].split(",") if len(argv) > 5 else None
    cfg = SweepConfig(benchmarks=["stress"], ratios=[1.0], lengths=[length], ranks=[rank], methods=["sft"], seeds=[0],
                      max_steps=steps, stop_when_certified=False, lr_schedule=schedule, max_grad_norm=1.0, batch_size=1,
                      layers=layers, target_modules=modules)
    point = cfg.points()[0]
    worker = Worker("cpu", None)
    t = time.time()
    worker._base(point)  # load first (the worker keeps it), so that the run's seconds below leave the load out
    print("load", round(time.time() - t, 1))
    t = time.time()
    out = worker.run(point)
    dt = time.time() - t
    r = out["row"]
    print(json.dumps({"layers": layers, "L": length, "steps": steps, "rank": rank, "sec": round(dt, 1), "sec_per_step": round(dt / steps, 3),
                      "dL": r["delta_loss"], "Li": r["loss_init"], "Lf": r["loss_final"], "tf": r["token_accuracy_tf"]}))
    curve = out["curve"]
    print([round(x["loss"], 2) for x in curve[::max(1, len(curve) // 15)]])


if __name__ == "__main__":
    main(sys.argv[1:])
