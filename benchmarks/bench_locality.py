"""Locality of a memory adapter (issue 15): what writing the demo's records does to unrelated text, with and without
the preservation term (memft.preserve), on the embedded model.

    python benchmarks/bench_locality.py [--variants none,preserve-3] [--remedy preserve-3] [--records 40] [--out benchmarks/results/locality.json]

Each variant writes the `memft demo` phone book (phonebook(40, seed=0); or --records N of them) with the settings
`memft write` sizes for that many records (memft.sizing: for 40, rank 8 probe, lr 1e-2, margin 0.5) into a fresh adapter, then runs the side-effect audit (memft.checks.audit: 32 held-out windows x 128
tokens of pydoc_data.topics, KL(base || adapted), perplexity, argmax agreement, leak probe). Variants run in one
process on one loaded base; rows are merged into --out by variant name, so variants can be run one at a time (or in
separate processes with their own --out, merged afterwards with --collect a.json,b.json).

Top level of the result: the figures of `--remedy` (default `preserve-3`), and train_seconds_ratio = its CPU seconds
in api.fit (training, then one certification pass) / those of `none`. CPU time, because the core is shared and wall
time depends on what else runs (train_wall_seconds_ratio gives the wall-clock ratio too).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from memft import api
from memft.api import Loaded
from memft.checks.audit import LOCALITY_GOAL, audit, locality
from memft.config import LoraSettings, TrainConfig
from memft.meta import AdapterMeta, BaseInfo, CertificationInfo, LoraInfo, RecordsInfo
from memft.modeling import load_base
from memft.research.bench.phonebook import phonebook
from memft.sizing import size_for

# name -> (LoraSettings overrides, TrainConfig overrides). `none` is `memft write` before issue 15 (no remedy).
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "none": ({}, {"preserve": 0.0}),
    "default": ({}, {}),  # whatever `memft write` does by default now
    **{f"preserve-{w:g}": ({}, {"preserve": w}) for w in (0.3, 1.0, 3.0, 10.0, 30.0)},
    "weight-decay-0.1": ({}, {"preserve": 0.0, "weight_decay": 0.1}),
    "rank-4": ({"rank": 4}, {"preserve": 0.0}),
    "rank-16": ({"rank": 16}, {"preserve": 0.0}),
}


def unsaved_meta(base: Any, lora: LoraSettings, f: Any, train: TrainConfig, n: int) -> AdapterMeta:
    """The memft.json an adapter fitted in this process would have, as far as the audit reads it (template, base,
    record count; no record hash, so the audit does not check the record set against one)."""
    return AdapterMeta(base=BaseInfo(base.spec, base.dtype, base.device),
                       lora=LoraInfo(rank=lora.rank, layers=tuple(f.placement["layers"]), modules=tuple(f.placement["modules"]), preset=lora.preset),
                       records=RecordsInfo(count=n), certification=CertificationInfo(dtype=base.dtype), template=train.template)


def run_variant(name: str, base: Any, records: list, seed: int) -> dict[str, Any]:
    lora_over, train_over = VARIANTS[name]
    # The settings `memft write` sizes for this many records (memft.sizing; for the demo's 40: rank 8 probe, full
    # batch, lr 1e-2, 300 steps), then the variant's changes.
    s = size_for(len(records))
    lora = LoraSettings(**{"rank": s.rank, "preset": s.preset, **lora_over})
    train = TrainConfig(**{"seed": seed, "batch_size": s.batch_size, "max_steps": s.max_steps, "lr": s.lr, "lr_schedule": s.lr_schedule,
                           "head_vocab": s.head_vocab, "lora_init": s.lora_init, **train_over})
    c0 = time.process_time()  # CPU seconds: the core is shared, so wall time depends on what else runs
    f = api.fit(records, base, lora, train)
    fit_cpu = time.process_time() - c0
    try:
        res = audit(Loaded(f.model, unsaved_meta(base, lora, f, train, len(records)), base), records)
    finally:
        f.model.unload()
    d, hist = res.divergence, f.train.history
    return {
        "variant": name, "lora": {"rank": lora.rank, "preset": lora.preset},
        "train": {k: getattr(train, k) for k in ("batch_size", "max_steps", "lr", "lr_schedule", "head_vocab", "lora_init", *train_over)} | {"preserve": train.preserve},
        "certified": f.summary["certified"], "min_prob": f.summary["min_prob"], "steps": f.train.steps,
        "certified_at": f.train.certified_at, "train_seconds": round(f.train.seconds, 2),
        "fit_cpu_seconds": round(fit_cpu, 2),
        "preserve_kl_last": hist[-2].get("preserve_kl") if len(hist) > 1 else None,
        "ppl_base": d["ppl_base"], "ppl_adapted": d["ppl_adapted"], "ppl_increase": d["ppl_change"],
        "argmax_agreement": d["argmax_agreement"], "kl_mean": d["kl_mean"], "kl_p95": d["kl_p95"], "kl_max": d["kl_max"],
        "unrelated_leaks": res.unrelated_leaks, "goal_met": locality(d, res.unrelated_leaks)["met"] and f.summary["certified"] == 1.0,
        "leak_counts": res.leak_probe["counts"], "audit_settings": res.settings,
    }


def result(rows: dict[str, dict[str, Any]], remedy: str, model: str, records: int) -> dict[str, Any]:
    """The result file: every row, and at the top level the remedy's figures and its cost relative to `none`."""
    doc: dict[str, Any] = {"model": model, "records": records, "goal": LOCALITY_GOAL}
    fix, none = rows.get(remedy), rows.get("none")
    if fix is not None:
        doc |= {"remedy": remedy, **{k: fix[k] for k in ("ppl_increase", "argmax_agreement", "kl_mean", "certified", "unrelated_leaks", "goal_met")}}
        if none is not None:
            doc["train_seconds_ratio"] = fix["fit_cpu_seconds"] / none["fit_cpu_seconds"]
            doc["train_wall_seconds_ratio"] = fix["train_seconds"] / none["train_seconds"]
    return doc | {"rows": list(rows.values())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--records", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default="none,preserve-3")
    ap.add_argument("--remedy", default="preserve-3", help="the variant whose figures go to the top level")
    ap.add_argument("--out", default="benchmarks/results/locality.json")
    ap.add_argument("--collect", default=None, help="comma-separated result files whose rows to merge into --out (no training)")
    a = ap.parse_args()
    out = Path(a.out)
    rows = {r["variant"]: r for r in (json.loads(out.read_text())["rows"] if out.exists() else [])}
    if a.collect:
        for f in a.collect.split(","):
            rows |= {r["variant"]: r for r in json.loads(Path(f).read_text())["rows"]}
        out.write_text(json.dumps(result(rows, a.remedy, a.model, a.records), indent=2) + "\n")
        return
    names = [v.strip() for v in a.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    base = load_base(a.model, "cpu", "auto", seed=a.seed)
    records = phonebook(a.records, seed=a.seed)
    for name in names:
        t0 = time.perf_counter()
        row = run_variant(name, base, records, a.seed)
        row |= {"wall_seconds": round(time.perf_counter() - t0, 1), "dtype": base.dtype,
                "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()}}
        rows[name] = row
        print(json.dumps({k: row[k] for k in ("variant", "certified", "steps", "train_seconds", "fit_cpu_seconds", "ppl_increase",
                                             "argmax_agreement", "kl_mean", "unrelated_leaks", "goal_met")}), flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result(rows, a.remedy, a.model, a.records), indent=2) + "\n")


if __name__ == "__main__":
    main()
