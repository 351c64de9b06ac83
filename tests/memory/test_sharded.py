"""A store of shards end to end on the tiny model: write, recall and verify by routing, append into the open shard
or a new one, forget, and the store left unchanged when a shard does not certify."""

import json

import pytest

from memft import api
from memft.config import LoraSettings, RuntimeConfig, TrainConfig
from memft.errors import AdapterError, ConfigError, RecordsError
from memft.memory.sharded import StoreResult
from memft.prompts.records import Record
from memft.research.bench.phonebook import phonebook
from memft.store import ledger, shards

CPU = RuntimeConfig(device="cpu", dtype="fp32")


def _store(folder, records, size=3):
    return api.write(records, folder, model="tiny-random", lora=LoraSettings(rank=8, preset="all", activation="always"),
                     train=TrainConfig(lr=2e-2, max_steps=300), runtime=CPU, shard_size=size)


def _tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _keys(folder):
    return {d.name: [e.key for e in ledger.read(d).entries] for d in shards.shard_dirs(folder)}


def test_write_splits_by_key_hash_and_recall_verify_route(tmp_path):
    recs = phonebook(7, seed=3)
    st = tmp_path / "st"
    res = _store(st, recs)
    assert isinstance(res, StoreResult) and res.all_certified and res.saved and res.shard_count == 3 and res.held == 7
    parts = shards.split(recs, lambda r: r.key, 3)
    assert _keys(st) == {f"shard-{i:03d}": [r.key for r in p] for i, p in enumerate(parts)}  # sizes 3, 2, 2
    assert json.loads((st / "store.json").read_text())["shard_size"] == 3
    assert json.loads((st / "shard-001" / "memft.json").read_text())["store"] == {"shard": "shard-001"}
    got = api.recall_many(st, [recs[6].key, "Nobody Here:", recs[0].key], device="cpu")
    assert [g.value for g in got] == [recs[6].value, "", recs[0].value] and [g.certified for g in got] == [True, False, True]
    assert not got[1].held and got[1].nearest == []  # never invented, whatever shard would have generated it
    wrong = Record(recs[2].key, "000-0000")
    stranger = Record("Nobody Here:", recs[1].value)
    ver = api.verify(st, [*recs[:2], wrong, stranger], generate="always", device="cpu")
    assert [r.certified for r in ver.reports] == [True, True, False, False] and ver.summary["records"] == 4
    assert ver.reports[3].exact is False and any("no shard holds" in n for n in ver.notes)
    assert ver.dtype == ver.certified_dtype == "fp32"
    # a crash between a store swap's two renames leaves it aside: a reader puts it back and reads it as a store
    st.rename(tmp_path / f".st.memft-old-{'a' * 32}")
    assert api.recall(st, recs[3].key).value == recs[3].value and st.is_dir()


@pytest.mark.slow  # three appends; the CLI test of stores appends once (tests/cli/test_cli_memory.py)
def test_append_fills_the_open_shard_or_opens_one_and_leaves_the_others_untouched(tmp_path):
    recs = phonebook(10, seed=4)
    st = tmp_path / "st"
    _store(st, recs[:7])  # shards of 3, 2, 2
    before = _tree(st)
    res = api.append(st, recs[7:9], runtime=CPU)  # two keys do not fit beside any shard's 2 (at most 3): a new shard
    assert res.saved and res.all_certified and [(s.name, s.op, s.records) for s in res.shards] == [("shard-003", "write", 2)]
    after = _tree(st)
    assert {k: v for k, v in after.items() if k.startswith(("shard-000/", "shard-001/", "shard-002/"))} == \
        {k: v for k, v in before.items() if k.startswith(("shard-000/", "shard-001/", "shard-002/"))}  # not rewritten
    new_meta = json.loads((st / "shard-003" / "memft.json").read_text())
    assert new_meta["lora"]["rank"] == 8 and new_meta["train"]["lr"] == 2e-2  # what the user gave the store, kept
    res = api.append(st, recs[9:], runtime=CPU)  # one key fits the emptiest shard (the lowest name of those with 2)
    assert res.saved and [(s.name, s.op, s.records) for s in res.shards] == [("shard-001", "append", 3)]
    assert sorted(k for ks in _keys(st).values() for k in ks) == sorted(r.key for r in recs)
    changed = Record(recs[0].key, "999-0000")
    with pytest.raises(RecordsError, match="--update"):
        api.append(st, [changed], runtime=CPU)
    res = api.append(st, [changed], update=True, runtime=CPU)  # goes to the shard that holds the key
    owner = next(n for n, ks in _keys(st).items() if recs[0].key in ks)
    assert res.saved and [s.name for s in res.shards] == [owner] and res.shards[0].plan["changed"] == [recs[0].key]
    assert api.recall(st, recs[0].key).value == "999-0000"


