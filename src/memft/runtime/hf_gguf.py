"""A Hugging Face Llama model (weights and tokenizer) written as a base GGUF that llama.cpp loads, in f32 or f16.

For bases that are not GGUF files already (tiny-random in tests, a local Llama folder): the hyperparameters under
`llama.*`, a GPT-2-style BPE tokenizer (tokens, token types, merges, special ids), and the weights under llama.cpp's
tensor names, the q/k projections' rows permuted to llama.cpp's rotary layout (gguf_export.permute_rows). A tied
output layer is left out, as llama.cpp then uses the token embeddings.

Runtime layer: may import the core only (torch, numpy and gguf inside the functions).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from memft.errors import ConfigError
from memft.runtime.gguf_export import _finish, permute_rows

CONTROL, NORMAL = 3, 1  # gguf token types


def write_hf_base_gguf(model: Any, tokenizer: Any, out: str | Path, kind: str = "f32") -> dict[str, Any]:
    """Write `model` (a transformers Llama) and its fast `tokenizer` to `out` as a llama.cpp base GGUF (f32 | f16)."""
    import gguf

    cfg = model.config
    if cfg.model_type != "llama":
        raise ConfigError(f"writing a base GGUF supports Llama models; this one is {cfg.model_type!r}; convert it with llama.cpp's tools")
    if kind not in ("f32", "f16"):
        raise ConfigError(f"--base-type {kind!r}: a base written from Hugging Face weights is f32 or f16")
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    rope = (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta") or getattr(cfg, "rope_theta", 10000.0)
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    w = gguf.GGUFWriter(str(tmp), "llama")
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name("memft base")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(float(rope))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(int(gguf.LlamaFileType.ALL_F32 if kind == "f32" else gguf.LlamaFileType.MOSTLY_F16))
    _tokenizer(w, tokenizer, cfg.vocab_size)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    tied = getattr(cfg, "tie_word_embeddings", False)
    for name, p in model.state_dict().items():
        if tied and name == "lm_head.weight" or "rotary_emb" in name:
            continue
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise ConfigError(f"{name}: no llama.cpp tensor for this weight")
        data = p.detach().float().cpu().numpy()
        if target.endswith(("attn_q.weight", "attn_k.weight")):
            data = permute_rows(data, n_head if "attn_q" in target else n_kv)
        w.add_tensor(target, data.astype(np.float16) if kind == "f16" and data.ndim == 2 else np.ascontiguousarray(data))
    _finish(w, tmp, out)
    return {"path": str(out), "type": kind}


def _tokenizer(w: Any, tokenizer: Any, vocab_size: int) -> None:
    """The fast tokenizer's BPE vocabulary and merges as llama.cpp's `gpt2` tokenizer."""
    tj = json.loads(tokenizer.backend_tokenizer.to_str())
    if tj["model"]["type"] != "BPE":
        raise ConfigError("writing a base GGUF supports byte-level BPE tokenizers")
    vocab = {**tj["model"]["vocab"], **{a["content"]: a["id"] for a in tj["added_tokens"]}}
    special = {a["id"] for a in tj["added_tokens"] if a.get("special")}
    by_id = {i: t for t, i in vocab.items()}
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(vocab_size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    if not merges:  # llama.cpp requires the entry; a merge of two bytes whose result is no token never applies
        merges = [f"{tokens[0]} {tokens[0]}"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([CONTROL if i in special else NORMAL for i in range(vocab_size)])
    w.add_token_merges(merges)
    w.add_bos_token_id(int(tokenizer.bos_token_id))
    w.add_eos_token_id(int(tokenizer.eos_token_id))
    if tokenizer.pad_token_id is not None:
        w.add_pad_token_id(int(tokenizer.pad_token_id))
    w.add_add_bos_token(False)
