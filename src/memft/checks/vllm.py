"""Static checks for serving an adapter with vLLM: read from adapter_config.json, nothing is run.

vLLM loads PEFT LoRA adapters when (in its recent releases) the server's `--max-lora-rank` (one of MAX_RANKS,
default 16) is at least the adapter's rank, every adapted module is one of the model's LoRA-capable linear layers
(for Llama-style models the attention and MLP projections, which vLLM packs as qkv_proj and gate_up_proj), there
are no `modules_to_save` (full copies of base modules) and no DoRA, and LoRA biases are off unless the server is
started with `--enable-lora-bias`. These are static: whether vLLM's greedy output stays exact is not checked here.

Checks layer: may import the core, the memory store and the other checks.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MAX_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's allowed --max-lora-rank values
DEFAULT_MAX_RANK = 16
LLAMA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class StaticCheck:
    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "static": True}


def vllm_checks(cfg: dict[str, Any]) -> list[StaticCheck]:
    """The static checks of a PEFT adapter_config.json object.

    >>> [c.ok for c in vllm_checks({"r": 8, "target_modules": ["model.layers.20.mlp.down_proj"], "bias": "none"})]
    [True, True, True, True, True]
    >>> c = vllm_checks({"r": 24, "target_modules": ["lm_head"], "modules_to_save": ["embed_tokens"]}); [x.ok for x in c]
    [False, False, False, True, True]
    >>> print(c[0].detail)
    rank 24 is above vLLM's default --max-lora-rank 16: start the server with --max-lora-rank 32
    """
    r = int(cfg.get("r", 0))
    allowed = next((m for m in MAX_RANKS if m >= r), None)
    if r <= DEFAULT_MAX_RANK:
        rank = StaticCheck("rank", True, f"rank {r} is within vLLM's default --max-lora-rank {DEFAULT_MAX_RANK}")
    elif allowed is not None:
        rank = StaticCheck("rank", False, f"rank {r} is above vLLM's default --max-lora-rank {DEFAULT_MAX_RANK}: "
                                          f"start the server with --max-lora-rank {allowed}")
    else:
        rank = StaticCheck("rank", False, f"rank {r} is above vLLM's largest --max-lora-rank {MAX_RANKS[-1]}")
    names = cfg.get("target_modules") or []
    names = [names] if isinstance(names, str) else list(names)
    bad = sorted({n.rsplit(".", 1)[-1] for n in names} - set(LLAMA_MODULES))
    targets = StaticCheck("target_modules", not bad and bool(names),
                          f"every adapted module is one vLLM adapts ({', '.join(LLAMA_MODULES)})" if not bad and names
                          else f"vLLM does not adapt {', '.join(bad) or 'these modules'}")
    save = cfg.get("modules_to_save") or []
    to_save = StaticCheck("modules_to_save", not save, "none" if not save else f"{save}: vLLM refuses full module copies")
    dora = StaticCheck("dora", not cfg.get("use_dora"), "off" if not cfg.get("use_dora") else "vLLM does not serve DoRA")
    bias = cfg.get("bias", "none") in ("none", None) and not cfg.get("lora_bias")
    biases = StaticCheck("bias", bias, "none" if bias else "LoRA biases: start vLLM with --enable-lora-bias")
    return [rank, targets, to_save, dora, biases]


def check_folder(folder: str | Path) -> list[StaticCheck]:
    return vllm_checks(json.loads((Path(folder) / "adapter_config.json").read_text(encoding="utf-8")))
