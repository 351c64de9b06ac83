"""Speed and memory of memft against a plain transformers + PEFT loop, as ratios from one run on one machine.

    python benchmarks/bench_speed.py [--model smollm2-135m] [--out benchmarks/results/speed.json]

Each case runs in its own subprocess so that its peak memory (max RSS; plus CUDA peak on a GPU) is its own.
Cases:
  step_*     mean time of one optimizer step (after warm-up): the plain loop (full forward, full logits,
             labels masked to the value tokens, as a user would write it) vs memft's loop (frozen-prefix cache,
             logits at target positions only), each with an fp32 and with a bf16 frozen base (LoRA weights and
             AdamW state fp32 in both), same lr, placement and records. Every ratio divides like by like: plain
             fp32 / memft fp32, plain bf16 / memft bf16.
  certify_*  wall time from a fresh adapter until every record is certified (plain: argmax check on its logits).
  verify_*   one-pass teacher-forced certification vs greedy generation (KV cache), for values of ℓ = 64 and 512
             tokens; the records are the base model's own greedy continuations, half of them with one token
             changed, so both verdicts (exact, first failure position) are non-trivial and must agree.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from memft.model import peft_lora
from memft.model.batching import collate
from memft.config import LoraSettings, TrainConfig
from memft.prompts.encoding import Encoded, encode_all
from memft.certify.evaluate import greedy, teacher_forced, token_table
from memft.model.forward import Runner
from memft.model.base import load_base
from memft.research.bench.phonebook import phonebook
from memft.training.loop import train


def peak_mib() -> float:
    mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available():
        mib += torch.cuda.max_memory_allocated() / 2**20
    return mib


def setup(model: str, dtype: str, rank: int, n: int, seed: int = 0):
    base = load_base(model, dtype=dtype)
    items = encode_all(phonebook(n, seed=seed), base.tokenizer)
    peft_model, place = peft_lora.attach(base.model, LoraSettings(rank=rank), seed=seed)
    return base, items, peft_model, min(place["layers"])


def plain_step_fn(base, items, peft_model, lr):
    """What a user writes: full forward with labels, HF's own loss, AdamW."""
    b = collate(items, base.tokenizer.pad_token_id).to(base.device)
    labels = torch.full_like(b.input_ids, -100)
    labels[b.rows, b.cols + 1] = b.targets  # HF shifts labels by one inside the loss
    # weight_decay=0 as in memft's TrainConfig (torch's AdamW default is 0.01): same math, only the implementation differs.
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)

    def step():
        out = peft_model(input_ids=b.input_ids, attention_mask=b.attention_mask, labels=labels)
        certified = bool((out.logits[b.rows, b.cols].argmax(-1) == b.targets).all())
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        return float(out.loss), certified

    return step


