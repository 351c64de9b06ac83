"""The results store: one SQLite file (WAL mode) holding every experiment point of every sweep.

Named `results` (it was `memft.store` before the layers got folders) so that it is not taken for the memory store,
`memft.memory`: this file holds experiment rows, never an adapter's records. Stores written earlier open unchanged.

Tables:
- `runs`: one row per point, keyed by `run_id` (see `run_id()`), with its status ('running' | 'done' | 'failed'),
  its resolved config, the `memft.research.runs.run_point` row once done (read back as a
  `memft.research.rows.ResultRow`; `read_rows` adds its point, positions and curve), the error once failed,
  timestamps, and indexed copies of the common fields (benchmark, model, method, rank, length, ratio, seed).
- `positions`: per-position teacher-forced target probability and argmax check of each record of a run.
- `curves`: the training curve of a run, one row per step.

A process holds one `Store` (one connection). Every write is one transaction, so a process killed at any moment
leaves either the whole result of a run or none of it; a run it left 'running' is claimed again on resume.

>>> s = Store(":memory:")
>>> s.claim("a", {"benchmark": "stress", "rank": 4}), s.claim("a", {"benchmark": "stress", "rank": 4})
(True, True)
>>> s.finish("a", {"exact_match": 1.0}, positions=[{"prob": [0.9, 0.7], "correct": [True, True]}])
>>> s.claim("a", {}), s.rows(rank=4)[0]["exact_match"], s.status_counts()["done"]
(False, 1.0, 1)

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from memft.errors import ConfigError
from memft.research.rows import ResultRow

STATUSES = ("running", "done", "failed")
INDEXED = ("benchmark", "model", "method", "rank", "length", "ratio", "seed")  # copied from the config
CURVE_FIELDS = ("loss", "certified", "stubborn", "min_prob", "first_error", "earliest_stubborn")
# Curve columns added after the first stores were written: (name, SQL type); the first write to an older store adds them.
_ADDED_CURVE_COLUMNS = (("first_error", "INTEGER"), ("earliest_stubborn", "INTEGER"))

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id    TEXT PRIMARY KEY,
    status    TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    config    TEXT NOT NULL,  -- JSON: the resolved point config
    row       TEXT,           -- JSON: the run_point row (done only)
    error     TEXT,           -- failed only
    started   TEXT,           -- ISO 8601 UTC
    finished  TEXT,
    benchmark TEXT, model TEXT, method TEXT, rank INTEGER, length INTEGER, ratio REAL, seed INTEGER
);
CREATE TABLE IF NOT EXISTS positions (
    run_id   TEXT NOT NULL REFERENCES runs(run_id),
    record   INTEGER NOT NULL,  -- index of the record in the run's record list
    position INTEGER NOT NULL,  -- 0 = first value token, the last one is the end token
    prob     REAL NOT NULL,     -- teacher-forced p(target)
    correct  INTEGER NOT NULL,  -- target == argmax
    PRIMARY KEY (run_id, record, position)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS curves (
    run_id    TEXT NOT NULL REFERENCES runs(run_id),
    step      INTEGER NOT NULL,
    loss      REAL,
    certified REAL,
    stubborn  INTEGER,
    min_prob  REAL,
    first_error       INTEGER,  -- one-record steps only: first offset whose target is not the argmax (else NULL)
    earliest_stubborn INTEGER,  -- one-record steps only: first offset with p <= 0.5 (else NULL)
    PRIMARY KEY (run_id, step)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
""" + "".join(f"CREATE INDEX IF NOT EXISTS runs_{c} ON runs({c});\n" for c in INDEXED)


def canonical_json(obj: Any) -> str:
    """One spelling per value: sorted keys, no spaces, so equal configs give equal text (and equal run ids)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def run_id(config: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of a resolved point config.

    >>> run_id({"rank": 4, "lr": 0.01}) == run_id({"lr": 0.01, "rank": 4}) != run_id({"rank": 4, "lr": 0.02})
    True
    """
    return hashlib.sha256(canonical_json(dict(config)).encode()).hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


