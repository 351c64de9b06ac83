"""An adapter folder as llama.cpp's LoRA GGUF, the base GGUF in a chosen type, and an Ollama Modelfile.

The LoRA GGUF follows llama.cpp's conventions (its `convert_lora_to_gguf.py` writes the same): `general.type` =
adapter, `adapter.type` = lora, `adapter.lora.alpha`; per adapted weight `W` of the base GGUF (e.g.
`blk.20.ffn_down.weight`) two f32 tensors `W.lora_a` (PEFT's A, [r, in]) and `W.lora_b` (PEFT's B, [out, r]);
llama.cpp adds scale * alpha / r * B A x. Llama checkpoints keep q/k rows in Hugging Face's rotary layout, and
llama.cpp's GGUF holds those rows permuted (pairs of rotary dimensions interleaved), so B's rows of q/k are
permuted the same way; A is unchanged.

Runtime layer: may import the core only (numpy, gguf and safetensors inside the functions).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memft.errors import AdapterError, ConfigError
from memft.runtime.gguf_header import cached_gguf_fields

BASE_TYPES = ("as-is", "q8_0", "bf16", "f16", "f32")  # --base-type choices: the shipped file copied, or re-typed
ARCHS = ("llama",)  # base architectures whose name mapping and q/k permutation this module knows


@dataclass(frozen=True)
class Shape:
    """What the export needs of the base: its architecture name, decoder layers, attention heads (q and k/v)."""

    arch: str
    n_layers: int
    n_head: int
    n_head_kv: int

    @classmethod
    def from_hf_config(cls, cfg: Any) -> Shape:
        return cls(cfg.model_type, cfg.num_hidden_layers, cfg.num_attention_heads,
                   getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)

    @classmethod
    def from_gguf(cls, path: str | Path) -> Shape:
        f = cached_gguf_fields(path)
        arch = f["general.architecture"]
        head = f[f"{arch}.attention.head_count"]
        return cls(arch, int(f[f"{arch}.block_count"]), int(head), int(f.get(f"{arch}.attention.head_count_kv", head)))




def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Rows of a q or k projection from Hugging Face's rotary layout (per head: first halves, then second halves)
    to llama.cpp's (per head: the two halves interleaved). w: [n_head * head_dim, ...].

    >>> permute_rows(np.arange(8), 2).tolist()  # head 0 rows 0..3 -> 0,2,1,3; head 1 rows 4..7 -> 4,6,5,7
    [0, 2, 1, 3, 4, 6, 5, 7]
    """
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of permute_rows.

    >>> unpermute_rows(permute_rows(np.arange(12), 3), 3).tolist() == list(range(12))
    True
    """
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_weight_name(module: str, shape: Shape) -> str:
    """The base GGUF's tensor for a Hugging Face module name, via gguf's own name table.

    >>> s = Shape("llama", 30, 9, 3)
    >>> gguf_weight_name("model.layers.20.mlp.down_proj", s), gguf_weight_name("model.layers.0.self_attn.o_proj", s)
    ('blk.20.ffn_down.weight', 'blk.0.attn_output.weight')
    """
    import gguf

    if shape.arch not in ARCHS:
        raise ConfigError(f"export to GGUF supports {', '.join(ARCHS)} bases; this base is {shape.arch!r}")
    arch = next(a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == shape.arch)
    name = gguf.get_tensor_name_map(arch, shape.n_layers).get_name(module)
    if name is None:
        raise ConfigError(f"LoRA on {module}: llama.cpp has no tensor for it; write the adapter on the MLP or attention projections")
    return name + ".weight"


def lora_tensors(state: Mapping[str, np.ndarray], shape: Shape) -> dict[str, np.ndarray]:
    """PEFT's adapter state (`...<module>.lora_A.weight` [r, in], `...lora_B.weight` [out, r]) -> the LoRA GGUF's
    tensors by name (`<base tensor>.lora_a` / `.lora_b`, f32), q/k rows of B permuted as llama.cpp holds them."""
    out: dict[str, np.ndarray] = {}
    for key, a in sorted(state.items()):
        if ".lora_A." not in key:
            if ".lora_B." not in key:
                raise AdapterError(f"adapter weight {key}: not a LoRA A/B matrix; llama.cpp's LoRA GGUF holds only those")
            continue
        module = key.split(".lora_A.")[0].removeprefix("base_model.model.")
        b = state[key.replace(".lora_A.", ".lora_B.")]
        name = gguf_weight_name(module, shape)
        if name.endswith(("attn_q.weight", "attn_k.weight")):
            b = permute_rows(b, shape.n_head if "attn_q" in name else shape.n_head_kv)
        out[name + ".lora_a"] = np.ascontiguousarray(a, dtype=np.float32)
        out[name + ".lora_b"] = np.ascontiguousarray(b, dtype=np.float32)
    return out


def read_adapter(folder: str | Path) -> tuple[dict[str, np.ndarray], float, int]:
    """(PEFT state as numpy arrays, lora_alpha, r) of an adapter folder."""
    from safetensors.numpy import load_file

    folder = Path(folder)
    cfg = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    if cfg.get("use_rslora") or cfg.get("rank_pattern") or cfg.get("alpha_pattern") or cfg.get("use_dora"):
        raise AdapterError(f"{folder}: rsLoRA, DoRA or per-module ranks/alphas cannot be expressed in llama.cpp's LoRA GGUF")
    if cfg.get("modules_to_save"):
        raise AdapterError(f"{folder}: modules_to_save (full copies of base modules) cannot be expressed in llama.cpp's LoRA GGUF")
    return load_file(str(folder / "adapter_model.safetensors")), float(cfg["lora_alpha"]), int(cfg["r"])


def write_lora_gguf(folder: str | Path, out: str | Path, shape: Shape, invocation_tokens: list[int] | None = None) -> dict[str, Any]:
    """Write the adapter in `folder` as a LoRA GGUF at `out` (atomically: a temp file renamed) -> what was written."""
    import gguf

    state, alpha, rank = read_adapter(folder)
    tensors = lora_tensors(state, shape)
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    w = gguf.GGUFWriter(str(tmp), shape.arch)
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    if invocation_tokens:
        w.add_key_value(gguf.Keys.Adapter.ALORA_INVOCATION_TOKENS, list(invocation_tokens), gguf.GGUFValueType.ARRAY,
                        gguf.GGUFValueType.UINT32)
    for name, t in tensors.items():
        w.add_tensor(name, t)
    _finish(w, tmp, out)
    return {"path": str(out), "tensors": len(tensors), "alpha": alpha, "rank": rank,
            "invocation_tokens": list(invocation_tokens or [])}


def read_lora_gguf(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(metadata by key, tensors by name as numpy arrays in PEFT's orientation) of a LoRA GGUF."""
    import gguf

    r = gguf.GGUFReader(str(path))
    meta = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
    return meta, {t.name: np.array(t.data) for t in r.tensors}


