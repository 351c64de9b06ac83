"""How far the batch a record is scored in moves its certificate: the evidence for memft.certify.metrics.PRECISION_LOG_ODDS.

    python benchmarks/bench_precision.py ADAPTER RECORDS.jsonl [--limit 600] [--batches 64,17,5]
                                         [--label NAME] [--out benchmarks/results/precision.json]

Loads ADAPTER in fp32 and in bf16 and scores the first --limit records of RECORDS teacher-forced, in micro-batches of
each size of --batches (other neighbours, other padding, other matrix shapes). Per target position it takes the
log-odds of the target over the best other token (metrics.log_odds) and reports, against the first batch size of the
same precision and against fp32: the median, 99th, 99.9th percentile and maximum of |difference|; then the least
log-odds any target has in any of the runs and how many records are not the argmax in some run while certified in
another. The result is merged into --out under --label (one entry per adapter), with the CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_varied import machine  # noqa: E402


def quantiles(d) -> dict:
    """Quantiles of |differences|, over positions where both runs are finite (a target with no rival at all is inf)."""
    import numpy as np

    d = d[np.isfinite(d)]
    return {"median": round(float(np.median(d)), 4), "q99": round(float(np.quantile(d, 0.99)), 4),
            "q999": round(float(np.quantile(d, 0.999)), 4), "max": round(float(d.max()), 4)}


def main() -> None:
    import numpy as np
    import torch

    from memft import api
    from memft.certify.evaluate import teacher_forced
    from memft.certify.metrics import log_odds
    from memft.model.forward import Runner
    from memft.prompts.encoding import encode_all
    from memft.prompts.records import Record

    ap = argparse.ArgumentParser()
    ap.add_argument("adapter")
    ap.add_argument("records")
    ap.add_argument("--limit", type=int, default=600)
    ap.add_argument("--batches", default="64,17,5")
    ap.add_argument("--label", default=None)
    ap.add_argument("--out", default="benchmarks/results/precision.json")
    a = ap.parse_args()
    torch.set_num_threads(2)
    recs = [Record(**json.loads(x)) for x in Path(a.records).read_text(encoding="utf-8").splitlines() if x.strip()][: a.limit]
    sizes = [int(x) for x in a.batches.split(",")]
    runs: dict[str, np.ndarray] = {}
    argmax: dict[str, list[bool]] = {}
    for dtype in ("bf16", "fp32"):  # the fp32 runner stays for its own batch effect below
        ld = api.load_adapter(a.adapter, "cpu", dtype)
        items = encode_all(recs, ld.tokenizer, ld.meta.template, ld.meta.key_prefix)
        runner = Runner(ld.model, items, ld.tokenizer.pad_token_id)
        for bs in sizes if dtype == "bf16" else sizes[:1]:
            st = teacher_forced(runner, bs)
            runs[f"{dtype}/{bs}"] = np.concatenate([log_odds(st[i].prob, st[i].gap) for i in range(len(items))])
            argmax[f"{dtype}/{bs}"] = [all(st[i].correct) for i in range(len(items))]
            print(dtype, bs, flush=True)
    first, ref = f"bf16/{sizes[0]}", f"fp32/{sizes[0]}"
    flips = sum(1 for i in range(len(recs)) if len({argmax[k][i] for k in argmax}) > 1)
    row = {
        "adapter": a.adapter, "records": len(recs), "target_positions": int(runs[first].size), "batches": sizes,
        "allowance": ld.meta.train.get("log_odds_allowance"),
        "bf16_vs_bf16": {k: quantiles(np.abs(v - runs[first])) for k, v in runs.items() if k.startswith("bf16") and k != first},
        "bf16_vs_fp32": {k: quantiles(np.abs(v - runs[ref])) for k, v in runs.items() if k.startswith("bf16")},
        "fp32_batch_effect": None,
        "least_log_odds": {k: round(float(v.min()), 4) for k, v in runs.items()},
        "records_argmax_in_one_run_not_another": flips,
        "command": " ".join(["python", *sys.argv]), "machine": machine(False),
    }
    if len(sizes) > 1:  # fp32 in a second batch size: its own noise
        st = teacher_forced(runner, sizes[1])
        other = np.concatenate([log_odds(st[i].prob, st[i].gap) for i in range(len(items))])
        row["fp32_batch_effect"] = quantiles(np.abs(other - runs[ref]))
    out = Path(a.out)
    data = json.loads(out.read_text()) if out.exists() else {}
    data[a.label or Path(a.adapter).name] = row
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