class Store:
    """The results store at `path` (created if missing; ":memory:" for a throwaway one)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; every write opens its own (see _tx).
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a crash loses no committed transaction's consistency
        self.db.execute("PRAGMA foreign_keys=ON")
        with self._tx():  # executescript would commit on its own: run the schema statement by statement (no ";" in comments)
            for stmt in filter(str.strip, _SCHEMA.split(";")):
                self.db.execute(stmt)

    # ------------------------------------------------------------------ writes (one transaction each)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE: take the write lock up front, so a read-then-write (claim) cannot interleave with another writer.
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def claim(self, run_id: str, config: Mapping[str, Any]) -> bool:
        """Mark a run 'running' and return True; return False (and change nothing) when it is already done.

        A run that is 'running' (left by a killed process) or 'failed' is claimed again.
        """
        with self._tx() as db:
            got = db.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if got and got[0] == "done":
                return False
            cols = {c: config.get(c) for c in INDEXED}
            db.execute(
                f"""INSERT INTO runs (run_id, status, config, started, {", ".join(INDEXED)})
                    VALUES (?, 'running', ?, ?, {", ".join("?" * len(INDEXED))})
                    ON CONFLICT(run_id) DO UPDATE SET status = 'running', config = excluded.config, row = NULL,
                        error = NULL, started = excluded.started, finished = NULL,
                        {", ".join(f"{c} = excluded.{c}" for c in INDEXED)}""",
                (run_id, canonical_json(dict(config)), _now(), *cols.values()),
            )
            return True

    def finish(
        self,
        run_id: str,
        row: Mapping[str, Any],
        positions: Sequence[Mapping[str, Sequence[Any]]] | None = None,
        curve: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Store a run's result in one transaction: its row, and (replacing any earlier ones) its positions and curve.

        positions: one {"prob": [...], "correct": [...]} per record (what `memft.certify.metrics.TokenStats` holds).
        curve: one {"step", "loss", "certified", "stubborn", "min_prob", ...} per step (extra keys are ignored).
        The run must have been claimed (its config is needed for the indexed columns).
        """
        with self._tx() as db:
            n = db.execute(
                "UPDATE runs SET status = 'done', row = ?, error = NULL, finished = ? WHERE run_id = ?",
                (json.dumps(dict(row), ensure_ascii=False, allow_nan=False), _now(), run_id),  # keeps the ROW_FIELDS order
            ).rowcount
            if n != 1:
                raise KeyError(f"run {run_id} was never claimed; call Store.claim(run_id, config) first")
            db.execute("DELETE FROM positions WHERE run_id = ?", (run_id,))
            db.execute("DELETE FROM curves WHERE run_id = ?", (run_id,))
            if positions:
                db.executemany(
                    "INSERT INTO positions VALUES (?, ?, ?, ?, ?)",
                    [
                        (run_id, r, j, float(p), int(bool(c)))
                        for r, st in enumerate(positions)
                        for j, (p, c) in enumerate(zip(st["prob"], st["correct"], strict=True))
                    ],
                )
            if curve:
                self._add_curve_columns(db)
                db.executemany(
                    f"INSERT OR REPLACE INTO curves (run_id, step, {', '.join(CURVE_FIELDS)}) VALUES ({', '.join('?' * (2 + len(CURVE_FIELDS)))})",
                    [(run_id, int(c["step"]), *(c.get(k) for k in CURVE_FIELDS)) for c in curve],
                )

    def _curve_columns(self) -> set[str]:
        return {r[1] for r in self.db.execute("PRAGMA table_info(curves)")}

    def _add_curve_columns(self, db: sqlite3.Connection) -> None:
        """Add the curve columns a store written by an older memft lacks (its old rows read NULL there). Only a write
        does this, inside its transaction: reading a store never changes its schema under another process."""
        have = self._curve_columns()
        for name, kind in _ADDED_CURVE_COLUMNS:
            if name not in have:
                db.execute(f"ALTER TABLE curves ADD COLUMN {name} {kind}")

    def fail(self, run_id: str, error: str) -> None:
        """Mark a claimed run 'failed' with its error message (it is claimed again by the next sweep)."""
        with self._tx() as db:
            n = db.execute(
                "UPDATE runs SET status = 'failed', row = NULL, error = ?, finished = ? WHERE run_id = ?",
                (error, _now(), run_id),
            ).rowcount
            if n != 1:
                raise KeyError(f"run {run_id} was never claimed; call Store.claim(run_id, config) first")

    # ------------------------------------------------------------------ reads

    def done_ids(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT run_id FROM runs WHERE status = 'done'")}

    def rows(self, **where: Any) -> list[ResultRow]:
        """The rows of done runs (ResultRow, with its `run_id`), in the order the runs were first claimed.

        where: equality on the indexed fields (a list or tuple means any of), e.g. rows(benchmark="stress", rank=[1, 2]).
        """
        unknown = sorted(set(where) - set(INDEXED))
        if unknown:
            raise ConfigError(f"Store.rows: cannot filter on {', '.join(unknown)}; use {', '.join(INDEXED)}")
        sql, args = ["status = 'done'"], []
        for k, v in where.items():
            vs = list(v) if isinstance(v, (list, tuple, set)) else [v]
            nulls = any(x is None for x in vs)
            vs = [x for x in vs if x is not None]
            terms = ([f"{k} IN ({', '.join('?' * len(vs))})"] if vs else []) + ([f"{k} IS NULL"] if nulls else [])
            sql.append("(" + " OR ".join(terms or ["0"]) + ")")
            args += vs
        cur = self.db.execute(f"SELECT run_id, row FROM runs WHERE {' AND '.join(sql)} ORDER BY rowid", args)
        return [ResultRow.from_json(json.loads(row), rid) for rid, row in cur]

    def config(self, run_id: str) -> dict[str, Any] | None:
        got = self.db.execute("SELECT config FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return json.loads(got[0]) if got else None

    def failures(self) -> dict[str, str]:
        """{run_id: error} of the failed runs."""
        return dict(self.db.execute("SELECT run_id, error FROM runs WHERE status = 'failed' ORDER BY rowid"))

    def positions(self, run_id: str) -> list[dict[str, list[Any]]]:
        """One {"prob": [...], "correct": [...]} per record (index order), as given to `finish`."""
        out: list[dict[str, list[Any]]] = []
        cur = self.db.execute("SELECT record, prob, correct FROM positions WHERE run_id = ? ORDER BY record, position", (run_id,))
        for rec, p, c in cur:
            while len(out) <= rec:
                out.append({"prob": [], "correct": []})
            out[rec]["prob"].append(p)
            out[rec]["correct"].append(bool(c))
        return out

    def curve(self, run_id: str) -> list[dict[str, Any]]:
        """The training curve, one {"step", *CURVE_FIELDS} per step, by step (first_error and earliest_stubborn are
        None except for one-record steps)."""
        have = [k for k in CURVE_FIELDS if k in self._curve_columns()]  # an older store lacks the newer columns
        cur = self.db.execute(f"SELECT step, {', '.join(have)} FROM curves WHERE run_id = ? ORDER BY step", (run_id,))
        return [dict.fromkeys(CURVE_FIELDS) | dict(zip(("step", *have), r)) for r in cur]

    def status_counts(self) -> dict[str, int]:
        """{"running": n, "done": n, "failed": n}, zeros included."""
        got = dict(self.db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status"))
        return {s: got.get(s, 0) for s in STATUSES}

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_rows(path: str | Path, with_probs: bool = False, full: bool = False, with_point: bool = False) -> list[ResultRow]:
    """The finished rows of the results store at `path` (a missing one is a ConfigError saying how to make it).

    with_probs adds `probs` (per record, per position) for probability grids; with_point adds the point's config as
    `point` and its keys the row does not carry (stop_when_certified, lr_schedule, ...), which law fits and the
    paper-claims page group by; full = with_probs + with_point + `correct` (same shape as probs) + the training `curve`.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such results store; run `memft sweep CONFIG.yaml --store {path}` first")
    out = []
    with Store(path) as st:
        for r in st.rows():
            more: dict[str, Any] = {}
            if with_probs or full:
                pos = st.positions(r.run_id)  # type: ignore[arg-type]
                more["probs"] = [p["prob"] for p in pos]
                if full:
                    more["correct"] = [p["correct"] for p in pos]
            if full:
                more["curve"] = st.curve(r.run_id)  # type: ignore[arg-type]
            point = (st.config(r.run_id) or {}) if full or with_point else None  # type: ignore[arg-type]
            out.append(ResultRow.from_json(r.to_json(), r.run_id, point=point, **more))
    return out
