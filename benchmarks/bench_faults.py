"""Fault matrix of the memory store (issues 12 and 22) on the tiny random model: every fault is tried through the CLI,
as a user would, in temporary folders, and counted as survived (the promised outcome), lost (records of a good
adapter gone), invented (a value printed with exit 0 that the adapter cannot vouch for: a key it does not hold, a
damaged folder, a record that was not certified) or leaked (a stored or given value found in an error message or
a report that was not asked to reveal it).

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_faults.py [--out benchmarks/results/faults.json]

About 6-8 minutes on one CPU core. Writes {"faults": [{"fault", "tried", "survived", "lost", "invented", "leaked",
"notes"}], "totals": {...}, "machine": {...}} and prints one line per fault.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FAST = ["--model", "tiny-random", "--preset", "all", "--lr", "0.02", "--device", "cpu"]
BASE = [("Alice Smith:", "555-0100"), ("Bob Stone:", "x-7"), ("prod api key:", "https://api.example/v1"), ("pin:", "0042")]


def memft(*args: object, wait: bool = True, env: dict | None = None):
    cmd = [sys.executable, "-m", "memft.cli.main", *map(str, args)]
    kw = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    return subprocess.run(cmd, **kw) if wait else subprocess.Popen(cmd, **kw)


def jsonl(path: Path, pairs) -> Path:
    path.write_text("".join(json.dumps({"key": k, "value": v}) + "\n" for k, v in pairs), encoding="utf-8")
    return path


def held(ad: Path) -> dict[str, str]:
    """key -> digest of every record the adapter's ledger holds ({} when it does not load)."""
    r = memft("ledger", ad, "--json")
    return {e["key"]: e["digest"] for e in json.loads(r.stdout)["entries"]} if r.returncode == 0 else {}


def recalls(ad: Path, keys) -> list[dict]:
    p = subprocess.run([sys.executable, "-m", "memft.cli.main", "recall", str(ad), "--keys", "-", "--device", "cpu"],
                       input="".join(k + "\n" for k in keys), capture_output=True, text=True)
    return [json.loads(line) for line in p.stdout.splitlines()]


def one_line_exit_2(r) -> bool:
    return r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def row(fault: str, tried: int = 0, survived: int = 0, lost: int = 0, invented: int = 0, notes: str = "", leaked: int = 0) -> dict:
    return {"fault": fault, "tried": tried, "survived": survived, "lost": lost, "invented": invented, "leaked": leaked, "notes": notes}


def concurrent_appends(work: Path, good: Path, trials: int) -> dict:
    r = row("two concurrent `append`s (real processes)")
    for t in range(trials):
        ad = work / f"conc{t}"
        shutil.copytree(good, ad)
        files = [jsonl(work / f"c{t}{i}.jsonl", [(f"new{t}{i}:", f"v{i}")]) for i in range(2)]
        procs = [memft("append", ad, f, "--quiet", wait=False) for f in files]
        codes = [p.wait(600) for p in procs]
        keys = set(held(ad))
        want = {k for k, _ in BASE} | {f"new{t}{i}:" for i in range(2)}
        r["tried"] += 1
        r["lost"] += len(want - keys) if codes == [0, 0] else len({k for k, _ in BASE} - keys)
        r["survived"] += codes == [0, 0] and keys == want
    return r


def concurrent_writes(work: Path, trials: int) -> dict:
    r = row("two concurrent `write --out` to one folder", notes="the second waits, then replaces the first (a write replaces by definition)")
    for t in range(trials):
        ad = work / f"cw{t}"
        files = [jsonl(work / f"w{t}{i}.jsonl", [(f"only{i}:", f"v{i}")]) for i in range(2)]
        procs = [memft("write", f, "--out", ad, "--quiet", *FAST, wait=False) for f in files]
        codes = [p.wait(600) for p in procs]
        errs = [p.stderr.read() for p in procs]
        keys = set(held(ad))
        r["tried"] += 1
        waited = sum("waiting for it to finish" in e for e in errs) == 1
        r["survived"] += codes == [0, 0] and waited and keys in ({"only0:"}, {"only1:"})
    return r


