"""The memory store on the embedded model: successive appends, a forget, the deployment re-check, the side-effect
audit, and computed vs sampled recall odds. All numbers come from one run on one machine.

    python benchmarks/bench_store.py [--model smollm2-135m] [--out benchmarks/results/store.json]

Steps (records are seeded PhoneBook entries, "First Last:" -> 10 digits; defaults of `memft write`: rank 8 probe,
lr 1e-2, margin 0.5):
  1. write 20 records, then append 10 three times (50 records), each append replaying what the adapter recalls;
     after every write, a fresh load certifies every record held so far and greedy generation checks them.
  2. forget 5 keys; check they are no longer recalled and the 45 others still are.
  3. deployment re-check of the 45 records: LoRA / merged x fp32 / bf16 / fp16, and plain PeftModel in a subprocess.
  4. audit: KL(base || adapted) and perplexity change on held-out pydoc text, leak probe.
  5. recall odds under sampling (T = 1.0, top-p = 0.95) computed from one pass vs 200 draws per record, 10 records.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch

from memft import api
from memft.checks.audit import audit
from memft.checks.deploy import recheck, settings_for
from memft.config import LoraSettings, TrainConfig
from memft.store import ledger
from memft.memory.rewrite import append, forget
from memft.research.bench.phonebook import phonebook


def held_check(folder: Path, records: list) -> dict:
    ver = api.verify(folder, records, generate="always")
    return {"records": len(records), "certified": ver.summary["certified"], "exact_match": ver.summary["exact_match"],
            "min_prob": ver.summary["min_prob"], "min_gap": ver.summary["min_gap"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--out", default="benchmarks/results/store.json")
    ap.add_argument("--folder", default="/tmp/memft-store-bench")
    a = ap.parse_args()
    folder = Path(a.folder)
    book = phonebook(50, seed=11)
    out: dict = {"machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                             "processor": platform.processor() or platform.machine()}, "model": a.model}

    t0 = time.perf_counter()
    w = api.write(book[:20], folder, model=a.model, lora=LoraSettings(rank=8), train=TrainConfig())
    rounds = [{"op": "write", "held": 20, "saved": w.all_certified, "steps": w.meta.train["steps"],
               "train_seconds": w.meta.train["seconds"], "wall_seconds": round(time.perf_counter() - t0, 1), **held_check(folder, book[:20])}]
    print(rounds[-1], flush=True)
    for k in (20, 30, 40):
        t0 = time.perf_counter()
        r = append(folder, book[k:k + 10])
        rounds.append({"op": "append", "held": k + 10, "saved": r.saved, "steps": r.steps, "train_seconds": round(r.seconds, 1),
                       "wall_seconds": round(time.perf_counter() - t0, 1), **held_check(folder, book[:k + 10])})
        print(rounds[-1], flush=True)
    gone = [r.key for r in book[::10]]
    t0 = time.perf_counter()
    f = forget(folder, gone)
    kept = [r for r in book if r.key not in set(gone)]
    ld = api.load_adapter(folder)
    still = [r.key for r in book if r.key in set(gone) and api.recall(ld, r.key).value == r.value]
    rounds.append({"op": "forget", "held": len(kept), "saved": f.saved, "steps": f.steps, "train_seconds": round(f.seconds, 1),
                   "wall_seconds": round(time.perf_counter() - t0, 1), "forgotten": len(gone), "forgotten_still_recalled": still,
                   **held_check(folder, kept)})
    print(rounds[-1], flush=True)
    out["rounds"] = rounds
    out["ledger_history"] = ledger.read(folder).history

    t0 = time.perf_counter()
    cert = ld.meta.certification.dtype
    checks = recheck(folder, kept, settings_for(cert, False, None, False, True))
    out["deploy"] = {"certified_dtype": cert, "seconds": round(time.perf_counter() - t0, 1),
                     "checks": [{k: v for k, v in c.to_json().items() if k != "per_record"} for c in checks]}
    for c in checks:
        print(c.setting, c.certified, "/", c.records, "min p", round(c.min_prob, 4), "min gap", c.min_gap, flush=True)

    t0 = time.perf_counter()
    res = audit(ld, kept)
    out["audit"] = {**res.to_json(), "seconds": round(time.perf_counter() - t0, 1)}
    print("audit", res.to_json()["divergence"], res.to_json()["leak_probe"]["counts"], flush=True)

    t0 = time.perf_counter()
    n = 200
    rows = api.sampling_odds(ld, kept[:10], temperature=1.0, top_p=0.95, samples=n)
    z = [(r["sampled_exact"] / n - r["odds"]) / math.sqrt(max(r["odds"] * (1 - r["odds"]), 1e-12) / n) for r in rows]
    out["sampling"] = {"temperature": 1.0, "top_p": 0.95, "samples_per_record": n, "seconds": round(time.perf_counter() - t0, 1),
                       "records": [{"key": r["key"], "odds": r["odds"], "sampled": r["sampled_exact"] / n, "z": zz} for r, zz in zip(rows, z)],
                       "max_abs_z": max(abs(x) for x in z)}
    print("sampling", out["sampling"]["records"], flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
