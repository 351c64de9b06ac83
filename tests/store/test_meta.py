"""memft.json through AdapterMeta: folders written by the previous release still load, recall and rewrite; the
layout on disk is unchanged except for the added `format`.

tests/data/adapter-0.1.0 was written by memft 0.1.0 at commit b014fc0 (tiny-random, rank-2 probe, seed 0, records
Ann: 0042, Bob: x=7, Cy: é!, with a top-level `sizing` entry as the CLI adds one).
"""

import json
import shutil
from pathlib import Path

import pytest

from memft import api
from memft.store import meta
from memft.config import RuntimeConfig
from memft.errors import AdapterError
from memft.store import ledger
from memft.store.meta import AdapterMeta
from memft.prompts.records import Record

OLD = Path(__file__).parents[1] / "data" / "adapter-0.1.0"
HELD = {"Ann:": "0042", "Bob:": "x=7", "Cy:": "é!"}

# memft.json of the first adapters (before salted digests and the ledger): no digest scheme, no digests list, no
# format. Hand-written in that release's layout.
FIRST = {
    "memft_version": "0.1.0", "created": "2026-11-29T10:00:00+00:00",
    "base": {"spec": "tiny-random", "dtype": "fp32", "device": "cpu"}, "template": "raw",
    "lora": {"rank": 4, "alpha": None, "preset": "all", "layers": [0, 1], "target_modules": None, "modules": ["model.layers.0.mlp.up_proj"]},
    "train": {"method": "sft", "lr": 0.02, "max_steps": 100, "seed": 3, "steps": 40},
    "records": {"count": 2, "hash": "ab" * 32, "value_tokens": 9},
    "certification": {"dtype": "fp32", "device": "cpu", "certified": 1.0, "p_above_half": 1.0, "min_prob": 0.6, "failed_keys": []},
}


def test_the_previous_release_layout_reads_into_typed_fields_and_writes_back_unchanged():
    raw = json.loads((OLD / "memft.json").read_text(encoding="utf-8"))
    assert "format" not in raw  # format 1
    m = meta.read(OLD)
    assert (m.base.spec, m.base.dtype, m.certification.dtype, m.template) == ("tiny-random", "fp32", "fp32", "raw")
    assert (m.lora.rank, m.lora.layers, m.lora.preset, m.lora.alpha) == (2, (2,), "probe", None)
    assert m.lora.modules == ("model.layers.2.mlp.gate_proj", "model.layers.2.mlp.up_proj", "model.layers.2.mlp.down_proj")
    assert (m.records.count, m.records.max_target_tokens, m.records.value_tokens) == (3, 5, 10)
    assert m.records.scheme.name == "scrypt-v1" and len(m.records.digests) == 3
    assert m.seed == 0 and m.train["steps"] == 17 and m.extra == {"sizing": {"note": "a top-level entry the CLI adds"}}
    cfg = m.train_config()
    assert (cfg.lr, cfg.max_steps, cfg.margin, cfg.method) == (0.05, 300, 0.5, "sft")
    # written back: the same object plus the format and activation entries, so an older memft reads what this one writes
    assert m.to_json() == {**raw, "format": meta.ALWAYS_FORMAT, "activation": "always"}
    assert AdapterMeta.from_json(m.to_json()) == m


def test_the_first_layout_reads_with_its_defaults():
    m = AdapterMeta.from_json(FIRST)
    assert m.records.digest is None and m.records.scheme.name == "sha256" and m.records.digests is None
    assert m.records.max_target_tokens == meta.DEFAULT_MAX_TARGET_TOKENS == 256
    assert m.seed == 3 and m.train_config().batch_size == 64  # a TrainConfig field the file lacks takes its default
    assert (m.activation, m.invocation, m.invocation_tokens, m.key_prefix) == ("always", None, None, "")  # before keyed adapters
    out = m.to_json()
    assert "digest" not in out["records"] and "digests" not in out["records"]  # absent stays absent
    no_template = {k: v for k, v in FIRST.items() if k not in ("template",)}
    assert AdapterMeta.from_json(no_template).template == meta.DEFAULT_TEMPLATE == "raw"


def test_entries_a_newer_memft_adds_are_kept():
    newer = {**FIRST, "format": meta.FORMAT, "lora": {**FIRST["lora"], "dora": False}, "locality": {"kl": 0.1},
             "train": {**FIRST["train"], "some_new_knob": 7}}
    m = AdapterMeta.from_json(newer)
    assert m.extra == {"locality": {"kl": 0.1}} and m.lora.extra == {"dora": False}
    out = m.to_json()
    assert out["lora"]["dora"] is False and out["locality"] == {"kl": 0.1} and out["train"]["some_new_knob"] == 7
    assert m.train_config().lr == 0.02  # fields TrainConfig does not know are ignored there, kept in the file


@pytest.mark.parametrize("change, needle", [
    (lambda o: o.pop("base"), "lacks 'spec'"),
    (lambda o: o["certification"].update(dtype="auto"), "dtype 'auto'"),
    (lambda o: o.update(format=99), "format 99 was written by a newer memft"),
    (lambda o: o.update(format="two"), "format 'two'"),
    (lambda o: o.update(lora=[]), "not the JSON object memft writes"),
    (lambda o: o["lora"].update(layers=3), "a malformed entry"),
])
def test_a_damaged_file_is_one_adapter_error(change, needle):
    obj = json.loads(json.dumps(FIRST))
    change(obj)
    with pytest.raises(AdapterError) as e:
        AdapterMeta.from_json(obj, "x/memft.json")
    assert needle in str(e.value) and str(e.value).startswith("x/memft.json") and "\n" not in str(e.value)


def test_an_adapter_folder_of_the_previous_release_loads_and_recalls(tmp_path):
    ld = api.load_adapter(OLD, device="cpu")  # the ledger cross-check (fingerprint) passes on the old files
    assert ld.dtype == "fp32" and isinstance(ld.meta, AdapterMeta)
    got = api.recall_many(ld, list(HELD) + ["Dee:"])
    assert [(r.key, r.value, r.held, r.certified) for r in got[:3]] == [(k, v, True, True) for k, v in HELD.items()]
    assert not got[3].held and got[3].value == ""
    assert api.verify(ld, [Record(k, v) for k, v in HELD.items()]).summary["exact_match"] == 1.0
    book = ledger.read(OLD)
    assert book.fingerprint == ledger.fingerprint(meta.read(OLD))  # the fingerprint is computed as 0.1.0 computed it


def test_a_previous_release_folder_takes_an_append_and_keeps_its_entries(tmp_path):
    from memft.memory.rewrite import append

    ad = tmp_path / "ad"
    shutil.copytree(OLD, ad)
    res = append(ad, [Record("Dee:", "77")], runtime=RuntimeConfig(device="cpu"))
    assert res.saved and res.plan["kept"] == list(HELD) and res.plan["added"] == ["Dee:"]
    raw = json.loads((ad / "memft.json").read_text(encoding="utf-8"))
    assert raw["format"] == meta.ALWAYS_FORMAT and raw["records"]["count"] == 4  # (a rewrite writes its own entries: no `sizing`)
    assert raw["train"]["lr"] == 0.05  # the write's settings are replayed
    got = api.recall_many(str(ad), [*HELD, "Dee:"])
    assert [r.value for r in got] == [*HELD.values(), "77"] and all(r.certified for r in got)
