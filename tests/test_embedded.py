"""The embedded SmolLM2-135M model end to end (minutes on 2 CPU cores; CI runs these)."""

import json
from pathlib import Path

import pytest

from memft import api
from memft.config import LoraSettings, TrainConfig
from memft.prompts.records import load_records

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_embedded_write_recall_varied_records(tmp_path):
    recs = load_records(EXAMPLES / "varied.jsonl")[:6]  # punctuation, URLs, LaTeX, backslashes, newlines
    res = api.write(recs, tmp_path / "ad", model="smollm2-135m", lora=LoraSettings(rank=8), train=TrainConfig(lr=1e-2, max_steps=300))
    assert res.all_certified, res.summary
    meta = json.loads((tmp_path / "ad" / "memft.json").read_text())
    assert meta["lora"]["layers"] == [20] and meta["base"]["spec"] == "smollm2-135m"
    loaded = api.load_adapter(tmp_path / "ad", device="cpu")
    for r in recs:
        got = api.recall(loaded, r.key)
        assert got.value == r.value and got.certified
    ver = api.verify(loaded, recs, generate="always")
    assert ver.summary["exact_match"] == 1.0


def test_embedded_append_forget_and_deployment_recheck_from_the_cli(tmp_path):
    from tests.cli.test_cli import memft

    recs = load_records(EXAMPLES / "varied.jsonl")
    first, more = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("".join(json.dumps({"key": r.key, "value": r.value}, ensure_ascii=False) + "\n" for r in recs[:4]), encoding="utf-8")
    more.write_text("".join(json.dumps({"key": r.key, "value": r.value}, ensure_ascii=False) + "\n" for r in recs[4:7]), encoding="utf-8")
    ad = tmp_path / "ad"
    assert memft("write", first, "--out", ad, "--activation", "always", "--quiet").returncode == 0  # always: merged below
    app = memft("append", ad, more, "--quiet", "--json", tmp_path / "app.json")
    assert app.returncode == 0, app.stderr
    assert json.loads((tmp_path / "app.json").read_text())["certified"] == 1.0
    gone = memft("forget", ad, recs[0].key, "--quiet")
    assert gone.returncode == 0, gone.stderr
    assert memft("recall", ad, recs[0].key).stdout != recs[0].value + "\n"
    held = tmp_path / "held.jsonl"
    held.write_text("".join(json.dumps({"key": r.key, "value": r.value}, ensure_ascii=False) + "\n" for r in recs[1:7]), encoding="utf-8")
    dep = memft("verify", ad, held, "--merged", "--plain-peft", "--quiet", "--json", tmp_path / "d.json")
    checks = json.loads((tmp_path / "d.json").read_text())["deploy"]
    assert [c["records"] for c in checks] == [6, 6] and checks[1]["exact"] == checks[1]["certified"]
    assert dep.returncode == (0 if all(c["certified"] == 6 for c in checks) else 1)
