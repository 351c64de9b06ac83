"""MemFT vs SFT on the embedded model, equal step budgets: a phone book and one long random-token sequence.

    python benchmarks/bench_methods.py [--model smollm2-135m] [--out benchmarks/results/methods]

Writes methods.json ({"command", "machine", "rows"}), methods.csv and methods.md (tables + what they show is
written by hand in benchmarks/README.md, from these numbers). Every (method, rank) starts from the same seed,
hence the same initial adapter and data; training stops at certification or at the budget.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from memft.cli.render import cell
from memft.config import LoraSettings, TrainConfig
from memft.model.base import load_base, unreachable_tokens
from memft.research.bench.phonebook import phonebook
from memft.research.bench.stress import stress
from memft.research.runs import rows_to_csv, run_point

METHODS = ("sft", "memft-ot", "memft-ot-margin", "memft-sw")
RANKS = (1, 2, 4, 8)


def markdown(rows: list[dict], dataset: str) -> str:
    head = "| method | rank | token acc % | exact % | certified % | every p > 0.5 % | steps to certify | seconds | final loss |\n"
    head += "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    body = "".join(
        f"| {r['method']} | {r['rank']} | {cell('token_accuracy', r['token_accuracy'])} | {cell('exact_match', r['exact_match'])} | "
        f"{cell('certified', r['certified'])} | {cell('p_above_half', r['p_above_half'])} | {cell('', r['steps_to_certify'])} | "
        f"{r['seconds']:.1f} | {r['loss_final']:.4f} |\n"
        for r in rows if r["dataset"] == dataset
    )
    return head + body


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "methods")
    p.add_argument("--records", type=int, default=50)
    p.add_argument("--random-length", type=int, default=128)
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--finalize", action="store_true", help="write the outputs from the runs in rows.jsonl, run nothing")
    a = p.parse_args()
    base = load_base(a.model, dtype=a.dtype)
    data = {
        f"phonebook-{a.records}": phonebook(a.records, seed=0),
        f"random-{a.random_length}": [stress(a.random_length, 1.0, base.tokenizer, seed=0, exclude=unreachable_tokens(base.model))],
    }
    # Rows are appended to rows.jsonl as each run ends, and runs already there are skipped: a killed run resumes.
    a.out.mkdir(parents=True, exist_ok=True)
    log = a.out / "rows.jsonl"
    rows = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    done = {(r["dataset"], r["method"], r["rank"]) for r in rows}
    # Cheap runs first (the random sequence, then high ranks), so an interrupted run has the most points.
    for name, recs in sorted(data.items(), key=lambda kv: kv[0].startswith("phonebook")):
        for rank in sorted(RANKS, reverse=True):
            for method in METHODS:
                if (name, method, rank) in done or a.finalize:
                    continue
                row = run_point(recs, base, LoraSettings(rank=rank), TrainConfig(method=method, lr=a.lr, max_steps=a.max_steps, margin=0.0, active_set=False),
                                extra={"benchmark": "methods", "dataset": name})
                rows.append(row)
                with log.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(f"{name} {method} r={rank}: exact {row['exact_match']:.3f} steps {row['steps_to_certify']} {row['seconds']:.1f}s", flush=True)
    rows.sort(key=lambda r: (r["dataset"], r["method"], r["rank"]))
    meta = {"command": "python " + " ".join(sys.argv), "machine": {"platform": platform.platform(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}, "model": a.model, "dtype": base.dtype, "max_steps": a.max_steps, "lr": a.lr}
    (a.out / "methods.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    rows_to_csv(rows, a.out / "methods.csv")
    md = f"Command: `{meta['command']}` · model {a.model} ({base.dtype}) · budget {a.max_steps} steps · lr {a.lr}\n\n"
    for name in data:
        md += f"### {name}\n\n{markdown(rows, name)}\n"
    (a.out / "methods.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
