"""An independent re-check of an adapter, as a user's deployment code would load it: plain transformers + plain
`peft.PeftModel`, full forward passes one record at a time, and `model.generate` for greedy recall.

Run in a separate process by memft.checks.deploy (`python -m memft.checks.plaincheck ARGS`); on purpose it imports
nothing from memft, so it shares none of memft's prefix cache, batching, padding or evaluation code. Output: one
JSON object per record (key, certified, exact, min_prob, min_gap, first_error) in the --out file.

Checks layer: may import the core, the memory store and the other checks.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def prompt_of(key: str, tokenizer: Any, template: str) -> list[int]:
    if template == "chat":
        out = tokenizer.apply_chat_template([{"role": "user", "content": key}], add_generation_prompt=True, tokenize=True)
        ids = out["input_ids"] if hasattr(out, "keys") else out
        return [int(i) for i in ids]
    return list(tokenizer(key)["input_ids"])


def check(model: Any, tokenizer: Any, rec: dict[str, Any], template: str) -> dict[str, Any]:
    import torch

    prompt = prompt_of(rec["key"], tokenizer, template)
    value = rec["value_ids"] if "value_ids" in rec else tokenizer(rec["value"], add_special_tokens=False)["input_ids"]
    targets = list(value) + [tokenizer.eos_token_id]
    ids = torch.tensor([prompt + targets], device=model.device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : len(prompt) - 1 + len(targets)].float()  # [T, V]
        probs = logits.softmax(-1)
        tgt = torch.tensor(targets, device=probs.device)
        p = probs.gather(1, tgt[:, None]).squeeze(1)  # [T]
        other = probs.scatter(1, tgt[:, None], -1.0).max(-1).values  # [T] best other token
        correct = logits.argmax(-1) == tgt
        gen = model.generate(input_ids=ids[:, : len(prompt)], attention_mask=torch.ones_like(ids[:, : len(prompt)]),
                             max_new_tokens=len(targets), do_sample=False, num_beams=1,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    out = gen[0, len(prompt):].tolist()
    wrong = (~correct).nonzero().flatten().tolist()
    return {
        "key": rec["key"],
        "certified": bool(correct.all()),
        "exact": out[: len(targets)] == targets,
        "min_prob": float(p.min()),
        "min_gap": float((p - other).min()),
        "first_error": wrong[0] if wrong else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m memft.checks.plaincheck")
    ap.add_argument("--base", required=True, help="Hugging Face folder (or hub id) of the base model")
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--records", required=True, help="JSONL with key and value or value_ids")
    ap.add_argument("--template", default="raw")
    ap.add_argument("--invocation", default="", help="a keyed adapter's invocation text, put before every key")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(a.base, local_files_only=True)
    base = AutoModelForCausalLM.from_pretrained(a.base, dtype=getattr(torch, a.dtype), local_files_only=True).to(a.device)
    model = PeftModel.from_pretrained(base, a.adapter).eval()
    with open(a.records, encoding="utf-8") as f:
        recs = [json.loads(line) for line in f if line.strip()]
    rows = [check(model, tok, {**r, "key": a.invocation + r["key"]}, a.template) | {"key": r["key"]} for r in recs]
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(rows, f, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
