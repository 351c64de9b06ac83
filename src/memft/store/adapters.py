"""Adapter folders through PEFT: saving and loading them atomically with `memft.json`, and their fingerprints
(where the LoRA layers go and attaching them: memft.model.peft_lora).

An adapter folder is a standard PEFT adapter (`PeftModel.from_pretrained` loads it) plus `memft.json` (the typed
`memft.store.meta.AdapterMeta`), which says how to rebuild the base (spec, dtype), how prompts were built (template) and
what was certified.

Core layer (store); torch and peft inside the functions that need them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memft.store import folders, shards
from memft.store import meta as meta_mod
from memft.errors import AdapterError, TrainingError
from memft.store.meta import AdapterMeta
from memft.model.base import portable_name

META = meta_mod.FILE
CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
LEDGER = "ledger.json"  # read here with the rest of a version; parsed and checked by memft.store.ledger
DAMAGED = "the adapter is damaged: restore the folder from a backup or write it again"


def check_out_dir(out: Path) -> None:
    """Refuse, before any work, to write over something that is not a memft adapter."""
    if out.exists() and not out.is_dir():
        raise AdapterError(f"--out {out}: is a file; give a folder for the adapter")
    if out.is_dir() and any(out.iterdir()) and not (out / META).exists() and not shards.is_store(out):  # a store: replaced whole
        raise AdapterError(f"--out {out}: the folder holds files that are not a memft adapter; choose another folder or empty it")


def write_atomic(out: Path, fill: Callable[[Path], None]) -> None:
    """Fill a fresh sibling folder, then swap it in under the folder's lock (memft.store.folders): readers see the old
    adapter or the new one, never a mixture, and files the user keeps there are carried over."""
    out = Path(out)
    with folders.locked(out):
        check_out_dir(out)
        folders.swap_in(out, fill)


def save(peft_model: Any, out: Path, meta: AdapterMeta, files: dict[str, str] | None = None) -> AdapterMeta:
    """Save the adapter, memft.json and any extra text `files` (name -> content) as one atomic swap -> the meta
    saved (with the fingerprints of the PEFT files, `AdapterMeta.files`).
    Weights that are not all finite are refused (TrainingError): a diverged adapter never replaces a good one."""
    check_finite(peft_model)
    saved = [meta]
    _name_base(peft_model, portable_name(meta.base.spec))

    def fill(tmp: Path) -> None:
        # memft never resizes the vocabulary; "auto" would look the base's name up (on the hub, for a hub id)
        peft_model.save_pretrained(tmp, save_embedding_layers=False)
        saved[0] = dataclasses.replace(meta, files={n: file_digest((tmp / n).read_bytes()) for n in (WEIGHTS, CONFIG)})
        (tmp / META).write_text(meta_mod.dumps(saved[0]), encoding="utf-8")
        for name, text in (files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")

    write_atomic(Path(out), fill)
    return saved[0]


def file_digest(data: bytes) -> str:
    """
    >>> file_digest(b"")[:19]
    'sha256:e3b0c44298fc'
    """
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Version:
    """One version of an adapter folder, read whole (memft.store.folders.read_consistent) and checked: its memft.json,
    the PEFT files' bytes, and ledger.json's bytes (None: the folder has none)."""

    folder: Path
    meta: AdapterMeta
    config: bytes
    weights: bytes
    ledger: bytes | None


def read_version(folder: str | Path) -> Version:
    """Read memft.json, the PEFT files and ledger.json of one version of `folder` (no lock: a save in between is
    detected and read again), after cleaning what an interrupted save left. Errors (missing, foreign, damaged,
    edited: the fingerprints of AdapterMeta.files) are AdapterErrors saying so."""
    folder = folders.resolve(folder)
    folders.recover_for_reading(folder)
    if not folder.is_dir():
        raise AdapterError(f"{folder}: no such adapter folder; give the --out folder of `memft write`")
    raw = folders.read_consistent(folder, (META, CONFIG, WEIGHTS, LEDGER))
    if raw[META] is None:
        if shards.is_store(folder):
            raise shards.store_error(folder)
        raise AdapterError(f"{folder}: not a memft adapter (no {META}); give the --out folder of `memft write`")
    meta = meta_mod.parse(raw[META], folder / META)
    check_files(folder, meta, raw[CONFIG], raw[WEIGHTS])
    for name, want in (meta.files or {}).items():
        if name in raw and file_digest(raw[name] or b"") != want:
            raise AdapterError(f"{folder / name}: its contents differ from the fingerprint memft.json took at save; {DAMAGED}")
    return Version(folder, meta, raw[CONFIG], raw[WEIGHTS], raw[LEDGER])


def _name_base(peft_model: Any, name: str) -> None:
    """Give the adapter's config and the base model the portable name PEFT writes into adapter_config.json and the
    README (an adapter loaded from an older folder keeps the name it was saved with otherwise: a cache path)."""
    for cfg in getattr(peft_model, "peft_config", {}).values():
        cfg.base_model_name_or_path = name
    base = peft_model.get_base_model()
    base.name_or_path = base.config._name_or_path = name


def check_finite(peft_model: Any) -> None:
    import torch

    bad = [n for n, p in peft_model.named_parameters() if (p.requires_grad or "lora_" in n) and not bool(torch.isfinite(p).all())]
    if bad:
        raise TrainingError(f"training diverged: {len(bad)} LoRA weight tensor(s) hold NaN or infinity (first: {bad[0]}); "
                            "nothing was saved and no adapter was replaced; lower --lr (or --alpha)")


def read_meta(folder: str | Path) -> AdapterMeta:
    """memft.json of an adapter folder (memft.store.meta.read)."""
    return meta_mod.read(folder)


def check_files(folder: str | Path, meta: AdapterMeta, config: bytes | None, weights: bytes | None) -> None:
    """Before loading a model: the PEFT files (their bytes; None: missing) are there, readable, and place the LoRA
    where memft.json says."""
    folder = Path(folder)
    cfg_path, weights_path = folder / CONFIG, folder / WEIGHTS
    fix = DAMAGED
    if config is None:
        raise AdapterError(f"{cfg_path}: missing; {fix}")
    try:
        cfg = json.loads(config.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AdapterError(f"{cfg_path}: unreadable ({type(e).__name__}); {fix}") from None
    if not isinstance(cfg, dict) or cfg.get("r") != meta.lora.rank or not _same_modules(cfg.get("target_modules"), list(meta.lora.modules)):
        raise AdapterError(f"{cfg_path}: its rank or target modules differ from memft.json; {fix}")
    if (cfg.get("alora_invocation_tokens") or None) != (meta.invocation_tokens if meta.activation == "keyed" else None):
        raise AdapterError(f"{cfg_path}: its alora_invocation_tokens {cfg.get('alora_invocation_tokens')} differ from memft.json's "
                           f"activation {meta.activation!r} (invocation tokens {meta.invocation_tokens}); {fix}")
    if weights is None:
        raise AdapterError(f"{weights_path}: missing; {fix}")
    problem = safetensors_problem(weights)
    if problem:
        raise AdapterError(f"{weights_path}: {problem}; {fix}")


def _same_modules(peft_names: Any, ours: Any) -> bool:
    """PEFT saves target modules as given or shortened to their last name part: both match memft.json's full names."""
    if not isinstance(peft_names, list) or not isinstance(ours, list):
        return False
    given, full = set(peft_names), set(ours)
    return given == full or given == {n.rsplit(".", 1)[-1] for n in full}


