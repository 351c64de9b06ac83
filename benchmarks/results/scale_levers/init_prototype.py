"""Experiment: data-aware LoRA A init (principal directions of the centered module inputs) vs PEFT's default."""
import argparse, json, time, torch
from memft import adapters
from memft.modeling import load_base
from memft.research.bench.phonebook import phonebook
from memft.config import LoraSettings, TrainConfig
from memft.encoding import encode_all
from memft.batching import collate
from memft.train import train
ap = argparse.ArgumentParser()
ap.add_argument("--n", type=int, default=300); ap.add_argument("--seed", type=int, default=11)
ap.add_argument("--rank", type=int, default=16); ap.add_argument("--layers", default="26,27,28,29")
ap.add_argument("--bs", type=int, default=32); ap.add_argument("--lr", type=float, default=1e-2)
ap.add_argument("--secs", type=float, default=300); ap.add_argument("--init", default="default")
ap.add_argument("--tag", default=""); ap.add_argument("--mods", default=None); ap.add_argument("--plain", action="store_true"); ap.add_argument("--sched", default="constant"); ap.add_argument("--steps", type=int, default=10**6)
a = ap.parse_args()
torch.set_num_threads(1)
b = load_base("smollm2-135m", "cpu", "fp32")
items = encode_all(phonebook(a.n, a.seed), b.tokenizer, "raw")
layers = tuple(int(x) for x in a.layers.split(","))
lora = LoraSettings(rank=a.rank, preset="probe", layers=layers, target_modules=tuple(a.mods.split(",")) if a.mods else None)
pm, place = adapters.attach(b.model, lora, seed=0)
t0 = time.perf_counter()
if a.init != "default":
    mods = {n: m for n, m in pm.named_modules() if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {})}
    feats = {n: [] for n in mods}
    bt = collate(items, b.tokenizer.pad_token_id)
    sel = (bt.rows, bt.cols)
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: feats[n].append(inp[0].detach()[sel])) for n, m in mods.items()]
    with torch.no_grad():
        for s in range(0, len(items), 64):
            idx = list(range(s, min(s + 64, len(items))))
            bb = collate([items[i] for i in idx], b.tokenizer.pad_token_id)
            feats_sel = None
            # hook selects positions of the full collate: redo per chunk
            for h in hooks: h.remove()
            hooks = [m.register_forward_hook(lambda mod, inp, out, n=n, bb=bb: feats[n].append(inp[0].detach()[bb.rows, bb.cols])) for n, m in mods.items()]
            pm(input_ids=bb.input_ids, attention_mask=bb.attention_mask)
    for h in hooks: h.remove()
    for n, m in mods.items():
        X = torch.cat(feats[n]).double()  # [M, d]
        A = m.lora_A["default"].weight  # [r, d]
        mu = X.mean(0)
        Xc = X - mu
        if a.init in ("pca_perp", "white_perp"):
            u = mu / mu.norm()
            Xc = Xc - (Xc @ u)[:, None] * u[None]
        cov = Xc.T @ Xc / X.shape[0]
        evals, evecs = torch.linalg.eigh(cov)
        top = evecs[:, -A.shape[0]:].flip(1).T  # [r, d]
        lam = evals[-A.shape[0]:].flip(0)
        if a.init.startswith("white"):
            rows = top / lam.clamp_min(1e-12).sqrt()[:, None]  # unit-variance features
            rows = rows * (1.0 / (Xc @ rows.T).std(0).mean())  # ~1 std features
        else:
            rows = top * A.norm(dim=1).mean()  # same row norm as PEFT's init
        A.data.copy_(rows.float())
print("init seconds", round(time.perf_counter() - t0, 1), flush=True)
cfg = TrainConfig(lr=a.lr, batch_size=a.bs, max_steps=a.steps, max_seconds=a.secs, head_vocab="restricted", active_set=not a.plain, lr_schedule=a.sched)
last = {"e": -1}
def on_step(row):
    if int(row["epochs"]) > last["e"]:
        last["e"] = int(row["epochs"])
        print(json.dumps({k: round(v, 4) for k, v in row.items() if k in ("step","epochs","certified","mean_loss","seconds","active")}), flush=True)
res = train(pm, items, b.tokenizer.pad_token_id, cfg, min(layers), on_step)
print("RESULT", json.dumps({"tag": a.tag, "args": vars(a), "certified_at": res.certified_at, "steps": res.steps, "epochs": res.trained / a.n,
      "seconds": res.seconds, "final_certified": res.history[-1]["certified"]}), flush=True)
