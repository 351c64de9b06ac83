"""The Python API: write records into an adapter, recall a key, verify a record set. The CLI only calls these."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memft import __version__, adapters, folders
from memft.config import LoraSettings, RuntimeConfig, TrainConfig, to_json
from memft.encoding import Encoded, decode_value, encode_all, prompt_ids
from memft.errors import AdapterError, RecordsError
from memft.ledger import LEDGER, Ledger, next_ledger
from memft.ledger import dumps as ledger_dumps
from memft.metrics import RecordReport, summarize
from memft.modeling import Base, load_base
from memft.parity import check_parity
from memft.records import Record, records_hash


@dataclass
class WriteResult:
    out: Path
    summary: dict[str, Any]  # see memft.metrics.summarize
    reports: list[RecordReport]
    meta: dict[str, Any]  # what was saved as memft.json
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

    def to_json(self) -> dict[str, Any]:
        return {
            **self.summary,
            "dtype": self.dtype,
            "certified_dtype": self.certified_dtype,
            "notes": self.notes,
            "per_record": [r.to_json() for r in self.reports],
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
) -> Fit:
    """Attach a fresh adapter to `base`, train it on `records`, evaluate every record. Call `fit.model.unload()`
    to give the base back without LoRA layers."""
    from memft.evaluate import evaluate
    from memft.train import train as train_loop

    items = encode_all(records, base.tokenizer, train.template)
    check_items(items, base, train.template)
    peft_model, placement = adapters.attach(base.model, lora, seed=train.seed)
    try:
        res = train_loop(peft_model, items, base.tokenizer.pad_token_id, train, min(placement["layers"]), on_step)
        reports = evaluate(peft_model, base.tokenizer, items, generate=generate, batch_size=train.batch_size)
    except BaseException:
        peft_model.unload()  # never leave LoRA layers in a base the caller may reuse
        raise
    return Fit(peft_model, placement, reports, summarize(reports), res, sum(e.n_value for e in items), max(len(e.targets) for e in items))


def check_items(items: Sequence[Encoded], base: Base, template: str) -> None:
    """Everything checked before training: reachable targets and train/recall parity (one-line errors by record)."""
    check_reachable(items, base)
    check_parity(items, base.tokenizer, template, base.model)


def check_reachable(items: Sequence[Encoded], base: Base) -> None:
    """Refuse targets that greedy decoding can never produce with this base (see modeling.unreachable_tokens)."""
    from memft.modeling import unreachable_tokens

    twins = unreachable_tokens(base.model)
    for e in items:
        for pos, t in enumerate(e.targets):
            if t in twins:
                raise RecordsError(
                    f"record {e.key!r}: target token {t} at position {pos} can never be produced by greedy decoding with "
                    f"{base.spec} (its output-layer row equals token {twins[t]}'s, and ties go to the lower id); "
                    "no adapter can memorize it: replace that token"
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
) -> WriteResult:
    """Train a LoRA adapter until every record is certified (or the step budget ends) and save it to `out`.

    The adapter is saved in either case; `result.all_certified` says whether every record is recalled exactly.
    Pass a loaded `base` to reuse it across writes (its weights are restored afterwards).
    """
    lora, train, runtime = lora or LoraSettings(), train or TrainConfig(), runtime or RuntimeConfig()
    out = Path(out)
    # The folder's lock is held from the check to the swap: a second writer waits instead of being lost.
    with folders.locked(out):
        adapters.check_out_dir(out)  # before any work: never train for minutes and then refuse to save
        own_base = base is None
        base = base or load_base(model, runtime.device, runtime.dtype, seed=train.seed)
        f = fit(records, base, lora, train, on_step)
        try:
            result = save_fit(f, records, base, lora, train, out)
        finally:
            if not own_base:
                f.model.unload()  # give the caller its base back without LoRA layers
    return result


def save_fit(f: Fit, records: Sequence[Record], base: Base, lora: LoraSettings, train: TrainConfig, out: Path,
             extra: dict[str, Any] | None = None, old_ledger: Ledger | None = None, changed: set[str] | None = None,
             event: dict[str, Any] | None = None) -> WriteResult:
    """Save a trained adapter atomically with its memft.json (what it holds, how it was made and certified) and its
    ledger (memft.ledger): `old_ledger` is the one it replaces, `changed` the keys added or changed now (default:
    all), `event` the history line (default: a fresh write)."""
    res, summary, reports = f.train, f.summary, f.reports
    now = _now()
    changed = {r.key for r in records} if changed is None else changed
    event = event or {"op": "write", "added": len(records), "updated": 0, "removed": 0}
    event = {**event, "held": len(records), "steps": res.steps, "certified_at": res.certified_at, "seconds": round(res.seconds, 3),
             "certified": summary["certified"], "min_prob": summary["min_prob"]}
    book = next_ledger(old_ledger, records, {r.key: r for r in reports}, changed, now, event)
    meta = {
        "memft_version": __version__,
        "created": now,
        "base": {"spec": base.spec, "dtype": base.dtype, "device": base.device},
        "template": train.template,
        "lora": {**to_json(lora), **f.placement},
        "train": {
            **to_json(train),
            "steps": res.steps,
            "certified_at": res.certified_at,
            "seconds": round(res.seconds, 3),
            "loss_init": res.loss_init,
            "loss_final": summary["loss"],
        },
        "records": {
            "count": len(records),
            "hash": records_hash(records),
            "value_tokens": f.value_tokens,
            "max_target_tokens": f.max_target_tokens,
            "digests": sorted(r.digest() for r in records),
        },
        "certification": {
            "dtype": base.dtype,
            "device": base.device,
            "certified": summary["certified"],
            "p_above_half": summary["p_above_half"],
            "min_prob": summary["min_prob"],
            "failed_keys": [r.key for r in reports if not r.certified],
        },
        **(extra or {}),
    }
    adapters.save(f.model, Path(out), meta, files={LEDGER: ledger_dumps(book)})
    return WriteResult(out=out, summary=summary, reports=reports, meta=meta, history=res.history)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Loaded:
    """An adapter on its base, ready to recall: the PEFT model, tokenizer, and memft.json."""

    model: Any  # the PEFT model: LoRA layers on base.model
    meta: dict[str, Any]
    base: Base  # the base it sits on: tokenizer, spec, device, dtype
    folder: Path | None = None

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

    trainable=True: its LoRA weights can be trained further (append, forget)."""
    meta = adapters.read_meta(folder)
    try:
        spec = meta["base"]["spec"]
        dtype = dtype or meta["certification"]["dtype"]
    except KeyError as e:
        raise AdapterError(f"{folder}/memft.json lacks {e}; the adapter is damaged, write it again") from None
    base = load_base(spec, device, dtype, seed=meta.get("train", {}).get("seed", 0))
    return Loaded(adapters.load(folder, base.model, trainable), meta, base, Path(folder))