def memft_step_fn(base, items, peft_model, start, lr):
    runner = Runner(peft_model, items, base.tokenizer.pad_token_id, start=start, cache=True)
    idx = list(range(len(items)))
    runner.logits(idx)  # fills the prefix cache (done once per record set; timed separately)
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)

    def step():
        logits, b = runner.logits(idx)
        tab = token_table(logits, b)
        loss = tab["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss), bool(tab["correct"].all())

    return step


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def case_step(a) -> dict:
    base, items, pm, start = setup(a.model, a.dtype, a.rank, a.records)
    t = time.perf_counter()
    step = plain_step_fn(base, items, pm, a.lr) if a.impl == "plain" else memft_step_fn(base, items, pm, start, a.lr)
    setup_s = time.perf_counter() - t
    losses = [step()[0] for _ in range(a.warmup)]
    sync()
    t = time.perf_counter()
    for _ in range(a.steps):
        losses.append(step()[0])
    sync()
    return {"step_seconds": (time.perf_counter() - t) / a.steps, "setup_seconds": setup_s, "losses": losses}


def case_certify(a) -> dict:
    base, items, pm, start = setup(a.model, a.dtype, a.rank, a.records)
    t = time.perf_counter()
    if a.impl == "plain":
        step = plain_step_fn(base, items, pm, a.lr)
        steps = None
        for s in range(a.max_steps + 1):
            _, ok = step()  # certification read from this step's logits, before its update
            if ok:
                steps = s
                break
    else:
        res = train(pm, items, base.tokenizer.pad_token_id, TrainConfig(lr=a.lr, max_steps=a.max_steps, margin=0.0, active_set=False), start)
        steps = res.certified_at
    sync()
    return {"seconds": time.perf_counter() - t, "steps_to_certify": steps}


def case_verify(a) -> dict:
    """Records = the base's own greedy continuations of ℓ tokens; every other one gets one token changed."""
    base = load_base(a.model, dtype=a.dtype)
    tok = base.tokenizer
    recs = phonebook(a.records, seed=7)
    prompts = [Encoded(r.key, tuple(tok(r.key)["input_ids"]), (tok.eos_token_id,)) for r in recs]
    conts = greedy(base.model, prompts, tok, batch_size=a.records, max_new=a.length)
    g = torch.Generator().manual_seed(0)
    items = []
    for i, (p, c) in enumerate(zip(prompts, conts)):
        c = [t for t in c if t != tok.eos_token_id][: a.length]
        if i % 2:
            j = int(torch.randint(len(c), (1,), generator=g))
            c[j] = (c[j] + 1) % len(tok)
        items.append(Encoded(p.key, p.prompt, tuple(c) + (tok.eos_token_id,)))
    sync()
    t = time.perf_counter()
    stats = teacher_forced(Runner(base.model, items, tok.pad_token_id), batch_size=a.records)
    sync()
    one_pass = time.perf_counter() - t
    t = time.perf_counter()
    gens = greedy(base.model, items, tok, batch_size=a.records)
    sync()
    generation = time.perf_counter() - t
    v_pass = [(all(stats[i].correct), stats[i].correct.index(False) if not all(stats[i].correct) else None) for i in range(len(items))]
    v_gen = []
    for e, gseq in zip(items, gens):
        agree = [j < len(gseq) and gseq[j] == t for j, t in enumerate(e.targets)]
        v_gen.append((all(agree), agree.index(False) if not all(agree) else None))
    return {"one_pass_seconds": one_pass, "generation_seconds": generation, "same_verdicts": v_pass == v_gen, "verdicts": v_pass}


CASES = {"step": case_step, "certify": case_certify, "verify": case_verify}


def run_case(model: str, **kw) -> dict:
    args = [sys.executable, __file__, "--case", kw.pop("case"), "--model", model]
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "speed.json")
    p.add_argument("--case", choices=CASES)
    p.add_argument("--impl", default="memft")
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--rank", type=int, default=1)
    p.add_argument("--records", type=int, default=50)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--quick", action="store_true", help="fewer steps and records (for a smoke run)")
    p.add_argument("--cases", default="step,certify,verify", help="which kinds of case to run (comma-separated); the ratios "
                   "of the kinds left out are left out of the result")
    p.add_argument("--shared", action="store_true", help="record that other work shared the machine during the run")
    a = p.parse_args()
    if a.case:
        res = CASES[a.case](a)
        res["peak_mib"] = peak_mib()
        print(json.dumps(res))
        return

    q = a.quick
    kinds = set(a.cases.split(","))
    rows: dict[str, dict] = {}
    common = {"records": 10 if q else 50, "steps": 2 if q else 5}
    pairs = [(impl, dtype) for dtype in ("fp32", "bf16") for impl in ("plain", "memft")]
    if "step" in kinds:
        for rank in (1, 8):
            for impl, dtype in pairs:
                name = f"step_r{rank}_{impl}_{dtype}"
                rows[name] = run_case(a.model, case="step", impl=impl, dtype=dtype, rank=rank, lr=a.lr, **common)
                print(name, f"{rows[name]['step_seconds']:.3f} s", flush=True)
    cert = {"records": 10 if q else 40, "rank": 8, "max_steps": 30 if q else 300}
    if "certify" in kinds:
        for impl, dtype in pairs:
            name = f"certify_{impl}_{dtype}"
            rows[name] = run_case(a.model, case="certify", impl=impl, dtype=dtype, lr=a.lr, **cert)
            print(name, f"{rows[name]['seconds']:.1f} s, steps {rows[name]['steps_to_certify']}", flush=True)
    if "verify" in kinds:
        for length in (64, 512):
            name = f"verify_l{length}"
            rows[name] = run_case(a.model, case="verify", length=length, records=4 if q else 8)
            print(name, f"one pass {rows[name]['one_pass_seconds']:.2f} s, generation {rows[name]['generation_seconds']:.2f} s", flush=True)

    def ratio(a_: float, b_: float) -> float:
        return round(a_ / b_, 2)

    from bench_scale import machine  # noqa: E402  (benchmarks/ is on the path when run as a script)

    result = {"command": " ".join(["python", *sys.argv]), "machine": machine(a.shared), "model": a.model, "lr": a.lr}
    if "step" in kinds:
        # Like by like only: the same dtype on both sides (plain / memft, both fp32; both bf16).
        result |= {f"step_speedup{'_r8' if r == 8 else ''}{'_bf16' if d == 'bf16' else ''}":
                   ratio(rows[f"step_r{r}_plain_{d}"]["step_seconds"], rows[f"step_r{r}_memft_{d}"]["step_seconds"])
                   for r in (1, 8) for d in ("fp32", "bf16")}
        result |= {"memory_ratio_step": ratio(rows["step_r1_plain_fp32"]["peak_mib"], rows["step_r1_memft_fp32"]["peak_mib"]),
                   "memory_ratio_step_bf16": ratio(rows["step_r1_plain_bf16"]["peak_mib"], rows["step_r1_memft_bf16"]["peak_mib"])}
    if "certify" in kinds:
        result |= {"certify_speedup": ratio(rows["certify_plain_fp32"]["seconds"], rows["certify_memft_fp32"]["seconds"]),
                   "certify_speedup_bf16": ratio(rows["certify_plain_bf16"]["seconds"], rows["certify_memft_bf16"]["seconds"])}
    if "verify" in kinds:
        result |= {"verify_speedup": ratio(rows["verify_l512"]["generation_seconds"], rows["verify_l512"]["one_pass_seconds"]),
                   "verify_speedup_l64": ratio(rows["verify_l64"]["generation_seconds"], rows["verify_l64"]["one_pass_seconds"]),
                   "same_verdicts": all(rows[f"verify_l{n}"]["same_verdicts"] for n in (64, 512))}
    result["cases"] = rows
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "cases"}, indent=2))


if __name__ == "__main__":
    main()
