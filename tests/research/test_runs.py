import json

import pytest

from memft.config import LoraSettings, TrainConfig
from memft.model.base import resolve_dtype
from memft.research.bench.phonebook import phonebook
from memft.research.bench.rule import rule_split
from memft.research.runs import ROW_FIELDS, rows_to_csv, run_point


def test_run_point_row_and_base_restored(tiny, tmp_path):
    recs = phonebook(4, seed=0)
    row = run_point(recs, tiny, LoraSettings(rank=4, preset="all"), TrainConfig(lr=2e-2, max_steps=200), extra={"benchmark": "x"})
    assert list(row)[: len(ROW_FIELDS)] == list(ROW_FIELDS)
    assert row["benchmark"] == "x" and row["records"] == 4 and row["length"] == 40 and row["rank"] == 4
    assert row["certified"] == 1.0 and row["exact_match"] == 1.0 and row["steps"] == row["steps_to_certify"]
    assert abs(row["delta_loss"] - (row["loss_init"] - row["loss_final"])) < 1e-12 and row["delta_loss"] > 0
    assert row["first_failure"] == [None] * 4
    assert not any("lora" in n for n, _ in tiny.model.named_parameters())
    rows_to_csv([row], tmp_path / "r.csv")
    assert (tmp_path / "r.csv").read_text().splitlines()[0].startswith("benchmark,model,method")


def test_heldout_is_evaluated_not_trained(tiny):
    train, test = rule_split(6, 5, seed=1)
    row = run_point(train, tiny, LoraSettings(rank=4, preset="all"), TrainConfig(lr=2e-2, max_steps=200), heldout=test)
    assert row["exact_match"] == 1.0
    assert row["heldout_exact_match"] is not None and row["heldout_exact_match"] < 1.0  # a random tiny model does not generalize


from tests.cli.test_cli import memft as _memft


@pytest.mark.slow  # every method trained on 4 records; run_point's rows and compare's option errors are tested fast
def test_compare_cli_complete_table(tmp_path):
    f = tmp_path / "r.jsonl"
    f.write_text("".join(json.dumps({"key": r.key, "value": r.value}) + "\n" for r in phonebook(4, seed=2)))
    r = _memft("compare", f, "--methods", "sft,memft-ot", "--ranks", "2,4", "--model", "tiny-random", "--preset", "all",
               "--lr", "0.02", "--max-steps", "60", "--json", tmp_path / "c.json", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "c.json").read_text())["rows"]
    assert sorted((x["method"], x["rank"]) for x in rows) == [("memft-ot", 2), ("memft-ot", 4), ("sft", 2), ("sft", 4)]
    for x in rows:
        for k in ("token_accuracy", "exact_match", "certified"):
            assert 0.0 <= x[k] <= 1.0
        assert x["steps_to_certify"] is None or x["steps_to_certify"] <= 60
    assert any(x["method"] == "memft-ot" and x["certified"] == 1.0 for x in rows)
    assert "r.jsonl: 4 records, tiny-random" in r.stderr  # the table was printed


def test_compare_cli_rejects_unknown_method_option(tmp_path):
    f = tmp_path / "r.jsonl"
    f.write_text('{"key": "a", "value": "1"}\n')
    r = _memft("compare", f, "--methods", "sft", "--method-options", '{"gamma": 3}', "--model", "tiny-random")
    assert r.returncode == 2 and "not an option of any of sft" in r.stderr


@pytest.mark.slow  # three bench grids; the bench CLI's results file is tested fast below, stress and rule data in test_bench_data.py
def test_bench_cli_stress_and_rule(tmp_path):
    r = _memft("bench", "stress", "--model", "tiny-random", "--ranks", "2", "--lengths", "16", "--ratios", "0%,100%",
               "--preset", "all", "--lr", "0.02", "--max-steps", "20", "--json", tmp_path / "s.json", "--device", "cpu", "--quiet")
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "s.json").read_text())["rows"]
    assert [(x["ratio"], x["length"], x["records"]) for x in rows] == [(0.0, 16, 1), (1.0, 16, 1)]
    r = _memft("bench", "rule", "--model", "tiny-random", "--ranks", "2", "--lengths", "5", "--heldout", "4",
               "--preset", "all", "--max-steps", "5", "--json", tmp_path / "r.json", "--device", "cpu", "--quiet")
    assert r.returncode == 0, r.stderr
    (row,) = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert row["records"] == 5 and row["heldout_exact_match"] is not None
    bad = _memft("bench", "stress", "--model", "tiny-random", "--ratios", "150")
    assert bad.returncode == 2 and "--ratios" in bad.stderr


