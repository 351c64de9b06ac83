"""Sweep configs and their points (memft.research.sweep.config), one point's data (worker.build_dataset)."""

import json
import textwrap

import pytest

from memft.errors import ConfigError
from memft.research.results import run_id
from memft.research.sweep import SweepConfig, build_dataset

# Small and fast on the tiny random model: 8 target tokens, a few steps.
FAST = dict(models=["tiny-random"], benchmarks=["stress"], lengths=[8], ranks=[1], methods=["sft"],
            lr=0.02, max_steps=3, preset="all", device="cpu", dtype="fp32")


def _yaml(tmp_path, text):
    p = tmp_path / "sweep.yaml"
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


# ---------------------------------------------------------------- config and points


def test_points_product_and_run_ids(tmp_path):
    cfg = SweepConfig(models=["tiny-random", "org/model"], benchmarks=["stress", "phonebook"], ratios=[0, 0.5, 1],
                      lengths=[8, 16], ranks=[1, 2], methods=["sft", "memft-ot"], seeds=[0, 1])
    pts = cfg.points()
    # per model: stress 2 lengths x 3 ratios x 2 seeds x 2 ranks x 2 methods + phonebook the same without ratios
    assert len(pts) == 2 * (2 * 3 * 2 * 2 * 2 + 2 * 2 * 2 * 2)
    assert len({p["run_id"] for p in pts}) == len(pts)
    assert {p["ratio"] for p in pts if p["benchmark"] == "phonebook"} == {None}
    assert {p["ratio"] for p in pts if p["benchmark"] == "stress"} == {0.0, 0.5, 1.0}
    assert all(p["run_id"] == run_id({k: v for k, v in p.items() if k != "run_id"}) for p in pts)
    assert [p["model"] for p in pts[:64]] == ["tiny-random"] * 64  # grouped by model: each is loaded once

    same = SweepConfig(models=["tiny-random", "org/model"], benchmarks=["stress", "phonebook"], ratios=[0.0, 0.5, 1.0],
                       lengths=[8, 16], ranks=[1, 2], methods=["sft", "memft-ot"], seeds=[0, 1], lr="1e-2")
    assert [p["run_id"] for p in same.points()] == [p["run_id"] for p in pts]  # 0 == 0.0, "1e-2" (YAML) == 0.01
    other_lr = SweepConfig(**{**FAST, "lr": 0.03}).points()
    assert {p["run_id"] for p in other_lr}.isdisjoint(p["run_id"] for p in SweepConfig(**FAST).points())
    assert SweepConfig(**{**FAST, "device": "auto"}).points() == SweepConfig(**FAST).points()  # device: not in the id


def test_training_setup_keys_join_a_point_only_when_set():
    old_keys = {"model", "benchmark", "length", "ratio", "rank", "method", "seed", "lr", "max_steps", "preset", "stop_when_certified",
                "dtype", "method_options", "heldout", "text_sha256", "run_id"}
    assert set(SweepConfig(**FAST).points()[0]) == old_keys  # defaults: the run ids of existing stores do not change
    ref = SweepConfig(**{**FAST, "lr_schedule": "linear", "max_grad_norm": 1.0, "batch_size": 4, "template": "chat"}).points()[0]
    assert {k: ref[k] for k in ("lr_schedule", "max_grad_norm", "batch_size", "template")} == {
        "lr_schedule": "linear", "max_grad_norm": 1.0, "batch_size": 4, "template": "chat"}
    sw = SweepConfig(**{**FAST, "methods": ["memft-sw", "memft-sw-v01"]}).points()
    assert {(p["method"], p.get("objective_revision")) for p in sw} == {("memft-sw", 2), ("memft-sw-v01", None)}  # memft-sw changed meaning: new ids
    with pytest.raises(ConfigError) as e:
        SweepConfig(**{**FAST, "lr_schedule": "cosine", "max_grad_norm": -1, "batch_size": 0, "template": "xml"})
    for key in ("lr_schedule", "max_grad_norm", "batch_size", "template"):
        assert f"{key} must be" in str(e.value)


def test_layers_and_modules_join_a_point_only_when_set_and_reach_the_adapter(monkeypatch):
    from memft.research import runs
    from memft.research.sweep.worker import Worker

    assert not {"layers", "target_modules"} & set(SweepConfig(**FAST).points()[0])  # sweeps without them keep their run ids
    pts = SweepConfig(**{**FAST, "preset": "probe", "layers": [2, 1, 2], "target_modules": ["down_proj"]}).points()
    assert (pts[0]["layers"], pts[0]["target_modules"]) == ([1, 2], ["down_proj"])  # sorted, each once
    assert pts[0]["run_id"] != SweepConfig(**{**FAST, "preset": "probe"}).points()[0]["run_id"]
    got = {}

    def fake_point(benchmark, data, base, lora, train, ratio=None, on_step=None, on_fit=None):
        got["lora"] = lora
        return {"benchmark": benchmark}

    monkeypatch.setattr(runs, "run_benchmark_point", fake_point)
    Worker("cpu", None).run(pts[0])
    assert (got["lora"].preset, got["lora"].layers, got["lora"].target_modules, got["lora"].rank) == ("probe", (1, 2), ("down_proj",), 1)
    with pytest.raises(ConfigError, match="layers must be.*target_modules must be"):
        SweepConfig(**{**FAST, "layers": [-1], "target_modules": []})


