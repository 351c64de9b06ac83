"""Locality of a memory adapter (issues 15 and 24): what writing the demo's records does to unrelated text, per
activation mode (always-on, keyed) and remedy (the preservation term, memft.training.preserve), on the embedded model.

    OMP_NUM_THREADS=2 flock /tmp/memft-heavy.lock python benchmarks/bench_locality.py [--variants none,keyed] [--records 40]
        [--out benchmarks/results/locality.json]

Each variant writes the `memft demo` phone book (phonebook(N, seed=0)) with the settings `memft write` sizes for
that many records (memft.training.sizing) into a fresh adapter folder (api.write: training, certification, saving), then
audits the saved folder in a separate process, as `memft audit DIR RECORDS` (memft.checks.audit: 32 held-out
windows x 128 tokens of pydoc_data.topics, KL(base || adapted), perplexity, argmax agreement, the off-trigger
identity of a keyed adapter, leak probe), timing it and reading that process's peak RSS. Variants: `none` is an
always-on adapter without a remedy, `keyed` the same write with --activation keyed (PEFT's activated LoRA),
`preserve-W` always-on with --preserve W. Rows are merged into --out by (variant, records), so runs can be done one
at a time.

Top level of the result, for the rows at 1,000 records (the issue's goal): keyed_kl_max (the keyed adapter's
largest per-token KL on held-out text; 0.0 when it leaves the base alone), always_ppl_increase and
always_argmax_agreement (the always-on default, `none`), audit_seconds_1000 and audit_peak_rss_mb_1000 (the audit of
the keyed adapter). Per row: ppl_increase, argmax_agreement, kl_mean, certified, write_seconds (wall),
train_seconds_ratio (CPU seconds in api.fit / those of `none` at the same record count: the core is shared, so wall
time depends on what else runs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import peak_rss  # noqa: E402 - the benchmarks' own helper, beside this file
from typing import Any

import torch

from memft import api
from memft.checks.audit import LOCALITY_GOAL
from memft.config import LoraSettings, TrainConfig
from memft.model.base import load_base
from memft.prompts.records import write_records
from memft.research.bench.phonebook import phonebook
from memft.training import null_init
from memft.training.sizing import size_for

# name -> (LoraSettings overrides, TrainConfig overrides). `none`: an always-on adapter without a remedy.
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "none": ({}, {"preserve": 0.0}),
    "keyed": ({"activation": "keyed"}, {"preserve": 0.0}),
    "default": ({}, {}),  # whatever `memft write` does by default now
    **{f"preserve-{w:g}": ({}, {"preserve": w}) for w in (0.3, 1.0, 3.0, 10.0, 30.0)},
    "weight-decay-0.1": ({}, {"preserve": 0.0, "weight_decay": 0.1}),
    "rank-4": ({"rank": 4}, {"preserve": 0.0}),
    "rank-16": ({"rank": 16}, {"preserve": 0.0}),
    # A confined to the directions general text's inputs barely use (memft.training.null_init); "-frozen": A not
    # trained (a_lr_scale 0, only B moves, so A stays there); "-rN": that adapter rank instead of the sized one.
    **{f"{init}{frozen}{rk}": ({"rank": int(rk[2:])} if rk else {}, {"preserve": 0.0, "lora_init": init, **({"a_lr_scale": 0.0} if frozen else {})})
       for init in ("null", "null-contrast") for frozen in ("", "-frozen") for rk in ("", "-r8", "-r32", "-r64")},
    # a frozen A slows B's learning (only B moves): the same with the learning rate of small sets (1e-2)
    **{f"null-contrast-frozen{rk}-lr0.01": ({"rank": int(rk[2:])} if rk else {}, {"preserve": 0.0, "lora_init": "null-contrast", "a_lr_scale": 0.0, "lr": 0.01})
       for rk in ("", "-r32")},
    # placement: the frozen null-contrast init on the MLP's down_proj alone (its 1536-wide input separates records
    # from text about twice as well as gate/up's 576: benchmarks/results/null_init_probe.json), in the sized `top`
    # layers or in every layer from the probe's up (`upper`)
    **{f"null-contrast-frozen-{pre}down{rk}": ({"target_modules": ("down_proj",), **({"preset": "upper"} if pre else {}), **({"rank": int(rk[2:])} if rk else {})},
                                              {"preserve": 0.0, "lora_init": "null-contrast", "a_lr_scale": 0.0})
       for pre in ("", "upper-") for rk in ("", "-r8", "-r32", "-r64")},
    # the frozen null-contrast init with a light preservation term on top (both remedies at once)
    **{f"null-contrast-frozen{rk}-preserve-{w:g}": ({"rank": int(rk[2:])} if rk else {}, {"preserve": w, "lora_init": "null-contrast", "a_lr_scale": 0.0})
       for rk in ("", "-r32") for w in (0.3, 1.0, 3.0)},
}
# The preservation term scores each window's support (TrainConfig.preserve_head="support", the default since issue
# 24's fifth session); "-full": the same variant with the whole head (bucket KL), as every --preserve row before it.
VARIANTS |= {f"{name}-full": (lo, {**tr, "preserve_head": "full"}) for name, (lo, tr) in list(VARIANTS.items()) if tr.get("preserve")}
# "-wN": the term keeps the base's predictions on N windows (the default: 256 since the fifth session; 64 before)
VARIANTS |= {f"{name}-w{n}": (lo, {**tr, "preserve_windows": n}) for name, (lo, tr) in list(VARIANTS.items())
             if tr.get("preserve") and not name.endswith("-full") for n in (64, 256)}
GOAL_RECORDS = 1000  # the record count of the goal (top-level keys)


def machine(note: str = "2 cores shared with other work (the lead and other helpers' tests) while measuring") -> dict[str, Any]:
    """Where the figures were measured: the CPU (its model name), cores, threads, versions, and what else ran (`note`)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "avx512_bf16": " avx512_bf16" in info,
            "python": platform.python_version(), "torch": torch.__version__,
            "note": note}