def test_research_points_share_one_training_setup_and_option_split():
    from memft.errors import ConfigError
    from memft.research.runs import options_by_method, research_train

    t = research_train("memft-ot", lr=0.03, max_steps=7, seed=2)
    assert (t.margin, t.active_set, t.stop_when_certified, t.lr, t.max_steps, t.seed) == (0.0, False, True, 0.03, 7, 2)
    assert research_train("sft", stop_when_certified=False).stop_when_certified is False
    opts = options_by_method(["sft", "memft-ot", "focal"], {"threshold": 0.9, "gamma": 3})
    assert opts == {"sft": {}, "memft-ot": {"threshold": 0.9}, "focal": {"gamma": 3}}
    with pytest.raises(ConfigError, match="--method-options gamma: not an option of any of sft, memft-ot"):
        options_by_method(["sft", "memft-ot"], {"gamma": 3})
    with pytest.raises(ConfigError, match="--methods: unknown 'nope'"):
        options_by_method(["nope"], {})


def test_bench_results_file_carries_the_resolved_config(tmp_path):
    r = _memft("bench", "phonebook", "--model", "tiny-random", "--ranks", "2", "--lengths", "20", "--preset", "all",
               "--lr", "0.03", "--max-steps", "4", "--seed", "1", "--json", tmp_path / "p.json", "--device", "cpu", "--quiet")
    assert r.returncode == 0, r.stderr
    out = json.loads((tmp_path / "p.json").read_text())
    cfg = out["config"]
    auto = resolve_dtype("auto", "cpu")  # bf16 on CPUs with fast bf16 (or MEMFT_AUTO_DTYPE=bf16), else fp32
    assert (cfg["model"], cfg["dtype"], cfg["device"], cfg["preset"], cfg["benchmark"]) == ("tiny-random", auto, "cpu", "all", "phonebook")
    t = cfg["train"]["sft"]
    assert (t["lr"], t["max_steps"], t["seed"], t["margin"], t["active_set"]) == (0.03, 4, 1, 0.0, False)
    (row,) = out["rows"]
    assert (row["lr"], row["max_steps"], row["margin"], row["preset"], row["dtype"], row["device"]) == (0.03, 4, 0.0, "all", auto, "cpu")


def test_shortest_order_is_resolved_from_the_records(tiny):
    from memft.prompts.encoding import encode_all
    from memft.prompts.records import Record
    from memft.research.runs import resolve_order

    recs = [Record("a long key here:", "1 2 3 4 5"), Record("k:", "1"), Record("key:", "1 2"), Record("k:", "1 2 3")]
    sizes = [len(e.prompt) + e.n_value for e in encode_all(recs, tiny.tokenizer, "raw")]
    train = TrainConfig(method="memft-sw-curriculum", method_options={"order": "shortest"})
    got = resolve_order(train, recs, tiny.tokenizer).method_options["order"]
    assert got == sorted(range(4), key=lambda i: (sizes[i], i)) and got[-1] == 0  # the longest record comes last
    plain = TrainConfig(method="memft-sw-curriculum")
    assert resolve_order(plain, recs, tiny.tokenizer) is plain


def test_a_point_trains_with_the_easy_first_curriculum(tiny):
    from memft.research.runs import research_train

    recs = phonebook(4, seed=0)
    train = research_train("memft-sw-curriculum", lr=2e-2, max_steps=6, method_options={"order": "shortest", "stage_epochs": 1},
                           stop_when_certified=False)
    row = run_point(recs, tiny, LoraSettings(rank=4, preset="all"), train)
    assert row["steps"] == 6 and row["records"] == 4  # "shortest" resolved to an order before the loop saw it
