"""The LoRA GGUF holds PEFT's A and B (B's q/k rows permuted) under llama.cpp's names and keys; base GGUFs re-typed."""

import numpy as np
import pytest

from memft.runtime.gguf_export import Shape, permute_rows, read_adapter, read_lora_gguf, unpermute_rows, write_base_gguf, write_lora_gguf


def test_permutation_interleaves_the_rotary_halves_of_each_head():
    w = np.arange(16).reshape(8, 2)  # 2 heads of head_dim 4: rows (0 1 | 2 3) -> (0 2 1 3)
    assert permute_rows(w, 2)[:, 0].tolist() == [0, 4, 2, 6, 8, 12, 10, 14]
    assert np.array_equal(unpermute_rows(permute_rows(w, 2), 2), w)


def test_lora_tensors_round_trip_through_the_gguf_reader(tiny_deploy, tmp_path):
    folder, _, base_gguf, base = tiny_deploy
    shape = Shape.from_gguf(base_gguf)
    assert shape == Shape("llama", 4, 4, 2) == Shape.from_hf_config(base.model.config)
    wrote = write_lora_gguf(folder, tmp_path / "a.gguf", shape, invocation_tokens=[7, 300])
    meta, tensors = read_lora_gguf(tmp_path / "a.gguf")
    assert meta["general.architecture"] == "llama" and meta["general.type"] == "adapter" and meta["adapter.type"] == "lora"
    state, alpha, rank = read_adapter(folder)
    assert meta["adapter.lora.alpha"] == alpha == 4.0 and rank == 4
    assert meta["adapter.alora.invocation_tokens"] == [7, 300]
    assert wrote["tensors"] == len(tensors) == len(state) == 4 * 7 * 2  # 4 layers x 7 linear modules x (A, B)
    for key, t in tensors.items():
        assert t.dtype == np.float32
    a = tensors["blk.2.ffn_down.weight.lora_a"]
    assert np.array_equal(a, state["base_model.model.model.layers.2.mlp.down_proj.lora_A.weight"])
    assert np.array_equal(tensors["blk.2.ffn_down.weight.lora_b"], state["base_model.model.model.layers.2.mlp.down_proj.lora_B.weight"])
    q_b = state["base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight"]
    k_b = state["base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight"]
    assert not np.array_equal(tensors["blk.1.attn_q.weight.lora_b"], q_b)  # permuted (4 heads), and back
    assert np.array_equal(unpermute_rows(tensors["blk.1.attn_q.weight.lora_b"], 4), q_b)
    assert np.array_equal(unpermute_rows(tensors["blk.1.attn_k.weight.lora_b"], 2), k_b)  # k: the 2 kv heads
    assert np.array_equal(tensors["blk.1.attn_v.weight.lora_b"], state["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"])
    assert tensors["blk.1.attn_output.weight.lora_a"].shape == (4, 64)


def test_a_base_retyped_to_q8_0_stays_within_its_quantisation_error(tiny_deploy, tmp_path):
    import gguf
    from gguf.quants import dequantize

    _, _, base_gguf, _ = tiny_deploy
    write_base_gguf(base_gguf, tmp_path / "q8.gguf", "q8_0")
    src = {t.name: t for t in gguf.GGUFReader(str(base_gguf)).tensors}
    out = gguf.GGUFReader(str(tmp_path / "q8.gguf"))
    assert out.fields["general.file_type"].contents() == int(gguf.LlamaFileType.MOSTLY_Q8_0)
    assert out.fields["tokenizer.ggml.eos_token_id"].contents() == 257  # metadata copied (the tiny eos)
    for t in out.tensors:
        w = np.array(src[t.name].data)
        if w.ndim == 1:
            assert t.tensor_type == gguf.GGMLQuantizationType.F32 and np.array_equal(np.array(t.data), w)
            continue
        assert t.tensor_type == gguf.GGMLQuantizationType.Q8_0
        back = dequantize(np.array(t.data), t.tensor_type)
        # q8_0: blocks of 32, d = absmax/127 stored in fp16 (relative error <= 2^-11), q = round(x/d) in [-127, 127]:
        # |d16 q - x| <= d/2 + 127 |d16 - d| <= d (1/2 + 127 * 2^-11) < 0.563 d
        d = np.abs(w.reshape(-1, 32)).max(axis=1, keepdims=True) / 127
        assert np.all(np.abs(back.reshape(-1, 32) - w.reshape(-1, 32)) <= 0.563 * d + 1e-9)


def test_a_module_llama_cpp_has_no_tensor_for_is_refused():
    from memft.errors import ConfigError
    from memft.runtime.gguf_export import gguf_weight_name

    with pytest.raises(ConfigError, match="no tensor"):
        gguf_weight_name("model.layers.0.mlp.act_fn", Shape("llama", 4, 4, 2))
    with pytest.raises(ConfigError, match="supports llama"):
        gguf_weight_name("transformer.h.0.mlp.c_fc", Shape("gpt2", 4, 4, 4))


def test_the_header_reader_gives_the_scalars_gguf_reads(tiny_deploy):
    import gguf

    from memft.runtime.gguf_header import gguf_fields

    _, _, base_gguf, _ = tiny_deploy
    ours = gguf_fields(base_gguf)
    theirs = {k: f.contents() for k, f in gguf.GGUFReader(str(base_gguf)).fields.items()
              if not k.startswith("GGUF.") and f.types[0] != gguf.GGUFValueType.ARRAY}
    assert ours.keys() == theirs.keys() and "tokenizer.ggml.eos_token_id" in ours
    assert all(ours[k] == pytest.approx(v) if isinstance(v, float) else ours[k] == v for k, v in theirs.items())