def test_lengths_per_benchmark_and_method_options():
    cfg = SweepConfig(models=["tiny-random"], benchmarks=["stress", "rule"], lengths={"rule": [5]}, ratios=[0],
                      ranks=[1], methods=["sft", "memft-ot"], method_options={"threshold": 0.6}, heldout=7)
    pts = cfg.points()
    assert sorted({(p["benchmark"], p["length"]) for p in pts}) == [("rule", 5), ("stress", 64), ("stress", 128), ("stress", 256)]
    assert {p["heldout"] for p in pts if p["benchmark"] == "rule"} == {7}
    assert {p["heldout"] for p in pts if p["benchmark"] == "stress"} == {None}
    assert {json.dumps(p["method_options"]) for p in pts if p["method"] == "sft"} == {"{}"}
    assert {json.dumps(p["method_options"]) for p in pts if p["method"] == "memft-ot"} == {'{"threshold": 0.6}'}


def test_config_reports_every_problem_at_once():
    with pytest.raises(ConfigError) as e:
        SweepConfig(models=["tiny-random"], benchmarks=["stress", "nope"], ranks=[0], lr=-1, methods=["sft", "bogus"], ratios=[2])
    msg = str(e.value)
    assert "\n" not in msg
    for part in ("benchmarks: unknown 'nope'", "ranks must be", "lr must be positive", "methods: unknown 'bogus'", "ratios [2.0]"):
        assert part in msg


def test_yaml_errors_are_one_line_naming_the_file(tmp_path):
    good = _yaml(tmp_path, """\
        models: tiny-random
        benchmarks: [stress]
        lengths: [8]
        lr: 1e-2
        """)
    cfg = SweepConfig.from_yaml(good)
    assert cfg.models == ["tiny-random"] and cfg.lr == 0.01 and cfg.lengths == {"stress": [8]}

    cases = {
        "models: [tiny-random\nranks: [1]\n": "malformed YAML",
        "models: [tiny-random]\nrnks: [1]\n": "unknown key 'rnks' (did you mean 'ranks'?)",
        "- tiny-random\n": "must be a mapping",
        "models: [tiny-random]\nranks: [0]\nmax_steps: -1\n": "ranks must be",
    }
    for text, want in cases.items():
        p = _yaml(tmp_path, text)
        with pytest.raises(ConfigError) as e:
            SweepConfig.from_yaml(p)
        msg = str(e.value)
        assert msg.startswith(str(p)) and want in msg and "\n" not in msg, msg
    with pytest.raises(ConfigError, match=r"sweep.yaml:2:\d+: malformed YAML"):
        SweepConfig.from_yaml(_yaml(tmp_path, "models: [a]\n  bad: : x\n"))
    with pytest.raises(ConfigError, match="max_steps must be an integer >= 0"):
        SweepConfig.from_yaml(_yaml(tmp_path, "models: [tiny-random]\nmax_steps: -1\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        SweepConfig.from_yaml(tmp_path / "missing.yaml")


def test_build_dataset_matches_the_generators():
    from memft.model.base import tiny_tokenizer
    from memft.research.bench import phonebook, rule

    tok = tiny_tokenizer()
    recs, held = build_dataset("phonebook", 40, None, tok, 3, 0)
    assert recs == phonebook.phonebook_by_length(40, tok, seed=3) and held is None
    assert build_dataset("rule", 4, None, tok, 1, 2) == rule.rule_split(4, 2, seed=1)
    (rec,), held = build_dataset("stress", 8, 0.5, tok, 0, 0, text="some plain text, long enough for eight")
    assert len(rec.value_ids) == 8 and held is None
    with pytest.raises(ConfigError, match="unknown benchmark"):
        build_dataset("nope", 8, None, tok, 0, 0)


def test_the_prepared_claim_sweeps_are_valid_and_pass_each_method_its_options():
    """benchmarks/paper/next/: the runs issue 27 needs and this machine could not afford, validated before any work."""
    from pathlib import Path

    from memft.research.sweep.config import SweepConfig

    root = Path(__file__).resolve().parents[3] / "benchmarks" / "paper" / "next"
    pb = SweepConfig.from_yaml(root / "phonebook_powered.yaml")
    assert pb.options_for("memft-ot") == {"fallback": "sft"} and pb.options_for("sft") == {}
    assert pb.options_for("memft-sw-curriculum") == {"order": "shortest", "stage_epochs": 4}
    assert pb.options_for("memft-sw-phonebook") == {"fallback": "sft", "order": "shortest", "stage_epochs": 4}
    assert SweepConfig.from_yaml(root / "phonebook_powered_skip.yaml").options_for("memft-ot") == {"fallback": "skip"}
    assert len(pb.seeds) == 10 and pb.stop_when_certified is False
    ot = SweepConfig.from_yaml(root / "stress_ot_ranks.yaml")
    assert ot.ranks == [2, 4, 8] and ot.options_for("memft-ot") == {"fallback": "sft"}
    assert SweepConfig.from_yaml(root / "stress_budget_1200.yaml").max_steps == 1200
