"""Stability at the certification line: SFT vs the paper's exact OT vs OT with margin + hysteresis.

    python benchmarks/bench_stability.py [--steps 300] [--out benchmarks/results/stability]

The embedded model, a rank-1 probe, 50 PhoneBook records, lr 1e-2, full batch, a fixed budget (no early stop), so
what happens after the first certification is visible. Per method: the first step at which every record is
certified, how often the set falls out of full certification afterwards (flips), the certified fraction over the
last 50 steps, and the first step at which every target has p > 0.5 (no stubborn token).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from memft.api import fit
from memft.config import LoraSettings, TrainConfig
from memft.model.base import load_base
from memft.research.bench.phonebook import phonebook

# name -> (objective, options)
VARIANTS = {
    "sft": ("sft", {}),
    "memft-ot": ("memft-ot", {}),  # the paper's exact OT, p* = 0.5
    "memft-ot-margin": ("memft-ot-margin", {}),  # enter at 0.5, leave above 0.7, floor 0.05
    "memft-ot p*=0.9": ("memft-ot", {"threshold": 0.9}),  # train every token until p > 0.9
}


def summarize_curve(history: list[dict]) -> dict:
    """Pure: stability numbers of one training curve (rows with step, certified, stubborn, min_prob)."""
    full = [h["certified"] == 1.0 for h in history]
    first = next((h["step"] for h, f in zip(history, full) if f), None)
    flips = sum(1 for a, b in zip(full, full[1:]) if a and not b)
    clean = next((h["step"] for h in history if h["stubborn"] == 0), None)
    tail = history[-50:]
    return {
        "first_all_certified": first,
        "flips_after_certified": flips,
        "certified_last50_mean": sum(h["certified"] for h in tail) / len(tail),
        "certified_last50_min": min(h["certified"] for h in tail),
        "first_every_p_above_half": clean,
        "stubborn_final": history[-1]["stubborn"],
        "min_prob_final": history[-1]["min_prob"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--records", type=int, default=50)
    p.add_argument("--rank", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "stability")
    p.add_argument("--only", nargs="*", choices=list(VARIANTS), help="run these variants and merge them into the existing output")
    a = p.parse_args()
    base = load_base(a.model)
    recs = phonebook(a.records, seed=0)
    path = a.out / "stability.json"
    out = json.loads(path.read_text()) if a.only and path.exists() else {"model": a.model, "dtype": base.dtype, "rank": a.rank, "records": a.records, "methods": {}}
    out.setdefault("commands", []).append("python " + " ".join(sys.argv))
    for m in a.only or VARIANTS:
        method, opts = VARIANTS[m]
        f = fit(recs, base, LoraSettings(rank=a.rank), TrainConfig(method=method, lr=1e-2, max_steps=a.steps, stop_when_certified=False, method_options=opts, margin=0.0, active_set=False))
        f.model.unload()
        hist = [{k: h[k] for k in ("step", "loss", "certified", "stubborn", "min_prob")} for h in f.train.history]
        out["methods"][m] = {**summarize_curve(hist), "curve": hist}
        print(m, json.dumps({k: v for k, v in out["methods"][m].items() if k != "curve"}), flush=True)
        a.out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1) + "\n")  # after each variant: an interrupted run keeps what it has


if __name__ == "__main__":
    main()
