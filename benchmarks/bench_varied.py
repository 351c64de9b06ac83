"""Varied records with the defaults: does `memft write` certify what practitioners store, not only phone numbers?

    python benchmarks/bench_varied.py [--sizes 40,300,1000] [--seed 20261204] [--time-limit 1500]
                                      [--out benchmarks/results/varied.json]

For each N: `memft.research.bench.varied.varied(N, seed)` (API keys, endpoints, code with newlines, LaTeX, postal
addresses, multilingual text, licence keys, PINs, UUIDs, cron lines, long notes; 1 to about 200 tokens), written with
`memft write recs.jsonl --out DIR --json REP` as a user runs it, every setting left to memft, in its own process.
`--time-limit` bounds each write's training (the write saves what it has and exits 1 when it runs out). Then
`memft verify DIR recs.jsonl --generate` decodes every record greedily as an independent check of the write's
certificate. Reported per N: wall seconds, certified fraction (write) and exact fraction (verify by generation),
steps, epochs of training, the re-check cost (forward-only record passes per trained record pass), value tokens,
the sizing chosen, the CPU, and whether other work shared the machine (--shared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import lora_params, memft, timed_write  # noqa: E402  (the same write-and-time as the scale benchmark)


PROGRESS = re.compile(r"training step (\d+)/\d+\s+certified ([\d.]+)%.*?elapsed (\d+) s")


def machine(shared: bool) -> dict:
    import torch

    from memft.model.base import resolve_dtype

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in flags.splitlines() if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "avx512_bf16": " avx512_bf16" in flags, "auto_dtype": resolve_dtype("auto", "cpu"),
            "shared_with_other_work": shared}


def run(n: int, seed: int, work: Path, time_limit: float, model: str) -> dict:
    from memft.prompts.encoding import value_ids
    from transformers import AutoTokenizer

    from memft.model.base import base_folder
    from memft.research.bench.varied import varied

    recs = varied(n, seed)
    path = work / f"varied{n}.jsonl"
    path.write_text("".join(json.dumps({"key": r.key, "value": r.value}, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    tok = AutoTokenizer.from_pretrained(base_folder(model))
    lengths = [len(value_ids(r, tok)) for r in recs]
    out, rep = work / f"varied{n}", work / f"varied{n}.json"
    wall, r, meta, stderr = timed_write(path, out, rep, "--model", model, "--time-limit", time_limit)
    tr = meta["train"]
    t0 = time.perf_counter()
    v = memft("verify", out, path, "--generate", "--json", work / f"verify{n}.json", "--quiet")
    verify_seconds = time.perf_counter() - t0
    ver = json.loads((work / f"verify{n}.json").read_text()) if (work / f"verify{n}.json").exists() else {}
    forecast = [line for line in stderr.splitlines() if line.startswith("forecast:")]
    # the write's progress lines (one every 30 s): [step, certified share, elapsed s], how the share moved
    progress = [[int(m[1]), round(float(m[2]) / 100, 4), int(m[3])] for m in PROGRESS.finditer(stderr)]
    return {
        "records": n, "value_tokens": sum(lengths), "value_tokens_min": min(lengths), "value_tokens_median": statistics.median(lengths),
        "value_tokens_max": max(lengths), "seconds": round(wall, 1), "train_seconds": tr["seconds"], "certified": r["certified"],
        "exact_by_generation": ver.get("exact_match"), "verify_exit": v.returncode, "verify_seconds": round(verify_seconds, 1),
        "steps": tr["steps"], "epochs": tr["epochs"], "trained_passes": tr["trained_passes"], "checked_passes": tr["checked_passes"],
        "checks_per_trained_pass": round(tr["checked_passes"] / max(tr["trained_passes"], 1), 3), "min_prob": r.get("min_prob"),
        "sizing": meta.get("sizing"), "lora_params": lora_params(out), "forecast": forecast[0] if forecast else None,
        "progress": progress,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="40,300,1000")
    ap.add_argument("--seed", type=int, default=20261204)
    ap.add_argument("--time-limit", type=float, default=1500.0, help="wall-clock cap on each write's training (s)")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--work", default="/tmp/memft-varied-bench")
    ap.add_argument("--shared", action="store_true", help="record that other work shared the machine during the run")
    ap.add_argument("--out", default="benchmarks/results/varied.json")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    doc = json.loads(Path(a.out).read_text()) if Path(a.out).exists() else {}
    runs = {r["records"]: r for r in doc.get("runs", [])}
    earlier, note = doc.get("earlier_runs", []), doc.get("note")  # what came before is kept
    for n in [int(x) for x in a.sizes.split(",")]:
        row = run(n, a.seed, work, a.time_limit, a.model)
        row |= {"command": " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]), "seed": a.seed, "machine": machine(a.shared)}
        if n in runs:
            earlier.append(runs[n])  # the run this one replaces is kept, never overwritten
        runs[n] = row
        print(json.dumps(row), flush=True)
        doc = {"runs": [runs[k] for k in sorted(runs)]}
        doc |= {f"records_{k}_certified": runs[k]["certified"] for k in sorted(runs)}
        doc |= {f"records_{k}_seconds": runs[k]["seconds"] for k in sorted(runs)}
        doc |= {"earlier_runs": earlier} | ({"note": note} if note else {})
        Path(a.out).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
