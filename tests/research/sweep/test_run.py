"""Running sweeps (memft.research.sweep.run, backends): failures, resuming after a kill, Ray, the store lock."""

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
import time

import pytest

from memft.errors import ConfigError
from memft.research.results import Store
from memft.research.sweep import SweepConfig, run_sweep
from tests.research.sweep.test_config import FAST


def test_failed_points_are_recorded_and_the_rest_run(tmp_path, monkeypatch):
    import memft.research.runs

    text = tmp_path / "short.txt"
    text.write_text("just thirty-odd bytes of text here", encoding="utf-8")
    cfg = SweepConfig(**{**FAST, "lengths": [8, 64], "ratios": [0.0], "ranks": [1, 2], "text": str(text)})
    real = memft.research.runs.run_point

    def flaky(records, base, lora, train, **kw):
        if lora.rank == 2:
            raise RuntimeError("boom in training")
        return real(records, base, lora, train, **kw)

    monkeypatch.setattr(memft.research.runs, "run_point", flaky)
    db = tmp_path / "r.db"
    seen = []
    summary = run_sweep(cfg, db, on_progress=lambda done, total, lab: seen.append((done, total, lab)))
    assert (summary["total"], summary["done"], summary["failed"], summary["skipped"]) == (4, 1, 3, 0)
    errors = sorted(f["error"] for f in summary["failures"])
    assert errors[0] == "ConfigError: stress: the given text is 34 tokens long, shorter than length=64; give a longer text"
    assert errors[2] == "RuntimeError: boom in training"
    assert [d for d, _, _ in seen] == [0, 1, 2, 3, 4] and seen[-1][2] is None and "ℓ=8 ρ=0 sft r=1" in seen[0][2]
    with Store(db) as s:
        assert s.status_counts() == {"running": 0, "done": 1, "failed": 3}
        assert len(s.failures()) == 3

    monkeypatch.setattr(memft.research.runs, "run_point", real)
    summary = run_sweep(cfg, db)  # failed points are tried again; the done one is skipped
    assert (summary["skipped"], summary["done"], summary["failed"]) == (1, 1, 2)
    with Store(db) as s:
        assert s.status_counts() == {"running": 0, "done": 2, "failed": 2}
        (row,) = s.rows(rank=2)
        assert row["rank"] == 2 and row["benchmark"] == "stress" and row["ratio"] == 0.0 and row["length"] == 8
        assert len(s.positions(row["run_id"])) == 1 and len(s.positions(row["run_id"])[0]["prob"]) == 9  # 8 + eos
        assert [c["step"] for c in s.curve(row["run_id"])] == list(range(row["steps"] + 1))


KILLED_SWEEP = """
import sys, time
from memft.research.sweep import SweepConfig, run_sweep
cfg = SweepConfig(**{cfg!r})
# Slow steps keep each run 'running' long enough for the parent to kill the process in the middle of one.
run_sweep(cfg, sys.argv[1], on_step=lambda row: time.sleep(0.1))
"""


def _db_state(db):
    """{run_id: "status|row JSON"}, read with a connection of our own (the store is in WAL mode: readers never block)."""
    if not db.exists():
        return {}
    con = sqlite3.connect(db, timeout=30)
    try:
        return dict(con.execute("SELECT run_id, status || '|' || COALESCE(row, '') FROM runs"))
    except sqlite3.OperationalError:  # the table is not created yet
        return {}
    finally:
        con.close()


