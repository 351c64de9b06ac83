"""Writing and changing a memory store of shards (memft.store.shards): one transaction over many standard adapters.

Every change to a store (write, append, forget) is one swap of the whole store folder (memft.store.folders.swap_in):
the shards it keeps are copied into a fresh sibling (they are small: a rank-64 shard of the embedded model is a few
MB), the shards it changes are written or rewritten there, one at a time, and the sibling replaces the store only
when every one of them is saved. So a shard that does not certify, an error or a crash leaves the store as it was,
and readers see the old store or the new one. The lock is the store folder's, held from reading its ledgers to the
swap; each shard's own lock and swap work inside the sibling as for any adapter.

How one shard is written or rewritten is the caller's (`WriteShard`, `AppendShard`, `ForgetShard`): the facade and
the CLI size, train and save each shard exactly as one adapter (memft.api.write, memft.memory.rewrite).

Memory layer: may import the core and the memory store; never the facade, the checks, research, integrations or the CLI.
"""

from __future__ import annotations

import gc
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memft.certify.metrics import RecordReport, summarize
from memft.errors import AdapterError, ConfigError, RecordsError
from memft.prompts.records import Record, dedupe
from memft.store import adapters, folders, shards
from memft.store import ledger as ledger_mod

WriteShard = Callable[[Sequence[Record], Path], Any]  # (records, folder) -> memft.store.saving.WriteResult
AppendShard = Callable[[Path, Sequence[Record]], Any]  # (shard folder, records) -> memft.memory.rewrite.RewriteResult
ForgetShard = Callable[[Path, Sequence[str]], Any]  # (shard folder, keys) -> RewriteResult
OnShard = Callable[[str, int, int, int], None]  # (shard name, its position from 1, shards to do, records given to it)


@dataclass
class ShardOutcome:
    """What one shard's write or rewrite did."""

    name: str
    op: str  # write | append | forget | delete (a forget that left the shard empty)
    saved: bool  # for a write: saved (it always is); certified is separate
    certified: bool  # every record it must hold is certified
    records: int  # records it holds after (or would hold)
    steps: int
    seconds: float
    reports: list[RecordReport] = field(default_factory=list)
    plan: dict[str, list[str]] = field(default_factory=dict)
    still_recalled: list[str] = field(default_factory=list)
    dtype: str = ""  # the precision it was certified in
    allowance: float = 0.0  # the log-odds allowance of that precision it was trained to (memft.certify.metrics)

    def to_json(self) -> dict[str, Any]:
        return {"shard": self.name, "op": self.op, "saved": self.saved, "certified": self.certified, "records": self.records,
                "steps": self.steps, "seconds": round(self.seconds, 3)}


@dataclass
class StoreResult:
    """A store write or rewrite: saved (swapped in) or not, and every shard it touched."""

    out: Path
    op: str
    saved: bool
    shards: list[ShardOutcome]
    held: int  # records the store holds after (or would hold, when not saved)
    shard_count: int
    seconds: float

    @property
    def reports(self) -> list[RecordReport]:
        return [r for s in self.shards for r in s.reports]

    @property
    def all_certified(self) -> bool:
        return all(s.certified for s in self.shards)

    @property
    def summary(self) -> dict[str, Any]:
        return summarize(self.reports) if self.reports else {"records": 0, "certified": 1.0}

    @property
    def still_recalled(self) -> list[str]:
        return [k for s in self.shards for k in s.still_recalled]

    @property
    def steps(self) -> int:
        return sum(s.steps for s in self.shards)

    def to_json(self, reveal: bool = False) -> dict[str, Any]:
        return {"out": str(self.out), "op": self.op, "saved": self.saved, "store_records": self.held, "shard_count": self.shard_count,
                **self.summary, "steps": self.steps, "seconds": round(self.seconds, 3), "still_recalled": self.still_recalled,
                "shards": [s.to_json() for s in self.shards], "per_record": [r.to_json(reveal) for r in self.reports]}


class _NotSaved(Exception):
    """A shard's rewrite was not saved: the store transaction stops and the store keeps its previous version."""


def check_out(out: Path) -> None:
    """A store may replace an empty folder, a memft adapter or another store, nothing else (as one adapter may)."""
    adapters.check_out_dir(out)


