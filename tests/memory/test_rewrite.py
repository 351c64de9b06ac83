import json
from pathlib import Path

import pytest

from memft import api
from memft.config import LoraSettings, RuntimeConfig, TrainConfig
from memft.errors import AdapterError, RecordsError
from memft.store import ledger
from memft.memory.rewrite import append, forget
from memft.prompts.records import Record
from memft.research.bench.phonebook import phonebook

CPU = RuntimeConfig(device="cpu", dtype="fp32")


def _write(folder, records, steps=300):
    return api.write(records, folder, model="tiny-random", lora=LoraSettings(rank=8, preset="all"),
                     train=TrainConfig(lr=2e-2, max_steps=steps), runtime=CPU)


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.slow  # three appends to certification; one append is tested fast below and in tests/cli/test_cli_memory.py
def test_three_appends_keep_every_record_certified(tmp_path):
    recs = phonebook(12, seed=5)
    ad = tmp_path / "ad"
    assert _write(ad, recs[:3]).all_certified
    scheme = ledger.read(ad).scheme
    for k in (3, 6, 9):
        res = append(ad, recs[k:k + 3], runtime=CPU)
        assert res.saved and res.summary["certified"] == 1.0 and res.summary["min_prob"] > 0.5  # margin 0.5 by default
        assert res.plan["added"] == [r.key for r in recs[k:k + 3]] and len(res.plan["kept"]) == k
        assert res.load_seconds > 0 and res.recover_seconds > 0 and res.to_json()["recover_seconds"] == round(res.recover_seconds, 3)
    ver = api.verify(ad, recs, generate="always", device="cpu")  # a fresh load, real greedy generation
    assert ver.summary["exact_match"] == 1.0
    book = ledger.read(ad)
    assert book.scheme == scheme  # one salt for the folder's life: digests of kept records do not change
    assert [e.key for e in book.entries] == [r.key for r in recs]
    assert [e.generation for e in book.entries] == [1] * 3 + [2] * 3 + [3] * 3 + [4] * 3
    assert [h["op"] for h in book.history] == ["write", "append", "append", "append"] and book.history[-1]["held"] == 12
    meta = json.loads((ad / "memft.json").read_text())
    assert meta["records"]["count"] == 12 and sorted(meta["records"]["digests"]) == sorted(book.scheme.digest(r) for r in recs)
    assert api.recall(ad, recs[0].key).certified


def test_append_same_records_is_a_noop_and_conflicts_need_update(tmp_path):
    recs = phonebook(4, seed=1)
    ad = tmp_path / "ad"
    _write(ad, recs)
    res = append(ad, recs[:2], runtime=CPU)
    assert res.saved and res.plan["unchanged"] == [recs[0].key, recs[1].key] and res.steps == 0
    before = _files(ad)
    new = Record(recs[0].key, "555-9999")
    with pytest.raises(RecordsError, match="pass --update"):
        append(ad, [new], runtime=CPU)
    assert _files(ad) == before  # nothing written
    res = append(ad, [new], update=True, runtime=CPU)
    assert res.saved and res.plan["changed"] == [new.key]
    assert api.recall(ad, new.key).value == "555-9999"
    assert api.verify(ad, [new] + recs[1:], generate="always", device="cpu").summary["exact_match"] == 1.0


@pytest.mark.slow  # a forget to certification; tests/cli/test_cli_memory.py forgets and re-checks the rest in the fast suite
def test_forget_trains_away_and_keeps_the_rest(tmp_path):
    recs = phonebook(6, seed=2)
    ad = tmp_path / "ad"
    _write(ad, recs)
    res = forget(ad, [recs[1].key, recs[4].key], runtime=CPU)
    assert res.saved and res.still_recalled == [] and res.plan["forgotten"] == [recs[1].key, recs[4].key]
    for r in (recs[1], recs[4]):
        assert api.recall(ad, r.key).value != r.value
    kept = [r for i, r in enumerate(recs) if i not in (1, 4)]
    assert api.verify(ad, kept, generate="always", device="cpu").summary["exact_match"] == 1.0
    assert [e.key for e in ledger.read(ad).entries] == [r.key for r in kept]
    with pytest.raises(RecordsError, match="not in this adapter"):
        forget(ad, [recs[1].key], runtime=CPU)


