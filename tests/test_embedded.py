"""The embedded SmolLM2-135M model end to end (minutes on 2 CPU cores; CI runs these)."""

import json
from pathlib import Path

import pytest

from memft import api
from memft.config import LoraSettings, TrainConfig
from memft.records import load_records

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