def test_a_shard_that_does_not_certify_leaves_the_store_as_it_was(tmp_path):
    recs = phonebook(5, seed=5)
    st = tmp_path / "st"
    _store(st, recs[:4], size=2)
    before, inode = _tree(st), st.stat().st_ino
    hard = [Record(f"Stranger {i}:", "a long value that one step cannot teach") for i in range(2)]
    res = api.append(st, hard, train={"max_steps": 1}, runtime=CPU)
    assert not res.saved and not res.all_certified
    assert _tree(st) == before and st.stat().st_ino == inode  # not one shard swapped, nothing added
    assert not [p for p in tmp_path.iterdir() if "memft-tmp" in p.name]  # the half-filled sibling removed


def test_forget_rewrites_only_the_owners_and_deletes_an_emptied_shard(tmp_path):
    recs = phonebook(5, seed=6)
    st = tmp_path / "st"
    _store(st, recs, size=2)  # shards of 2, 2, 1
    held = _keys(st)
    lone = held["shard-002"][0]
    res = api.forget(st, [lone, held["shard-000"][0]], runtime=CPU)
    assert res.saved and sorted((s.name, s.op) for s in res.shards) == [("shard-000", "forget"), ("shard-002", "delete")]
    assert [d.name for d in shards.shard_dirs(st)] == ["shard-000", "shard-001"] and res.held == 3
    assert not api.recall(st, lone).held
    with pytest.raises(RecordsError, match="not in this store"):
        api.forget(st, ["Nobody:"], runtime=CPU)
    with pytest.raises(ConfigError, match="nothing would be left"):
        api.forget(st, [k for ks in _keys(st).values() for k in ks], runtime=CPU)


def test_one_adapter_and_a_store_replace_each_other(tmp_path):
    recs = phonebook(3, seed=7)
    st = tmp_path / "st"
    (st / "mine").mkdir(parents=True)  # a user's file in an empty --out: refused, as for one adapter
    with pytest.raises(AdapterError, match="not a memft adapter"):
        _store(st, recs, size=2)
    (st / "mine").rmdir()
    _store(st, recs, size=2)
    (st / "notes.txt").write_text("kept")
    one = api.write(recs, st, model="tiny-random", lora=LoraSettings(rank=8, preset="all", activation="always"),
                    train=TrainConfig(lr=2e-2, max_steps=300), runtime=CPU)  # 3 records <= the default shard size
    assert one.all_certified and sorted(p.name for p in st.iterdir()) == sorted(
        ["README.md", "adapter_config.json", "adapter_model.safetensors", "ledger.json", "memft.json", "notes.txt"])
    assert api.recall(st, recs[1].key).value == recs[1].value


def test_a_full_adapter_grows_into_a_store_without_retraining_it(tmp_path):
    recs = phonebook(5, seed=8)
    ad = tmp_path / "ad"
    _store(ad, recs[:3], size=3)  # 3 records, shard size 3: one adapter, full
    assert json.loads((ad / "memft.json").read_text())["shard_size"] == 3
    (ad / "notes.txt").write_text("mine")
    before = _tree(ad)
    res = api.append(ad, recs[3:], runtime=CPU)
    assert isinstance(res, StoreResult) and res.saved and [(s.name, s.op, s.records) for s in res.shards] == [("shard-001", "write", 2)]
    after = _tree(ad)
    assert {k.removeprefix("shard-000/"): v for k, v in after.items() if k.startswith("shard-000/")} == \
        {k: v for k, v in before.items() if k != "notes.txt"}  # the adapter as it was, byte for byte
    assert after["notes.txt"] == b"mine" and json.loads(after["store.json"])["shard_size"] == 3
    assert [r.value for r in api.recall_many(ad, [r.key for r in recs], device="cpu")] == [r.value for r in recs]
    one = tmp_path / "one"
    _store(one, recs[:3], size=3)
    res = api.append(one, recs[3:4], runtime=CPU, shard_size=0)  # 0: into the adapter, replaying what it holds
    assert res.saved and not shards.is_store(one) and ledger.read(one).history[-1]["held"] == 4


def test_an_input_error_in_the_last_shard_is_found_before_any_training(tmp_path, monkeypatch):
    recs = phonebook(6, seed=9)
    trained = []
    monkeypatch.setattr(api, "fit", lambda *a, **k: trained.append(a) or pytest.fail("trained before the check"))
    with pytest.raises(RecordsError, match="conflicting values"):  # a key twice: never one value in each of two shards
        _store(tmp_path / "st", [*recs, Record(recs[0].key, "x")], size=2)
    last = shards.split(recs, lambda r: r.key, 2)[-1]
    real = api.prepare

    def prepare(part, *args):  # the checks before training, failing for the last shard's records
        if [r.key for r in part] == [r.key for r in last]:
            raise RecordsError(f"record {last[0].key!r}: bad")
        return real(part, *args)

    monkeypatch.setattr(api, "prepare", prepare)
    with pytest.raises(RecordsError, match="bad"):
        _store(tmp_path / "st", recs, size=2)
    assert not trained and not (tmp_path / "st").exists()