def test_a_rewrite_that_does_not_certify_keeps_the_previous_adapter(tmp_path):
    recs = phonebook(6, seed=3)
    ad = tmp_path / "ad"
    _write(ad, recs[:3])
    before = _files(ad)
    res = append(ad, recs[3:], train={"max_steps": 0}, runtime=CPU)
    assert not res.saved and res.summary["certified"] < 1.0
    assert _files(ad) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ad.memft-lock", "ad"]  # no temp folders left (the lock file stays)


def test_a_lost_record_must_be_given_again(tmp_path):
    recs = phonebook(4, seed=4)
    ad = tmp_path / "ad"
    res = _write(ad, recs, steps=1)  # one step: not certified, so recall cannot give the values back
    assert not res.all_certified
    with pytest.raises(RecordsError, match="do not come back exactly"):
        append(ad, [Record("new:", "1")], runtime=CPU)
    res = append(ad, recs + [Record("new:", "1")], train={"max_steps": 300}, runtime=CPU)  # given again with values: replayed
    assert res.saved and res.summary["certified"] == 1.0 and res.summary["records"] == 5


def test_adapters_without_a_ledger_are_refused(tmp_path):
    ad = tmp_path / "ad"
    _write(ad, phonebook(2, seed=0))
    (ad / "ledger.json").unlink()
    with pytest.raises(AdapterError, match="ledger.json is missing but memft.json lists the records' digests; the adapter is damaged"):
        append(ad, [Record("x:", "1")], runtime=CPU)


def test_recover_records_gives_back_what_was_written(tmp_path):
    recs = phonebook(3, seed=6) + [Record("ids:", value_ids=(40, 41, 42))]
    ad = tmp_path / "ad"
    assert _write(ad, recs).all_certified
    got = ledger.recover_records(api.load_adapter(ad, "cpu"))
    assert got == recs


def test_forgetting_a_record_that_no_longer_comes_back_just_drops_it(tmp_path):
    recs = phonebook(3, seed=10)
    ad = tmp_path / "ad"
    assert _write(ad, recs).all_certified
    lost = Record("lost:", "12345")
    res = append(ad, [lost], train={"max_steps": 0}, runtime=CPU)  # not learned: not saved
    assert not res.saved
    # make the ledger claim a record the weights do not hold (as after a write that did not certify it)
    import dataclasses

    # (both files, consistently: an edit of one alone is refused on open, see test_recall.py)
    from memft.store import adapters
    from memft.store import meta as store_meta

    book = ledger.read(ad)
    entry = dataclasses.replace(book.entries[0], key="lost:", digest=book.scheme.digest(lost), certified=False)
    meta = adapters.read_meta(ad)
    meta.records = dataclasses.replace(meta.records, count=4, digests=tuple(sorted([*meta.records.digests, entry.digest])),
                                       hash=book.scheme.set_hash([*recs, lost]))
    store_meta.write(ad, meta)  # memft.json replaced in place (memft itself never edits a folder this way)
    fp = ledger.fingerprint(meta)
    (ad / "ledger.json").write_text(ledger.dumps(ledger.Ledger(book.entries + [entry], book.history, fp, book.scheme)), encoding="utf-8")
    with pytest.raises(RecordsError, match="'lost:'"):
        append(ad, [Record("new:", "1")], runtime=CPU)
    res = forget(ad, ["lost:"], runtime=CPU)
    assert res.saved and res.plan["forgotten"] == [] and res.steps == 0
    assert [e.key for e in ledger.read(ad).entries] == [r.key for r in recs]