@dataclass
class Recalled:
    key: str
    value: str
    certified: bool  # the recalled (key, value) is one that was certified when the adapter was written
    min_prob: float  # smallest probability greedy decoding gave a chosen token


def recall(folder: str | Path | Loaded, key: str) -> Recalled:
    """Greedy-decode the value stored under `key` (no context, no retrieval: only the adapter's weights)."""
    from memft.evaluate import greedy, teacher_forced
    from memft.forward import Runner

    ld = folder if isinstance(folder, Loaded) else load_adapter(folder)
    prompt = prompt_ids(key, ld.tokenizer, ld.meta.get("template", "raw"))
    limit = int(ld.meta.get("records", {}).get("max_target_tokens", 256))
    probe = Encoded(key=key, prompt=prompt, targets=(ld.tokenizer.eos_token_id,))
    gen = greedy(ld.model, [probe], ld.tokenizer, max_new=limit)[0]
    value = decode_value(gen, ld.tokenizer)
    # min_prob: one teacher-forced pass over what was generated gives each chosen token's probability.
    stats = teacher_forced(Runner(ld.model, [Encoded(key, prompt, tuple(gen))], ld.tokenizer.pad_token_id))[0]
    digests = set(ld.meta.get("records", {}).get("digests", []))
    failed = set(ld.meta.get("certification", {}).get("failed_keys", []))
    ok = Record(key=key, value=value).digest() in digests and key not in failed and bool(gen) and gen[-1] == ld.tokenizer.eos_token_id
    return Recalled(key=key, value=value, certified=ok, min_prob=min(stats.prob))


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
    items = encode_all(records, ld.tokenizer, ld.meta.get("template", "raw"))
    reports = evaluate(ld.model, ld.tokenizer, items, generate=generate, batch_size=batch_size)
    certified_dtype = ld.meta.get("certification", {}).get("dtype", "fp32")
    notes = []
    if ld.dtype != certified_dtype:
        notes.append(
            f"verified in {ld.dtype} but certified in {certified_dtype} at write time: "
            "these verdicts are for the precision used now"
        )
    return VerifyResult(summarize(reports), reports, ld.dtype, certified_dtype, notes)


def sampling_odds(folder: str | Path | Loaded, records: Sequence[Record], temperature: float, top_p: float = 1.0,
                  top_k: int = 0, samples: int = 0, seed: int = 0, device: str = "auto", dtype: str | None = None,
                  batch_size: int = 64) -> list[dict[str, Any]]:
    """Per record, the exact probability that one sampled generation (temperature, top-p, top-k as in
    `model.generate`) reproduces the value: the product over positions of the target's sampling probability, from
    one teacher-forced pass (memft.sampling). samples > 0 also draws that many generations per record and counts
    exact ones, an empirical check of the computed odds."""
    from memft.forward import Runner
    from memft.sampling import check_sampling, recall_odds, sample_recall

    check_sampling(temperature, top_p, top_k)
    ld = folder if isinstance(folder, Loaded) else load_adapter(folder, device, dtype)
    items = encode_all(records, ld.tokenizer, ld.meta.get("template", "raw"))
    odds = recall_odds(Runner(ld.model, items, ld.tokenizer.pad_token_id), temperature, top_p, top_k, batch_size)
    hits = sample_recall(ld.model, items, ld.tokenizer, samples, temperature, top_p, top_k, seed, batch_size) if samples else None
    return [
        {"key": e.key, "odds": odds[i].prob, "log_odds": odds[i].log_prob, "weakest_position": odds[i].weakest,
         "weakest_factor": odds[i].per_position[odds[i].weakest], "samples": samples or None,
         "sampled_exact": hits[i] if hits else None}
        for i, e in enumerate(items)
    ]
