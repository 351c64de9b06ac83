"""Choosing a placement for the law at convergence (issue 14): one stress point (rho = 1, SFT, batch 1, clipping 1.0)
with the given layers and modules, printed as ΔL, teacher-forced accuracy and the loss curve. Output kept in
placement_probe.txt.

    python benchmarks/paper/placement_probe.py LAYERS L STEPS [RANK] [SCHEDULE] [MODULES]   e.g. 28 64 300 1 linear down_proj
"""
import sys, time, json
from memft.research.sweep.config import SweepConfig
from memft.research.sweep.worker import Worker
layers = [int(x) for x in sys.argv[1].split(",")]
L = int(sys.argv[2]); steps = int(sys.argv[3]); rank = int(sys.argv[4]) if len(sys.argv) > 4 else 1
cfg = SweepConfig(benchmarks=["stress"], ratios=[1.0], lengths=[L], ranks=[rank], methods=["sft"], seeds=[0], max_steps=steps,
                  stop_when_certified=False, lr_schedule=sys.argv[5] if len(sys.argv) > 5 else "linear", max_grad_norm=1.0, batch_size=1, layers=layers, target_modules=sys.argv[6].split(",") if len(sys.argv) > 6 else None)
p = cfg.points()[0]
w = Worker("cpu", None)
t = time.time(); w._base(p); print("load", round(time.time()-t,1))
t = time.time(); out = w.run(p); dt = time.time()-t
r = out["row"]
print(json.dumps({"layers": layers, "L": L, "steps": steps, "rank": rank, "sec": round(dt,1), "sec_per_step": round(dt/steps,3),
  "dL": r["delta_loss"], "Li": r["loss_init"], "Lf": r["loss_final"], "tf": r["token_accuracy_tf"]}))
c = out["curve"]; print([round(x["loss"],2) for x in c[::max(1,len(c)//15)]])
