"""Writing for llama.cpp (`--deploy llama.cpp`, memft.runtime.deploy_write): the target and certificate round-trip to
memft.json, records llama.cpp loses are trained further, and bad input is refused in one line with nothing written."""

import json

import pytest

from memft.prompts.records import Record
from tests.cli.test_cli import memft
from tests.conftest import write_jsonl

pytest.importorskip("xllamacpp", reason="the llama.cpp binding (memft[llamacpp]) is not installed")

SETTINGS = dict(rank=4, preset="all")


def _train(**kw):
    from memft.config import TrainConfig

    return TrainConfig(lr=0.02, max_steps=300, **kw)


def test_raised_margins_go_halfway_to_one():
    from memft.runtime.deploy_write import DEPLOY_MARGIN, deploy_config, raised

    assert [raised(m) for m in (0.8, 0.9, 0.5)] == [0.9, 0.95, 0.75]
    assert deploy_config(_train()).margin == DEPLOY_MARGIN and deploy_config(_train(margin=0.95)).margin == 0.95


def test_a_deploy_write_is_certified_in_llama_cpp_and_says_so_in_memft_json(tiny_deploy, tmp_path):
    from memft.config import LoraSettings
    from memft.store.meta import read
    from memft.runtime import deploy_write
    from memft.runtime.certify import RuntimeCertificate, sha256_file

    _, recs, base_gguf, base = tiny_deploy
    t = deploy_write.target("llama.cpp", base_gguf, "tiny-random")
    res, outcome = deploy_write.write(recs, tmp_path / "ad", t, lora=LoraSettings(**SETTINGS), train=_train(), base=base)
    assert res.all_certified and outcome.all_exact
    meta = read(tmp_path / "ad")
    entry = meta.extra["deploy"]
    assert (entry["runtime"], entry["base_gguf"], entry["base_sha256"]) == ("llama.cpp", "tiny.gguf", sha256_file(base_gguf))
    assert entry["exact"] == entry["records"] == 3 and meta.train["margin"] == deploy_write.DEPLOY_MARGIN
    cert = RuntimeCertificate.from_extra(meta.extra)
    assert cert is not None and cert.base_sha256 == sha256_file(base_gguf) and cert.records == 3
    assert cert.matches(tmp_path / "ad")  # the saved weights are the ones llama.cpp checked
    # every target is above the deploy margin in torch
    assert min(r.min_prob for r in res.reports) > deploy_write.DEPLOY_MARGIN
    # verify without --runtime says, in one line, where the adapter was certified
    f = write_jsonl(tmp_path / "r.jsonl", [json.dumps({"key": r.key, "value": r.value}) for r in recs])
    got = memft("verify", tmp_path / "ad", f)
    assert got.returncode == 0
    lines = [ln for ln in got.stderr.splitlines() if "written for and certified in llama.cpp on tiny.gguf" in ln]
    assert len(lines) == 1 and "--runtime llama.cpp" in lines[0]


def test_records_llama_cpp_loses_are_trained_further_until_it_gives_them_back(tiny_deploy, tmp_path):
    # Ask llama.cpp for a top-2 gap above 0.9 (exact greedy decoding asks for > 0): after training to p > 0.8 some
    # records fall short, get margin 0.9, then 0.95 (p > 0.95 leaves a gap above 0.9), and are trained further.
    from memft.config import LoraSettings
    from memft.runtime import deploy_write

    _, recs, base_gguf, base = tiny_deploy
    t = deploy_write.target("llama.cpp", base_gguf, "tiny-random")
    res, outcome = deploy_write.write(recs, tmp_path / "ad", t, lora=LoraSettings(**SETTINGS), train=_train(), base=base, min_gap=0.9)
    first = outcome.rounds[0]
    assert first.raised > 0 and first.steps > 0 and first.min_gap <= 0.9
    assert outcome.margins and set(outcome.margins.values()) <= {0.9, 0.95}
    assert len(outcome.rounds) >= 2 and outcome.check.min_gap > 0.9 and deploy_write.lost(outcome.check, 0.9) == []
    # the training after the first check is in memft.json's step count
    assert res.meta.train["steps"] > first.steps and res.meta.extra["deploy"]["rounds"][0]["raised"] == first.raised


def test_the_loop_stops_when_the_step_budget_is_spent(tiny_deploy, tmp_path):
    from memft.config import LoraSettings
    from memft.runtime import deploy_write

    _, recs, base_gguf, base = tiny_deploy
    t = deploy_write.target("llama.cpp", base_gguf, "tiny-random")
    # a gap of 0.999 cannot be reached within the rounds: the write ends without a llama.cpp certificate
    res, outcome = deploy_write.write(recs, tmp_path / "ad", t, lora=LoraSettings(**SETTINGS), train=_train(), base=base, min_gap=0.999)
    assert len(outcome.rounds) <= deploy_write.MAX_ROUNDS
    assert res.meta.train["steps"] <= 300
    assert ("runtime" in res.meta.extra) == outcome.all_exact  # exact (gap > 0) still earns the certificate