def run_audit(folder: Path, records_file: Path, out: Path) -> tuple[dict[str, Any], float, float]:
    """`memft audit` on a saved adapter in its own process -> (its JSON report, wall seconds, its own peak RSS in MB).
    Measured through peak_rss.run: a child of this process (which holds the base and the training state) would
    report this process's size (rows before that fix read max(this process, the audit))."""
    cmd = [sys.executable, "-c", "from memft.cli.main import main; main()", "audit", str(folder), str(records_file),
           "--device", "cpu", "--json", str(out), "--quiet"]
    done = peak_rss.run(cmd)
    if done.returncode not in (0, 1):  # 1: a value leaked into an unrelated prompt (the report says which)
        raise SystemExit(f"memft audit {folder} failed with exit code {done.returncode}: {done.stderr[-500:]}")
    return json.loads(out.read_text(encoding="utf-8")), done.seconds, done.peak_rss_mb


NULL_REPORTS: list[Any] = []  # the NullReport of each null-init write (fit() calls null_init.apply_null once)
_apply_null = null_init.apply_null


def _recording_apply_null(*args: Any, **kwargs: Any) -> Any:
    NULL_REPORTS.append(_apply_null(*args, **kwargs))
    return NULL_REPORTS[-1]


null_init.apply_null = _recording_apply_null


def run_variant(name: str, base: Any, records: list, seed: int, work: Path) -> dict[str, Any]:
    lora_over, train_over = VARIANTS[name]
    NULL_REPORTS.clear()
    # The settings `memft write` sizes for this many records (memft.training.sizing), then the variant's changes.
    s = size_for(len(records))
    lora = LoraSettings(**{"rank": s.rank, "preset": s.preset, **lora_over})
    train = TrainConfig(**{"seed": seed, "batch_size": s.batch_size, "max_steps": s.max_steps, "lr": s.lr, "lr_schedule": s.lr_schedule,
                           "head_vocab": s.head_vocab, "lora_init": s.lora_init, **train_over})
    folder, records_file = work / name, work / "records.jsonl"
    write_records(records, records_file)
    t0, c0 = time.perf_counter(), time.process_time()
    res = api.write(records, folder, lora=lora, train=train, base=base)
    write_seconds, write_cpu = time.perf_counter() - t0, time.process_time() - c0
    rep, audit_seconds, audit_rss = run_audit(folder, records_file, work / f"{name}-audit.json")
    d, hist, ident = rep["divergence"], res.history, rep.get("off_trigger_identity")
    return {
        "variant": name, "records": len(records), "activation": lora.activation, "invocation": lora.key_prefix or None,
        "lora": {"rank": lora.rank, "preset": lora.preset, "target_modules": lora.target_modules},
        "train": {k: getattr(train, k) for k in ("batch_size", "max_steps", "lr", "lr_schedule", "head_vocab", "lora_init", *train_over)} | {"preserve": train.preserve, "preserve_head": train.preserve_head, "preserve_windows": train.preserve_windows},
        # null inits: mean over modules of E_text[(a.x)^2] / E_records[(a.x)^2] on the init's text (1 = no separation)
        "null_text_to_records": (sum(NULL_REPORTS[0].text_to_records.values()) / len(NULL_REPORTS[0].text_to_records)) if NULL_REPORTS else None,
        "certified": res.summary["certified"], "min_prob": res.summary["min_prob"], "steps": res.meta.train["steps"],
        "certified_at": res.meta.train["certified_at"], "train_seconds": res.meta.train["seconds"],
        "write_seconds": round(write_seconds, 1), "write_cpu_seconds": round(write_cpu, 1),
        "preserve_kl_last": hist[-2].get("preserve_kl") if len(hist) > 1 else None,
        "ppl_base": d["ppl_base"], "ppl_adapted": d["ppl_adapted"], "ppl_increase": d["ppl_change"],
        "argmax_agreement": d["argmax_agreement"], "kl_mean": d["kl_mean"], "kl_p95": d["kl_p95"], "kl_max": d["kl_max"],
        "max_abs_logit_diff": d["max_abs_logit_diff"], "off_trigger_identity": ident,
        "unrelated_leaks": rep["leak_probe"]["unrelated_leaks"], "goal_met": rep["locality"]["met"] and res.summary["certified"] == 1.0,
        "leak_counts": rep["leak_probe"]["counts"], "audit_seconds": round(audit_seconds, 1), "audit_peak_rss_mb": round(audit_rss),
        "audit_settings": {k: v for k, v in rep["settings"].items() if k != "window_starts"},
    }


