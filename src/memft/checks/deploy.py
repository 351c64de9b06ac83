"""Deployment re-check: does an adapter stay certified the way it will be shipped?

Certification is computed in one precision with the adapter as separate LoRA layers. Deployments change that:
the adapter merged into the base weights (W + B·A rounded to the base dtype), a bf16 or fp16 base, or a different
loader (plain `peft.PeftModel`). Each changes the logits slightly; a record survives when every target stays the
argmax, and the gap p(target) - p(best other) says how much room was left. `recheck` runs the settings asked for
and reports, per setting, which records stay certified and the smallest gaps.

Checks layer: may import the core, the memory store and the other checks.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from memft.errors import AdapterError, ConfigError
from memft.prompts.records import Record, write_records


@dataclass
class Setting:
    """One way to run the adapter: merged or not, in which base precision, by memft or by plain PEFT in a subprocess."""

    dtype: str  # fp32 | bf16 | fp16
    merged: bool = False
    plain: bool = False  # plain transformers + peft.PeftModel in a separate process (memft.checks.plaincheck)

    @property
    def name(self) -> str:
        how = "plain PeftModel, separate process" if self.plain else ("merged into base" if self.merged else "LoRA layers")
        return f"{how}, {self.dtype}"


@dataclass
class Check:
    setting: str
    dtype: str
    merged: bool
    plain: bool
    records: int
    certified: int
    exact: int | None  # greedy generation agreed (plain checks run generate for every record); None: not run
    min_prob: float
    min_gap: float | None
    lost: list[str]  # keys not certified in this setting
    per_record: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def settings_for(certified_dtype: str, merged: bool, dtype: str | None, plain: bool, full: bool) -> list[Setting]:
    """The settings to check. full=True: the adapter as certified, then merged, bf16 and fp16 both ways, and plain
    PEFT in the certified dtype. Otherwise the one setting named by merged/dtype, plus plain PEFT if asked.

    >>> [s.name for s in settings_for("fp32", True, "bf16", True, False)]
    ['merged into base, bf16', 'plain PeftModel, separate process, bf16']
    >>> len(settings_for("bf16", False, None, False, True))
    7
    """
    if full:
        out = [Setting(certified_dtype), Setting(certified_dtype, merged=True)]
        out += [Setting(d, merged=m) for d in ("bf16", "fp16", "fp32") if d != certified_dtype for m in (False, True)]
        return out + [Setting(certified_dtype, plain=True)]
    d = dtype or certified_dtype
    return [Setting(d, merged=merged)] + ([Setting(d, plain=True)] if plain else [])


def recheck(folder: str | Path, records: Sequence[Record], settings: Sequence[Setting], device: str = "auto",
            batch_size: int = 64) -> list[Check]:
    """Certify `records` with the adapter in `folder` under each setting (one base load per setting). A keyed adapter
    (memft.prompts.keyed) has no merged form (activated LoRA acts from its invocation on; a merged weight would act on every
    token), so merged settings are left out for it, and asking for nothing else is a ConfigError."""
    from memft.store.adapters import read_meta

    if read_meta(folder).activation == "keyed":
        settings = [s for s in settings if not s.merged]
        if not settings:
            raise ConfigError(f"{folder}: a keyed adapter cannot be merged into the base (it acts only from its invocation on); "
                              "check it as LoRA layers (leave out --merged) or with --plain")
    return [_plain(folder, records, s, device) if s.plain else _memft(folder, records, s, device, batch_size) for s in settings]


def _memft(folder: str | Path, records: Sequence[Record], s: Setting, device: str, batch_size: int) -> Check:
    from memft.store.loading import load_adapter
    from memft.prompts.encoding import encode_all
    from memft.certify.evaluate import evaluate

    ld = load_adapter(folder, device, s.dtype)
    model = ld.model.merge_and_unload() if s.merged else ld.model  # merged: W + scale * B @ A, in the base dtype
    items = encode_all(records, ld.tokenizer, ld.meta.template, ld.meta.key_prefix)
    reports = evaluate(model, ld.tokenizer, items, generate="uncertified", batch_size=batch_size)
    rows = [{"key": r.key, "certified": r.certified, "exact": r.exact, "min_prob": r.min_prob, "min_gap": r.min_gap,
             "first_error": r.first_error_tf} for r in reports]
    return _check(s, rows, exact_known=False)


def _plain(folder: str | Path, records: Sequence[Record], s: Setting, device: str) -> Check:
    from memft.store.adapters import read_meta
    from memft.model.base import DTYPE_NAMES, base_folder, resolve_device

    meta = read_meta(folder)
    base = base_folder(meta.base.spec, meta.seed)
    with tempfile.TemporaryDirectory(prefix="memft-plaincheck-") as tmp:
        recs, out = Path(tmp) / "records.jsonl", Path(tmp) / "out.json"
        write_records(records, recs)
        cmd = [sys.executable, "-m", "memft.checks.plaincheck", "--base", base, "--adapter", str(folder), "--records", str(recs),
               "--template", meta.template, "--dtype", DTYPE_NAMES[s.dtype], "--device", resolve_device(device),
               "--out", str(out), f"--invocation={meta.key_prefix}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)  # its stderr becomes our one-line error
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise AdapterError(f"the plain PEFT re-check of {folder} failed in its subprocess: {tail}")
        rows = json.loads(out.read_text(encoding="utf-8"))
    return _check(s, rows, exact_known=True)


def _check(s: Setting, rows: list[dict[str, Any]], exact_known: bool) -> Check:
    if not rows:
        raise ConfigError("no records to check")
    gaps = [r["min_gap"] for r in rows if r.get("min_gap") is not None]
    return Check(
        setting=s.name, dtype=s.dtype, merged=s.merged, plain=s.plain, records=len(rows),
        certified=sum(r["certified"] for r in rows),
        exact=sum(bool(r["exact"]) for r in rows) if exact_known else None,
        min_prob=min(r["min_prob"] for r in rows), min_gap=min(gaps) if gaps else None,
        lost=[r["key"] for r in rows if not r["certified"]], per_record=rows,
    )
