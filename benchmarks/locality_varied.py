"""Always-on writes of varied records (code, LaTeX, keys, endpoints, non-Latin text): the sized default (centered
init) against the frozen null-contrast init at the sized rank and at twice it, each through `memft write` and
`memft audit` in its own process (issue 24: could the null-contrast init be the default of `--activation always`?).

    OMP_NUM_THREADS=2 flock /tmp/memft-heavy.lock python benchmarks/locality_varied.py [--records 300] [--seed 3]
        [--work /tmp/loc] [--out benchmarks/results/locality_varied.json]

Rows: certified share, steps, write wall seconds, and the audit's perplexity increase, argmax agreement and mean KL
on its held-out text; `write_seconds_ratio` is each write's wall time over the centered one's (same run, same machine).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_locality import machine  # noqa: E402 - the benchmarks' own helper, beside this file

from memft.prompts.records import write_records  # noqa: E402
from memft.research.bench.varied import varied  # noqa: E402

MEMFT = [sys.executable, "-c", "from memft.cli.main import main; main()"]


def run(name: str, extra: list[str], records: Path, work: Path) -> dict:
    """`memft write` (always-on, plus `extra`) and `memft audit` of the result, each in its own process -> a row."""
    out = work / f"v-{name}"
    t0 = time.perf_counter()
    done = subprocess.run([*MEMFT, "write", str(records), "--out", str(out), "--activation", "always", *extra, "--quiet",
                           "--json", str(work / f"v-{name}.write.json")], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode not in (0, 1):  # 1: saved, some records not certified (the row says how many)
        raise SystemExit(f"memft write ({name}) failed with exit code {done.returncode}: {done.stderr[-500:]}")
    a = subprocess.run([*MEMFT, "audit", str(out), str(records), "--json", str(work / f"v-{name}.audit.json"), "--quiet"],
                       capture_output=True, text=True)
    if a.returncode not in (0, 1):
        raise SystemExit(f"memft audit ({name}) failed with exit code {a.returncode}: {a.stderr[-500:]}")
    return row(name, extra, work, seconds, done.stderr)


def row(name: str, extra: list[str], work: Path, seconds: float, stderr: str) -> dict:
    """The row of variant `name` from its folder, write report and audit report under `work`."""
    meta = json.loads((work / f"v-{name}" / "memft.json").read_text())
    rep = json.loads((work / f"v-{name}.audit.json").read_text())
    wrote = json.loads((work / f"v-{name}.write.json").read_text())
    d, t = rep["divergence"], meta["train"]
    return {"variant": name, "args": extra, "rank": meta["lora"]["rank"], "preset": meta["lora"]["preset"], "lora_init": t["lora_init"],
            "certified": wrote["certified"], "steps": t["steps"], "max_steps": t["max_steps"], "write_seconds": round(seconds, 1),
            "ppl_base": d["ppl_base"], "ppl_increase": d["ppl_change"], "argmax_agreement": d["argmax_agreement"], "kl_mean": d["kl_mean"],
            "unrelated_leaks": rep["leak_probe"]["unrelated_leaks"], "write_stderr": stderr.strip()[-400:]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=300)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--work", default="/tmp/memft-locality-varied")
    ap.add_argument("--out", default="benchmarks/results/locality_varied.json")
    ap.add_argument("--note", default="2 cores shared with other work while measuring", help="what else ran on the machine")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    records = work / "records.jsonl"
    write_records(varied(a.records, seed=a.seed), records)
    rows = [run("centered", [], records, work)]
    rank = rows[0]["rank"]
    rows.append(run("null-contrast-frozen", ["--lora-init", "null-contrast"], records, work))
    rows.append(run("null-contrast-frozen-2x-rank", ["--lora-init", "null-contrast", "--rank", str(2 * rank)], records, work))
    for r in rows:
        r["write_seconds_ratio"] = round(r["write_seconds"] / rows[0]["write_seconds"], 3)
    doc = {"command": " ".join(sys.argv), "records": f"varied({a.records}, seed={a.seed})", "activation": "always", "machine": machine(a.note), "rows": rows}
    Path(a.out).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