@pytest.mark.slow  # a sweep subprocess killed with SIGKILL, then resumed
def test_killed_sweep_resumes_without_duplicate_or_lost_rows(tmp_path):
    cfg = dict(FAST, ratios=[0.0, 0.5, 1.0], ranks=[1, 2])  # 6 points
    points = SweepConfig(**cfg).points()
    assert len(points) == 6
    db = tmp_path / "r.db"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SWEEP.format(cfg=cfg), str(db)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            state = _db_state(db)
            statuses = [v.split("|", 1)[0] for v in state.values()]
            if statuses.count("done") >= 2 and "running" in statuses:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the sweep ended before it could be killed: {proc.stderr.read()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = _db_state(db)
    done_before = {k: v for k, v in before.items() if v.startswith("done|")}
    assert len(done_before) >= 2 and any(v.startswith("running|") for v in before.values()) and len(done_before) < 6

    summary = run_sweep(SweepConfig(**cfg), db)
    assert summary["skipped"] == len(done_before) and summary["done"] == 6 - len(done_before) and summary["failed"] == 0
    after = _db_state(db)
    assert set(after) == {p["run_id"] for p in points}  # exactly one row per point, none lost
    assert all(v.startswith("done|") for v in after.values())  # none left 'running'
    assert {k: after[k] for k in done_before} == done_before  # rows finished before the kill are untouched
    with Store(db) as s:
        assert s.status_counts() == {"running": 0, "done": 6, "failed": 0}
        rows = s.rows()
        assert len(rows) == 6 and len({r["run_id"] for r in rows}) == 6
        assert sorted((r["ratio"], r["rank"]) for r in rows) == sorted((p["ratio"], p["rank"]) for p in points)
        # one probability per target position, one curve point per step: nothing duplicated by the re-run
        n_pos = s.db.execute("SELECT run_id, COUNT(*) FROM positions GROUP BY run_id").fetchall()
        assert sorted(n for _, n in n_pos) == [9] * 6
        for r in rows:
            assert len(s.curve(r["run_id"])) == r["steps"] + 1


@pytest.mark.slow  # starts a local Ray instance
def test_ray_backend_matches_local(tmp_path):
    if os.environ.get("CI"):
        import ray  # noqa: F401 - CI installs the test extras, ray included: never skip there
    else:
        pytest.importorskip("ray")
    cfg = SweepConfig(**dict(FAST, ratios=[0.0, 1.0]))
    local = run_sweep(cfg, tmp_path / "local.db")
    remote = run_sweep(cfg, tmp_path / "ray.db", backend="ray")
    assert (local["done"], remote["done"], remote["failed"]) == (2, 2, 0)
    with Store(tmp_path / "local.db") as a, Store(tmp_path / "ray.db") as b:
        ra, rb = {r["run_id"]: r for r in a.rows()}, {r["run_id"]: r for r in b.rows()}
        assert set(ra) == set(rb)
        for k in ra:
            assert rb[k]["steps"] == ra[k]["steps"] and rb[k]["length"] == ra[k]["length"]
            assert rb[k]["loss_final"] == pytest.approx(ra[k]["loss_final"], rel=1e-4)
            (pa,), (pb,) = a.positions(k), b.positions(k)
            assert pb["prob"] == pytest.approx(pa["prob"], rel=1e-4, abs=1e-7) and pb["correct"] == pa["correct"]
            assert len(b.curve(k)) == len(a.curve(k))
    again = run_sweep(cfg, tmp_path / "ray.db", backend="ray")  # everything done: Ray is not even started
    assert (again["skipped"], again["done"]) == (2, 0)


def test_unknown_backend_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="backend 'spark'"):
        run_sweep(SweepConfig(**FAST), tmp_path / "r.db", backend="spark")


def test_a_second_sweep_on_the_same_store_is_refused_while_the_first_runs(tmp_path):
    from memft.errors import AdapterError

    db = tmp_path / "s.db"
    src = str(Path(__file__).resolve().parents[3] / "src")
    holder = subprocess.Popen([sys.executable, "-c", f"import time; from memft.store import folders\nwith folders.locked({str(db)!r}):\n"
                               "    print('held', flush=True); time.sleep(30)"], env={**os.environ, "PYTHONPATH": src},
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(AdapterError, match="another memft process is using it; nothing was changed"):
            run_sweep(SweepConfig(**FAST), db)
    finally:
        holder.kill()
        holder.wait()
    assert not db.exists()  # the refused sweep did not even open the store
