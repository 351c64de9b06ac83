"""Scale: `memft write` with its defaults on PhoneBooks of growing size, an append of 50 records at scale, and a
plain transformers + PEFT loop for the throughput ratio. All numbers come from one run on one machine.

    python benchmarks/bench_scale.py [--sizes 100,300,1000] [--seed 20261129] [--time-limit 900]
                                     [--append 50] [--out benchmarks/results/scale.json]

1. For each N: N PhoneBook records ("First Last:" -> 10 digits, seeded), `memft write recs.jsonl --out DIR --json`
   as a user runs it, defaults only (rank, batch size and step budget are sized from N, margin 0.5), in its own
   process; `--time-limit` bounds the benchmark's wall time (the write saves what it has and exits 1 when it runs
   out). Reported: wall seconds, certified fraction, steps, epochs of training (record passes with a backward pass
   / N), trained target tokens per second of training, the sizing chosen.
2. Append: `memft append DIR new.jsonl` of `--append` new records to the largest adapter that certified, then
   `memft verify` of every record (old and new): seconds, and how many held records are no longer certified.
3. Plain loop at N = 100: transformers + PEFT with the same adapter placement, rank, batch size and learning rate
   as memft's sizing chose, in the dtype `auto` resolves to (as memft's write), full forward with `labels` (HF's
   loss over the full vocabulary), AdamW, for a fixed number of epochs: seconds per epoch, against memft's seconds
   per epoch of training at N = 100.
4. Bits per parameter: for each certified write, N x log2(10^10) bits over the adapter's trainable parameters.

`--append-to DIR --held FILE` runs only step 2, on a copy of an adapter already written (FILE: the records it
holds), and writes its own result file (--out).

`--commands DIR --held FILE` runs every command a user runs on a written adapter, each on a copy of DIR in its
own process: verify, recall --keys, audit, append of `--append` new records (then verify), forget of 10 keys;
wall seconds and each process's peak RSS (`--skip` leaves some out). Every command's peak RSS is recorded
(`peak_rss_mb`, MiB from wait4's rusage), and `--shared` notes in `machine` that other work shared the machine.

`--refresh FILE[,FILE]` runs nothing: it brings --out's top-level figures up to date from result files measured
apart (an append-only run's `append_50_*`, bench_capacity.py's `bits_per_param`), keeping what they replace under
`superseded` and naming each figure's file under `figures_from`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import peak_rss  # noqa: E402 - the benchmarks' own helper, beside this file

BITS_PER_RECORD = 10 * math.log2(10)  # a uniformly random 10-digit number


def memft(*args: object) -> subprocess.CompletedProcess:
    """`memft ARGS` in its own process; the result also carries `seconds` (wall) and `peak_rss_mb` (its max RSS)."""
    return measured([sys.executable, "-m", "memft.cli.main", *map(str, args)])


def measured(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run `cmd` with its output captured -> CompletedProcess with `seconds` (wall) and `peak_rss_mb` (the command's
    own peak resident memory; peak_rss.run says why a launcher measures it)."""
    return peak_rss.run(cmd)