def test_a_keyed_write_for_llama_cpp_through_the_cli(tiny_deploy, tmp_path):
    from memft.store.meta import read

    _, recs, base_gguf, _ = tiny_deploy
    f = write_jsonl(tmp_path / "r.jsonl", [json.dumps({"key": r.key, "value": r.value}) for r in recs])
    got = memft("write", f, "--out", tmp_path / "ad", "--model", "tiny-random", "--rank", "4", "--preset", "all", "--lr", "0.02",
                "--deploy", "llama.cpp", "--base-gguf", base_gguf, "--dtype", "fp32", "--quiet", "--json", tmp_path / "w.json")
    assert got.returncode == 0, got.stderr
    assert "llama.cpp: 3/3 records exact on tiny.gguf" in got.stderr
    meta = read(tmp_path / "ad")
    assert meta.activation == "keyed" and meta.extra["runtime"]["runtime"] == "llama.cpp"
    assert json.loads((tmp_path / "w.json").read_text())["deploy"]["certified"] is True
    # append with --deploy: the new adapter is proven again before it replaces the old one
    more = write_jsonl(tmp_path / "m.jsonl", [json.dumps({"key": "Dee:", "value": " 987-6543"})])
    got = memft("append", tmp_path / "ad", more, "--deploy", "llama.cpp", "--base-gguf", base_gguf, "--quiet")
    assert got.returncode == 0, got.stderr
    meta = read(tmp_path / "ad")
    assert meta.records.count == 4 and meta.extra["runtime"]["records"] == 4 and meta.extra["deploy"]["exact"] == 4
    # forget with --deploy: the 3 left are proven again; without --deploy a rewrite drops target and certificate
    got = memft("forget", tmp_path / "ad", "Dee:", "--deploy", "llama.cpp", "--base-gguf", base_gguf, "--quiet")
    assert got.returncode == 0, got.stderr
    meta = read(tmp_path / "ad")
    assert meta.records.count == 3 and meta.extra["runtime"]["records"] == 3 and meta.extra["deploy"]["records"] == 3
    got = memft("append", tmp_path / "ad", more, "--quiet")
    assert got.returncode == 0 and "runtime" not in read(tmp_path / "ad").extra and "deploy" not in read(tmp_path / "ad").extra


@pytest.mark.slow
def test_the_embedded_model_written_for_its_shipped_q4_1_is_recalled_through_llama_cpp(tmp_path):
    from memft.store.meta import read
    from memft.research.bench.phonebook import phonebook

    recs = phonebook(4, seed=3)
    f = write_jsonl(tmp_path / "r.jsonl", [json.dumps({"key": r.key, "value": r.value}) for r in recs])
    got = memft("write", f, "--out", tmp_path / "ad", "--deploy", "llama.cpp", "--quiet")
    assert got.returncode == 0, got.stderr
    meta = read(tmp_path / "ad")
    assert meta.extra["deploy"]["base_gguf"] == "SmolLM2-135M-Instruct.Q4_1.gguf" and meta.extra["runtime"]["records"] == 4
    assert meta.extra["runtime"]["min_gap"] > 0
    got = memft("recall", tmp_path / "ad", recs[0].key)  # auto: through llama.cpp, as the certificate says
    assert got.returncode == 0 and got.stdout == recs[0].value + "\n"


@pytest.mark.parametrize("args, says", [
    (["--deploy", "vllm"], "--deploy 'vllm': memft can write for llama.cpp"),
    (["--deploy", "llama.cpp", "--base-gguf", "missing.gguf"], "missing.gguf: no such file"),
    (["--base-gguf", "x.gguf"], "--base-gguf needs --deploy llama.cpp"),
    (["--deploy", "llama.cpp"], "is not a GGUF file; give --base-gguf"),  # tiny-random has no GGUF of its own
])
def test_bad_deploy_input_is_one_line_and_writes_nothing(tmp_path, args, says):
    f = write_jsonl(tmp_path / "r.jsonl", [json.dumps({"key": "Ann:", "value": " 1"})])
    got = memft("write", f, "--out", tmp_path / "ad", "--model", "tiny-random", *args)
    assert got.returncode == 2 and says in got.stderr and len(got.stderr.strip().splitlines()) == 1, got.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl"]


def test_a_base_file_that_is_not_gguf_is_refused(tmp_path):
    from memft.errors import ConfigError
    from memft.runtime.deploy_write import target

    (tmp_path / "b.gguf").write_bytes(b"not a gguf")
    with pytest.raises(ConfigError, match="not a GGUF file"):
        target("llama.cpp", tmp_path / "b.gguf", "tiny-random")


def test_append_refuses_a_bad_deploy_before_loading(tiny_deploy, tmp_path):
    folder, recs, _, _ = tiny_deploy
    f = write_jsonl(tmp_path / "m.jsonl", [json.dumps({"key": "Dee:", "value": " 1"})])
    got = memft("append", folder, f, "--deploy", "ollama")
    assert got.returncode == 2 and "--deploy 'ollama'" in got.stderr and len(got.stderr.strip().splitlines()) == 1


def test_records_decoded_in_parallel_slots_get_the_verdicts_of_one_at_a_time(tiny_deploy, tmp_path):
    from memft.prompts.encoding import encode_all
    from memft.runtime.certify import check_lora_gguf
    from memft.runtime.gguf_export import Shape, write_lora_gguf

    folder, recs, base_gguf, base = tiny_deploy
    recs = [*recs, Record("Zed:", " 1")]  # one not held: a record that is not exact, and a shorter one in the batch
    items = encode_all(recs, base.tokenizer, "raw")
    write_lora_gguf(folder, tmp_path / "a.gguf", Shape.from_gguf(base_gguf))
    one = check_lora_gguf(tmp_path / "a.gguf", items, base.tokenizer, base_gguf, threads=1, parallel=1)
    many = check_lora_gguf(tmp_path / "a.gguf", items, base.tokenizer, base_gguf, threads=1, parallel=3)
    assert one.exact == many.exact == 3
    for a, b in zip(one.per_record, many.per_record):
        assert (a.key, a.exact, a.first_difference, a.recalled) == (b.key, b.exact, b.first_difference, b.recalled)
        assert abs(a.min_prob - b.min_prob) < 1e-3 and abs(a.min_gap - b.min_gap) < 1e-3