def _finish(w: Any, tmp: Path, out: Path) -> None:
    import os

    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, out)
    except BaseException:
        w.close()
        tmp.unlink(missing_ok=True)
        raise


def write_base_gguf(src: str | Path, out: str | Path, kind: str) -> dict[str, Any]:
    """The base GGUF `src` written to `out` as `kind` (BASE_TYPES): `as-is` copies it; otherwise every 2-D weight
    is dequantised and stored as q8_0 / bf16 / f16 / f32 (a weight already in that type is copied unchanged; 1-D
    weights, the norms, stay f32 as llama.cpp keeps them). Metadata is copied, general.file_type set to match."""
    import gguf
    from gguf.quants import dequantize, quantize

    if kind not in BASE_TYPES:
        raise ConfigError(f"--base-type {kind!r}: choose one of {', '.join(BASE_TYPES)}")
    out = Path(out)
    if kind == "as-is":
        tmp = out.with_name(f".{out.name}.tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(out)
        return {"path": str(out), "type": kind}
    qtype = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "bf16": gguf.GGMLQuantizationType.BF16,
             "f16": gguf.GGMLQuantizationType.F16, "f32": gguf.GGMLQuantizationType.F32}[kind]
    ftype = {"q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "bf16": gguf.LlamaFileType.MOSTLY_BF16,
             "f16": gguf.LlamaFileType.MOSTLY_F16, "f32": gguf.LlamaFileType.ALL_F32}[kind]
    r = gguf.GGUFReader(str(src))
    arch = r.fields["general.architecture"].contents()
    tmp = out.with_name(f".{out.name}.tmp")
    w = gguf.GGUFWriter(str(tmp), arch)
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type", "general.alignment"):
            continue
        sub = f.types[1] if f.types[0] == gguf.GGUFValueType.ARRAY and len(f.types) > 1 else None
        w.add_key_value(key, f.contents(), f.types[0], sub_type=sub)
    w.add_file_type(int(ftype))
    for t in r.tensors:
        if t.tensor_type == qtype or (len(t.shape) == 1 and t.tensor_type == gguf.GGMLQuantizationType.F32):
            w.add_tensor(t.name, np.array(t.data), raw_dtype=t.tensor_type)
            continue
        data = dequantize(np.array(t.data), t.tensor_type).astype(np.float32)  # [rows, cols]
        if data.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
            w.add_tensor(t.name, data)
        elif qtype == gguf.GGMLQuantizationType.F16:
            w.add_tensor(t.name, data.astype(np.float16))
        else:
            w.add_tensor(t.name, quantize(data, qtype), raw_dtype=qtype)
    _finish(w, tmp, out)
    return {"path": str(out), "type": kind}


def modelfile(base_gguf: str, lora_gguf: str) -> str:
    """An Ollama Modelfile: the base (FROM) with the LoRA adapter (ADAPTER), greedy so recall is exact.

    >>> print(modelfile("base.gguf", "memft.gguf"), end="")
    FROM ./base.gguf
    ADAPTER ./memft.gguf
    PARAMETER temperature 0
    """
    def rel(p: str) -> str:
        return p if Path(p).is_absolute() or p.startswith(".") else f"./{p}"

    return f"FROM {rel(base_gguf)}\nADAPTER {rel(lora_gguf)}\nPARAMETER temperature 0\n"