def held_keys(store: Path) -> dict[str, list[str]]:
    """{shard name: the keys its ledger holds}, in shard order."""
    return {d.name: [e.key for e in ledger_mod.read(d).entries] for d in shards.shard_dirs(store)}


def write(records: Sequence[Record], out: str | Path, shard_size: int, write_shard: WriteShard, on_shard: OnShard | None = None,
          check_shard: Callable[[Sequence[Record]], Any] | None = None) -> StoreResult:
    """Write `records` as a store of ceil(n / shard_size) shards (memft.store.shards.split), one after the other, each
    by `write_shard`; swapped in once all are written. As with one adapter, the store is saved whether or not every
    record certified (StoreResult.all_certified says). `check_shard` (memft.training.fit.prepare's checks) runs on
    every shard before the first is trained: an input error in the last shard is one line at once, not after the
    others have trained."""
    shards.check_shard_size(shard_size)
    out = folders.check_location(out)
    check_out(out)
    records = dedupe(records)  # one shard per key: a key given twice would land in two shards at a cut
    parts = shards.split(records, lambda r: r.key, shard_size)
    for part in parts if check_shard else ():
        check_shard(part)
    done: list[ShardOutcome] = []
    t0 = time.perf_counter()
    with folders.locked(out):
        check_out(out)

        def fill(tmp: Path) -> None:
            shards.write_meta(tmp, shards.StoreMeta(shard_size))
            for i, part in enumerate(parts):
                name = shards.shard_name(i)
                if on_shard:
                    on_shard(name, i + 1, len(parts), len(part))
                done.append(_written(name, write_shard(part, tmp / name)))
                gc.collect()  # one shard's training state gone before the next: peak memory is one shard's

        folders.swap_in(out, fill)
    return StoreResult(out, "write", True, done, len(records), len(parts), time.perf_counter() - t0)


def append(store: str | Path, records: Sequence[Record], update: bool, write_shard: WriteShard, append_shard: AppendShard,
           on_shard: OnShard | None = None, grow: int = 0) -> Any:
    """Add `records` to a store: a key a shard holds goes to that shard (a new value only with `update`, as for one
    adapter), new keys where memft.store.shards.place puts them (the open shard when they all fit, else new shards).
    Only the shards that get records are rewritten or written.

    `store` may also be one adapter folder with `grow` > 0: when its records and the new ones would be more than
    `grow`, it becomes a store of shards of at most `grow` records, the adapter as it is in `shard-000` (not
    retrained) and the new keys in new shards; otherwise they are appended in place by `append_shard(folder,
    records)` (its result returned), under the same lock: a second writer waits once, and nothing comes in between."""
    store = existing(store)
    t0 = time.perf_counter()
    with folders.locked(store):
        single = not shards.is_store(store)
        if single:
            size = shards.check_shard_size(grow, "grow")
            held = {shards.shard_name(0): [e.key for e in ledger_mod.read(store).entries]}
        else:
            size = shards.read_meta(store).shard_size  # inside the lock: a write may have just swapped the store in
            held = held_keys(store)
        routed, new = shards.route([r.key for r in records], held)
        counts = {n: len(ks) for n, ks in held.items()}
        placed = shards.place(new, counts, size)
        if single and set(placed) <= set(held):
            return append_shard(store, records)  # they fit in the adapter (its rewrite's lock is this one, held)
        by_key = {r.key: r for r in records}
        work = {name: [by_key[k] for k in keys] for name, keys in routed.items()}
        for name, keys in placed.items():
            work.setdefault(name, []).extend(by_key[k] for k in keys)
        order = sorted(work, key=shards.index)
        done: list[ShardOutcome] = []

        def fill(tmp: Path) -> None:
            if single:
                shards.write_meta(tmp, shards.StoreMeta(size))
                _copy_adapter(store, tmp / shards.shard_name(0))
            else:
                _copy_store(store, tmp)
            for i, name in enumerate(order):
                if on_shard:
                    on_shard(name, i + 1, len(order), len(work[name]))
                if name in held:
                    out = _rewritten(name, "append", append_shard(tmp / name, work[name]))
                else:
                    out = _written(name, write_shard(work[name], tmp / name))
                done.append(out)
                gc.collect()
                if not (out.saved and out.certified):
                    raise _NotSaved

        saved = _swap(store, fill)
        after = sum(counts.values()) + len(new)
        return StoreResult(store, "append", saved, done, after, len(set(held) | set(placed)), time.perf_counter() - t0)


