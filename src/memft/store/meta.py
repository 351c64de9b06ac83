"""An adapter folder's `memft.json` as one typed record, read and written here only; its defaults are defined here once.

`memft.json` says how to rebuild the base (spec, precision), how prompts were built (template), where the LoRA sits,
the full training config and what that run did, which records the adapter holds (count, set hash, salted digests)
and what was certified. Every module that needs one of those reads an `AdapterMeta`, never the raw JSON.

Format versions (`format` in the file):
    1  memft 0.1.0 up to commit b014fc0: the same sections, no `format` entry. Read unchanged.
    2  adds `format`. Written now for always-on adapters; memft 0.1.0 reads it too (it ignores entries it does not know).
       Since issue 22 it may hold `files` (sha256 of the PEFT weights and config, AdapterMeta.files); a folder
       without it is read unchecked, as before.
    3  adds `activation` ("always" | "keyed"), `invocation` (the text put before every key) and `invocation_tokens`
       (its ids: PEFT's alora_invocation_tokens). Written for keyed adapters only, so that an older memft refuses
       them instead of recalling without the invocation; a folder without these entries reads as "always".
Entries this module does not know (the CLI's `sizing`, `rank_search`, a newer version's) are kept in `extra` (and
`LoraInfo.extra`; `train` is kept whole) and written back unchanged by `write`. A rewrite (append, forget) builds
its memft.json afresh, as memft 0.1.0 did: the write's `sizing` is not carried over.

May import: config, digests, errors, folders (core helpers only; no model code, no torch).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memft.store import folders
from memft.config import ACTIVATIONS, LoraSettings, TrainConfig
from memft.store.digests import DigestScheme
from memft.errors import AdapterError

FILE = "memft.json"
FORMAT = 3  # the newest version read and written (see the module docstring)
ALWAYS_FORMAT = 2  # what an always-on adapter is written as: every memft since 0.1.0 reads it

# Defaults of entries that the first adapters could lack, defined once: every reader goes through AdapterMeta.
DEFAULT_TEMPLATE = "raw"
DEFAULT_SEED = 0
DEFAULT_MAX_TARGET_TOKENS = 256  # the longest greedy generation recall runs when the adapter does not say
SAVED_DTYPES = ("fp32", "bf16", "fp16")  # precisions an adapter can be certified in ("auto" is resolved before)
_SECTIONS = ("base", "lora", "train", "records", "certification")
_KNOWN = {"format", "memft_version", "created", "template", "files", "activation", "invocation", "invocation_tokens", *_SECTIONS}
_LORA_KNOWN = {"rank", "alpha", "preset", "layers", "target_modules", "modules"}


@dataclass(frozen=True)
class BaseInfo:
    spec: str  # the model spec load_base takes ("smollm2-135m", "tiny-random", a folder, a hub id)
    dtype: str  # the precision the base ran in at write time
    device: str | None = None


@dataclass(frozen=True)
class LoraInfo:
    """Where the LoRA sits (resolved layer indices and full module names) and the settings that placed it."""

    rank: int
    layers: tuple[int, ...]
    modules: tuple[str, ...]
    alpha: float | None = None
    preset: str = "probe"
    target_modules: tuple[str, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # entries a newer memft added, written back

    def settings(self) -> LoraSettings:
        """The LoraSettings that put the LoRA here again (the resolved layers, so the same modules are adapted)."""
        return LoraSettings(rank=self.rank, alpha=self.alpha, preset=self.preset, layers=self.layers, target_modules=self.target_modules)

    def placement(self) -> dict[str, Any]:
        """The placement as peft_lora.attach returns it."""
        return {"layers": list(self.layers), "modules": list(self.modules)}


@dataclass(frozen=True)
class RecordsInfo:
    count: int
    hash: str | None = None  # order-independent hash of the record set (DigestScheme.set_hash)
    value_tokens: int | None = None
    max_target_tokens: int = DEFAULT_MAX_TARGET_TOKENS
    digest: dict[str, str] | None = None  # the digest scheme's JSON; None: the sha256 scheme of the first adapters
    digests: tuple[str, ...] | None = None  # sorted record digests; None: not recorded

    @property
    def scheme(self) -> DigestScheme:
        return DigestScheme.from_json(self.digest, FILE)


@dataclass(frozen=True)
class CertificationInfo:
    dtype: str  # the precision certification was computed in (recall and verify load it by default)
    device: str | None = None
    certified: float | None = None  # fraction of records certified
    p_above_half: float | None = None
    min_prob: float | None = None
    failed_keys: tuple[str, ...] = ()


@dataclass
class AdapterMeta:
    base: BaseInfo
    lora: LoraInfo
    records: RecordsInfo
    certification: CertificationInfo
    # The resolved TrainConfig (config.to_json) plus what the run did: steps, certified_at, seconds, loss_init,
    # loss_final, epochs, trained_passes, checked_passes, trained_tokens. Kept as written (a field a newer
    # TrainConfig adds is written back by `write`, and ignored by `train_config()`, which gives the typed config).
    train: dict[str, Any] = field(default_factory=dict)
    template: str = DEFAULT_TEMPLATE
    memft_version: str | None = None
    created: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # other top-level entries (sizing, rank_search, ...)
    format: int = FORMAT
    # {file name: "sha256:<hex>"} of the PEFT files (weights, adapter_config.json), taken at save: every open checks
    # them, so a flipped bit or an edited lora_alpha is a damaged folder, not garbage recalled with exit 0. None in
    # folders saved before it existed (read as they are).
    files: dict[str, str] | None = None
    # "always" (a plain LoRA) | "keyed": the adapter acts only from `invocation` on (memft.prompts.keyed); its prompts are
    # invocation + key, and `invocation_tokens` are the ids PEFT (and llama.cpp's adapter.alora.invocation_tokens) look for.
    activation: str = "always"
    invocation: str | None = None
    invocation_tokens: list[int] | None = None

    @property
    def key_prefix(self) -> str:
        """The text put before every key of this adapter's prompts ("" for an always-on adapter)."""
        return self.invocation if self.activation == "keyed" and self.invocation else ""

    def lora_settings(self) -> LoraSettings:
        """LoraInfo.settings() with this adapter's activation: what puts the same adapter in place again."""
        return dataclasses.replace(self.lora.settings(), activation=self.activation, invocation=self.invocation if self.activation == "keyed" else None)

    @property
    def seed(self) -> int:
        """The seed of the write (the base's seed for tiny-random, the adapter's initialisation)."""
        return int(self.train.get("seed", DEFAULT_SEED))

    def train_config(self, drop: tuple[str, ...] = (), **overrides: Any) -> TrainConfig:
        """The TrainConfig this adapter was written with, less the fields in `drop` (back to their defaults), with
        `overrides` applied (validated as any TrainConfig). Fields this version does not know are ignored."""
        names = {f.name for f in dataclasses.fields(TrainConfig)} - set(drop)
        return TrainConfig(**({k: v for k, v in self.train.items() if k in names} | overrides))

    def with_extra(self, **entries: Any) -> AdapterMeta:
        return dataclasses.replace(self, extra={**self.extra, **entries})

    def to_json(self) -> dict[str, Any]:
        """The object written as memft.json (the layout of format 1 plus `format`)."""
        lora = {"rank": self.lora.rank, "alpha": self.lora.alpha, "preset": self.lora.preset,
                "layers": list(self.lora.layers), "target_modules": _list(self.lora.target_modules), "modules": list(self.lora.modules)}
        rec: dict[str, Any] = {"count": self.records.count, "hash": self.records.hash, "value_tokens": self.records.value_tokens,
                               "max_target_tokens": self.records.max_target_tokens}
        if self.records.digest is not None:
            rec["digest"] = self.records.digest
        if self.records.digests is not None:
            rec["digests"] = list(self.records.digests)
        c = self.certification
        keyed = {"activation": self.activation, "invocation": self.invocation,
                 "invocation_tokens": _list(self.invocation_tokens)} if self.activation == "keyed" else {"activation": "always"}
        return {
            "format": FORMAT if self.activation == "keyed" else min(self.format, ALWAYS_FORMAT),
            "memft_version": self.memft_version,
            "created": self.created,
            "base": dataclasses.asdict(self.base),
            "template": self.template,
            **keyed,
            "lora": {**lora, **{k: v for k, v in self.lora.extra.items() if k not in lora}},
            "train": self.train,
            "records": rec,
            "certification": {"dtype": c.dtype, "device": c.device, "certified": c.certified, "p_above_half": c.p_above_half,
                              "min_prob": c.min_prob, "failed_keys": list(c.failed_keys)},
            **({"files": dict(self.files)} if self.files is not None else {}),
            **self.extra,
        }

    @classmethod
    def from_json(cls, obj: Any, where: str = FILE) -> AdapterMeta:
        """Read memft.json's object (any format up to FORMAT) from the file `where`; a damaged or foreign one is an
        AdapterError naming the file and what is wrong."""
        damaged = "the adapter is damaged, write it again"
        if not isinstance(obj, Mapping) or not all(isinstance(obj.get(k, {}), Mapping) for k in _SECTIONS):
            raise AdapterError(f"{where}: not the JSON object memft writes; {damaged}")
        fmt = obj.get("format", 1)
        if not isinstance(fmt, int) or fmt < 1:
            raise AdapterError(f"{where}: format {fmt!r} is not a memft adapter format; {damaged}")
        if fmt > FORMAT:
            raise AdapterError(f"{where}: format {fmt} was written by a newer memft (this one reads up to {FORMAT}); upgrade memft")
        base, lora, rec, cert = (obj.get(k, {}) for k in ("base", "lora", "records", "certification"))
        try:
            b = BaseInfo(spec=base["spec"], dtype=base.get("dtype", cert.get("dtype")), device=base.get("device"))
            c = CertificationInfo(dtype=cert["dtype"], device=cert.get("device"), certified=cert.get("certified"),
                                  p_above_half=cert.get("p_above_half"), min_prob=cert.get("min_prob"),
                                  failed_keys=tuple(cert.get("failed_keys", ())))
            lo = LoraInfo(rank=lora["rank"], layers=tuple(lora["layers"]), modules=tuple(lora["modules"]), alpha=lora.get("alpha"),
                          preset=lora.get("preset", "probe"), target_modules=_tuple(lora.get("target_modules")),
                          extra={k: v for k, v in lora.items() if k not in _LORA_KNOWN})
            r = RecordsInfo(count=rec["count"], hash=rec.get("hash"), value_tokens=rec.get("value_tokens"),
                            max_target_tokens=int(rec.get("max_target_tokens", DEFAULT_MAX_TARGET_TOKENS)),
                            digest=rec.get("digest"), digests=_tuple(rec.get("digests")))
        except KeyError as e:
            raise AdapterError(f"{where} lacks {e}; {damaged}") from None
        except (TypeError, ValueError) as e:
            raise AdapterError(f"{where}: a malformed entry ({e}); {damaged}") from None
        if not isinstance(b.spec, str) or c.dtype not in SAVED_DTYPES:
            raise AdapterError(f"{where}: base {b.spec!r} / dtype {c.dtype!r} is not a model spec and {'|'.join(SAVED_DTYPES)}; {damaged}")
        template = obj.get("template", DEFAULT_TEMPLATE)
        files = obj.get("files")
        if files is not None and not (isinstance(files, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())):
            raise AdapterError(f"{where}: `files` is not a map of file names to digests; {damaged}")
        activation, invocation, tokens = obj.get("activation", "always"), obj.get("invocation"), obj.get("invocation_tokens")
        if activation not in ACTIVATIONS or (activation == "keyed" and not (
                isinstance(invocation, str) and invocation and isinstance(tokens, list) and tokens and all(isinstance(t, int) for t in tokens))):
            raise AdapterError(f"{where}: activation {activation!r} with invocation {invocation!r} / tokens {tokens!r} is not what memft "
                               f"writes (always, or keyed with an invocation text and its token ids); {damaged}")
        return cls(base=b, lora=lo, records=r, certification=c, train=dict(obj.get("train", {})), template=template,
                   memft_version=obj.get("memft_version"), created=obj.get("created"),
                   extra={k: v for k, v in obj.items() if k not in _KNOWN}, format=FORMAT, files=None if files is None else dict(files),
                   activation=activation, invocation=invocation if activation == "keyed" else None,
                   invocation_tokens=list(tokens) if activation == "keyed" else None)


