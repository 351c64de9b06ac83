import pytest

from memft import api
from memft.checks.deploy import Setting, recheck, settings_for
from memft.config import LoraSettings, RuntimeConfig, TrainConfig
from memft.research.bench.phonebook import phonebook


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deploy") / "ad"
    recs = phonebook(5, seed=8)
    res = api.write(recs, folder, model="tiny-random", lora=LoraSettings(rank=8, preset="all"),
                    train=TrainConfig(lr=2e-2, max_steps=300), runtime=RuntimeConfig(device="cpu", dtype="fp32"))
    assert res.all_certified
    return folder, recs


@pytest.mark.slow  # plain PEFT re-check in a subprocess
def test_merged_and_plain_peft_agree_with_the_adapter_as_certified(adapter):
    folder, recs = adapter
    lora, merged, plain = recheck(folder, recs, [Setting("fp32"), Setting("fp32", merged=True), Setting("fp32", plain=True)], "cpu")
    assert lora.certified == merged.certified == plain.certified == 5 and lora.lost == []
    assert plain.exact == 5  # the subprocess ran model.generate for every record
    for a, b, c in zip(lora.per_record, merged.per_record, plain.per_record):
        assert a["key"] == b["key"] == c["key"]
        # fp32: merging W + BA and an independent loader move probabilities only by rounding
        assert b["min_prob"] == pytest.approx(a["min_prob"], abs=1e-4) and c["min_prob"] == pytest.approx(a["min_prob"], abs=1e-4)
        assert c["min_gap"] == pytest.approx(a["min_gap"], abs=1e-4) and a["min_gap"] > 0
    assert lora.min_prob > 0.5  # written with the default margin


def test_lower_precisions_are_computed_not_copied(adapter):
    folder, recs = adapter
    fp32, bf16 = recheck(folder, recs, [Setting("fp32"), Setting("bf16", merged=True)], "cpu")
    assert bf16.setting == "merged into base, bf16"
    assert [r["min_prob"] for r in bf16.per_record] != [r["min_prob"] for r in fp32.per_record]
    assert max(abs(a["min_prob"] - b["min_prob"]) for a, b in zip(fp32.per_record, bf16.per_record)) < 0.1


@pytest.mark.slow  # plain PEFT re-check in a subprocess
def test_a_record_that_is_not_certified_is_lost_in_every_setting(tmp_path):
    recs = phonebook(3, seed=9)
    res = api.write(recs, tmp_path / "ad", model="tiny-random", lora=LoraSettings(rank=2), train=TrainConfig(max_steps=0),
                    runtime=RuntimeConfig(device="cpu", dtype="fp32"))
    assert res.summary["certified"] == 0.0
    checks = recheck(tmp_path / "ad", recs, settings_for("fp32", True, None, True, False), "cpu")
    assert [c.setting for c in checks] == ["merged into base, fp32", "plain PeftModel, separate process, fp32"]
    assert all(c.lost == [r.key for r in recs] and c.certified == 0 for c in checks)
    assert checks[1].exact == 0 and all(r["min_gap"] < 0 for r in checks[1].per_record)


def test_sampling_odds_are_computed_and_sampled(adapter):
    import math

    folder, recs = adapter
    n = 60
    rows = api.sampling_odds(folder, recs, temperature=1.0, top_p=0.95, samples=n, device="cpu")
    assert [r["key"] for r in rows] == [r.key for r in recs]
    odds = [r["odds"] for r in rows]
    assert 0.1 < min(odds) and max(odds) < 0.9  # (0.35, 0.58, 0.25, 0.48, 0.52 here): sampling can miss either way
    for r in rows:
        p = r["odds"]
        assert r["samples"] == n and abs(r["sampled_exact"] / n - p) <= 4 * math.sqrt(p * (1 - p) / n) + 0.02
        assert r["log_odds"] == pytest.approx(math.log(p)) and r["weakest_factor"] < 1