def result(rows: dict[str, dict[str, Any]], model: str) -> dict[str, Any]:
    """The result file: every row (with train_seconds_ratio against `none` at its record count) and, at the top
    level, the issue's figures at GOAL_RECORDS records (None where that run is missing). A row keeps the ratio it
    was given in its own file (against its own run's `none`), so rows collected from several runs stay like for like."""
    for r in rows.values():  # rows from before issue 24 have fit_cpu_seconds (api.fit, one thread) instead: compared alike only
        if r.get("train_seconds_ratio") is not None:
            continue
        ref = rows.get(f"none@{r['records']}") or {}
        cpu = next((k for k in ("write_cpu_seconds", "fit_cpu_seconds") if r.get(k) and ref.get(k)), None)
        r["train_seconds_ratio"] = r[cpu] / ref[cpu] if cpu else None
    keyed, always = rows.get(f"keyed@{GOAL_RECORDS}"), rows.get(f"none@{GOAL_RECORDS}")
    return {"model": model, "goal": LOCALITY_GOAL,
            "keyed_kl_max": keyed and keyed["kl_max"], "keyed_max_abs_logit_diff": keyed and keyed.get("max_abs_logit_diff"),
            "keyed_certified": keyed and keyed["certified"], "keyed_write_seconds": keyed and keyed.get("write_seconds"),
            "always_ppl_increase": always and always["ppl_increase"], "always_argmax_agreement": always and always["argmax_agreement"],
            "audit_seconds_1000": keyed and keyed.get("audit_seconds"), "audit_peak_rss_mb_1000": keyed and keyed.get("audit_peak_rss_mb"),
            "rows": sorted(rows.values(), key=lambda r: (r["records"], r["variant"]))}


def load_rows(path: Path) -> dict[str, dict[str, Any]]:
    """Rows of an earlier result file by "variant@records" (files from before issue 24 give their record count once)."""
    if not path.exists():
        return {}
    doc = json.loads(path.read_text(encoding="utf-8"))
    rows = [{"records": doc.get("records"), **r} for r in doc["rows"]]
    return {f"{r['variant']}@{r['records']}": r for r in rows}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--records", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default="none,keyed")
    ap.add_argument("--out", default="benchmarks/results/locality.json")
    ap.add_argument("--note", default="2 cores shared with other work while measuring", help="what else ran on the machine (kept in each row)")
    ap.add_argument("--collect", default=None, help="comma-separated result files whose rows to merge into --out (no training)")
    a = ap.parse_args()
    out = Path(a.out)
    rows = load_rows(out)
    if a.collect:
        for f in a.collect.split(","):
            rows |= load_rows(Path(f))
        out.write_text(json.dumps(result(rows, a.model), indent=2) + "\n")
        return
    names = [v.strip() for v in a.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    base = load_base(a.model, "cpu", "auto", seed=a.seed)
    records = phonebook(a.records, seed=a.seed)
    with tempfile.TemporaryDirectory(prefix="memft-locality-") as tmp:
        for name in names:
            t0 = time.perf_counter()
            row = run_variant(name, base, records, a.seed, Path(tmp))
            row |= {"wall_seconds": round(time.perf_counter() - t0, 1), "dtype": base.dtype, "machine": machine(a.note)}
            rows[f"{name}@{a.records}"] = row
            print(json.dumps({k: row[k] for k in ("variant", "records", "certified", "steps", "write_seconds", "ppl_increase", "argmax_agreement",
                                                 "kl_mean", "kl_max", "max_abs_logit_diff", "unrelated_leaks", "audit_seconds", "audit_peak_rss_mb")}), flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result(rows, a.model), indent=2) + "\n")


if __name__ == "__main__":
    main()