def kills_during_append(work: Path, good: Path, trials: int, rng: random.Random) -> dict:
    r = row("`kill -9` of `append` at a random time")
    for t in range(trials):
        ad = work / f"kill{t}"
        shutil.copytree(good, ad)
        p = memft("append", ad, jsonl(work / f"k{t}.jsonl", [(f"k{t}:", "v")]), "--quiet", wait=False)
        time.sleep(rng.uniform(2.0, 9.0))
        p.send_signal(signal.SIGKILL)
        p.wait()
        keys = set(held(ad))
        r["tried"] += 1
        r["lost"] += len({k for k, _ in BASE} - keys)
        r["survived"] += keys in ({k for k, _ in BASE}, {k for k, _ in BASE} | {f"k{t}:"})
    return r


def crash_between_renames(work: Path, good: Path, trials: int) -> dict:
    r = row("crash (os._exit) between the two renames of a save")
    for t in range(trials):
        ad = work / f"swap{t}"
        shutil.copytree(good, ad)
        code = ("import os, shutil; from pathlib import Path; from memft.store import adapters, folders\n"
                "folders._between_renames = lambda: os._exit(9)\n"
                f"adapters.write_atomic(Path({str(ad)!r}), lambda t: [shutil.copy(p, t) for p in Path({str(good)!r}).iterdir()])\n")
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        gone = not ad.exists()
        keys = set(held(ad))  # the next command recovers
        r["tried"] += 1
        r["lost"] += len({k for k, _ in BASE} - keys)
        r["survived"] += p.returncode == 9 and gone and keys == {k for k, _ in BASE}
    return r


def stale_leftovers(work: Path, good: Path) -> dict:
    r = row("stale `.DIR.old-1` and `.DIR.tmp-*` beside the folder, then `append`")
    ad = work / "stale"
    shutil.copytree(good, ad)
    shutil.copytree(good, work / ".stale.old-1")
    (work / ".stale.tmp-abcd1234").mkdir()
    a = memft("append", ad, jsonl(work / "s.jsonl", [("s:", "1")]), "--quiet")
    keys = set(held(ad))
    r["tried"] = 1
    r["lost"] = len({k for k, _ in BASE} - keys)
    r["survived"] = int(a.returncode == 0 and "s:" in keys and not (work / ".stale.old-1").exists())
    return r


def user_files(work: Path, good: Path) -> dict:
    r = row("user files in the folder (notes.txt, demo-records.jsonl) across `append` and `forget`")
    ad = work / "files"
    shutil.copytree(good, ad)
    (ad / "notes.txt").write_text("mine\n")
    (ad / "demo-records.jsonl").write_text("{}\n")
    a = memft("append", ad, jsonl(work / "u.jsonl", [("u:", "1")]), "--quiet")
    f = memft("forget", ad, "u:", "--quiet")
    kept = [(ad / n).exists() for n in ("notes.txt", "demo-records.jsonl")]
    r["tried"], r["survived"], r["lost"] = 2, sum(kept), len(kept) - sum(kept)
    r["notes"] = f"append exit {a.returncode}, forget exit {f.returncode}"
    return r


def unknown_keys(good: Path) -> dict:
    r = row("`recall` of keys the adapter does not hold")
    keys = ["Carol White:", "alice smith:", "password:", "staging api key:", "Alice Smyth:", "pin", "Bob Stone: ", "x"]
    rows = recalls(good, keys)
    r["tried"] = len(keys)
    r["invented"] = sum(1 for x in rows if not x["held"] and x["value"] is not None)
    r["survived"] = sum(1 for x in rows if not x["held"] and x["value"] is None)
    for k in keys[:3]:  # the single-key form too
        one = memft("recall", good, k, "--device", "cpu")
        r["tried"] += 1
        r["invented"] += one.returncode == 0 or one.stdout != ""
        r["survived"] += one.returncode == 1 and one.stdout == "" and "not held" in one.stderr
    held_rows = recalls(good, [k for k, _ in BASE])
    r["notes"] = f"held keys recalled exactly: {sum(x['value'] == v for x, (_, v) in zip(held_rows, BASE))}/{len(BASE)}"
    return r


