"""The Python API, the one facade above the core and the checks: write records into an adapter (or a store of
shards, memft.store.shards), append and forget, recall a key, verify a record set. The CLI calls these (for a store's
per-shard progress it drives memft.memory.sharded itself).

Facade: may import the core (memft.prompts, .model, .certify, .objectives, .training, .store), memft.memory and
memft.checks; nothing below imports it. What the memory store and the checks also need lives in the core:
training.fit (fit, prepare, Fit), store.saving (save_fit, WriteResult), store.loading (load_adapter, Loaded).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memft.certify.metrics import RecordReport, summarize
from memft.config import LoraSettings, RuntimeConfig, TrainConfig
from memft.model.base import Base, load_base
from memft.prompts.encoding import Encoded, decode_value, encode_all, prompt_ids
from memft.prompts.records import Record, check_key  # noqa: F401 - check_key: part of the API (recall's key check)
from memft.memory import sharded
from memft.memory.sharded import StoreResult
from memft.store import adapters, folders, shards
from memft.store.ledger import LEDGER
from memft.store.loading import Loaded, load_adapter  # noqa: F401 - part of the API
from memft.store.saving import WriteResult, save_fit  # noqa: F401 - part of the API
from memft.training.sizing import sized_settings
from memft.training.status import StepRow
from memft.training.fit import Fit, check_items, fit, prepare, stop_on_divergence  # noqa: F401 - part of the API (Fit, check_items)


@dataclass
class VerifyResult:
    summary: dict[str, Any]
    reports: list[RecordReport]
    dtype: str  # precision this verification ran in
    certified_dtype: str  # precision the adapter was certified in at write time
    notes: list[str] = field(default_factory=list)

    def to_json(self, reveal: bool = False) -> dict[str, Any]:
        """reveal=False: recalled values are left out (see RecordReport.to_json)."""
        return {
            **self.summary,
            "dtype": self.dtype,
            "certified_dtype": self.certified_dtype,
            "notes": self.notes,
            "per_record": [r.to_json(reveal) for r in self.reports],
        }



def write(
    records: Sequence[Record],
    out: str | Path,
    model: str = "smollm2-135m",
    lora: LoraSettings | None = None,
    train: TrainConfig | None = None,
    runtime: RuntimeConfig | None = None,
    base: Base | None = None,
    on_step: Callable[[StepRow], None] | None = None,
    extra: dict[str, Any] | None = None,
    shard_size: int = shards.SHARD_SIZE,
) -> WriteResult | StoreResult:
    """Train a LoRA adapter until every record is certified (or the step budget ends) and save it to `out`.
    `extra`: more top-level entries for memft.json (e.g. the CLI's `sizing`).

    More records than `shard_size` (0: never) make a store of shards (memft.store.shards), each written as below on
    one loaded base, and give a memft.memory.sharded.StoreResult (all_certified, summary, reports, shards).

    The adapter is saved in either case; `result.all_certified` says whether every record is recalled exactly.
    Pass a loaded `base` to reuse it across writes (its weights are restored afterwards). `lora` or `train` left out:
    sized from the records by memft.training.sizing, as `memft write` sizes them (saved in memft.json as `sizing`);
    a LoraSettings left out has the write's activation (config.write_activation: keyed, or always with preserve).
    """
    runtime = runtime or RuntimeConfig()
    if shard_size and len(records) > shard_size:
        return _write_store(records, out, model, lora, train, runtime, base, on_step, extra, shard_size)
    extra = {"shard_size": shard_size, **(extra or {})}  # what an append grows it into (memft.memory.sharded.grow_size)
    out = folders.check_location(out)  # the real folder, once (a symlinked alias locks and swaps the folder itself)
    adapters.check_out_dir(out)  # before any work: never train for minutes and then refuse to save
    own_base = base is None
    base = base or load_base(model, runtime.device, runtime.dtype, seed=(train or TrainConfig()).seed)
    lora, train, size = sized_settings(records, base.tokenizer, lora, train)  # what is left out: sized as `memft write` does
    if size is not None:
        extra = {"sizing": size.to_json(), **(extra or {})}
    items = prepare(records, base, lora, train)  # input errors before the lock: nothing is left beside --out
    # The folder's lock is held from the check to the swap: a second writer waits instead of being lost.
    with folders.locked(out):
        adapters.check_out_dir(out)  # again: another process may have filled it meanwhile
        # a write's report needs no more than where a failing record fails (see memft.certify.evaluate, "divergence")
        f = fit(records, base, lora, train, stop_on_divergence(on_step), generate="divergence", items=items)
        try:
            result = save_fit(f, records, base, lora, train, out, extra=extra)
        finally:
            if not own_base:
                f.model.unload()  # give the caller its base back without LoRA layers
    return result


def _write_store(records: Sequence[Record], out: str | Path, model: str, lora: LoraSettings | None, train: TrainConfig | None,
                 runtime: RuntimeConfig, base: Base | None, on_step: Callable[[StepRow], None] | None, extra: dict[str, Any] | None,
                 shard_size: int) -> StoreResult:
    """write() for more records than a shard holds: one base for every shard, each shard sized from its own records."""
    sharded.check_out(folders.check_location(out))  # before loading a model
    base = base or load_base(model, runtime.device, runtime.dtype, seed=(train or TrainConfig()).seed)

    def one(part: Sequence[Record], path: Path) -> WriteResult:
        return write(part, path, model, lora, train, runtime, base, on_step, {**(extra or {}), "store": {"shard": path.name}, "shard_size": shard_size},
                     shard_size=0)

    def check(part: Sequence[Record]) -> None:
        prepare(part, base, *sized_settings(part, base.tokenizer, lora, train)[:2])

    return sharded.write(records, out, shard_size, one, check_shard=check)


# How a shard an append adds is trained: (records, folder, Sizing, LoraSettings, TrainConfig, model spec, runtime) ->
# WriteResult. The CLI's shows the sizing line and a progress bar around write().
ShardWriter = Callable[[Sequence[Record], Path, Any, LoraSettings, TrainConfig, str, RuntimeConfig], WriteResult]
# How one folder's rewrite runs: around(call, folder) -> call(on_step)'s result. The CLI's shows a progress bar.
Around = Callable[[Callable[[Any], Any], Path], Any]


def shard_writer(part: Sequence[Record], path: Path, size: Any, lora: LoraSettings, train: TrainConfig, model: str,
                 runtime: RuntimeConfig, on_step: Callable[[StepRow], None] | None = None, base: Base | None = None) -> WriteResult:
    """write() of one shard with its sizing and its place in the store recorded in memft.json (a ShardWriter)."""
    return write(part, path, model, lora, train, runtime, base, on_step, {"sizing": size.to_json(), "store": {"shard": path.name}},
                 shard_size=0)


def _plain(call: Callable[[Any], Any], folder: Path) -> Any:
    return call(None)


def append(folder: str | Path, records: Sequence[Record], update: bool = False, train: dict[str, Any] | None = None,
           runtime: RuntimeConfig | None = None, shard_size: int | None = None, writer: ShardWriter = shard_writer,
           around: Around = _plain, on_shard: sharded.OnShard | None = None, deploy: Any = None) -> Any:
    """Add `records` to an adapter (memft.memory.rewrite.append -> RewriteResult) or to a store of shards
    (memft.memory.sharded.append -> StoreResult: a key a shard holds goes to it, new keys to the open shard when they
    fit, else to new shards sized from them). `train`: TrainConfig fields to override.

    One adapter that would hold more than `shard_size` records (default: its write's, memft.memory.sharded.grow_size;
    0: never) becomes a store: the adapter as it is in shard-000, the new records in new shards. `deploy` (a
    memft.runtime.deploy_write.ForRuntime) appends in place, exact in that runtime too; a store refuses it.
    `writer` and `around` say how a new shard is written and a rewrite is run (the CLI's show progress)."""
    from memft.memory import rewrite

    real = folders.resolve(folder)
    is_store = shards.store_at(real) is not None
    if is_store and deploy is not None:
        raise shards.store_error(real, "append --deploy")
    meta = adapters.read_meta(real if not is_store else _first_shard(real))
    runtime = RuntimeConfig(device=(runtime or RuntimeConfig()).device, dtype=meta.certification.dtype)  # every shard in one precision

    def in_place(path: Path, part: Sequence[Record]) -> Any:
        return around(lambda on_step: rewrite.append(path, part, update, train, runtime, on_step, deploy), path)

    grow = 0 if is_store or deploy is not None else sharded.grow_size(meta, shard_size)
    if not is_store and not grow:
        return in_place(real, records)
    over = {k: v for k, v in (train or {}).items() if v is not None}

    def write_shard(part: Sequence[Record], path: Path) -> WriteResult:
        from memft.model.base import load_tokenizer

        lora, cfg, size = sharded.new_shard_settings(meta, part, load_tokenizer(meta.base.spec))
        return writer(part, path, size, lora, dataclasses.replace(cfg, **over), meta.base.spec, runtime)

    return sharded.append(real, records, update, write_shard, in_place, on_shard, grow=grow)


def _first_shard(store: Path) -> Path:
    found = shards.shard_dirs(store)
    if not found:
        raise shards.store_error(store, "append")
    return found[0]


def forget(folder: str | Path, keys: Sequence[str], train: dict[str, Any] | None = None, runtime: RuntimeConfig | None = None,
           around: Around = _plain, on_shard: sharded.OnShard | None = None, deploy: Any = None) -> Any:
    """Remove `keys` from an adapter (memft.memory.rewrite.forget) or a store (memft.memory.sharded.forget: only the
    shards holding them are rewritten; a shard left empty is deleted). `deploy`, `around`: as in append."""
    from memft.memory import rewrite

    def one(path: Path, part: Sequence[str]) -> Any:
        return around(lambda on_step: rewrite.forget(path, part, train, runtime, on_step, deploy), path)

    store = shards.store_at(folder)
    if store is None:
        return one(folders.resolve(folder), keys)
    if deploy is not None:
        raise shards.store_error(store, "forget --deploy")
    return sharded.forget(store, keys, one, on_shard)


@dataclass
class Recalled:
    key: str
    value: str  # "" when the key is not held and raw generation was not asked for
    certified: bool  # the recalled (key, value) is one that was certified when the adapter was written
    min_prob: float  # smallest probability greedy decoding gave a chosen token (0.0 when nothing was generated)
    held: bool = True  # the adapter's ledger holds this key; a value generated for any other key is invented
    nearest: list[str] = field(default_factory=list)  # not held: the closest held keys, best first

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "held": self.held, "value": self.value if self.held or self.value else None,
                "certified": self.certified, "min_prob": self.min_prob, "nearest": self.nearest}


def held_keys(ld: Loaded) -> list[str] | None:
    """The keys the adapter's ledger holds; None for an adapter written without a ledger (memft < 0.1 ledgers)."""
    from memft.store import ledger

    if ld.ledger is not None:
        return [e.key for e in ld.ledger.entries]
    if ld.folder is None or not (Path(ld.folder) / LEDGER).exists():
        return None
    return [e.key for e in ledger.read(ld.folder).entries]


def nearest_keys(key: str, held: Sequence[str], n: int = 3) -> list[str]:
    """The held keys closest to `key` (difflib ratio >= 0.5), best first.

    >>> nearest_keys("Carol White:", ["Carol Whyte:", "Bob Stone:", "Carl White:"])
    ['Carl White:', 'Carol Whyte:']
    """
    import difflib

    return difflib.get_close_matches(key, list(held), n=n, cutoff=0.5)


def recall(folder: str | Path | Loaded, key: str, raw: bool = False) -> Recalled:
    """Greedy-decode the value stored under `key` (no context, no retrieval: only the adapter's weights).

    A key the adapter's ledger does not hold is answered `held=False` with the nearest held keys and no value:
    whatever greedy decoding produced for it would be invented. raw=True generates for it anyway."""
    return recall_many(folder, [key], raw)[0]


def recall_many(folder: str | Path | Loaded, keys: Sequence[str], raw: bool = False, batch_size: int = 32, device: str = "auto") -> list[Recalled]:
    """recall() for many keys with one model load and batched decoding, in the order given. A store folder
    (memft.store.shards): each key from the shard whose ledger holds it."""
    from memft.certify.evaluate import greedy, teacher_forced
    from memft.model.forward import Runner

    for i, k in enumerate(keys):
        check_key(k, f"key {i + 1}" if len(keys) > 1 else "key")
    store = None if isinstance(folder, Loaded) else shards.store_at(folder)
    if store is not None:
        return _recall_store(store, keys, raw, batch_size, device)
    ld = folder if isinstance(folder, Loaded) else load_adapter(folder, device)
    held = held_keys(ld)
    known = set(held) if held is not None else None
    asked = [k for k in keys if raw or known is None or k in known]
    tmpl = ld.meta.template
    limit = ld.meta.records.max_target_tokens
    eos = ld.tokenizer.eos_token_id
    probes = [Encoded(key=k, prompt=prompt_ids(k, ld.tokenizer, tmpl, ld.meta.key_prefix), targets=(eos,)) for k in asked]
    gens = greedy(ld.model, probes, ld.tokenizer, batch_size=batch_size, max_new=limit) if probes else []
    # min_prob: one teacher-forced pass over what was generated gives each chosen token's probability.
    runs = [Encoded(p.key, p.prompt, tuple(g)) for p, g in zip(probes, gens) if g]
    tf = teacher_forced(Runner(ld.model, runs, ld.tokenizer.pad_token_id), batch_size) if runs else {}
    stats = {i: tf[j] for j, i in enumerate(i for i, g in enumerate(gens) if g)}  # by probe index
    scheme = ld.meta.records.scheme
    digests = None if ld.meta.records.digests is None else set(ld.meta.records.digests)  # None: a folder without them
    failed = set(ld.meta.certification.failed_keys)
    done: dict[str, Recalled] = {}
    for i, (p, gen) in enumerate(zip(probes, gens)):
        value = decode_value(gen, ld.tokenizer)
        is_held = known is None or p.key in known
        # the digest last: a slow one (memft.store.digests) is paid only for a value that could be certified
        ok = is_held and bool(gen) and gen[-1] == eos and p.key not in failed and (digests is None or scheme.digest(Record(p.key, value)) in digests)
        done[p.key] = Recalled(p.key, value, ok, min(stats[i].prob) if gen else 0.0, is_held,
                               [] if is_held else nearest_keys(p.key, held or []))
    return [done.get(k) or Recalled(k, "", False, 0.0, False, nearest_keys(k, held or [])) for k in keys]


def _routed(store: Path, keys: Sequence[str], command: str, missing_to_first: bool) -> tuple[dict[str, list[str]], dict[str, list[str]], list[str]]:
    """(every shard's held keys, {shard: the given keys it holds}, keys no shard holds) of a store; with
    missing_to_first, the first shard is also given the keys no shard holds (to generate or score them)."""
    held = sharded.held_keys(store)
    if not held:
        raise shards.store_error(store, command)
    routed, missing = shards.route(keys, held)
    if missing_to_first and missing:
        first = next(iter(held))
        routed[first] = routed.get(first, []) + missing
    return held, routed, missing


def _recall_store(store: Path, keys: Sequence[str], raw: bool, batch_size: int, device: str) -> list[Recalled]:
    """recall_many() on a store: each key from the shard whose ledger holds it, one shard loaded at a time. A key no
    shard holds is refused with the nearest held keys of the whole store (with raw: generated by the first shard)."""
    import gc

    held, routed, missing = _routed(store, list(dict.fromkeys(keys)), "recall", missing_to_first=raw)
    done: dict[str, Recalled] = {}
    for name, asked in routed.items():
        ld = load_adapter(store / name, device)
        done |= {r.key: r for r in recall_many(ld, asked, raw, batch_size)}
        del ld
        gc.collect()  # one shard in memory at a time
    every = [k for ks in held.values() for k in ks]
    return [done[k] if k in done else Recalled(k, "", False, 0.0, False, nearest_keys(k, every)) for k in keys]


def verify(
    folder: str | Path | Loaded,
    records: Sequence[Record],
    generate: str = "uncertified",
    device: str = "auto",
    dtype: str | None = None,
    batch_size: int = 64,
) -> VerifyResult:
    """Certify every record in one teacher-forced pass; generate greedily where asked (see evaluate())."""
    from memft.certify.evaluate import evaluate

    store = None if isinstance(folder, Loaded) else shards.store_at(folder)
    if store is not None:
        return _verify_store(store, records, generate, device, dtype, batch_size)
    ld = folder if isinstance(folder, Loaded) else load_adapter(folder, device, dtype)
    items = encode_all(records, ld.tokenizer, ld.meta.template, ld.meta.key_prefix)
    reports = evaluate(ld.model, ld.tokenizer, items, generate=generate, batch_size=batch_size)
    certified_dtype = ld.meta.certification.dtype
    notes = []
    if ld.dtype != certified_dtype:
        notes.append(
            f"verified in {ld.dtype} but certified in {certified_dtype} at write time: "
            "these verdicts are for the precision used now"
        )
    other = ld.meta.extra.get("runtime")  # a memft.runtime.certify.RuntimeCertificate, kept as JSON
    target = ld.meta.extra.get("deploy")  # written with --deploy RUNTIME (memft.runtime.deploy_write)
    if isinstance(other, dict) and other.get("runtime"):
        notes.append(f"the adapter was {'written for and ' if isinstance(target, dict) else 'also '}certified in {other['runtime']} on "
                     f"{other.get('base_gguf')}; this check ran in PyTorch: `memft verify DIR RECORDS --runtime {other['runtime']}` "
                     "checks it there")
    elif isinstance(target, dict) and target.get("runtime"):
        notes.append(f"the adapter was written for {target['runtime']} on {target.get('base_gguf')} but is not certified there; "
                     f"this check ran in PyTorch: `memft verify DIR RECORDS --runtime {target['runtime']}` checks it there")
    return VerifyResult(summarize(reports), reports, ld.dtype, certified_dtype, notes)


def _verify_store(store: Path, records: Sequence[Record], generate: str, device: str, dtype: str | None, batch_size: int) -> VerifyResult:
    """verify() on a store: each record by the shard whose ledger holds its key, one shard loaded at a time. A record
    whose key no shard holds is not certified (recall refuses it); its other figures are those of the first shard."""
    import gc

    _, routed, missing = _routed(store, [r.key for r in records], "verify", missing_to_first=True)
    by_key = {r.key: r for r in records}
    got: dict[str, RecordReport] = {}
    notes: list[str] = []
    dtypes: set[tuple[str, str]] = set()
    for name, keys in routed.items():
        res = verify(store / name, [by_key[k] for k in keys], generate, device, dtype, batch_size)
        got |= {r.key: r for r in res.reports}
        notes += [f"{name}: {n}" for n in res.notes]
        dtypes.add((res.dtype, res.certified_dtype))
        del res
        gc.collect()
    gone = set(missing)
    for k in gone:
        r = got[k]
        got[k] = dataclasses.replace(r, certified=False, p_above_half=False, exact=None if r.exact is None else False)
    if gone:
        notes.append(f"{len(gone)} record(s) whose key no shard holds: not certified (a store recalls only the keys its shards hold)")
    reports = [got[r.key] for r in records]
    (now, then), *_ = sorted(dtypes)
    return VerifyResult(summarize(reports), reports, now, then, notes)


def sampling_odds(folder: str | Path | Loaded, records: Sequence[Record], temperature: float, top_p: float = 1.0,
                  top_k: int = 0, samples: int = 0, seed: int = 0, device: str = "auto", dtype: str | None = None,
                  batch_size: int = 64) -> list[dict[str, Any]]:
    """Per record, the exact probability that one sampled generation (temperature, top-p, top-k as in
    `model.generate`) reproduces the value: the product over positions of the target's sampling probability, from
    one teacher-forced pass (memft.checks.sampling). samples > 0 also draws that many generations per record and counts
    exact ones, an empirical check of the computed odds."""
    from memft.checks.sampling import check_sampling, recall_odds, sample_recall
    from memft.model.forward import Runner

    check_sampling(temperature, top_p, top_k)
    ld = folder if isinstance(folder, Loaded) else load_adapter(folder, device, dtype)
    items = encode_all(records, ld.tokenizer, ld.meta.template, ld.meta.key_prefix)
    odds = recall_odds(Runner(ld.model, items, ld.tokenizer.pad_token_id), temperature, top_p, top_k, batch_size)
    hits = sample_recall(ld.model, items, ld.tokenizer, samples, temperature, top_p, top_k, seed, batch_size) if samples else None
    return [
        {"key": e.key, "odds": odds[i].prob, "log_odds": odds[i].log_prob, "weakest_position": odds[i].weakest,
         "weakest_factor": odds[i].per_position[odds[i].weakest], "samples": samples or None,
         "sampled_exact": hits[i] if hits else None}
        for i, e in enumerate(items)
    ]
