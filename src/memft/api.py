"""The Python API: write records into an adapter, recall a key, verify a record set. The CLI only calls these.

Core layer, its top (the facade the CLI and the other layers call): may import the core, the ledger (memory
store) and memft.checks.sampling (a check, for sampling_odds).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memft import __version__, adapters, folders, preserve
from memft.config import LoraSettings, RuntimeConfig, TrainConfig, to_json, write_activation
from memft.encoding import Encoded, decode_value, encode_all, prompt_ids
from memft.errors import AdapterError, ConfigError, RecordsError, TrainingError
from memft.keyed import invocation_ids
from memft.memory.ledger import LEDGER, Ledger, fingerprint, next_ledger, next_scheme
from memft.memory.ledger import dumps as ledger_dumps
from memft.meta import AdapterMeta, BaseInfo, CertificationInfo, LoraInfo, RecordsInfo
from memft.metrics import RecordReport, summarize
from memft.modeling import Base, load_base
from memft.parity import check_parity
from memft.records import Record, check_key  # noqa: F401 - check_key: part of the API (recall's key check)


@dataclass
class WriteResult:
    out: Path
    summary: dict[str, Any]  # see memft.metrics.summarize
    reports: list[RecordReport]
    meta: AdapterMeta  # what was saved as memft.json
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def all_certified(self) -> bool:
        return self.summary["certified"] == 1.0


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


@dataclass
class Fit:
    """An adapter trained in memory (not saved): the PEFT model, its records' reports and the training result."""

    model: Any
    placement: dict[str, Any]
    reports: list[RecordReport]
    summary: dict[str, Any]
    train: Any  # memft.train.TrainResult
    value_tokens: int
    max_target_tokens: int


def fit(
    records: Sequence[Record],
    base: Base,
    lora: LoraSettings,
    train: TrainConfig,
    on_step: Callable[[dict[str, float]], None] | None = None,
    generate: str = "uncertified",
    items: Sequence[Encoded] | None = None,
) -> Fit:
    """Attach a fresh adapter to `base`, train it on `records`, evaluate every record. Call `fit.model.unload()`
    to give the base back without LoRA layers. `items`: the records already encoded and checked (prepare)."""
    from memft.evaluate import evaluate
    from memft.train import train as train_loop

    items = list(items) if items is not None else prepare(records, base, lora, train)
    tokens = invocation_ids(lora.key_prefix, base.tokenizer) if lora.key_prefix else None
    peft_model, placement = adapters.attach(base.model, lora, seed=train.seed, invocation_tokens=tokens)
    try:
        start = min(placement["layers"])
        keep = preserve.build(peft_model, base.tokenizer, train.preserve, train.preserve_text, start)
        res = train_loop(peft_model, items, base.tokenizer.pad_token_id, train, start, on_step, preserve=keep)
        reports = evaluate(peft_model, base.tokenizer, items, generate=generate, batch_size=train.batch_size, stats=res.final)
    except BaseException:
        peft_model.unload()  # never leave LoRA layers in a base the caller may reuse
        raise
    return Fit(peft_model, placement, reports, summarize(reports), res, sum(e.n_value for e in items), max(len(e.targets) for e in items))


def prepare(records: Sequence[Record], base: Base, lora: LoraSettings, train: TrainConfig) -> list[Encoded]:
    """The records encoded and every check made before training (check_items, the rank against the adapted
    layers, --preserve against keyed activation): the input errors a write can meet, raised before it locks or
    trains anything."""
    if lora.activation == "keyed" and train.preserve:
        raise ConfigError("--preserve has nothing to do with --activation keyed: text without the invocation gets the base's "
                          "predictions exactly; leave --preserve out (or use --activation always)")
    items = encode_all(records, base.tokenizer, train.template, lora.key_prefix)
    check_items(items, base, train.template, lora.key_prefix)
    _, names = adapters.target_names(base.model, lora)
    adapters.check_rank(base.model, names, lora.rank, warn_narrow=False)
    return items


