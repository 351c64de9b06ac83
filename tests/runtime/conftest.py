import pytest

from memft.prompts.records import Record

RECS = [Record("Ann:", " 555-0101"), Record("Bob:", " 555-0199"), Record("Cy:", " 123-4567")]


@pytest.fixture(scope="module")
def tiny_deploy(tmp_path_factory):
    """A tiny-random adapter on every linear layer (q/k included: the permuted ones), certified in torch fp32, and
    the tiny base as an f32 GGUF -> (folder, records, base gguf, the torch base)."""
    from memft import api
    from memft.config import LoraSettings, TrainConfig
    from memft.model.base import load_base
    from memft.runtime.hf_gguf import write_hf_base_gguf

    root = tmp_path_factory.mktemp("deploy")
    base = load_base("tiny-random", device="cpu", dtype="fp32")
    write_hf_base_gguf(base.model, base.tokenizer, root / "tiny.gguf")
    res = api.write(RECS, root / "ad", lora=LoraSettings(rank=4, preset="all"), train=TrainConfig(lr=0.02, max_steps=300), base=base)
    assert res.all_certified
    return root / "ad", RECS, root / "tiny.gguf", base
