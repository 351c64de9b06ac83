from pathlib import Path

import pytest

from memft.store.digests import DigestScheme
from memft.errors import AdapterError, RecordsError
from memft.store.ledger import Ledger, next_ledger, parse, plan_append, plan_forget, read
from memft.certify.metrics import TokenStats, record_report
from memft.prompts.records import Record

A, B, C = Record("a:", "1"), Record("b:", "2"), Record("c:", value_ids=(7, 8))


def _reports(*records, p=0.9):
    return {r.key: record_report(r.key, TokenStats([1, 2], [p, p], [True, True], [0.1, 0.1], gap=[p - 0.05, p - 0.1])) for r in records}


def test_plan_append_adds_keeps_and_skips_same_values():
    p = plan_append([A, B], [B, C])
    assert [r.key for r in p.keep] == ["a:", "b:"] and p.add == [C] and p.change == [] and p.unchanged == ["b:"]
    assert [r.key for r in p.records] == ["a:", "b:", "c:"] and p.changed_keys == {"c:"}


def test_plan_append_refuses_a_new_value_unless_update():
    new_b = Record("b:", "9")
    with pytest.raises(RecordsError, match=r"1 key\(s\) already hold another value: 'b:'; pass --update"):
        plan_append([A, B], [new_b])
    p = plan_append([A, B], [new_b], update=True)
    assert p.keep == [A] and p.change == [new_b] and [r.target for r in p.records] == ["1", "9"]


def test_plan_forget_needs_known_keys():
    p = plan_forget([A, B, C], ["b:"], known=["a:", "b:", "c:"])
    assert p.keep == [A, C] and p.forget == [B] and p.records == [A, C]
    with pytest.raises(RecordsError, match=r"not in this adapter: 'z:'"):
        plan_forget([A, B], ["z:"], known=["a:", "b:"])


def test_next_ledger_keeps_write_times_of_untouched_records():
    one = next_ledger(None, [A, B], _reports(A, B), {"a:", "b:"}, "t1", {"op": "write"})
    assert one.generation == 1 and [e.written for e in one.entries] == ["t1", "t1"]
    assert one.scheme.name == "scrypt-v1" and one.entries[0].digest == one.scheme.digest(A)  # a new folder: a fresh salt
    assert one.entries[0].kind == "text" and one.entries[0].min_gap == pytest.approx(0.8)
    two = next_ledger(one, [A, Record("b:", "9"), C], _reports(A, B, C, p=0.7), {"b:", "c:"}, "t2", {"op": "append"})
    assert [(e.key, e.written, e.generation) for e in two.entries] == [("a:", "t1", 1), ("b:", "t2", 2), ("c:", "t2", 2)]
    assert two.scheme == one.scheme  # the salt stays: digests of untouched records do not change
    assert two.entries[2].kind == "ids" and two.entries[1].digest == one.scheme.digest(Record("b:", "9"))
    assert two.entries[0].digest == one.entries[0].digest
    assert [h["generation"] for h in two.history] == [1, 2] and two.history[1]["op"] == "append"
    assert all(e.min_prob == pytest.approx(0.7) for e in two.entries)  # certification as of the last write
    assert Ledger.from_json(two.to_json()) == two


def test_read_needs_a_ledger(tmp_path):
    import json
    import shutil

    with pytest.raises(AdapterError, match="not a memft adapter"):
        read(tmp_path)
    ad = tmp_path / "ad"
    shutil.copytree(Path(__file__).parents[1] / "data" / "adapter-0.1.0", ad)
    assert [e.key for e in read(ad).entries] == [e["key"] for e in json.loads((ad / "ledger.json").read_text())["entries"]]
    (ad / "ledger.json").write_text("{oops", encoding="utf-8")
    with pytest.raises(AdapterError, match="unreadable"):
        read(ad)
    (ad / "ledger.json").unlink()  # memft.json lists digests: the ledger was lost, not never written
    with pytest.raises(AdapterError, match="ledger.json is missing but memft.json lists the records' digests; the adapter is damaged"):
        read(ad)
    meta = json.loads((ad / "memft.json").read_text())
    del meta["records"]["digests"]
    (ad / "memft.json").write_text(json.dumps(meta))
    with pytest.raises(AdapterError, match="no ledger.json .written by an older memft"):
        read(ad)


def test_a_ledger_of_unsalted_sha256_digests_reads_and_its_next_write_is_salted():
    old = {"entries": [{"key": "a:", "digest": DigestScheme().digest(A), "kind": "text", "written": "t0", "generation": 1,
                        "certified": True, "min_prob": 0.9, "min_gap": 0.8}], "history": [{"generation": 1, "op": "write"}]}
    book = Ledger.from_json(old)
    assert book.scheme == DigestScheme() and book.fingerprint is None
    assert book.to_json() == old  # read and written back unchanged: no scheme field appears
    new = next_ledger(book, [A, B], _reports(A, B), {"b:"}, "t1", {"op": "append"})
    assert new.scheme.name == "scrypt-v1" and new.to_json()["digest"] == {"scheme": "scrypt-v1", "salt": new.scheme.salt}
    assert [e.digest for e in new.entries] == [new.scheme.digest(A), new.scheme.digest(B)]
    assert new.entries[0].written == "t0"  # the record is the same one; only its digest is new


def test_an_unknown_digest_scheme_is_refused_naming_the_file(tmp_path):
    (tmp_path / "ledger.json").write_text('{"entries": [], "digest": {"scheme": "scrypt-v9", "salt": ""}}', encoding="utf-8")
    with pytest.raises(AdapterError, match=r"ledger.json: record digests: unknown digest scheme 'scrypt-v9'.*newer memft"):
        parse((tmp_path / "ledger.json").read_bytes(), tmp_path / "ledger.json")
