"""Where LoRA layers go and attaching them through PEFT: the decoder stack, presets of layers, target modules, the
rank check and `attach` (a keyed adapter gets PEFT's activated-LoRA invocation tokens).

Core layer (model); torch and peft inside the functions that need them.
"""

from __future__ import annotations

from typing import Any, TypedDict

from torch import nn

from memft.config import LoraSettings
from memft.errors import AdapterError, ConfigError, warn


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


class Placement(TypedDict):
    """Where an adapter's LoRA layers are: the decoder layers adapted and the full module names (as PEFT names them)."""

    layers: list[int]
    modules: list[str]


def attach(model: nn.Module, lora: LoraSettings, seed: int = 0, invocation_tokens: tuple[int, ...] | None = None) -> tuple[Any, Placement]:
    """Wrap a frozen base in a fresh LoRA adapter (seeded init: A random, B zero) -> (peft model, placement info).

    invocation_tokens: a keyed adapter's (memft.prompts.keyed; PEFT's activated LoRA, which needs task_type CAUSAL_LM and
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