def check_items(items: Sequence[Encoded], base: Base, template: str, invocation: str = "") -> None:
    """Everything checked before training: reachable targets, no two records needing different tokens after the
    same text, and train/recall parity (one-line errors by record; with a keyed adapter's `invocation`, also that
    it switches on where it was trained to)."""
    from memft.encoding import target_conflicts

    check_reachable(items, base)
    clash = target_conflicts(items)
    if clash:
        a, b, pos = clash
        raise RecordsError(f"records {a!r} and {b!r} need different tokens after the same text (at value position {pos} of "
                           f"{b!r}), so greedy decoding cannot give back both; change one of the keys so neither key+value "
                           "starts with the other key")
    check_parity(items, base.tokenizer, template, base.model, invocation)


def check_reachable(items: Sequence[Encoded], base: Base) -> None:
    """Refuse targets that greedy decoding can never produce with this base (see modeling.unreachable_tokens)."""
    from memft.modeling import unreachable_tokens

    twins = unreachable_tokens(base.model)
    for e in items:
        for pos, t in enumerate(e.targets):
            if t in twins:
                # the key and a position only: a token id of the value would give part of the value away
                raise RecordsError(
                    f"record {e.key!r}: the value's token at position {pos} can never be produced by greedy decoding with "
                    f"{base.spec} (its output-layer row equals another token's, and ties go to the lower id); "
                    "no adapter can memorize it: change the value there"
                )


def write(
    records: Sequence[Record],
    out: str | Path,
    model: str = "smollm2-135m",
    lora: LoraSettings | None = None,
    train: TrainConfig | None = None,
    runtime: RuntimeConfig | None = None,
    base: Base | None = None,
    on_step: Callable[[dict[str, float]], None] | None = None,
    extra: dict[str, Any] | None = None,
) -> WriteResult:
    """Train a LoRA adapter until every record is certified (or the step budget ends) and save it to `out`.
    `extra`: more top-level entries for memft.json (e.g. the CLI's `sizing`).

    The adapter is saved in either case; `result.all_certified` says whether every record is recalled exactly.
    Pass a loaded `base` to reuse it across writes (its weights are restored afterwards). Without `lora`: the default
    LoraSettings with the write's activation (config.write_activation: keyed, or always when `train.preserve` is set).
    """
    train, runtime = train or TrainConfig(), runtime or RuntimeConfig()
    lora = lora or LoraSettings(activation=write_activation(None, train.preserve))
    out = folders.check_location(out)  # the real folder, once (a symlinked alias locks and swaps the folder itself)
    adapters.check_out_dir(out)  # before any work: never train for minutes and then refuse to save
    own_base = base is None
    base = base or load_base(model, runtime.device, runtime.dtype, seed=train.seed)
    items = prepare(records, base, lora, train)  # input errors before the lock: nothing is left beside --out
    # The folder's lock is held from the check to the swap: a second writer waits instead of being lost.
    with folders.locked(out):
        adapters.check_out_dir(out)  # again: another process may have filled it meanwhile
        # a write's report needs no more than where a failing record fails (see memft.evaluate, "divergence")
        f = fit(records, base, lora, train, stop_on_divergence(on_step), generate="divergence", items=items)
        try:
            result = save_fit(f, records, base, lora, train, out, extra=extra)
        finally:
            if not own_base:
                f.model.unload()  # give the caller its base back without LoRA layers
    return result


def stop_on_divergence(on_step: Callable[[dict[str, float]], None] | None) -> Callable[[dict[str, float]], None]:
    """Wrap a training callback: a non-finite loss stops training at once with a TrainingError (nothing saved),
    instead of running the whole budget into NaN weights."""

    def guarded(row: dict[str, float]) -> None:
        if not math.isfinite(row["loss"]):
            raise TrainingError(f"training diverged at step {int(row['step'])} (loss {row['loss']}); nothing was saved and no "
                                "adapter was replaced; lower --lr (or --alpha)")
        if on_step is not None:
            on_step(row)

    return guarded