def machine(shared: bool) -> dict:
    """Where the figures were measured: CPU model, cores, threads, bf16 support, versions, and whether other work
    shared the machine (then times are upper bounds of a quiet machine's)."""
    import torch

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next((ln.split(":", 1)[1].strip() for ln in flags.splitlines() if ln.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "avx512_bf16": " avx512_bf16" in flags, "avx512f": " avx512f" in flags,
            "shared_with_other_work": shared}


def timed_write(recs: Path, out: Path, rep: Path, *args: object) -> tuple[float, dict, dict, str]:
    """`memft write RECS --out OUT --json REP ARGS` in its own process -> (wall seconds, the --json report,
    OUT's memft.json, or for a store the figures of its shards (store_meta), stderr); exits on anything but 0
    (certified) or 1 (not certified)."""
    p = memft("write", recs, "--out", out, "--json", rep, *args)
    if p.returncode not in (0, 1):
        raise SystemExit(f"memft write failed ({p.returncode}): {p.stderr[-2000:]}")
    report = json.loads(rep.read_text())
    report["peak_rss_mb"] = p.peak_rss_mb
    meta = store_meta(out) if (out / "store.json").exists() else json.loads((out / "memft.json").read_text())
    return p.seconds, report, meta, p.stderr


def store_meta(store: Path) -> dict:
    """A store's shards summed into the memft.json fields run_write reads: train steps, seconds, passes and tokens
    added up, epochs as trained passes per record, the largest rank; `shards` lists each one."""
    rows = []
    for d in sorted(p for p in store.iterdir() if p.is_dir() and p.name.startswith("shard-")):
        m = json.loads((d / "memft.json").read_text())
        rows.append({"shard": d.name, "records": m["records"]["count"], "rank": m["lora"]["rank"], "steps": m["train"]["steps"],
                     "seconds": m["train"]["seconds"], "epochs": m["train"]["epochs"], "lora_params": lora_params(d), "meta": m})
    first = rows[0]["meta"]
    train = {k: sum(r["meta"]["train"][k] for r in rows) for k in ("steps", "seconds", "trained_passes", "checked_passes", "trained_tokens")}
    n = sum(r["records"] for r in rows)
    train |= {"epochs": round(train["trained_passes"] / n, 3), "loss_final": max(r["meta"]["train"]["loss_final"] for r in rows)}
    train |= {k: first["train"].get(k) for k in ("method", "lr", "lr_schedule", "batch_size", "max_steps", "margin", "seed",
                                                  "head_vocab", "lora_init", "active_set", "template")}
    lora = {"preset": first["lora"].get("preset"), "rank": max(r["rank"] for r in rows), "layers": first["lora"]["layers"]}
    return {"train": train, "lora": lora, "sizing": first.get("sizing"),
            "shards": [{k: v for k, v in r.items() if k != "meta"} for r in rows]}


def write_records(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps({"key": r.key, "value": r.value}) + "\n" for r in records), encoding="utf-8")
    return path


def lora_params(folder: Path) -> int:
    """LoRA parameters of an adapter folder, or of every shard of a store."""
    from safetensors import safe_open

    if (folder / "store.json").exists():
        return sum(lora_params(d) for d in folder.iterdir() if d.is_dir() and d.name.startswith("shard-"))
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


def run_write(n: int, seed: int, work: Path, time_limit: float, model: str, shard_size: int | None = None) -> dict:
    from memft.research.bench.phonebook import phonebook

    recs = write_records(work / f"pb{n}.jsonl", phonebook(n, seed))
    out, rep = work / f"pb{n}", work / f"pb{n}.json"
    more = () if shard_size is None else ("--shard-size", shard_size)
    wall, r, meta, stderr = timed_write(recs, out, rep, "--model", model, "--time-limit", time_limit, *more)
    tr = meta["train"]
    params = lora_params(out)
    forecast = [line for line in stderr.splitlines() if line.startswith("forecast:")]
    return {
        "records": n, "seconds": round(wall, 1), "peak_rss_mb": r["peak_rss_mb"], "train_seconds": tr["seconds"], "certified": r["certified"],
        "exit": 0 if r["certified"] == 1.0 else 1, "steps": tr["steps"], "epochs": tr["epochs"], "trained_passes": tr["trained_passes"],
        "checked_passes": tr["checked_passes"], "tokens_per_s": round(tr["trained_tokens"] / max(tr["seconds"], 1e-9), 1),
        "seconds_per_epoch": round(tr["seconds"] / max(tr["epochs"], 1e-9), 2), "loss_final": tr["loss_final"],
        "sizing": meta.get("sizing"), "lora_params": params,
        "train_config": {k: tr.get(k) for k in ("method", "lr", "lr_schedule", "batch_size", "max_steps", "margin", "seed",
                                                 "head_vocab", "lora_init", "active_set", "template")},
        "placement": {"preset": meta["lora"].get("preset"), "rank": meta["lora"]["rank"], "layers": meta["lora"]["layers"]},
        "bits_per_param": round(n * BITS_PER_RECORD / params, 4) if r["certified"] == 1.0 else None,
        "forecast": forecast[0] if forecast else None, "folder": str(out),
        "shard_size": shard_size, "shards": meta.get("shards"),
    }


