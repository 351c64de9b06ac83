"""Capacity frontier (issue 11, goal 3): per LoRA rank, the largest PhoneBook that `memft write` certifies within its
budget, as bits per trainable LoRA parameter (a uniformly random 10-digit number is 33.2 bits).

    python benchmarks/bench_capacity.py [--ranks 1,4] [--sizes 100,200,400] [--preset probe] [--layers 28]
                                        [--time-limit 900] [--seed 20261202] [--out benchmarks/results/capacity.json]

For each rank, sizes in increasing order: N PhoneBook records (seeded), `memft write recs.jsonl --out DIR --preset P
--rank R [--layers L] --json REP --time-limit T` in its own process, every other setting sized by memft from N
(batch 32, a budget of 150 epochs, lr 3e-3 with the progress schedule, restricted head, centered init, margin 0.5).
A rank's sizes stop at the first that does not certify (by the end of the step budget or of --time-limit, which
is then reported as the reason). The frontier of a placement and rank (e.g. "probe@28 r1") is its largest certified N; bits / param = N x 33.2 over
the adapter's trainable parameters (counted from the saved safetensors).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

from bench_scale import BITS_PER_RECORD, lora_params, timed_write  # run as a script: benchmarks/ is on the path


def run(n: int, rank: int, a: argparse.Namespace, work: Path) -> dict:
    from memft.research.bench.phonebook import phonebook

    recs = work / f"pb{n}.jsonl"
    recs.write_text("".join(json.dumps({"key": r.key, "value": r.value}) + "\n" for r in phonebook(n, a.seed)), encoding="utf-8")
    out, rep = work / f"r{rank}_n{n}", work / f"r{rank}_n{n}.json"
    args = ["--model", a.model, "--preset", a.preset, "--rank", rank, "--time-limit", a.time_limit] + (["--layers", a.layers] if a.layers else [])
    wall, r, meta, stderr = timed_write(recs, out, rep, *args)
    tr = meta["train"]
    params = lora_params(out)
    ok = r["certified"] == 1.0
    stopped = None if ok else ("time limit" if tr["steps"] < tr["max_steps"] else "step budget")
    forecast = [line for line in stderr.splitlines() if line.startswith("forecast:")]
    return {"rank": rank, "records": n, "certified": r["certified"], "seconds": round(wall, 1), "train_seconds": tr["seconds"],
            "steps": tr["steps"], "max_steps": tr["max_steps"], "epochs": tr["epochs"], "stopped": stopped,
            "lora_params": params, "bits": round(n * BITS_PER_RECORD, 1), "bits_per_param": round(n * BITS_PER_RECORD / params, 4),
            "placement": {"preset": meta["lora"].get("preset"), "rank": meta["lora"]["rank"], "layers": meta["lora"]["layers"]},
            "forecast": forecast[0] if forecast else None}


def placement_name(row: dict) -> str:
    """A row's adapter placement and rank, e.g. "probe@28 r1" or "top@26-29 r16"."""
    pl = row["placement"]
    layers = pl["layers"]
    span = f"{layers[0]}" if len(layers) == 1 else f"{layers[0]}-{layers[-1]}"
    return f"{pl['preset']}@{span} r{pl['rank']}"


def frontier(rows: list[dict]) -> dict[str, dict | None]:
    """Per placement and rank, its largest certified record set ({records, bits_per_param, lora_params}, None when
    none certified). A placement's sizes ran in increasing order up to the first that failed."""
    out: dict[str, dict | None] = {}
    for r in rows:
        name = placement_name(r)
        best = out.get(name)
        if r["certified"] == 1.0 and (best is None or r["records"] > best["records"]):
            out[name] = {k: r[k] for k in ("records", "bits_per_param", "lora_params")}
        else:
            out.setdefault(name, None)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--ranks", default="1,4")
    ap.add_argument("--sizes", default="100,200,400")
    ap.add_argument("--preset", default="probe")
    ap.add_argument("--layers", default="28", help="decoder layers to adapt ('' = the preset's)")
    ap.add_argument("--time-limit", type=float, default=900.0)
    ap.add_argument("--seed", type=int, default=20261202)
    ap.add_argument("--work", default="/tmp/memft-capacity")
    ap.add_argument("--out", default="benchmarks/results/capacity.json")
    ap.add_argument("--merge", default=None, help="comma-separated result files (run apart, or merged before) to merge into --out")
    a = ap.parse_args()
    if a.merge:
        docs = [json.loads(Path(f).read_text()) for f in a.merge.split(",")]
        rows = [r for d in docs for r in d["rows"]]
        # A merged file given again keeps its own sources (so a new run can be merged into capacity.json).
        sources = [src for d in docs for src in d.get("sources") or [{k: d.get(k) for k in ("command", "seed", "preset", "layers", "time_limit", "machine")}]]
        doc = {"sources": sources,
               "rows": rows, "frontier": frontier(rows)}
        doc["bits_per_param"] = max((f["bits_per_param"] for f in doc["frontier"].values() if f), default=None)
        Path(a.out).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        return
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    import torch

    doc: dict = {"command": " ".join(sys.argv), "seed": a.seed, "preset": a.preset, "layers": a.layers, "time_limit": a.time_limit,
                 "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()},
                 "rows": [], "frontier": {}}
    for rank in [int(x) for x in a.ranks.split(",")]:
        for n in sorted(int(x) for x in a.sizes.split(",")):
            row = run(n, rank, a, work)
            doc["rows"].append(row)
            print(json.dumps(row), flush=True)
            doc["frontier"] = frontier(doc["rows"])
            Path(a.out).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
            if row["certified"] != 1.0:
                break
    doc["bits_per_param"] = max((f["bits_per_param"] for f in doc["frontier"].values() if f), default=None)
    Path(a.out).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
