"""LoRA adapters through PEFT: where they go (presets), and saving/loading them atomically with `memft.json`.

An adapter folder is a standard PEFT adapter (`PeftModel.from_pretrained` loads it) plus `memft.json` (the typed
`memft.meta.AdapterMeta`), which says how to rebuild the base (spec, dtype), how prompts were built (template) and
what was certified.

Core layer. May import: config, errors, folders, meta, modeling; torch and peft inside the functions that need them.
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

from torch import nn

from memft import folders
from memft import meta as meta_mod
from memft.config import LoraSettings
from memft.errors import AdapterError, ConfigError, TrainingError, warn
from memft.meta import AdapterMeta
from memft.modeling import portable_name

META = meta_mod.FILE
CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
LEDGER = "ledger.json"  # read here with the rest of a version; parsed and checked by memft.memory.ledger
DAMAGED = "the adapter is damaged: restore the folder from a backup or write it again"


def layer_stack(lm: nn.Module) -> nn.ModuleList:
    """The list of decoder blocks of a causal LM (Llama-style `model.layers`, GPT-2-style `transformer.h`, ...)."""
    n = getattr(lm.config, "num_hidden_layers", None) or getattr(lm.config, "n_layer", None)
    for _, mod in lm.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) == n:
            return mod
    raise AdapterError(f"cannot find the decoder blocks of {type(lm).__name__}; give --target-modules explicitly")


def _stack_prefix(lm: nn.Module, stack: nn.ModuleList) -> str:
    return next(name for name, mod in lm.named_modules() if mod is stack)


def default_probe_layer(n_layers: int) -> int:
    """The paper's probe depth: about two thirds of the way up (layer 20 of 30)."""
    return (2 * n_layers) // 3


def resolve_layers(n_layers: int, lora: LoraSettings) -> tuple[int, ...]:
    if lora.layers is not None:
        bad = [i for i in lora.layers if not -n_layers <= i < n_layers]
        if bad:
            raise ConfigError(f"--layers {','.join(map(str, bad))} out of range: the model has {n_layers} decoder layers (0..{n_layers - 1})")
        return tuple(sorted({i % n_layers for i in lora.layers}))
    if lora.preset == "probe":
        return (default_probe_layer(n_layers),)
    if lora.preset == "upper":
        return tuple(range(default_probe_layer(n_layers), n_layers))
    if lora.preset == "top":
        return tuple(range(n_layers - top_layers(n_layers), n_layers))
    return tuple(range(n_layers))