def _tuple(x: Any) -> tuple | None:
    return None if x is None else tuple(x)


def _list(x: Any) -> list | None:
    return None if x is None else list(x)


def read_json(folder: str | Path) -> dict[str, Any]:
    """memft.json of `folder` as the JSON object on disk, after putting back a version an interrupted swap left
    (memft.store.folders). Errors say the folder is missing, foreign or damaged."""
    folder = Path(folder)
    folders.recover_for_reading(folder)
    if not folder.is_dir():
        raise AdapterError(f"{folder}: no such adapter folder; give the --out folder of `memft write`")
    path = folder / FILE
    if not path.exists():
        from memft.store import shards

        if shards.is_store(folder):
            raise shards.store_error(folder)
        raise AdapterError(f"{folder}: not a memft adapter (no {FILE}); give the --out folder of `memft write`")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AdapterError(f"{path}: unreadable ({e}); the adapter is damaged, write it again") from None


def parse(data: bytes, where: str | Path) -> AdapterMeta:
    """memft.json's bytes (read by memft.store.folders.read_consistent) as an AdapterMeta; `where` names the file in errors."""
    try:
        obj = json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AdapterError(f"{where}: unreadable ({e}); the adapter is damaged, write it again") from None
    return AdapterMeta.from_json(obj, str(where))


def read(folder: str | Path) -> AdapterMeta:
    """The AdapterMeta of an adapter folder (any format this version reads)."""
    return AdapterMeta.from_json(read_json(folder), f"{Path(folder) / FILE}")


def dumps(meta: AdapterMeta) -> str:
    return json.dumps(meta.to_json(), indent=2, ensure_ascii=False) + "\n"


def write(folder: str | Path, meta: AdapterMeta) -> None:
    """Replace memft.json of an existing adapter atomically (temp file + rename)."""
    tmp = Path(folder) / f".{FILE}.tmp-{os.getpid()}"
    tmp.write_text(dumps(meta), encoding="utf-8")
    os.replace(tmp, Path(folder) / FILE)
