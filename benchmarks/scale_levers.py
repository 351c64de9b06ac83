"""One training configuration on N PhoneBook records: the certified share and mean loss at every epoch, as JSON lines.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/scale_levers.py --n 300 --preset top --rank 16 --bs 32 --lr 3e-3 \
        [--init centered|random] [--sched progress|constant] [--alr 1.0] [--head restricted|full] [--plain] --secs 330

Used to choose the sizing of large record sets (memft.training.sizing); the runs, their commands and what they showed are
in benchmarks/README.md (Scale, levers) and benchmarks/results/scale_levers/. One core, one thread, next to other
work on the other core: compare epochs, not seconds. The last line (RESULT) is the run's summary; a run stopped by
hand has none.
"""
import argparse, json, sys, time, torch
from memft import api
from memft.model.base import load_base
from memft.research.bench.phonebook import phonebook
from memft.config import LoraSettings, TrainConfig
ap = argparse.ArgumentParser()
ap.add_argument("--n", type=int, default=1000); ap.add_argument("--seed", type=int, default=11)
ap.add_argument("--rank", type=int, default=16); ap.add_argument("--preset", default="upper")
ap.add_argument("--layers", default=None); ap.add_argument("--bs", type=int, default=32)
ap.add_argument("--lr", type=float, default=1e-2); ap.add_argument("--head", default="restricted")
ap.add_argument("--secs", type=float, default=300); ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--method", default="sft"); ap.add_argument("--tag", default="")
ap.add_argument("--mods", default=None); ap.add_argument("--init", default="centered"); ap.add_argument("--plain", action="store_true"); ap.add_argument("--sched", default="progress"); ap.add_argument("--alr", type=float, default=1.0)
a = ap.parse_args()
torch.set_num_threads(a.threads)
b = load_base("smollm2-135m", "cpu", "fp32")
recs = phonebook(a.n, a.seed)
layers = tuple(int(x) for x in a.layers.split(",")) if a.layers else None
lora = LoraSettings(rank=a.rank, preset=a.preset, layers=layers, target_modules=tuple(a.mods.split(",")) if a.mods else None)
tc = TrainConfig(lr=a.lr, batch_size=a.bs, max_steps=10**6, max_seconds=a.secs, head_vocab=a.head, method=a.method, lora_init=a.init, active_set=not a.plain, lr_schedule=a.sched, a_lr_scale=a.alr)
last = {"e": -1}
def on_step(row):
    if int(row["epochs"]) > last["e"] or row.get("final"):
        last["e"] = int(row["epochs"])
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items() if k in ("step","epochs","certified","mean_loss","seconds","active")}), flush=True)
t0 = time.perf_counter()
f = api.fit(recs, b, lora, tc, on_step=on_step, generate="never")
tr = f.train
print("RESULT", json.dumps({"tag": a.tag, "args": vars(a), "certified": f.summary["certified"], "steps": tr.steps, "epochs": tr.trained / a.n,
      "trained": tr.trained, "checked": tr.checked, "seconds": tr.seconds, "certified_at": tr.certified_at, "wall": time.perf_counter()-t0}), flush=True)