def non_finite(work: Path, good: Path) -> dict:
    r = row("non-finite or diverging settings over a good adapter")
    ad = work / "nan"
    shutil.copytree(good, ad)
    before = {p.name: p.read_bytes() for p in ad.iterdir()}
    recs = jsonl(work / "n.jsonl", BASE)
    for opt in (["--lr", "inf"], ["--alpha", "nan"], ["--lr", "1e30"]):
        w = memft("write", recs, "--out", ad, "--quiet", *[a for a in FAST if a not in ("--lr", "0.02")], *opt)
        same = {p.name: p.read_bytes() for p in ad.iterdir()} == before
        r["tried"] += 1
        r["survived"] += one_line_exit_2(w) and same
        r["lost"] += 0 if same else len(BASE)
    return r


def damaged(work: Path, good: Path) -> dict:
    r = row("damaged or edited adapter files (recall must exit 2, one line)")

    def edit(name, fn):
        def go(d):
            o = json.loads((d / name).read_text())
            fn(o)
            (d / name).write_text(json.dumps(o))
        return go

    cases = [
        lambda d: (d / "adapter_model.safetensors").write_bytes((d / "adapter_model.safetensors").read_bytes()[:-100]),
        lambda d: (d / "adapter_model.safetensors").write_bytes(b""),
        lambda d: (d / "adapter_model.safetensors").unlink(),
        lambda d: (d / "adapter_config.json").write_text("{"),
        lambda d: (d / "adapter_config.json").unlink(),
        lambda d: (d / "memft.json").write_text("[]"),
        edit("memft.json", lambda o: o["certification"].update(dtype="int3")),
        edit("memft.json", lambda o: o["base"].update(spec="smollm2-135m")),
        edit("memft.json", lambda o: o["records"].update(max_target_tokens=2)),
        edit("ledger.json", lambda o: o["entries"].pop()),
    ]
    for i, fn in enumerate(cases):
        d = work / f"dmg{i}"
        shutil.copytree(good, d)
        fn(d)
        r["tried"] += 1
        r["survived"] += one_line_exit_2(memft("recall", d, BASE[0][0], "--device", "cpu"))
    return r


def bad_input(work: Path, good: Path) -> dict:
    r = row("bad input (one line, exit 2, folder unchanged)")
    before = {p.name: p.read_bytes() for p in good.iterdir()}
    lines = ['{"key": "k", "value": "a\\ud800"}', '{"key": "k", "value": "v", "value_ids": [1]}',
             '{"key": "Bob:", "value": " 1"}\n{"key": "Bob: ", "value": "2"}']
    for i, text in enumerate(lines):
        f = work / f"bad{i}.jsonl"
        f.write_text(text + "\n")
        r["tried"] += 1
        r["survived"] += one_line_exit_2(memft("append", good, f, "--quiet"))
    for args in (["recall", good, ""], ["write", jsonl(work / "b.jsonl", BASE), "--out", good, "--rank", "1000000000000", *FAST]):
        r["tried"] += 1
        r["survived"] += one_line_exit_2(memft(*args))
    r["lost"] = 0 if {p.name: p.read_bytes() for p in good.iterdir()} == before else len(BASE)
    return r


