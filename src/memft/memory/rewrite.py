"""Changing a written adapter without losing what it holds: append records, update values, forget keys.

Each rewrite loads the adapter (trainable, in the precision it was certified in), recovers the records it holds
from its own weights (memft.store.ledger.recover_records), and trains the same LoRA further on all of them at once:
records to keep are replayed until certified with the margin, new and changed ones are learned, forgotten ones
are trained away (unlikelihood) until greedy recall no longer gives them back. The new adapter replaces the old
one (atomically) only when every record it must hold is certified and every forgotten one is gone; otherwise the
folder keeps the previous version untouched.

Memory-store layer: may import the core and the memory store (ledger, rewrite).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memft.store import adapters, folders
from memft.training import preserve
from memft.store.loading import Loaded, load_adapter
from memft.store.saving import WriteResult, save_fit
from memft.training.fit import Fit, check_items, stop_on_divergence
from memft.config import RuntimeConfig, TrainConfig
from memft.prompts.encoding import Encoded, encode_all
from memft.errors import AdapterError, ConfigError
from memft.store import ledger as ledger_mod
from memft.store.ledger import Ledger, Plan, plan_append, plan_forget
from memft.store.meta import AdapterMeta
from memft.certify.metrics import free_run_compare, summarize
from memft.prompts.records import Record
from memft.training.loop import Warm, train as train_loop


@dataclass
class RewriteResult:
    out: Path
    saved: bool  # False: some record was not certified (or not forgotten); the folder keeps the previous adapter
    plan: dict[str, list[str]]  # keys: kept, added, changed, forgotten, unchanged
    summary: dict[str, Any]  # over the records the adapter must hold (memft.certify.metrics.summarize)
    reports: list[Any]  # RecordReport per held record
    still_recalled: list[str]  # forgotten keys whose value greedy recall still gives back (empty when saved)
    steps: int
    seconds: float
    written: WriteResult | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    # Wall seconds of the parts before training: loading the adapter, and recovering what it holds (greedy recall).
    load_seconds: float | None = None
    recover_seconds: float | None = None
    deploy: Any = None  # memft.runtime.deploy_write.Outcome of a rewrite with --deploy (None: none)

    def to_json(self, reveal: bool = False) -> dict[str, Any]:
        """reveal=False: recalled values are left out (see RecordReport.to_json)."""
        return {
            "out": str(self.out), "saved": self.saved, "plan": self.plan, **self.summary, "steps": self.steps,
            "seconds": round(self.seconds, 3), "load_seconds": _round(self.load_seconds), "recover_seconds": _round(self.recover_seconds),
            "still_recalled": self.still_recalled,
            "per_record": [r.to_json(reveal) for r in self.reports],
        }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


# Rewrites of small adapters replay every record each epoch (active_set=False), as memft 0.1 did: with a fresh
# AdamW on an adapter that already holds records, a first epoch over the new records alone at a constant rate moved
# every LoRA coordinate by about the learning rate and scrambled what it held (appending 50 records to a certified
# 100-record `upper` adapter at lr 1e-2: all 150 at the digit-format loss after 445 steps). Adapters written with the
# "progress" schedule (the sizing of large record sets) train with the active set instead: the schedule starts a
# rewrite at lr x max(0.1, 1 - certified share), so appending 50 records to 1000 starts at a tenth of the rate, held
# records rest at the bar and are re-checked with forward passes, and any that slip are trained again. Without
# replay, even a tenth of the rate trained on the 50 new records alone took the certified share of 1,050 records
# from 95.2 % to 72.1 % within 43 steps (Adam moves every coordinate by about the rate, whatever record it serves); so half of each epoch is
# resting records drawn at random (REPLAY), whose gradients say what must not move.
REPLAY = 0.5  # half of each epoch of a large rewrite: resting records drawn at random


def train_settings(meta: AdapterMeta, **overrides: Any) -> TrainConfig:
    """The TrainConfig an adapter was written with (memft.json), with `overrides` (None values ignored); the active
    set only under the progress schedule (see above)."""
    # A wall-clock limit belongs to the command that gave it, not to the adapter: an append must not inherit the
    # write's --time-limit (it once stopped an append after the write's 900 s).
    cfg = meta.train_config(drop=("max_seconds",))
    given = {k: v for k, v in overrides.items() if v is not None}
    large = given.get("lr_schedule", cfg.lr_schedule) == "progress"
    given = {"active_set": large, "replay": REPLAY if large else 0.0} | given
    if "template" in given and given["template"] != cfg.template:
        raise ConfigError(f"--template {given['template']}: this adapter was written with --template {cfg.template}, and its records are recalled that way")
    if meta.activation == "keyed" and given.get("preserve", cfg.preserve):
        raise ConfigError("--preserve has nothing to do with a keyed adapter: text without its invocation gets the base's predictions exactly; leave it out")
    return dataclasses.replace(cfg, **given)


@dataclass
class Opened:
    """An adapter folder loaded for a rewrite, with what it holds."""

    loaded: Loaded
    ledger: Ledger
    held: list[Record]  # in ledger order
    recalls: dict[str, Any]  # {key: the memft.certify.decode.Recall that recovered it}
    load_seconds: float
    recover_seconds: float


def append(folder: str | Path, records: Sequence[Record], update: bool = False, train: dict[str, Any] | None = None,
           runtime: RuntimeConfig | None = None, on_step: Callable[[dict[str, float]], None] | None = None,
           deploy: Any = None) -> RewriteResult:
    """Add `records` to the adapter in `folder`, keeping every record it holds certified.

    A new value for a key it holds is an error unless `update`; records it holds with the same value are no-ops.
    A held record that does not come back exactly (not certified at its last write) may be given again in
    `records` with its value. `train`: TrainConfig fields to override (default: those it was written with).
    `deploy`: a memft.runtime.deploy_write.ForRuntime (given by the caller: the memory store does not import the
    runtime layer): the new adapter must also be exact in that runtime to be saved.
    """
    folder = existing(folder)  # the real folder: an alias (symlink) locks and swaps the folder itself
    with folders.locked(folder):  # from reading the settings and the ledger to the swap: a concurrent writer waits
        cfg = train_settings(adapters.read_meta(folder), **(train or {}))  # bad options fail before the model loads
        op = _open(folder, runtime, given=records)
        plan = plan_append(op.held, records, update)
        event = {"op": "append", "added": len(plan.add), "updated": len(plan.change), "removed": 0}
        return _rewrite(op, plan, cfg, event, on_step, deploy)


def forget(folder: str | Path, keys: Sequence[str], train: dict[str, Any] | None = None,
           runtime: RuntimeConfig | None = None, on_step: Callable[[dict[str, float]], None] | None = None,
           deploy: Any = None) -> RewriteResult:
    """Remove `keys` from the adapter in `folder`: train their values away, keep every other record certified
    (`deploy`: as in append)."""
    if not keys:
        raise ConfigError("no keys given: name the keys to forget")
    folder = existing(folder)
    with folders.locked(folder):
        cfg = train_settings(adapters.read_meta(folder), **(train or {}))
        op = _open(folder, runtime, given=(), tolerate=set(keys))
        plan = plan_forget(op.held, keys, [e.key for e in op.ledger.entries])
        event = {"op": "forget", "added": 0, "updated": 0, "removed": len(set(keys))}
        return _rewrite(op, plan, cfg, event, on_step, deploy)


def existing(folder: str | Path) -> Path:
    """The real path of an adapter folder to rewrite; a missing one is refused before anything (a lock file) is made."""
    real = folders.check_location(folder)
    if not real.is_dir() and not folders.leftovers(real)["old"]:
        raise AdapterError(f"{folder}: no such adapter folder; give the --out folder of `memft write`")
    return real


def _open(folder: str | Path, runtime: RuntimeConfig | None, given: Sequence[Record],
          tolerate: set[str] = frozenset()) -> Opened:
    """Load the adapter trainable and recover what it holds; records the user gives again fill in lost ones, and
    lost keys in `tolerate` (being forgotten: recall already fails for them) are simply dropped."""
    runtime = runtime or RuntimeConfig()
    book = ledger_mod.read(folder)  # before loading a model: an old adapter fails fast
    t0 = time.perf_counter()
    ld = load_adapter(folder, runtime.device, None, trainable=True)
    t1 = time.perf_counter()
    # The recall keeps the hidden states entering the lowest adapted layer: training starts from them.
    held, lost, recalls = ledger_mod.recover_recalls(ld, book, start=min(ld.meta.lora.layers))
    took = (t1 - t0, time.perf_counter() - t1)
    digests = {e.key: e.digest for e in book.entries}
    again = {r.key: r for r in given if r.key in lost and book.scheme.digest(r) == digests[r.key]}
    missing = [k for k in lost if k not in again and k not in tolerate]
    if missing:
        raise ledger_mod.lost_error(missing, str(folder))
    by_key = {r.key: r for r in held} | again
    return Opened(ld, book, [by_key[e.key] for e in book.entries if e.key in by_key], recalls, *took)


def warm_start(items: Sequence[Encoded], recalls: dict[str, Any]) -> Warm:
    """What the recovery's greedy recall already computed for `items` ({key: memft.certify.decode.Recall}): a record is
    taken only when its token sequence is the one recalled (a changed value, or a value whose re-encoding gives
    other tokens, is computed afresh)."""
    warm = Warm()
    for i, e in enumerate(items):
        rc = recalls.get(e.key)
        if rc is None or tuple(rc.ids) != e.targets:
            continue
        warm.stats[i] = rc.stats
        if rc.prefix is not None and rc.prefix.shape[0] == len(e.ids) - 1:
            warm.prefix[i] = rc.prefix
        warm.competitors.update(rc.competitors)
    return warm


def _rewrite(op: Opened, plan: Plan, cfg: TrainConfig, event: dict[str, Any], on_step: Callable[[dict[str, float]], None] | None,
             deploy: Any = None) -> RewriteResult:
    from memft.certify.evaluate import evaluate, greedy

    ld, book = op.loaded, op.ledger
    base, tok, meta = ld.base, ld.tokenizer, ld.meta
    hold = plan.records
    names = {"kept": [r.key for r in plan.keep], "added": [r.key for r in plan.add], "changed": [r.key for r in plan.change],
             "forgotten": [r.key for r in plan.forget], "unchanged": plan.unchanged}
    if not hold:
        raise ConfigError("nothing would be left in the adapter; delete the folder instead of forgetting every key")
    if deploy is not None:
        cfg = deploy.config(cfg)  # the runtime's margin
    items = encode_all(hold, tok, cfg.template, meta.key_prefix)
    gone = encode_all(plan.forget, tok, cfg.template, meta.key_prefix)
    check_items(items, base, cfg.template, meta.key_prefix)
    start = min(meta.lora.layers)
    keep = preserve.from_config(ld.model, tok, cfg, start, items)
    res = train_loop(ld.model, items + gone, tok.pad_token_id, cfg, start, stop_on_divergence(on_step), forget=range(len(items), len(items) + len(gone)),
                     preserve=keep, warm=warm_start(items + gone, op.recalls))
    final = {i: st for i, st in res.final.items() if i < len(items)}  # the last full pass, forgotten records left out
    reports = evaluate(ld.model, tok, items, generate="divergence", batch_size=cfg.batch_size, stats=final)
    gens = greedy(ld.model, gone, tok) if gone else []
    still = [e.key for e, g in zip(gone, gens) if free_run_compare(g, e.targets)[0]]
    summary = summarize(reports)
    ok = summary["certified"] == 1.0 and not still
    extra, outcome = None, None
    if ok and deploy is not None:  # exact in the runtime too, or not saved (memft.runtime.deploy_write)
        outcome, res, again, still = deploy.rewrite_rounds(ld.model, items, gone, tok, cfg, start, keep, res,
                                                           meta.invocation_tokens, on_step)
        reports = again or reports
        summary = summarize(reports)
        ok = summary["certified"] == 1.0 and not still and outcome.all_exact
        extra = deploy.extra(outcome, cfg.margin)
    written = None
    if ok:
        fit = Fit(ld.model, meta.lora.placement(), reports, summary, res,
                  sum(e.n_value for e in items), max(len(e.targets) for e in items))
        written = save_fit(fit, hold, base, meta.lora_settings(), cfg, ld.folder, old_ledger=book, changed=plan.changed_keys, event=event,
                           extra=extra)
    return RewriteResult(out=Path(ld.folder), saved=ok, plan=names, summary=summary, reports=reports, still_recalled=still,
                         steps=res.steps, seconds=res.seconds, written=written, history=res.history,
                         load_seconds=op.load_seconds, recover_seconds=op.recover_seconds, deploy=outcome)
