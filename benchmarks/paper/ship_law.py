"""Builds the law fit that ships with memft (`memft plan`'s default file) from the committed fit files, each entry
with both forms of the law fitted to every point of its store (the saturating one is what `memft plan` uses: it has
a ceiling) and the lengths and ranks it was measured on (the planner refuses outside them).

    python benchmarks/paper/ship_law.py

- r100 and Combined: benchmarks/paper/law_fit.json (the default MLP probe on layer 20, 150 steps, linear lr, batch 1);
  this is what `memft plan` uses unless told otherwise, because it is the placement `memft write` trains for short
  record sets (`--preset probe`).
- PhoneBook: benchmarks/law/fit.json (30 steps, constant lr, full batch).
- r100@down_proj28: benchmarks/paper/law_conv_fit.json, the law at convergence (600 steps, the 1,200-step controls
  in benchmarks/README.md). It holds for a rank-r adapter on layer 28's down projection only: a placement whose
  capacity is a small fraction of the probe's (in 300 steps at rank 1, the MLP probe on layer 28 held 99 % of 128
  random tokens, this placement 3 % of 64: benchmarks/paper/placement_probe.txt), so it is shipped under its own
  name (`memft plan --setting r100@down_proj28`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from memft.research.law import Budget, LawFitEntry, in_setting, read_fits, with_forms
from memft.research.results import read_rows

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "src" / "memft" / "research" / "data" / "law_smollm2-135m.json"
CONV = "r100@down_proj28"


def forms(entry: LawFitEntry, stores: list[str], steps: int, setting: str | None = None) -> LawFitEntry:
    """The entry with both forms of the law fitted to every point of its setting (saturated ones included) and the
    ranges the planner keeps to (memft.research.law.with_forms)."""
    rows = [r for s in stores for r in read_rows(ROOT / s, with_point=True)]
    rows = [r for r in rows if r.get("method") == entry.method and r.get("max_steps") == steps and in_setting(r, setting or entry.setting)
            and r.get("stop_when_certified") is False]
    return with_forms(entry, rows)


def main() -> None:
    probe = [f for f in read_fits(ROOT / "benchmarks/paper/law_fit.json") if f.fitted][-2:]  # the 150-step grid's r100, Combined
    # benchmarks/law/fit.json predates budgets in fit files: its sweep's (benchmarks/law/sweep.yaml) is written here.
    budget = Budget(max_steps=30, lr=0.01, lr_schedule="constant", stop_when_certified=False)
    phonebook = [dataclasses.replace(f, budget=budget) for f in read_fits(ROOT / "benchmarks/law/fit.json") if f.setting == "PhoneBook" and f.fitted][:1]
    conv = [dataclasses.replace(f, setting=CONV) for f in read_fits(ROOT / "benchmarks/paper/law_conv_fit.json") if f.setting == "r100" and f.fitted]
    assert [f.setting for f in probe] == ["r100", "Combined"] and len(phonebook) == 1 and len(conv) == 1
    paper = ["benchmarks/paper/stress.db", "benchmarks/paper/stress128_s2.db", "benchmarks/paper/law_r4.db"]
    probe = [forms(f, paper, 150) for f in probe]
    phonebook = [forms(f, ["benchmarks/law/law.db"], 30) for f in phonebook]
    conv = [forms(f, ["benchmarks/paper/law_conv.db", "benchmarks/paper/law_conv_320a.db", "benchmarks/paper/law_conv_320b.db"], 600, "r100")
            for f in conv]
    doc = {
        "store": "benchmarks/paper/stress.db",
        "stores": ["benchmarks/paper/stress.db", "benchmarks/paper/stress128_s2.db", "benchmarks/paper/law_r4.db",
                   "benchmarks/law/law.db (PhoneBook)",
                   "benchmarks/paper/law_conv.db, law_conv_320a.db, law_conv_320b.db (r100@down_proj28)"],
        "eps": 0.05, "huber": None,
        "note": "stress fits: benchmarks/paper (150 steps, linear lr, batch 1); PhoneBook: benchmarks/law (30 steps, constant lr, "
                "full batch); r100@down_proj28: the law at convergence (600 steps, linear lr, batch 1) for LoRA on layer 28's "
                "down projection only, built by benchmarks/paper/ship_law.py",
        "fits": [f.to_json() for f in (*probe, *phonebook, *conv)],
    }
    OUT.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