def save_fit(f: Fit, records: Sequence[Record], base: Base, lora: LoraSettings, train: TrainConfig, out: Path,
             extra: dict[str, Any] | None = None, old_ledger: Ledger | None = None, changed: set[str] | None = None,
             event: dict[str, Any] | None = None) -> WriteResult:
    """Save a trained adapter atomically with its memft.json (what it holds, how it was made and certified) and its
    ledger (memft.memory.ledger): `old_ledger` is the one it replaces, `changed` the keys added or changed now (default:
    all), `event` the history line (default: a fresh write). Record digests are salted and slow (memft.digests;
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


@dataclass
class Loaded:
    """An adapter on its base, ready to recall: the PEFT model, tokenizer, and memft.json."""

    model: Any  # the PEFT model: LoRA layers on base.model
    meta: AdapterMeta
    base: Base  # the base it sits on: tokenizer, spec, device, dtype
    folder: Path | None = None
    ledger: Ledger | None = None  # the ledger read with the same version as the weights (None: the folder has none)

    @property
    def tokenizer(self) -> Any:
        return self.base.tokenizer

    @property
    def dtype(self) -> str:
        return self.base.dtype

    @property
    def device(self) -> str:
        return self.base.device


def load_adapter(folder: str | Path, device: str = "auto", dtype: str | None = None, trainable: bool = False) -> Loaded:
    """Load an adapter folder on the base named in its memft.json (dtype: the certified one unless given).

    memft.json, ledger.json and the weights are read as one version (adapters.read_version) and cross-checked: a
    folder whose memft.json lists record digests but has no ledger.json is damaged (without the ledger, recall
    could not tell a held key from an invented one).
    trainable=True: its LoRA weights can be trained further (append, forget)."""
    from memft.memory import ledger

    v = adapters.read_version(folder)
    book = None
    if v.ledger is not None:
        book = ledger.parse(v.ledger, v.folder / LEDGER)
        ledger.check_against(v.meta, book, v.folder)
    elif v.meta.records.digests is not None:
        raise AdapterError(f"{v.folder}: {LEDGER} is missing but memft.json lists the records' digests; {adapters.DAMAGED}")
    base = load_base(v.meta.base.spec, device, dtype or v.meta.certification.dtype, seed=v.meta.seed)
    return Loaded(adapters.load(v, base.model, trainable), v.meta, base, v.folder, book)


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
    from memft.memory import ledger

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


def recall_many(folder: str | Path | Loaded, keys: Sequence[str], raw: bool = False, batch_size: int = 32) -> list[Recalled]:
    """recall() for many keys with one model load and batched decoding, in the order given."""
    from memft.evaluate import greedy, teacher_forced
    from memft.forward import Runner

    for i, k in enumerate(keys):
        check_key(k, f"key {i + 1}" if len(keys) > 1 else "key")
    ld = folder if isinstance(folder, Loaded) else load_adapter(folder)
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
        # the digest last: a slow one (memft.digests) is paid only for a value that could be certified
        ok = is_held and bool(gen) and gen[-1] == eos and p.key not in failed and (digests is None or scheme.digest(Record(p.key, value)) in digests)
        done[p.key] = Recalled(p.key, value, ok, min(stats[i].prob) if gen else 0.0, is_held,
                               [] if is_held else nearest_keys(p.key, held or []))
    return [done.get(k) or Recalled(k, "", False, 0.0, False, nearest_keys(k, held or [])) for k in keys]


def verify(
    folder: str | Path | Loaded,
    records: Sequence[Record],
    generate: str = "uncertified",
    device: str = "auto",
    dtype: str | None = None,
    batch_size: int = 64,
) -> VerifyResult:
    """Certify every record in one teacher-forced pass; generate greedily where asked (see evaluate())."""
    from memft.evaluate import evaluate

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


def sampling_odds(folder: str | Path | Loaded, records: Sequence[Record], temperature: float, top_p: float = 1.0,
                  top_k: int = 0, samples: int = 0, seed: int = 0, device: str = "auto", dtype: str | None = None,
                  batch_size: int = 64) -> list[dict[str, Any]]:
    """Per record, the exact probability that one sampled generation (temperature, top-p, top-k as in
    `model.generate`) reproduces the value: the product over positions of the target's sampling probability, from
    one teacher-forced pass (memft.checks.sampling). samples > 0 also draws that many generations per record and counts
    exact ones, an empirical check of the computed odds."""
    from memft.checks.sampling import check_sampling, recall_odds, sample_recall
    from memft.forward import Runner

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