def safetensors_problem(data: bytes) -> str | None:
    """Why a .safetensors file's bytes are not a whole file (None if they are), as the safetensors library itself
    reads them (header, each tensor's byte range, the whole file covered), before the base model is loaded."""
    from safetensors import SafetensorError, deserialize  # the library's reader, without torch

    if not data:
        return "empty"
    try:
        tensors = deserialize(data)
    except SafetensorError as e:
        return f"unreadable ({str(e).removeprefix('Error while deserializing').lstrip(': ')})"
    return None if tensors else "holds no tensors"


def load(version: Version, base_model: Any, trainable: bool = False) -> Any:
    """Load the PEFT adapter of `version` (read_version) onto a freshly loaded base (frozen base, eval mode): from
    the bytes read, through a private copy, so a save of the folder meanwhile cannot mix two versions.

    trainable=True: the LoRA weights can be trained further (append, forget); they are kept in fp32 as in attach.
    """
    with tempfile.TemporaryDirectory(prefix="memft-load-") as tmp:
        (Path(tmp) / CONFIG).write_bytes(version.config)
        (Path(tmp) / WEIGHTS).write_bytes(version.weights)
        return _load_peft(tmp, version.folder, base_model, trainable)


def _load_peft(path: str, folder: Path, base_model: Any, trainable: bool) -> Any:
    from peft import PeftModel

    try:
        model = PeftModel.from_pretrained(base_model, path, is_trainable=trainable)
    except Exception as e:  # noqa: BLE001 - PEFT raises many types for a damaged folder; the user needs one line
        raise AdapterError(f"{folder}: PEFT cannot load the adapter ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}); "
                           "it is damaged or made for another base: restore it from a backup or write it again") from None
    if trainable:
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    model.eval()
    return model