def redaction(work: Path, good: Path) -> dict:
    r = row("reports of a wrong guess (`verify --json`, with and without --generate)")
    guess = jsonl(work / "guess.jsonl", [("pin:", "9999"), ("Bob Stone:", "x-8")])
    leaks = 0
    for extra in ([], ["--generate"]):
        v = memft("verify", good, guess, "--quiet", "--device", "cpu", "--json", work / "v.json", *extra)
        text = (work / "v.json").read_text() + v.stdout + v.stderr
        rec = json.loads((work / "v.json").read_text())["per_record"]
        found = sum(val in text for k, val in BASE if k in ("pin:", "Bob Stone:"))
        hints = sum(x[f] is not None for x in rec for f in ("recalled_chars", "first_failure"))  # length, or how much is right
        leaks += found + hints
        r["tried"] += 1
        r["survived"] += v.returncode == 1 and not found and not hints
    r["leaked"] = leaks
    r["notes"] = "true values, their lengths or first-failure positions found in reports: " + str(leaks)
    return r


# ---- issue 22: recall must not answer what it cannot vouch for, and values never leak -------------------------------

def missing_ledger(work: Path, good: Path) -> dict:
    r = row("`ledger.json` deleted (memft.json lists digests): recall, verify, ledger must exit 2, one line")
    d = work / "noledger"
    shutil.copytree(good, d)
    (d / "ledger.json").unlink()
    for args in (["recall", d, "Carol White:", "--device", "cpu"], ["recall", d, BASE[0][0], "--device", "cpu"],
                 ["verify", d, jsonl(work / "nl.jsonl", BASE), "--quiet", "--device", "cpu"], ["ledger", d]):
        x = memft(*args)
        r["tried"] += 1
        r["survived"] += one_line_exit_2(x) and "damaged" in x.stderr
        r["invented"] += x.returncode == 0 and args[0] == "recall"
    return r


def held_uncertified(work: Path) -> dict:
    r = row("held key not certified at write time (a `write` that exited 1 still saves): recall warns, exit 1")
    d = work / "weak"
    w = memft("write", jsonl(work / "weak.jsonl", BASE), "--out", d, "--quiet", "--max-steps", "1", *FAST)
    r["notes"] = f"write exit {w.returncode}, its stderr line: {w.stderr.strip()[:60]}..."
    for k, _ in BASE:
        x = memft("recall", d, k, "--device", "cpu")
        r["tried"] += 1
        r["survived"] += x.returncode == 1 and "is held but its recall is not certified" in x.stderr
        r["invented"] += x.returncode == 0
    return r


READER = """
import json, sys
from memft import api
ad, want, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
ok = wrong = failed = 0
for _ in range(n):
    try:
        got = api.recall_many(api.load_adapter(ad, device="cpu"), list(want))
    except Exception as e:  # a one-line error is not a wrong answer
        failed += 1
        continue
    bad = [g for g in got if g.certified and g.value != want[g.key]]
    wrong += len(bad)
    ok += not bad and all(g.certified for g in got)
print(json.dumps({"ok": ok, "wrong": wrong, "failed": failed}))
"""

SWAPPER = """
import shutil, sys, time
from pathlib import Path
from memft.store import adapters
ad, versions, until = Path(sys.argv[1]), [Path(v) for v in sys.argv[2:4]], time.time() + float(sys.argv[4])
i = 0
while time.time() < until:
    src = versions[i % 2]
    adapters.write_atomic(ad, lambda t: [shutil.copy(p, t) for p in src.iterdir()])
    i += 1
print(i)
"""


def reader_during_swaps(work: Path, good: Path, reads: int = 25, seconds: float = 40.0) -> dict:
    r = row("readers (`load_adapter` + recall) while another process swaps versions in continuously")
    other = work / "other"  # a second version holding the same records (written anew: other weights, other salt)
    memft("write", jsonl(work / "other.jsonl", BASE), "--out", other, "--quiet", *FAST, "--seed", "1")
    d = work / "swapping"
    shutil.copytree(good, d)
    swapper = subprocess.Popen([sys.executable, "-c", SWAPPER, str(d), str(good), str(other), str(seconds)], stdout=subprocess.PIPE, text=True)
    reader = subprocess.run([sys.executable, "-c", READER, str(d), json.dumps(dict(BASE)), str(reads)], capture_output=True, text=True)
    swaps = swapper.communicate()[0].strip()
    got = json.loads(reader.stdout.strip().splitlines()[-1]) if reader.returncode == 0 else {"ok": 0, "wrong": 0, "failed": -1}
    r["tried"], r["survived"], r["invented"] = reads, got["ok"], got["wrong"]
    r["notes"] = f"{swaps} swaps; reads that failed with an error: {got['failed']}; wrong values: {got['wrong']}"
    return r


