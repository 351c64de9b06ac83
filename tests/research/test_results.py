import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from memft.errors import ConfigError
from memft.research.results import Store, run_id

LAW_DB = Path(__file__).resolve().parents[2] / "benchmarks" / "law" / "law.db"  # written before the layers got folders (memft.store)
CFG = {"benchmark": "stress", "model": "tiny-random", "method": "sft", "rank": 2, "length": 8, "ratio": 0.5, "seed": 0, "lr": 0.01}


def test_run_id_is_canonical():
    assert run_id(CFG) == run_id(dict(reversed(list(CFG.items()))))
    assert run_id(CFG) != run_id({**CFG, "lr": 0.02})
    assert len(run_id(CFG)) == 64


def test_the_committed_law_store_still_opens(tmp_path):
    """The law sweep's store reads through memft.research.results; a copy, since a store opens in WAL mode."""
    copy = tmp_path / "law.db"
    shutil.copyfile(LAW_DB, copy)
    with Store(copy) as s:
        assert s.status_counts() == {"running": 0, "done": 56, "failed": 0}
        rows = s.rows()
        assert len(rows) == 56 and {r["benchmark"] for r in rows} == {"phonebook", "stress"}
        assert len(s.curve(rows[0]["run_id"])) > 0 and len(s.positions(rows[0]["run_id"])) > 0


def test_store_written_before_the_phase_columns_gains_them(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)  # the curves table as memft 0.1 wrote it
    db.execute("CREATE TABLE curves (run_id TEXT NOT NULL, step INTEGER NOT NULL, loss REAL, certified REAL, stubborn INTEGER, "
               "min_prob REAL, PRIMARY KEY (run_id, step)) WITHOUT ROWID")
    db.execute("INSERT INTO curves VALUES ('old', 0, 2.0, 0.0, 5, 0.1)")
    db.commit()
    db.close()
    with Store(path) as s:
        assert s.curve("old") == [{"step": 0, "loss": 2.0, "certified": 0.0, "stubborn": 5, "min_prob": 0.1, "first_error": None, "earliest_stubborn": None}]
        assert "first_error" not in s._curve_columns()  # reading leaves the schema alone (an older writer may be running)
        s.claim("new", CFG)
        s.finish("new", {"exact_match": 0.0}, curve=[{"step": 0, "loss": 1.0, "first_error": 7, "earliest_stubborn": 3}])
        assert (s.curve("new")[0]["first_error"], s.curve("new")[0]["earliest_stubborn"]) == (7, 3)


def test_round_trip_rows_positions_curve(tmp_path):
    path = tmp_path / "results.db"
    positions = [{"prob": [0.9, 0.4, 0.75], "correct": [True, False, True]}, {"prob": [0.6], "correct": [True]}]
    curve = [{"step": 0, "loss": 2.5, "certified": 0.0, "stubborn": 3, "min_prob": 0.1, "seconds": 0.01},
             {"step": 1, "loss": 0.5, "certified": 1.0, "stubborn": 0, "min_prob": 0.7, "first_error": 4, "earliest_stubborn": 2}]
    row = {"benchmark": "stress", "model": "tiny-random", "exact_match": 1.0, "stubborn_positions": [[1], []], "ratio": 0.5}
    with Store(path) as s:
        assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s.claim("a", CFG)
        s.finish("a", row, positions=positions, curve=curve)
        assert s.claim("b", {**CFG, "benchmark": "phonebook", "ratio": None, "rank": 4})
        s.finish("b", {"exact_match": 0.5})
    with Store(path) as s:  # persisted, and readable by a new connection
        assert s.rows(benchmark="stress") == [{"run_id": "a", **row}]
        assert list(s.rows()[0])[1:] == list(row)  # the row keeps its field order
        assert [r["run_id"] for r in s.rows(rank=[2, 4])] == ["a", "b"]
        assert [r["run_id"] for r in s.rows(ratio=None)] == ["b"]
        assert [r["run_id"] for r in s.rows(ratio=[None, 0.5])] == ["a", "b"]
        assert s.rows(model="other") == []
        assert s.positions("a") == positions
        assert s.positions("b") == []
        nothing = {"first_error": None, "earliest_stubborn": None}  # only one-record steps carry them
        assert s.curve("a") == [nothing | {k: v for k, v in c.items() if k != "seconds"} for c in curve]
        assert s.config("a") == CFG
        assert s.done_ids() == {"a", "b"}
        with pytest.raises(ConfigError, match="cannot filter on lr"):
            s.rows(lr=0.01)


def test_claim_finish_fail_semantics(tmp_path):
    s = Store(tmp_path / "r.db")
    assert s.claim("a", CFG) and s.claim("a", CFG)  # 'running' (e.g. left by a killed process) is claimed again
    assert s.status_counts() == {"running": 1, "done": 0, "failed": 0}
    s.fail("a", "RuntimeError: boom")
    assert s.status_counts() == {"running": 0, "done": 0, "failed": 1}
    assert s.failures() == {"a": "RuntimeError: boom"} and s.rows() == [] and s.done_ids() == set()
    assert s.claim("a", CFG)  # a failed run is tried again
    assert s.failures() == {}
    s.finish("a", {"x": 1}, positions=[{"prob": [0.9, 0.8], "correct": [True, True]}], curve=[{"step": 0, "loss": 1.0}])
    assert not s.claim("a", CFG)  # done: never run twice
    assert s.status_counts() == {"running": 0, "done": 1, "failed": 0}
    # finishing again replaces the result: one row, the new positions and curve, nothing left of the old ones
    s.finish("a", {"x": 2}, positions=[{"prob": [0.7], "correct": [True]}], curve=[{"step": 5, "loss": 0.1}])
    assert s.rows() == [{"run_id": "a", "x": 2}]
    assert s.positions("a") == [{"prob": [0.7], "correct": [True]}]
    assert [c["step"] for c in s.curve("a")] == [5]
    assert s.db.execute("SELECT COUNT(*) FROM positions").fetchone()[0] == 1
    with pytest.raises(KeyError, match="never claimed"):
        s.finish("zzz", {})
    with pytest.raises(KeyError, match="never claimed"):
        s.fail("zzz", "e")


def test_finish_is_one_transaction(tmp_path):
    s = Store(tmp_path / "r.db")
    s.claim("a", CFG)
    bad = [{"prob": [0.9], "correct": [True]}, {"prob": [0.5, 0.6], "correct": [True]}]  # lengths differ
    with pytest.raises(ValueError):
        s.finish("a", {"x": 1}, positions=bad)
    assert s.status_counts() == {"running": 1, "done": 0, "failed": 0}  # the row update was rolled back too
    assert s.db.execute("SELECT COUNT(*) FROM positions").fetchone()[0] == 0
    s.finish("a", {"x": 1})
    assert s.rows() == [{"run_id": "a", "x": 1}]


def test_indexed_columns_come_from_the_config(tmp_path):
    s = Store(tmp_path / "r.db")
    s.claim("a", CFG)
    s.finish("a", {})
    got = sqlite3.connect(tmp_path / "r.db").execute(
        "SELECT benchmark, model, method, rank, length, ratio, seed, status, config FROM runs").fetchone()
    assert got[:8] == ("stress", "tiny-random", "sft", 2, 8, 0.5, 0, "done")
    assert json.loads(got[8]) == CFG
