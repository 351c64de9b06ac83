"""What bounds next-token argmax agreement on held-out text (issue 15): how many positions of the audit's windows
are near-ties for the base, and what agreement any adapter of a given KL gets there.

    python benchmarks/locality_bound.py [--adapter DIR ...] [--kl 0.002,0.005,0.0123,0.02] [--out benchmarks/results/locality_bound.json]

1. The audit's held-out windows (memft.checks.audit.plan_windows: 32 x 128 tokens of pydoc_data.topics, seed 0,
   the demo's values excluded), the base's next-token distribution at each position: the share of positions whose
   top-1 and top-2 probabilities are within 0.01 / 0.05 / 0.1 / 0.2 of each other.
2. Random adapters: the demo's placement (rank 8, probe preset), A as PEFT initialises it, B ~ N(0, sigma^2) with
   sigma searched (bisection on log sigma) until the mean KL(base || adapted) on the windows is each --kl target;
   their argmax agreement, and where the flipped positions sit in the base's top-1/top-2 gap.
3. Each --adapter folder (a written memft adapter): the same figures, so a trained adapter can be set beside a
   random one of the same KL.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
from pathlib import Path
from typing import Any

import torch

from memft.model import peft_lora
from memft.api import load_adapter
from memft.model.batching import pad
from memft.checks.audit import plan_windows, token_kl
from memft.config import LoraSettings
from memft.model.base import load_base
from memft.research.bench.phonebook import phonebook
from memft.research.bench.stress import default_text

GAPS = (0.01, 0.05, 0.1, 0.2)


@torch.no_grad()
def logits_of(model: Any, windows: list[list[int]], batch_size: int = 8) -> torch.Tensor:
    """Next-token logits [N, V] at every position but each window's last (the audit's positions)."""
    out = []
    for s in range(0, len(windows), batch_size):
        ids, mask = pad(windows[s:s + batch_size], 0)
        lg = model(input_ids=ids, attention_mask=mask).logits
        out.append(lg[:, :-1][mask[:, 1:].bool()].float())
    return torch.cat(out)


def base_gap(lb: torch.Tensor) -> torch.Tensor:
    """p(top-1) - p(top-2) of the base at each position [N]."""
    top = lb.softmax(-1).topk(2, dim=-1).values
    return top[:, 0] - top[:, 1]


def compare(lb: torch.Tensor, la: torch.Tensor, gap: torch.Tensor) -> dict[str, Any]:
    flip = la.argmax(-1) != lb.argmax(-1)
    out = {"kl_mean": token_kl(lb, la).double().mean().item(), "argmax_agreement": 1 - flip.double().mean().item(),
           "flips": int(flip.sum())}
    out["flips_within_gap"] = {str(g): int((flip & (gap < g)).sum()) for g in GAPS}
    return out


def random_adapter(base: Any, windows: list[list[int]], lb: torch.Tensor, gap: torch.Tensor, target_kl: float, seed: int) -> dict[str, Any]:
    model, _ = peft_lora.attach(base.model, LoraSettings(rank=8, preset="probe"), seed=seed)
    bs = [p for n, p in model.named_parameters() if "lora_B" in n]
    noise = [torch.randn(p.shape, generator=torch.Generator().manual_seed(seed + i)) for i, p in enumerate(bs)]
    probe = windows[:8]
    lb_probe = lb[: sum(len(w) - 1 for w in probe)]

    def kl_at(log_sigma: float) -> float:
        for p, z in zip(bs, noise):
            p.copy_(z * math.exp(log_sigma))
        return token_kl(lb_probe, logits_of(model, probe)).double().mean().item()

    lo, hi = math.log(1e-5), math.log(1.0)
    with torch.no_grad():
        for _ in range(14):  # bisection on log sigma over the first 8 windows: KL grows with sigma
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if kl_at(mid) < target_kl else (lo, mid)
        kl_at((lo + hi) / 2)
        row = {"target_kl": target_kl, "sigma": math.exp((lo + hi) / 2), **compare(lb, logits_of(model, windows), gap)}
    model.unload()
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--kl", default="0.002,0.005,0.0123,0.02")
    ap.add_argument("--adapter", action="append", default=[])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/locality_bound.json")
    a = ap.parse_args()
    base = load_base(a.model, "cpu", "auto", seed=a.seed)
    plan = plan_windows(default_text(), base.tokenizer, 32, 128, 0, [r.target for r in phonebook(40, seed=0)])
    lb = logits_of(base.model, plan.windows)
    gap = base_gap(lb)
    doc: dict[str, Any] = {
        "command": "python benchmarks/locality_bound.py " + " ".join(f"--adapter {x}" for x in a.adapter) + f" --kl {a.kl}",
        "model": a.model, "dtype": base.dtype, "positions": int(gap.numel()),
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "base_near_ties": {str(g): (gap < g).double().mean().item() for g in GAPS},
        "random": [], "adapters": [],
    }
    print(json.dumps(doc["base_near_ties"]), flush=True)
    for k in [float(x) for x in a.kl.split(",") if x]:
        doc["random"].append(random_adapter(base, plan.windows, lb, gap, k, a.seed))
        print(json.dumps(doc["random"][-1]), flush=True)
    for folder in a.adapter:
        ld = load_adapter(folder, "cpu", None)
        doc["adapters"].append({"folder": folder, **compare(lb, logits_of(ld.model, plan.windows), gap)})
        print(json.dumps(doc["adapters"][-1]), flush=True)
    Path(a.out).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
