"""LoRA adapters through PEFT: where they go (presets), and saving/loading them atomically with `memft.json`.

An adapter folder is a standard PEFT adapter (`PeftModel.from_pretrained` loads it) plus `memft.json` (the typed
`memft.meta.AdapterMeta`), which says how to rebuild the base (spec, dtype), how prompts were built (template) and
what was certified.

Core layer. May import: config, errors, folders, meta, modeling; torch and peft inside the functions that need them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
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


def check_rank(model: nn.Module, names: list[str], rank: int) -> None:
    """Refuse a rank above every adapted layer's width (min(in, out)): it adds nothing and can exhaust memory; warn
    when it exceeds some of them (those layers cannot use the extra rank)."""
    mods = dict(model.named_modules())
    widths = {n: min(_shape(mods[n])) for n in names}
    widest = max(widths.values())
    if rank > widest:
        raise ConfigError(f"--rank {rank} is larger than every adapted layer's width (at most {widest}); a LoRA rank above "
                          f"min(in, out) adds nothing: use --rank {widest} or less")
    narrow = sorted(n for n, w in widths.items() if rank > w)
    if narrow:
        warn(f"--rank {rank} exceeds the width of {len(narrow)} adapted layer(s) (e.g. {narrow[0]}, width {widths[narrow[0]]}); "
             "they cannot use the extra rank")


def _shape(mod: nn.Module) -> tuple[int, int]:
    w = mod.weight
    return (w.shape[1], w.shape[0]) if type(mod).__name__ != "Conv1D" else (w.shape[0], w.shape[1])


def attach(model: nn.Module, lora: LoraSettings, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """Wrap a frozen base in a fresh LoRA adapter (seeded init: A random, B zero) -> (peft model, placement info)."""
    import torch
    from peft import LoraConfig, get_peft_model

    layers, names = target_names(model, lora)
    check_rank(model, names, lora.rank)
    cfg = LoraConfig(r=lora.rank, lora_alpha=lora.scale_alpha, target_modules=names, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
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


def save(peft_model: Any, out: Path, meta: AdapterMeta, files: dict[str, str] | None = None) -> None:
    """Save the adapter, memft.json and any extra text `files` (name -> content) as one atomic swap.
    Weights that are not all finite are refused (TrainingError): a diverged adapter never replaces a good one."""
    check_finite(peft_model)
    _name_base(peft_model, portable_name(meta.base.spec))

    def fill(tmp: Path) -> None:
        # memft never resizes the vocabulary; "auto" would look the base's name up (on the hub, for a hub id)
        peft_model.save_pretrained(tmp, save_embedding_layers=False)
        (tmp / META).write_text(meta_mod.dumps(meta), encoding="utf-8")
        for name, text in (files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")

    write_atomic(Path(out), fill)


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
    """Replace memft.json of an existing adapter atomically (temp file + rename)."""
    meta_mod.write(folder, meta)


def read_meta(folder: str | Path) -> AdapterMeta:
    """memft.json of an adapter folder (memft.meta.read)."""
    return meta_mod.read(folder)


def check_files(folder: str | Path, meta: AdapterMeta) -> None:
    """Before loading a model: the PEFT files are there, readable, and place the LoRA where memft.json says."""
    folder = Path(folder)
    cfg_path, weights = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    fix = "the adapter is damaged: restore the folder from a backup or write it again"
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdapterError(f"{cfg_path}: missing; {fix}") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AdapterError(f"{cfg_path}: unreadable ({type(e).__name__}); {fix}") from None
    if not isinstance(cfg, dict) or cfg.get("r") != meta.lora.rank or not _same_modules(cfg.get("target_modules"), list(meta.lora.modules)):
        raise AdapterError(f"{cfg_path}: its rank or target modules differ from memft.json; {fix}")
    if not weights.exists():
        raise AdapterError(f"{weights}: missing; {fix}")
    problem = safetensors_problem(weights)
    if problem:
        raise AdapterError(f"{weights}: {problem}; {fix}")


def _same_modules(peft_names: Any, ours: Any) -> bool:
    """PEFT saves target modules as given or shortened to their last name part: both match memft.json's full names."""
    if not isinstance(peft_names, list) or not isinstance(ours, list):
        return False
    given, full = set(peft_names), set(ours)
    return given == full or given == {n.rsplit(".", 1)[-1] for n in full}


def safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file is not whole (None if it is): the format is an 8-byte little-endian header length,
    a JSON header giving each tensor's byte range, then the data. Checked by hand because the library maps the
    file lazily and reports a truncation only when a tensor is read, after the base model was loaded."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if size < 8 or n <= 0 or 8 + n > size:
                return "truncated or empty (no complete header)"
            header = json.loads(f.read(n).decode("utf-8"))
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        return f"unreadable header ({type(e).__name__})"
    if not ends:
        return "holds no tensors"
    if 8 + n + max(ends) > size:
        return f"truncated ({size} bytes, the header needs {8 + n + max(ends)})"
    return None


def load(folder: str | Path, base_model: nn.Module, trainable: bool = False) -> Any:
    """Load the PEFT adapter in `folder` onto a freshly loaded base (frozen base, eval mode).

    trainable=True: the LoRA weights can be trained further (append, forget); they are kept in fp32 as in attach.
    """
    from peft import PeftModel

    try:
        model = PeftModel.from_pretrained(base_model, str(folder), is_trainable=trainable)
    except Exception as e:  # noqa: BLE001 - PEFT raises many types for a damaged folder; the user needs one line
        raise AdapterError(f"{folder}: PEFT cannot load the adapter ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}); "
                           "it is damaged or made for another base: restore it from a backup or write it again") from None
    if trainable:
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    model.eval()
    return model