def forget(store: str | Path, keys: Sequence[str], forget_shard: ForgetShard, on_shard: OnShard | None = None) -> StoreResult:
    """Remove `keys` from a store: each shard holding some is rewritten without them; a shard left with nothing is
    deleted (its adapter, the only place its values were, goes with it)."""
    if not keys:
        raise ConfigError("no keys given: name the keys to forget")
    store = existing(store)
    t0 = time.perf_counter()
    with folders.locked(store):
        shards.read_meta(store)
        held = held_keys(store)
        routed, unknown = shards.route(list(dict.fromkeys(keys)), held)
        if unknown:
            shown = ", ".join(repr(k) for k in unknown[:10])
            raise RecordsError(f"key(s) not in this store: {shown}; `memft ledger {store}` lists the keys it holds")
        if sum(map(len, routed.values())) == sum(map(len, held.values())):
            raise ConfigError("nothing would be left in the store; delete the folder instead of forgetting every key")
        order = sorted(routed, key=shards.index)
        done: list[ShardOutcome] = []

        def fill(tmp: Path) -> None:
            _copy_store(store, tmp)
            for i, name in enumerate(order):
                if on_shard:
                    on_shard(name, i + 1, len(order), len(routed[name]))
                if len(routed[name]) == len(held[name]):
                    shutil.rmtree(tmp / name)
                    out = ShardOutcome(name, "delete", True, True, 0, 0, 0.0, plan={"forgotten": routed[name]})
                else:
                    out = _rewritten(name, "forget", forget_shard(tmp / name, routed[name]))
                done.append(out)
                gc.collect()
                if not (out.saved and out.certified):
                    raise _NotSaved

        saved = _swap(store, fill)
        left = sum(len(v) for v in held.values()) - sum(len(v) for v in routed.values())
        count = len(held) - sum(1 for s in done if s.op == "delete")
        return StoreResult(store, "forget", saved, done, left, count, time.perf_counter() - t0)


def grow_size(meta: Any, given: int | None = None) -> int:
    """The shard size one adapter grows into on append (0: it never does, appends replay in place): `given`, else
    the --shard-size its write used (memft.json `shard_size`; adapters written before stores: the default). An
    adapter written for a runtime (`--deploy`) stays one adapter: that runtime was proven on it alone.

    >>> from types import SimpleNamespace as NS
    >>> grow_size(NS(extra={})), grow_size(NS(extra={"shard_size": 0})), grow_size(NS(extra={"deploy": {}})), grow_size(NS(extra={}), 50)
    (1000, 0, 0, 50)
    """
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int) or given < 0:
            raise ConfigError(f"--shard-size {given!r}: give a positive number of records per shard, or 0 to append into the adapter")
        return given
    if "deploy" in meta.extra:
        return 0
    size = meta.extra.get("shard_size", shards.SHARD_SIZE)
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else shards.SHARD_SIZE