def symlink_alias(work: Path, good: Path, trials: int) -> dict:
    r = row("`append` through a symlink to the folder, alone and concurrently with one through the real path")
    for t in range(trials):
        real, link = work / f"real{t}", work / f"alias{t}"
        shutil.copytree(good, real)
        link.symlink_to(real)
        files = [jsonl(work / f"al{t}{i}.jsonl", [(f"al{t}{i}:", f"v{i}")]) for i in range(2)]
        if t == 0:
            codes = [memft("append", link, files[0], "--quiet").returncode, memft("append", real, files[1], "--quiet").returncode]
        else:
            procs = [memft("append", p, f, "--quiet", wait=False) for p, f in ((link, files[0]), (real, files[1]))]
            codes = [p.wait(600) for p in procs]
        keys = set(held(real))
        want = {k for k, _ in BASE} | {f"al{t}{i}:" for i in range(2)}
        litter = [p.name for p in work.iterdir() if p.name.startswith(f".alias{t}.")]
        r["tried"] += 1
        r["lost"] += len({k for k, _ in BASE} - keys)
        r["survived"] += codes == [0, 0] and keys == want and link.is_symlink() and set(held(link)) == want and not litter
    return r


SECRET = "Zq7Sentinel"


def sentinel_errors(work: Path, good: Path) -> dict:
    r = row("records errors driven with a sentinel value (write, append): one line, exit 2, sentinel nowhere")
    cases = [
        '{"key": "n:", "value": 98765}',
        json.dumps({"key": "s:", "value": SECRET})[:-2] + '\\ud800"}',
        json.dumps({"key": "b:", "value": SECRET, "value_ids": [98765]}),
        '{"key": "d:", "value": "%s", "value": "%s2"}' % (SECRET, SECRET),
        json.dumps({"key": "t:", "value": SECRET}) + "\n" + json.dumps({"key": "t:", "value": SECRET + "x"}),
        '{"key": "j:", "value": "%s' % SECRET,
        json.dumps({"key": "v:", "value_ids": [5, 98765]}),
        json.dumps({"key": "e:", "value": SECRET + "<|im_end|>" + SECRET}),
        json.dumps({"key": "Bob:", "value": " 1" + SECRET}) + "\n" + json.dumps({"key": "Bob: ", "value": "2" + SECRET}),
        json.dumps({"key": BASE[0][0], "value": SECRET}),  # append: a held key with another value
    ]
    for i, text in enumerate(cases):
        f = work / f"sent{i}.jsonl"
        f.write_text(text + "\n", encoding="utf-8")
        rep = work / f"sent{i}.json"
        x = (memft("append", good, f, "--quiet", "--json", rep) if i == len(cases) - 1
             else memft("write", f, "--out", work / f"sentad{i}", "--quiet", "--json", rep, *FAST))
        seen = x.stdout + x.stderr + (rep.read_text() if rep.exists() else "")
        leak = SECRET in seen or "98765" in seen
        r["tried"] += 1
        r["leaked"] += leak
        r["survived"] += one_line_exit_2(x) and not leak
    return r


def weight_bit_flips(work: Path, good: Path, trials: int, rng: random.Random) -> dict:
    r = row("a random bit flipped in the weights' tensor data: recall must exit 2 (damaged), never print garbage")
    data = (good / "adapter_model.safetensors").read_bytes()
    start = 8 + int.from_bytes(data[:8], "little")
    for t in range(trials):
        d = work / f"flip{t}"
        shutil.copytree(good, d)
        w = bytearray(data)
        w[rng.randrange(start, len(w))] ^= 1 << rng.randrange(8)
        (d / "adapter_model.safetensors").write_bytes(bytes(w))
        recall_damaged(r, d, BASE[t % len(BASE)][0])
    return r


