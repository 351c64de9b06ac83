import pytest
import torch

from memft.errors import ModelError
from memft.errors import ConfigError
from memft.model.base import AUTO_DTYPE_ENV, cpu_has_fast_bf16, load_base, resolve_dtype, tiny_random


def test_tiny_random_is_deterministic_by_seed():
    a, _ = tiny_random(seed=1)
    b, _ = tiny_random(seed=1)
    c, _ = tiny_random(seed=2)
    wa, wb, wc = (m.model.layers[0].mlp.up_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_base_is_frozen_and_tokenizer_has_eos():
    b = load_base("tiny-random", device="cpu", dtype="fp32")
    assert not any(p.requires_grad for p in b.model.parameters())
    assert b.tokenizer.eos_token_id is not None and b.dtype == "fp32" and b.device == "cpu"


def test_bf16_base():
    b = load_base("tiny-random", device="cpu", dtype="bf16")
    assert next(b.model.parameters()).dtype == torch.bfloat16
    assert resolve_dtype("fp32", "cpu") == "fp32"


def test_auto_dtype_follows_the_cpu_unless_forced(monkeypatch):
    monkeypatch.delenv(AUTO_DTYPE_ENV, raising=False)
    assert resolve_dtype("auto", "cpu") == ("bf16" if cpu_has_fast_bf16() else "fp32")
    for forced in ("fp32", "bf16"):
        monkeypatch.setenv(AUTO_DTYPE_ENV, forced)
        assert resolve_dtype("auto", "cpu") == forced
        assert resolve_dtype("fp32", "cpu") == "fp32"  # an explicit dtype is never overridden
    monkeypatch.setenv(AUTO_DTYPE_ENV, "fp8")
    with pytest.raises(ConfigError, match="MEMFT_AUTO_DTYPE='fp8': use one of fp32, bf16, fp16"):
        resolve_dtype("auto", "cpu")


@pytest.mark.parametrize(
    "spec, needle",
    [("no-such-model", "unknown model"), ("/nonexistent/model.gguf", "not found"), ("memft-test/not-a-real-model", "not in the local Hugging Face cache")],
)
def test_model_errors(spec, needle):
    with pytest.raises(ModelError, match=needle):
        load_base(spec, device="cpu")


def test_unreachable_tokens_are_twins_of_lower_ids():
    from memft.model.base import unreachable_tokens

    model, _ = tiny_random(seed=0)
    assert unreachable_tokens(model) == {}
    model2, _ = tiny_random(seed=0)
    with torch.no_grad():  # tied embeddings: the LM head row of 100 becomes that of 50
        model2.get_output_embeddings().weight[100] = model2.get_output_embeddings().weight[50]
    assert unreachable_tokens(model2) == {100: 50}
    logits = model2(input_ids=torch.tensor([[5, 6, 7]])).logits[0, -1]
    assert logits[100] == logits[50]  # always tied, and argmax takes the lower id


def test_the_output_layer_gets_a_contiguous_input_when_logits_of_the_last_position_are_asked(tiny):
    """transformers slices hidden[:, -1:, :] for logits_to_keep=1 (every generate step); a strided bf16 input made the
    CPU matmul hundreds of times slower (memft.model.base.contiguous_head)."""
    import torch

    seen = []
    tiny.model.get_output_embeddings().register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous()))
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    with torch.no_grad():
        last = tiny.model(input_ids=ids, logits_to_keep=1).logits[:, -1]
        full = tiny.model(input_ids=ids).logits[:, -1]
    assert seen == [True, True]
    torch.testing.assert_close(last, full, rtol=0, atol=1e-5)