def top_layers(n_layers: int) -> int:
    """How many layers the `top` preset adapts: the top eighth, at least one (4 of SmolLM2's 30).

    >>> [top_layers(n) for n in (4, 24, 30, 32)]
    [1, 3, 4, 4]
    """
    return max(1, -(-n_layers // 8))


def _is_linear(mod: nn.Module) -> bool:
    return isinstance(mod, nn.Linear) or type(mod).__name__ == "Conv1D"  # GPT-2 uses transformers' Conv1D


def target_names(lm: nn.Module, lora: LoraSettings) -> tuple[tuple[int, ...], list[str]]:
    """(adapted layer indices, full names of the linear modules that get LoRA)."""
    stack = layer_stack(lm)
    layers = resolve_layers(len(stack), lora)
    prefix = _stack_prefix(lm, stack)
    names = []
    for i in layers:
        for sub, mod in stack[i].named_modules():
            if not _is_linear(mod):
                continue
            if lora.target_modules is not None:
                ok = sub.split(".")[-1] in lora.target_modules or sub in lora.target_modules
            elif lora.preset in ("probe", "upper", "top"):
                ok = sub.startswith("mlp.")
            else:
                ok = True
            if ok:
                names.append(f"{prefix}.{i}.{sub}")
    if not names:
        raise ConfigError(f"no linear modules match --target-modules {lora.target_modules} in layers {layers}")
    return layers, names


def check_rank(model: nn.Module, names: list[str], rank: int, warn_narrow: bool = True) -> None:
    """Refuse a rank above every adapted layer's width (min(in, out)): it adds nothing and can exhaust memory; warn
    when it exceeds some of them (those layers cannot use the extra rank)."""
    mods = dict(model.named_modules())
    widths = {n: min(_shape(mods[n])) for n in names}
    widest = max(widths.values())
    if rank > widest:
        raise ConfigError(f"--rank {rank} is larger than every adapted layer's width (at most {widest}); a LoRA rank above "
                          f"min(in, out) adds nothing: use --rank {widest} or less")
    narrow = sorted(n for n, w in widths.items() if rank > w)
    if narrow and warn_narrow:
        warn(f"--rank {rank} exceeds the width of {len(narrow)} adapted layer(s) (e.g. {narrow[0]}, width {widths[narrow[0]]}); "
             "they cannot use the extra rank")


def _shape(mod: nn.Module) -> tuple[int, int]:
    w = mod.weight
    return (w.shape[1], w.shape[0]) if type(mod).__name__ != "Conv1D" else (w.shape[0], w.shape[1])


def attach(model: nn.Module, lora: LoraSettings, seed: int = 0, invocation_tokens: tuple[int, ...] | None = None) -> tuple[Any, dict[str, Any]]:
    """Wrap a frozen base in a fresh LoRA adapter (seeded init: A random, B zero) -> (peft model, placement info).

    invocation_tokens: a keyed adapter's (memft.keyed; PEFT's activated LoRA, which needs task_type CAUSAL_LM and
    then acts only from those tokens on); required exactly when lora.activation is "keyed"."""
    import torch
    from peft import LoraConfig, get_peft_model

    if (lora.activation == "keyed") != bool(invocation_tokens):
        raise ValueError(f"attach: activation {lora.activation!r} with invocation tokens {invocation_tokens!r}")  # a caller's bug
    layers, names = target_names(model, lora)
    check_rank(model, names, lora.rank)
    cfg = LoraConfig(r=lora.rank, lora_alpha=lora.scale_alpha, target_modules=names, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                     alora_invocation_tokens=list(invocation_tokens) if invocation_tokens else None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, cfg)
    # LoRA weights and optimizer state stay fp32 even over a bf16 base.
    for p in peft_model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    return peft_model, {"layers": list(layers), "modules": names}


def check_out_dir(out: Path) -> None:
    """Refuse, before any work, to write over something that is not a memft adapter."""
    if out.exists() and not out.is_dir():
        raise AdapterError(f"--out {out}: is a file; give a folder for the adapter")
    if out.is_dir() and any(out.iterdir()) and not (out / META).exists():
        raise AdapterError(f"--out {out}: the folder holds files that are not a memft adapter; choose another folder or empty it")


def write_atomic(out: Path, fill: Callable[[Path], None]) -> None:
    """Fill a fresh sibling folder, then swap it in under the folder's lock (memft.folders): readers see the old
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
    """One version of an adapter folder, read whole (memft.folders.read_consistent) and checked: its memft.json,
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


def update_meta(folder: Path, meta: AdapterMeta) -> None:
    """Replace memft.json of an existing adapter in place (temp file + rename). Not a save: readers detect saves by
    the folder's identity (memft.folders.read_consistent), so memft itself never edits a folder this way."""
    meta_mod.write(folder, meta)


def read_meta(folder: str | Path) -> AdapterMeta:
    """memft.json of an adapter folder (memft.meta.read)."""
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
    """Why a .safetensors file's bytes are not whole (None if they are): the format is an 8-byte little-endian
    header length, a JSON header giving each tensor's byte range, then the data. Checked by hand so that a damaged
    file is reported before the base model is loaded."""
    size = len(data)
    try:
        n = int.from_bytes(data[:8], "little")
        if size < 8 or n <= 0 or 8 + n > size:
            return "truncated or empty (no complete header)"
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        return f"unreadable header ({type(e).__name__})"
    if not ends:
        return "holds no tensors"
    if 8 + n + max(ends) > size:
        return f"truncated ({size} bytes, the header needs {8 + n + max(ends)})"
    return None


def load(version: Version, base_model: nn.Module, trainable: bool = False) -> Any:
    """Load the PEFT adapter of `version` (read_version) onto a freshly loaded base (frozen base, eval mode): from
    the bytes read, through a private copy, so a save of the folder meanwhile cannot mix two versions.

    trainable=True: the LoRA weights can be trained further (append, forget); they are kept in fp32 as in attach.
    """
    with tempfile.TemporaryDirectory(prefix="memft-load-") as tmp:
        (Path(tmp) / CONFIG).write_bytes(version.config)
        (Path(tmp) / WEIGHTS).write_bytes(version.weights)
        return _load_peft(tmp, version.folder, base_model, trainable)


def _load_peft(path: str, folder: Path, base_model: nn.Module, trainable: bool) -> Any:
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