def test_a_rewrite_replays_every_record_and_does_not_inherit_the_writes_time_limit():
    from memft.memory.rewrite import train_settings
    from memft.store.meta import AdapterMeta, BaseInfo, CertificationInfo, LoraInfo, RecordsInfo

    def meta(train):
        return AdapterMeta(BaseInfo("tiny-random", "fp32"), LoraInfo(2, (2,), ("m",)), RecordsInfo(1), CertificationInfo("fp32"), train)

    cfg = train_settings(meta({"lr": 0.03, "max_steps": 70, "max_seconds": 900.0, "active_set": True}))
    assert (cfg.lr, cfg.max_steps, cfg.max_seconds, cfg.active_set) == (0.03, 70, None, False)  # rewrites replay every record
    assert train_settings(meta({"lr": 0.03}), lr=0.02).lr == 0.02
    assert train_settings(meta({"max_seconds": 900.0}), max_seconds=60.0).max_seconds == 60.0


def test_progress_schedule_adapters_are_rewritten_with_the_active_set():
    from memft.memory.rewrite import train_settings
    from memft.store.meta import AdapterMeta, BaseInfo, CertificationInfo, LoraInfo, RecordsInfo

    progress = {"lr": 2e-2, "max_steps": 400, "batch_size": 4, "lr_schedule": "progress", "head_vocab": "restricted"}
    meta = AdapterMeta(BaseInfo("tiny-random", "fp32"), LoraInfo(2, (2,), ("m",)), RecordsInfo(12), CertificationInfo("fp32"), progress)
    cfg = train_settings(meta)
    assert cfg.active_set and cfg.replay == 0.5 and cfg.lr_schedule == "progress" and cfg.head_vocab == "restricted"
    assert not train_settings(meta, lr_schedule="constant").active_set  # replay again under a constant rate
    meta.train = {"lr": 2e-2}  # written under the constant default: every record replayed, no active set
    assert (train_settings(meta).active_set, train_settings(meta).replay) == (False, 0.0)


@pytest.mark.slow  # a 400-step write and an append to certification; the settings it appends with are tested just above
def test_progress_schedule_adapters_append_with_the_active_set_and_lose_nothing(tmp_path):
    from memft.store.adapters import read_meta
    from memft.memory.rewrite import train_settings

    recs = phonebook(16, seed=8)
    ad = tmp_path / "ad"
    res = api.write(recs[:12], ad, model="tiny-random", lora=LoraSettings(rank=8, preset="all"),
                    train=TrainConfig(lr=2e-2, max_steps=400, batch_size=4, lr_schedule="progress", head_vocab="restricted"), runtime=CPU)
    assert res.all_certified
    cfg = train_settings(read_meta(ad))
    assert cfg.active_set and cfg.replay == 0.5 and cfg.lr_schedule == "progress" and cfg.head_vocab == "restricted"
    assert not train_settings(read_meta(ad), lr_schedule="constant").active_set  # replay again under a constant rate
    out = append(ad, recs[12:], runtime=CPU)
    assert out.saved and out.summary["certified"] == 1.0
    ver = api.verify(ad, recs, generate="always", device="cpu")
    assert ver.summary["exact_match"] == 1.0  # the 12 held and the 4 new, by real greedy generation


def test_append_and_forget_read_the_folders_settings_inside_the_lock(tmp_path, monkeypatch):
    import shutil

    from memft.store import adapters, folders
    from memft.memory import rewrite

    ad = tmp_path / "ad"
    shutil.copytree(Path(__file__).parents[1] / "data" / "adapter-0.1.0", ad)
    seen = []
    real = adapters.read_meta
    monkeypatch.setattr(adapters, "read_meta", lambda f: seen.append(str(folders.resolve(f)) in folders._HELD) or real(f))

    def stop(*a, **k):
        raise RuntimeError("stop before loading a model")

    monkeypatch.setattr(rewrite, "_open", stop)
    for call in (lambda: rewrite.append(ad, [Record("x:", "1")]), lambda: rewrite.forget(ad, ["x:"])):
        with pytest.raises(RuntimeError, match="stop before"):
            call()
    assert seen == [True, True]  # a writer that swapped the folder meanwhile cannot hand us its previous settings
