"""How much general text drives each adapted module of a null-init adapter compared with the records it is written
for (issue 24): for the centered, null and null-contrast inits, E_text[(a.x)^2] / E_records[(a.x)^2] averaged over
A's rows, on the init's own text (the preservation docstrings) and on held-out text (the audit's pydoc topics).

    OMP_NUM_THREADS=2 flock /tmp/memft-heavy.lock python benchmarks/null_init_probe.py [--records 1000] [--preset top] [--rank 16]

Forward passes only (no training): the adapter is attached fresh, so every B is zero and the inputs are the base's.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from memft.config import LoraSettings
from memft.model import lora_init, peft_lora
from memft.model.base import load_base
from memft.prompts import heldout
from memft.prompts.encoding import Encoded, encode_all, text_ids
from memft.research.bench.phonebook import phonebook
from memft.training import null_init, preserve
from bench_locality import machine


def ratio(a: torch.Tensor, num: lora_init.Moments, den: lora_init.Moments) -> float:
    a = a.double()
    return float(((a @ lora_init.second_moment(num) * a).sum(1) / (a @ lora_init.second_moment(den) * a).sum(1)).mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--preset", default="top")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--out", default="benchmarks/results/null_init_probe.json")
    a = ap.parse_args()
    t0 = time.perf_counter()
    base = load_base("smollm2-135m", "cpu", "auto", seed=0)
    model, place = peft_lora.attach(base.model, LoraSettings(rank=a.rank, preset=a.preset), seed=0)
    start, tok = min(place["layers"]), base.tokenizer
    pad = tok.pad_token_id
    own = null_init.moments_of(model, null_init.text_items(tok), pad, start)
    ws = preserve.windows_of(text_ids(heldout.default_text(), tok, "held-out text"), window=128, n=32, source="held-out text")
    held = null_init.moments_of(model, [Encoded(key=f"held-{i}", prompt=(w[0],), targets=tuple(w[1:])) for i, w in enumerate(ws)], pad, start)
    recs = null_init.moments_of(model, encode_all(phonebook(a.records, seed=0), tok), pad, start)
    rows = []
    for name, mo in own.items():
        z = torch.zeros(a.rank, mo.s2.shape[0], dtype=torch.float64)
        inits = {"centered": lora_init.centered_rows(recs[name], z), "null": lora_init.null_rows(mo, recs[name], z),
                 "null-contrast": lora_init.null_rows(mo, recs[name], z, contrast=True)}
        rows.append({"module": name.split("model.model.")[-1], "inputs": mo.s2.shape[0],
                     **{k: {"init_text_to_records": ratio(r, mo, recs[name]), "heldout_text_to_records": ratio(r, held[name], recs[name])} for k, r in inits.items()}})
        print(json.dumps(rows[-1]), flush=True)
    doc = {"records": a.records, "preset": a.preset, "rank": a.rank, "dtype": base.dtype,
           "positions": {"init_text": next(iter(own.values())).n, "heldout_text": next(iter(held.values())).n, "records": next(iter(recs.values())).n},
           "seconds": round(time.perf_counter() - t0, 1), "machine": machine(), "modules": rows}
    Path(a.out).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
