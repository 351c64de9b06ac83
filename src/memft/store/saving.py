"""save_fit: a trained adapter (training.fit.Fit) saved atomically as a complete folder: weights, memft.json (what it
holds, how it was made and certified), ledger.json and README.

Core layer (store).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memft import __version__
from memft.certify.metrics import RecordReport
from memft.config import LoraSettings, TrainConfig, to_json
from memft.model.base import Base
from memft.prompts.keyed import invocation_ids
from memft.prompts.records import Record
from memft.store import adapters
from memft.store.ledger import LEDGER, Ledger, fingerprint, next_ledger, next_scheme
from memft.store.ledger import dumps as ledger_dumps
from memft.store.meta import AdapterMeta, BaseInfo, CertificationInfo, LoraInfo, RecordsInfo
from memft.training.fit import Fit


@dataclass
class WriteResult:
    out: Path
    summary: dict[str, Any]  # see memft.certify.metrics.summarize
    reports: list[RecordReport]
    meta: AdapterMeta  # what was saved as memft.json
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def all_certified(self) -> bool:
        return self.summary["certified"] == 1.0




def save_fit(f: Fit, records: Sequence[Record], base: Base, lora: LoraSettings, train: TrainConfig, out: Path,
             extra: dict[str, Any] | None = None, old_ledger: Ledger | None = None, changed: set[str] | None = None,
             event: dict[str, Any] | None = None) -> WriteResult:
    """Save a trained adapter atomically with its memft.json (what it holds, how it was made and certified) and its
    ledger (memft.store.ledger): `old_ledger` is the one it replaces, `changed` the keys added or changed now (default:
    all), `event` the history line (default: a fresh write). Record digests are salted and slow (memft.store.digests;
    the salt: ledger.next_scheme)."""
    res, summary, reports = f.train, f.summary, f.reports
    scheme = next_scheme(old_ledger)
    now = _now()
    changed = {r.key for r in records} if changed is None else changed
    event = event or {"op": "write", "added": len(records), "updated": 0, "removed": 0}
    event = {**event, "held": len(records), "steps": res.steps, "certified_at": res.certified_at, "seconds": round(res.seconds, 3),
             "certified": summary["certified"], "min_prob": summary["min_prob"]}
    meta = AdapterMeta(
        memft_version=__version__,
        created=now,
        base=BaseInfo(base.spec, base.dtype, base.device),
        template=train.template,
        lora=LoraInfo(rank=lora.rank, layers=tuple(f.placement["layers"]), modules=tuple(f.placement["modules"]), alpha=lora.alpha,
                      preset=lora.preset, target_modules=lora.target_modules),
        train={
            **to_json(train),
            "steps": res.steps,
            "certified_at": res.certified_at,
            "seconds": round(res.seconds, 3),
            "loss_init": res.loss_init,
            "epochs": round(res.trained / max(len(records), 1), 3),  # record passes trained / records
            "trained_passes": res.trained,
            "checked_passes": res.checked,
            "trained_tokens": res.tokens,
            "loss_final": summary["loss"],
            "log_odds_allowance": res.log_odds,  # what precision_log_odds resolved to (metrics.PRECISION_LOG_ODDS)
        },
        records=RecordsInfo(
            count=len(records),
            hash=scheme.set_hash(records),
            value_tokens=f.value_tokens,
            max_target_tokens=f.max_target_tokens,
            digest=scheme.to_json(),
            digests=tuple(sorted(scheme.digest(r) for r in records)),
        ),
        certification=CertificationInfo(
            dtype=base.dtype,
            device=base.device,
            certified=summary["certified"],
            p_above_half=summary["p_above_half"],
            min_prob=summary["min_prob"],
            failed_keys=tuple(r.key for r in reports if not r.certified),
        ),
        extra=dict(extra or {}),
        activation=lora.activation,
        invocation=lora.key_prefix or None,
        invocation_tokens=list(invocation_ids(lora.key_prefix, base.tokenizer)) if lora.key_prefix else None,
    )
    book = next_ledger(old_ledger, records, {r.key: r for r in reports}, changed, now, event, scheme)
    book.fingerprint = fingerprint(meta)
    meta = adapters.save(f.model, Path(out), meta, files={LEDGER: ledger_dumps(book)})
    return WriteResult(out=out, summary=summary, reports=reports, meta=meta, history=res.history)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


