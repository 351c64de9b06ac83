"""Which rows the law is fitted to (memft.research.law.select): complete, not saturated."""

import pytest

from memft.research.law import saturated, select


def test_saturation_rule_drops_exactly_the_right_rows():
    rows = [
        {"rank": 1, "length": 64, "loss_init": 2.0, "delta_loss": 1.85},  # 0: kept (1.85 < 0.95 * 2 = 1.9)
        {"rank": 1, "length": 64, "loss_init": 2.0, "delta_loss": 1.95},  # 1: saturated
        {"rank": 1, "length": 64, "loss_init": 2.0, "delta_loss": None, "loss_final": 0.05},  # 2: ΔL 1.95, saturated
        {"rank": 1, "length": 64, "loss_init": 2.0, "delta_loss": None, "loss_final": 0.5},  # 3: ΔL 1.5, kept
        {"rank": None, "length": 64, "loss_init": 2.0, "delta_loss": 1.0},  # 4: incomplete
        {"rank": 1, "length": 64, "loss_init": float("nan"), "delta_loss": 1.0},  # 5: incomplete
        {"rank": 1, "length": 64, "loss_init": 2.0},  # 6: incomplete
        {"rank": 0, "length": 64, "loss_init": 2.0, "delta_loss": 1.0},  # 7: rank must be > 0
    ]
    assert select(rows) == [rows[0], rows[3]]
    assert saturated(rows[1]) and saturated(rows[2]) and not saturated(rows[0])
    assert saturated(rows[0], eps=0.1)  # 1.85 >= 0.9 * 2
    assert select(rows, eps=0.1) == [rows[3]]
    with pytest.raises(ValueError, match="eps"):
        select(rows, eps=1.0)