def run_append(folder: Path, n_held: int, n_new: int, seed: int, work: Path, model: str, held_file: Path | None = None) -> dict:
    from memft.research.bench.phonebook import phonebook

    held_file = held_file or work / f"pb{n_held}.jsonl"
    held = {json.loads(x)["key"] for x in held_file.read_text().splitlines()}
    pool = [r for r in phonebook(n_held + 4 * n_new, seed + 1) if r.key not in held]
    new = write_records(work / "new.jsonl", pool[:n_new])
    (work / "append.json").unlink(missing_ok=True)  # a failed append must not be read as an earlier one
    p = memft("append", folder, new, "--json", work / "append.json")
    a = json.loads((work / "append.json").read_text()) if (work / "append.json").exists() else {}
    both = work / "all.jsonl"
    both.write_text(held_file.read_text() + new.read_text(), encoding="utf-8")
    v = memft("verify", folder, both, "--json", work / "verify.json", "--quiet")
    ver = json.loads((work / "verify.json").read_text())
    lost = [r["key"] for r in ver["per_record"] if not r["certified"] and r["key"] in held]
    return {"held": n_held, "added": n_new, "seconds": p.seconds, "peak_rss_mb": p.peak_rss_mb, "exit": p.returncode, "saved": a.get("saved"),
            "steps": a.get("steps"), "train_seconds": a.get("seconds"), "load_seconds": a.get("load_seconds"),
            "recover_seconds": a.get("recover_seconds"), "certified_after": ver["certified"],
            "lost": len(lost), "verify_exit": v.returncode, "verify_seconds": v.seconds, "verify_peak_rss_mb": v.peak_rss_mb,
            "stderr_tail": p.stderr[-500:] if p.returncode else ""}


FORGET = 10  # keys `--commands` forgets from a copy of the adapter


def run_commands(folder: Path, held_file: Path, n_new: int, seed: int, work: Path, model: str, skip: frozenset[str] = frozenset(),
                 recall_keys: int = 0, forget: int = FORGET) -> dict[str, dict]:
    """Every command a user runs on a written adapter, each in its own process on a copy of `folder` (FILE: the
    records it holds) -> {command: {seconds, peak_rss_mb, exit, ...}}: verify of every record, recall --keys of
    every key (recall_keys > 0: of that many, drawn at random), audit, append of `n_new` new records (then verify of
    all), forget of `forget` keys (drawn at random)."""
    import random
    import shutil

    def copy(name: str) -> Path:
        dst = work / name
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(folder, dst)
        return dst

    rows: dict[str, dict] = {}
    held = [json.loads(x) for x in held_file.read_text().splitlines()]
    keys = work / "keys.txt"
    asked = random.Random(seed).sample(held, recall_keys) if 0 < recall_keys < len(held) else held
    keys.write_text("".join(r["key"] + "\n" for r in asked), encoding="utf-8")
    src = copy("commands-src")
    runs = {"verify": ("verify", src, held_file, "--json", work / "verify-all.json", "--quiet"),
            "recall_keys": ("recall", src, "--keys", keys, "--runtime", "torch"),
            "audit": ("audit", src, held_file, "--json", work / "audit.json", "--quiet")}
    for name, args in runs.items():
        if name in skip:
            continue
        p = memft(*args)
        rows[name] = {"seconds": p.seconds, "peak_rss_mb": p.peak_rss_mb, "exit": p.returncode, "stderr_tail": p.stderr[-300:] if p.returncode > 1 else ""}
        if name == "recall_keys":
            rows[name]["keys"] = len(asked)
        print(name, json.dumps(rows[name]), flush=True)
    if "append" not in skip:
        rows["append"] = run_append(copy("commands-append"), len(held), n_new, seed, work, model, held_file=held_file)
        print("append", json.dumps(rows["append"]), flush=True)
    if "forget" in skip:
        return rows
    gone = copy("commands-forget")
    (work / "forget.json").unlink(missing_ok=True)
    p = memft("forget", gone, *[r["key"] for r in random.Random(seed + 2).sample(held, forget)], "--json", work / "forget.json")
    f = json.loads((work / "forget.json").read_text()) if (work / "forget.json").exists() else {}
    rows["forget"] = {"seconds": p.seconds, "peak_rss_mb": p.peak_rss_mb, "exit": p.returncode, "forgotten": forget, "saved": f.get("saved"),
                      "steps": f.get("steps"), "train_seconds": f.get("seconds"), "load_seconds": f.get("load_seconds"),
                      "recover_seconds": f.get("recover_seconds"), "certified_after": f.get("certified"),
                      "still_recalled": len(f.get("still_recalled", [])), "stderr_tail": p.stderr[-300:] if p.returncode else ""}
    print("forget", json.dumps(rows["forget"]), flush=True)
    return rows