def recall_damaged(r: dict, folder: Path, key: str) -> None:
    """One trial: recall from a damaged copy must exit 2 saying so, and never print a value with exit 0."""
    x = memft("recall", folder, key, "--device", "cpu")
    r["tried"] += 1
    r["survived"] += one_line_exit_2(x) and "damaged" in x.stderr
    r["invented"] += x.returncode == 0


def config_edits(work: Path, good: Path) -> dict:
    r = row("`adapter_config.json` edited (lora_alpha 800, lora_dropout, use_rslora): recall must exit 2")
    for i, (k, v) in enumerate((("lora_alpha", 800), ("lora_dropout", 0.5), ("use_rslora", True))):
        d = work / f"cfg{i}"
        shutil.copytree(good, d)
        cfg = json.loads((d / "adapter_config.json").read_text())
        cfg[k] = v
        (d / "adapter_config.json").write_text(json.dumps(cfg))
        recall_damaged(r, d, BASE[0][0])
    return r


def duplicate_field(work: Path, good: Path) -> dict:
    r = row("a JSON line giving a field twice (`\"value\": \"1\", \"value\": \"2\"`): exit 2 with file:line, folder unchanged")
    before = {p.name: p.read_bytes() for p in good.iterdir()}
    f = work / "dup.jsonl"
    f.write_text('{"key": "ok:", "value": "1"}\n{"key": "A:", "value": "1", "value": "2"}\n', encoding="utf-8")
    for args in (["append", good, f, "--quiet"], ["write", f, "--out", work / "dupad", "--quiet", *FAST]):
        x = memft(*args)
        r["tried"] += 1
        r["survived"] += one_line_exit_2(x) and f"{f}:2: the field `value` appears twice" in x.stderr
    r["lost"] = 0 if {p.name: p.read_bytes() for p in good.iterdir()} == before else len(BASE)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/faults.json"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="memft-faults-") as tmp:
        work = Path(tmp)
        good = work / "good"
        w = memft("write", jsonl(work / "base.jsonl", BASE), "--out", good, "--quiet", *FAST)
        assert w.returncode == 0, w.stderr
        rows = [
            concurrent_appends(work, good, 2), concurrent_writes(work, 1), kills_during_append(work, good, 4, rng),
            crash_between_renames(work, good, 3), stale_leftovers(work, good), user_files(work, good),
            unknown_keys(good), non_finite(work, good), damaged(work, good), bad_input(work, good), redaction(work, good),
            missing_ledger(work, good), held_uncertified(work), reader_during_swaps(work, good), symlink_alias(work, good, 2),
            sentinel_errors(work, good), weight_bit_flips(work, good, 6, rng), config_edits(work, good), duplicate_field(work, good),
        ]
    totals = {k: sum(x[k] for x in rows) for k in ("tried", "survived", "lost", "invented", "leaked")}
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), None) \
        if Path("/proc/cpuinfo").exists() else None
    out = {"model": "tiny-random", "seconds": round(time.perf_counter() - t0, 1), "faults": rows, "totals": totals,
           "machine": {"cpu": cpu or platform.processor(), "cores": os.cpu_count(), "python": platform.python_version(),
                       "torch": torch.__version__, "omp_threads": os.environ.get("OMP_NUM_THREADS"),
                       "note": "measured with other work sharing the machine (times only; the counts do not depend on it)"}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    for x in rows:
        print(f"{x['fault']}: tried {x['tried']}, survived {x['survived']}, lost {x['lost']}, invented {x['invented']}, "
              f"leaked {x['leaked']}" + (f"  ({x['notes']})" if x["notes"] else ""))
    print(f"total: tried {totals['tried']}, survived {totals['survived']}, lost {totals['lost']}, invented {totals['invented']}, "
          f"leaked {totals['leaked']} in {out['seconds']} s -> {args.out}")


if __name__ == "__main__":
    main()