def new_shard_settings(meta: Any, records: Sequence[Record], tokenizer: Any) -> tuple[Any, Any, Any]:
    """(LoraSettings, TrainConfig, Sizing) of a shard an append adds, from `meta` (an existing shard's AdapterMeta):
    what the store's write sized (memft.json's `sizing.chosen`) is sized again from the new shard's own records;
    what the user gave (all of it, when the write was not sized) is kept, and so is what every shard shares: the
    activation and invocation (users call every shard the same way), template, method, margin, seed, preservation.

    >>> from types import SimpleNamespace as NS
    >>> from memft.config import DEFAULT_INVOCATION
    >>> lo = NS(rank=64, preset="top", layers=(26, 27, 28, 29), target_modules=None, alpha=None)
    >>> m = NS(activation="keyed", invocation=DEFAULT_INVOCATION, lora=lo, train={"lr": 3e-3, "max_steps": 900, "lr_schedule": "progress",
    ...        "batch_size": 32, "head_vocab": "restricted", "lora_init": "centered", "margin": 0.5, "seed": 4},
    ...        extra={"sizing": {"chosen": ["rank", "batch_size", "max_steps", "lr", "lr_schedule", "head_vocab", "lora_init"]}})
    >>> m.train_config = lambda drop=(), **o: NS(**{**m.train, **o})
    >>> lora, train, size = new_shard_settings(m, [Record(f"k{i}:", "5") for i in range(40)], None)
    >>> (lora.preset, lora.rank, lora.activation, train.lr, train.lr_schedule, train.seed, size.chosen)
    ('top', 8, 'keyed', 0.01, 'constant', 4, ('rank', 'batch_size', 'max_steps', 'lr', 'lr_schedule', 'head_vocab', 'lora_init'))
    """
    from memft.config import LoraSettings
    from memft.training.sizing import size_for, value_tokens

    sized = set((meta.extra.get("sizing") or {}).get("chosen", ()))
    t, lo = meta.train, meta.lora

    def kept(name: str, value: Any) -> Any:  # the store's own value when the user gave it, None to size it again
        return None if name in sized else value

    size = size_for(len(records), preset=kept("preset", lo.preset), rank=kept("rank", lo.rank), batch_size=kept("batch_size", t.get("batch_size")),
                    max_steps=kept("max_steps", t.get("max_steps")), lr=kept("lr", t.get("lr")), head_vocab=kept("head_vocab", t.get("head_vocab")),
                    lora_init=kept("lora_init", t.get("lora_init")), lr_schedule=kept("lr_schedule", t.get("lr_schedule")),
                    value_tokens=value_tokens(records, tokenizer) if "rank" in sized and tokenizer is not None else None)
    placed = "preset" not in sized  # the user placed the store's LoRA: the same modules in every shard
    lora = LoraSettings(rank=size.rank, alpha=lo.alpha if "rank" not in sized else None, preset=size.preset,
                        layers=tuple(lo.layers) if placed and lo.layers else None, target_modules=lo.target_modules if placed else None,
                        activation=meta.activation, invocation=meta.invocation if meta.activation == "keyed" else None)
    train = meta.train_config(drop=("max_seconds", "active_set", "replay"), lr=size.lr, max_steps=size.max_steps, batch_size=size.batch_size,
                              head_vocab=size.head_vocab, lora_init=size.lora_init, lr_schedule=size.lr_schedule,
                              a_lr_scale=0.0 if size.lora_init.startswith("null") else 1.0)
    return lora, train, size


def existing(store: str | Path) -> Path:
    """The real path of a store to change; a missing one is refused before anything (a lock file) is made."""
    real = folders.check_location(store)
    if not real.is_dir() and not folders.leftovers(real)["old"]:
        raise AdapterError(f"{store}: no such adapter folder; give the --out folder of `memft write`")
    return real


def _swap(store: Path, fill: Callable[[Path], None]) -> bool:
    try:
        folders.swap_in(store, fill)
    except _NotSaved:
        return False
    return True


def _copy_store(store: Path, tmp: Path) -> None:
    """The store's own files into the sibling being filled (the user's other files are carried over by swap_in)."""
    shutil.copy2(store / shards.STORE, tmp / shards.STORE)
    for d in shards.shard_dirs(store):
        shutil.copytree(d, tmp / d.name, symlinks=True)


def _copy_adapter(folder: Path, shard: Path) -> None:
    """One adapter's own files (weights, memft.json, ledger) as a store's first shard; the user's other files stay
    at the store's top (swap_in carries them over)."""
    shard.mkdir()
    for name in sorted(folders.OWN_FILES):
        if (folder / name).is_file():
            shutil.copy2(folder / name, shard / name)


def _written(name: str, res: Any) -> ShardOutcome:
    """A memft.store.saving.WriteResult as a shard's outcome."""
    t = res.meta.train
    return ShardOutcome(name, "write", True, res.all_certified, len(res.reports), int(t["steps"]), float(t["seconds"]), list(res.reports),
                        plan={"added": [r.key for r in res.reports]}, dtype=res.meta.base.dtype,
                        allowance=float(t.get("log_odds_allowance") or 0.0))


def _rewritten(name: str, op: str, res: Any) -> ShardOutcome:
    """A memft.memory.rewrite.RewriteResult as a shard's outcome."""
    ok = res.summary.get("certified") == 1.0 and not res.still_recalled
    meta = res.written.meta if res.written is not None else None
    return ShardOutcome(name, op, res.saved, ok, len(res.reports), res.steps, res.seconds, list(res.reports), dict(res.plan),
                        list(res.still_recalled), dtype=meta.base.dtype if meta else "",
                        allowance=float(meta.train.get("log_odds_allowance") or 0.0) if meta else 0.0)