def plain_loop(n: int, seed: int, model: str, preset: str, rank: int, batch_size: int, epochs: int, lr: float) -> dict:
    """transformers + PEFT as a user writes it: full forward with labels on the value tokens (HF's loss), with the
    placement, rank, batch size and learning rate memft's sizing chose (main passes them), in the dtype `auto`
    resolves to, as memft's write runs."""
    import random

    import torch
    from peft import LoraConfig, get_peft_model

    from memft.model.peft_lora import target_names
    from memft.model.batching import pad
    from memft.config import LoraSettings
    from memft.prompts.encoding import encode_all
    from memft.model.base import load_base
    from memft.research.bench.phonebook import phonebook

    base = load_base(model, "cpu", "auto")
    items = encode_all(phonebook(n, seed), base.tokenizer, "raw")
    _, names = target_names(base.model, LoraSettings(rank=rank, preset=preset))
    pm = get_peft_model(base.model, LoraConfig(r=rank, lora_alpha=rank, target_modules=names, lora_dropout=0.0, task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    rng = random.Random(seed)
    t0 = time.perf_counter()
    for _ in range(epochs):
        order = list(range(n))
        rng.shuffle(order)
        for s in range(0, n, batch_size):
            batch = [items[i] for i in order[s:s + batch_size]]
            ids, mask = pad([e.ids for e in batch], base.tokenizer.pad_token_id)
            labels = torch.full_like(ids, -100)
            for b, e in enumerate(batch):
                labels[b, len(e.prompt): len(e.ids)] = torch.tensor(e.targets)
            loss = pm(input_ids=ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    sec = time.perf_counter() - t0
    return {"records": n, "preset": preset, "rank": rank, "batch_size": batch_size, "lr": lr, "dtype": base.dtype, "epochs": epochs, "seconds": round(sec, 1),
            "seconds_per_epoch": round(sec / epochs, 2), "loss_last_step": round(float(loss.detach()), 4)}


APPEND_KEYS = ("append_50_seconds", "append_50_lost", "append_base_records")
# The scale goals' top-level figures (issue 25); a run that cannot measure one gives it as null with a reason
# under "not_measured".
GOAL_KEYS = ("records_10000_seconds", "records_10000_certified", "records_3000_seconds", "records_3000_certified",
             "peak_rss_mb_10000", "append_100_to_10000_seconds", "append_100_to_10000_lost")


def refresh(doc: dict, results: dict[str, dict]) -> dict:
    """`doc` (a scale.json) with its top-level figures taken from later result files: an append-only run replaces
    the append figures; a capacity file's best bits / param replaces a lower one. What is replaced goes under
    `superseded`, and `figures_from` names each figure's file.

    >>> d = refresh({"append_50_seconds": 270.6, "append_50_lost": 0, "bits_per_param": 0.08},
    ...             {"a.json": {"append_50_seconds": 208.3, "append_50_lost": 0, "append_base_records": 1000},
    ...              "c.json": {"bits_per_param": 0.21}})
    >>> d["append_50_seconds"], d["bits_per_param"], d["superseded"]["append_50_seconds"], d["figures_from"]["bits_per_param"]
    (208.3, 0.21, 270.6, 'c.json')
    """
    doc = dict(doc)
    old, src = dict(doc.get("superseded", {})), dict(doc.get("figures_from", {}))
    for name, r in results.items():
        if r.get("append_50_seconds") is not None:
            for k in APPEND_KEYS:
                if k in doc and k not in old:
                    old[k] = doc[k]
                doc[k], src[k] = r.get(k), name
        if "append_50_seconds" not in r and r.get("bits_per_param") is not None and r["bits_per_param"] > (doc.get("bits_per_param") or 0):
            old.setdefault("bits_per_param", doc.get("bits_per_param"))
            doc["bits_per_param"], src["bits_per_param"] = r["bits_per_param"], name
        r = r | curve_figures(r.get("curve", []))
        for k in [k for k in r if k.startswith("peak_rss_mb_") or k in GOAL_KEYS]:  # a --commands run, or goals left open
            if k in doc and doc[k] is not None and k not in old:
                old[k] = doc[k]
            doc[k], src[k] = r[k], name
        if r.get("not_measured"):
            doc["not_measured"] = {**doc.get("not_measured", {}), **r["not_measured"]}
    # peak_rss_mb_10000: the most any command took on the 10,000-record memory (the write, and every command run on
    # it, also after the append of 100 made it 10,100)
    tenk = {k: v for k, v in doc.items() if re.fullmatch(r"peak_rss_mb_(\w+_)?10\d{3}", k) and k != "peak_rss_mb_10000" and v}
    if tenk:
        k = max(tenk, key=tenk.get)
        doc["peak_rss_mb_10000"], src["peak_rss_mb_10000"] = tenk[k], f"max of {sorted(tenk)} ({k})"
    doc["superseded"], doc["figures_from"] = old, src
    return doc


def curve_figures(curve: list[dict]) -> dict:
    """The goal figures of a write curve's goal sizes (3,000 and 10,000 records): seconds when certified in full
    (else None), the certified share, and the write's peak RSS.

    >>> curve_figures([{"records": 3000, "seconds": 700.0, "certified": 0.93, "peak_rss_mb": 2100.0}, {"records": 100}])
    {'records_3000_seconds': None, 'records_3000_certified': 0.93, 'peak_rss_mb_write_3000': 2100.0}
    """
    out: dict = {}
    for r in curve:
        if r.get("records") in (3000, 10000):
            n = r["records"]
            out |= {f"records_{n}_seconds": r["seconds"] if r["certified"] == 1.0 else None, f"records_{n}_certified": r["certified"],
                    f"peak_rss_mb_write_{n}": r.get("peak_rss_mb")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,300,1000")
    ap.add_argument("--seed", type=int, default=20261129)
    ap.add_argument("--time-limit", type=float, default=900.0, help="wall-clock cap on each write's training (s)")
    ap.add_argument("--append", type=int, default=50)
    ap.add_argument("--plain-epochs", type=int, default=3)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--work", default="/tmp/memft-scale-bench")
    ap.add_argument("--out", default="benchmarks/results/scale.json")
    ap.add_argument("--append-to", default=None, help="only the append: to a copy of this written adapter folder")
    ap.add_argument("--held", default=None, help="with --append-to: the JSONL of the records that adapter holds")
    ap.add_argument("--refresh", default=None, help="comma-separated result files whose figures update --out's")
    ap.add_argument("--commands", default=None, help="only time every command (verify, recall --keys, audit, append, forget) "
                    "with its peak RSS, each on a copy of this written adapter folder (needs --held)")
    ap.add_argument("--skip", default="", help="with --commands: commands to leave out (verify,recall_keys,audit,append,forget)")
    ap.add_argument("--shared", action="store_true", help="record that other work shared the machine during the run")
    ap.add_argument("--shard-size", type=int, default=None, help="memft write --shard-size (default: memft's; 0: one adapter)")
    ap.add_argument("--recall-keys", type=int, default=0, help="with --commands: recall this many keys drawn at random (0: all)")
    ap.add_argument("--forget", type=int, default=FORGET, help="with --commands: keys to forget, drawn at random")
    a = ap.parse_args()
    if a.refresh:
        doc = refresh(json.loads(Path(a.out).read_text()), {f: json.loads(Path(f).read_text()) for f in a.refresh.split(",")})
        Path(a.out).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {a.out}")
        return
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    out: dict = {"command": " ".join(sys.argv), "seed": a.seed, "time_limit": a.time_limit, "machine": machine(a.shared)}
    if a.commands:
        if not a.held:
            raise SystemExit("--commands needs --held: the records file of the adapter")
        held = Path(a.held)
        n_held = len(held.read_text().splitlines())
        rows = run_commands(Path(a.commands), held, a.append, a.seed, work, a.model, frozenset(filter(None, a.skip.split(","))),
                            a.recall_keys, a.forget)
        out |= {"commands_on": a.commands, "records": n_held, "commands": rows,
                f"peak_rss_mb_{n_held}": max(r["peak_rss_mb"] for r in rows.values())}
        if "append" in rows and a.append == 50:
            out |= {"append_50_seconds": rows["append"]["seconds"], "append_50_lost": rows["append"]["lost"], "append_base_records": n_held}
        Path(a.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {a.out}")
        return
    if a.append_to:
        import shutil

        if not a.held:
            raise SystemExit("--append-to needs --held: the records file of the adapter")
        held = Path(a.held)
        n_held = len(held.read_text().splitlines())
        folder = work / "append-src"
        if folder.exists():
            shutil.rmtree(folder)
        shutil.copytree(a.append_to, folder)
        out["append"] = run_append(folder, n_held, a.append, a.seed, work, a.model, held_file=held)
        out |= {"append_to": a.append_to, "append_50_seconds": out["append"]["seconds"], "append_50_lost": out["append"]["lost"],
                "append_base_records": n_held}
        print(json.dumps(out["append"]), flush=True)
        Path(a.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {a.out}")
        return
    curve = []
    for n in [int(x) for x in a.sizes.split(",")]:
        curve.append(run_write(n, a.seed, work, a.time_limit, a.model, a.shard_size))
        print(json.dumps(curve[-1]), flush=True)
    out["curve"] = curve
    by_n = {r["records"]: r for r in curve}
    r1000 = by_n.get(1000)
    out["records_1000_seconds"] = r1000["seconds"] if r1000 and r1000["certified"] == 1.0 else None
    out["records_1000_certified"] = r1000["certified"] if r1000 else None
    out |= curve_figures(curve)
    done = [r for r in curve if r["certified"] == 1.0]
    if done and a.append:
        big = max(done, key=lambda r: r["records"])
        out["append"] = run_append(Path(big["folder"]), big["records"], a.append, a.seed, work, a.model)
        print(json.dumps(out["append"]), flush=True)
        if a.append == 100 and big["records"] == 10000:
            out |= {"append_100_to_10000_seconds": out["append"]["seconds"], "append_100_to_10000_lost": out["append"]["lost"],
                    "peak_rss_mb_append_10000": out["append"]["peak_rss_mb"], "peak_rss_mb_verify_10000": out["append"]["verify_peak_rss_mb"]}
        else:
            out["append_50_seconds"] = out["append"]["seconds"]
            out["append_50_lost"] = out["append"]["lost"]
            out["append_base_records"] = big["records"]
    else:
        out["append_50_seconds"] = out["append_50_lost"] = out["append_base_records"] = None
    out["bits_per_param"] = max((r["bits_per_param"] for r in done), default=None)
    if 100 in by_n and a.plain_epochs:
        s = by_n[100]["sizing"]
        out["plain_n100"] = plain_loop(100, a.seed, a.model, s["preset"], s["rank"], s["batch_size"], a.plain_epochs, s["lr"])
        out["plain_n100"]["memft_seconds_per_epoch"] = by_n[100]["seconds_per_epoch"]
        out["plain_n100"]["ratio"] = round(out["plain_n100"]["seconds_per_epoch"] / by_n[100]["seconds_per_epoch"], 2)
        print(json.dumps(out["plain_n100"]), flush=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
