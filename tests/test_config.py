import pytest

from memft.config import LoraSettings, RuntimeConfig, TrainConfig
from memft.errors import ConfigError


@pytest.mark.parametrize("rank", [0, -3])
def test_rank_must_be_positive(rank):
    with pytest.raises(ConfigError, match="--rank must be a positive integer"):
        LoraSettings(rank=rank)


def test_all_problems_reported_at_once():
    with pytest.raises(ConfigError) as e:
        TrainConfig(lr=-1, max_steps=-2, template="xml", method="nope")
    msg = str(e.value)
    for part in ("--lr", "--max-steps", "--template", "--method"):
        assert part in msg


def test_runtime_and_preset_choices():
    with pytest.raises(ConfigError, match="--device"):
        RuntimeConfig(device="tpu")
    with pytest.raises(ConfigError, match="--preset"):
        LoraSettings(preset="everything")
    assert LoraSettings(rank=4).scale_alpha == 4.0 and LoraSettings(rank=4, alpha=8).scale_alpha == 8.0


@pytest.mark.parametrize("bad, needle", [
    (dict(lr=float("inf")), "--lr must be a finite number > 0, got inf"),
    (dict(lr=float("nan")), "--lr must be a finite number > 0, got nan"),
    (dict(weight_decay=float("inf")), "--weight-decay must be a finite number >= 0, got inf"),
])
def test_non_finite_training_settings_are_refused(bad, needle):
    with pytest.raises(ConfigError, match=needle):
        TrainConfig(**bad)


@pytest.mark.parametrize("alpha", [float("nan"), float("inf"), 0.0])
def test_non_finite_alpha_is_refused(alpha):
    with pytest.raises(ConfigError, match="--alpha must be a finite number > 0"):
        LoraSettings(alpha=alpha)


def test_schedule_and_clipping_options():
    assert TrainConfig(lr_schedule="linear", max_grad_norm=1.0).max_grad_norm == 1.0
    with pytest.raises(ConfigError) as e:
        TrainConfig(lr_schedule="cosine", max_grad_norm=0)
    assert "--lr-schedule must be one of constant, linear, progress, got 'cosine'" in str(e.value)
    assert "--max-grad-norm must be a finite number > 0 (or left out: no clipping), got 0" in str(e.value)


def test_scale_options_are_checked_together():
    with pytest.raises(ConfigError) as e:
        TrainConfig(head_vocab="some", lora_init="pca", a_lr_scale=-1, replay=1.0)
    msg = str(e.value)
    assert "--replay must be a share in [0, 1), got 1.0" in msg
    assert "--head-vocab must be one of full, restricted, got 'some'" in msg
    assert "--lora-init must be one of random, centered, null, null-contrast, got 'pca'" in msg
    assert "--a-lr-scale must be a finite number >= 0, got -1" in msg
    assert TrainConfig(a_lr_scale=0, head_vocab="restricted", lora_init="centered").a_lr_scale == 0
    assert [TrainConfig(lora_init=i).lora_init for i in ("null", "null-contrast")] == ["null", "null-contrast"]
