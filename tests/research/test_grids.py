"""The compare and bench grids (memft.research.grids): points, data and settings built up front, on the tiny model."""

import json

import pytest

from memft.errors import ConfigError
from memft.research.bench.phonebook import phonebook
from memft.research.grids import bench_grid, compare_grid
from memft.research.law import ratio_fraction

CPU = {"model": "tiny-random", "device": "cpu", "dtype": "fp32", "preset": "all"}


def test_compare_grid_is_every_method_at_every_rank_on_the_file(tmp_path):
    f = tmp_path / "r.jsonl"
    recs = phonebook(3, seed=2)
    f.write_text("".join(json.dumps({"key": r.key, "value": r.value}) + "\n" for r in recs))
    grid = compare_grid(f, ["sft", "memft-ot"], [1, 2], lr=0.03, max_steps=7, seed=1, method_options={"threshold": 0.6}, **CPU)
    assert [p.label for p in grid.points] == ["sft r=1", "memft-ot r=1", "sft r=2", "memft-ot r=2"]
    assert grid.benchmark == "compare" and grid.n_records == 3 and all(p.ratio is None for p in grid.points)
    assert all([r.key for r in p.data[0]] == [r.key for r in recs] and p.data[1] is None for p in grid.points)
    ot = grid.points[1].train
    assert (ot.method, ot.lr, ot.max_steps, ot.seed, ot.margin, ot.active_set, ot.method_options) == ("memft-ot", 0.03, 7, 1, 0.0, False, {"threshold": 0.6})
    assert grid.points[0].train.method_options == {}  # sft has no threshold
    s = grid.settings
    assert (s["model"], s["dtype"], s["device"], s["preset"], s["records"]) == ("tiny-random", "fp32", "cpu", "all", str(f))
    assert set(s["train"]) == {"sft", "memft-ot"} and s["train"]["memft-ot"]["method_options"] == {"threshold": 0.6}
    with pytest.raises(ConfigError, match="not an option of any of sft"):
        compare_grid(f, ["sft"], [1], method_options={"gamma": 3}, **CPU)


def test_bench_grid_builds_every_data_set_before_training():
    grid = bench_grid("stress", [1, 2], [8, 16], [0, 100], ["sft"], max_steps=3, fixed_budget=True, **CPU)
    assert [p.label for p in grid.points][:4] == ["sft r=1 ℓ=8 ρ=0", "sft r=2 ℓ=8 ρ=0", "sft r=1 ℓ=8 ρ=1", "sft r=2 ℓ=8 ρ=1"]
    assert len(grid.points) == 8 and [p.ratio for p in grid.points[:4]] == [0.0, 0.0, 1.0, 1.0]
    assert all(len(p.data[0]) == 1 and len(p.data[0][0].value_ids) == int(p.label.split("ℓ=")[1].split()[0]) for p in grid.points)
    assert grid.points[0].data is grid.points[1].data  # one data set per (ℓ, ρ), shared by its ranks and methods
    assert grid.points[0].train.stop_when_certified is False
    assert (grid.settings["benchmark"], grid.settings["heldout"], grid.settings["text"]) == ("stress", None, None)
    rule = bench_grid("rule", [1], [5], methods=["sft"], heldout=4, **CPU)
    (p,) = rule.points
    assert p.label == "sft r=1 ℓ=5" and len(p.data[0]) == 5 and len(p.data[1]) == 4 and rule.settings["heldout"] == 4
    with pytest.raises(ConfigError, match="--ratios 150: fractions in"):
        bench_grid("stress", [1], [8], [150], **CPU)
    with pytest.raises(ConfigError, match="must be positive"):
        bench_grid("stress", [0], [8], **CPU)
    with pytest.raises(ConfigError, match="unknown benchmark"):
        bench_grid("nope", [1], **CPU)
    assert (ratio_fraction(0.25), ratio_fraction(50)) == (0.25, 0.5)
