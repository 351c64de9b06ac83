from memft import api
from memft.config import LoraSettings, RuntimeConfig, TrainConfig
from memft.prompts.encoding import encode_all
from memft.certify.evaluate import teacher_forced
from memft.model.forward import Runner
from memft.research.bench.phonebook import phonebook


def test_write_then_verify_in_other_precision_reports_it(tmp_path):
    recs = phonebook(12, seed=4)
    res = api.write(recs, tmp_path / "ad", model="tiny-random", lora=LoraSettings(rank=8, preset="all"),
                    train=TrainConfig(lr=2e-2, max_steps=300), runtime=RuntimeConfig(device="cpu", dtype="fp32"))
    assert res.all_certified and res.meta.certification.dtype == "fp32"
    same = api.verify(tmp_path / "ad", recs, device="cpu")
    assert same.dtype == "fp32" and same.notes == [] and same.summary["certified"] == 1.0
    other = api.verify(tmp_path / "ad", recs, device="cpu", dtype="bf16")
    assert other.dtype == "bf16" and other.certified_dtype == "fp32"
    assert len(other.notes) == 1 and "certified in fp32" in other.notes[0]
    # The bf16 verdicts are computed in bf16, not copied from write time: check against a direct bf16 pass.
    ld = api.load_adapter(tmp_path / "ad", device="cpu", dtype="bf16")
    items = encode_all(recs, ld.tokenizer)
    stats = teacher_forced(Runner(ld.model, items, ld.tokenizer.pad_token_id))
    assert [r.certified for r in other.reports] == [all(stats[i].correct) for i in range(len(items))]
    assert [r.min_prob for r in other.reports] != [r.min_prob for r in same.reports]  # precision changes the numbers


def test_write_reuses_a_loaded_base_and_restores_it(tmp_path):
    from memft.model.base import load_base

    base = load_base("tiny-random", device="cpu")
    before = {n: p.clone() for n, p in base.model.named_parameters()}
    recs = phonebook(3, seed=0)
    a = api.write(recs, tmp_path / "a", base=base, lora=LoraSettings(rank=4), train=TrainConfig(lr=2e-2, max_steps=100))
    b = api.write(recs, tmp_path / "b", base=base, lora=LoraSettings(rank=4), train=TrainConfig(lr=2e-2, max_steps=100))
    assert a.meta.train["steps"] == b.meta.train["steps"]  # the second run started from the same clean base
    after = dict(base.model.named_parameters())
    assert set(after) == set(before) and all((after[n] == before[n]).all() for n in before)


def test_write_refuses_a_target_token_greedy_decoding_cannot_produce(tmp_path):
    import pytest
    import torch

    from memft.errors import RecordsError
    from memft.model.base import load_base
    from memft.prompts.records import Record

    base = load_base("tiny-random", device="cpu", dtype="fp32")
    with torch.no_grad():
        base.model.get_output_embeddings().weight[100] = base.model.get_output_embeddings().weight[50]
    with pytest.raises(RecordsError, match=r"record 'k': the value's token at position 2 can never be produced"):
        api.write([Record("k", value_ids=(5, 6, 100))], tmp_path / "ad", base=base)
    assert not (tmp_path / "ad").exists()
    assert not any("lora" in n for n, _ in base.model.named_parameters())


def test_write_sizes_what_it_is_not_given_as_the_cli_does(tmp_path):
    """api.write with no LoraSettings sizes the adapter by the same rule as `memft write` (memft.training.sizing)."""
    from memft.model.base import tiny_tokenizer
    from memft.training.sizing import size_for, value_tokens

    recs = phonebook(70, seed=3)
    res = api.write(recs, tmp_path / "ad", model="tiny-random", train=TrainConfig(max_steps=1), runtime=RuntimeConfig(device="cpu"))
    want = size_for(70, value_tokens=value_tokens(recs, tiny_tokenizer()), max_steps=1, batch_size=64, lr=0.01,
                    head_vocab="full", lora_init="random", lr_schedule="constant")
    assert (res.meta.lora.preset, res.meta.lora.rank) == ("top", want.rank) == (want.preset, want.rank)
    assert res.meta.extra["sizing"]["chosen"] == ["preset", "rank"] and res.meta.activation == "keyed"
