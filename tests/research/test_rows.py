"""Result rows (memft.research.rows.ResultRow) as the results store reads them back, from copies of the committed
stores (a store opens in WAL mode, which would add -wal/-shm files next to a committed one)."""

import shutil
from pathlib import Path

import pytest

from memft.research.law import Budget, fit_settings
from memft.research.results import read_rows
from memft.research.rows import ROW_FIELDS, SETTINGS_FIELDS, ResultRow

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
STORES = sorted(BENCH.glob("*/*.db"))


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copyfile(src, dst)
    return dst


def test_a_committed_row_reads_typed_with_its_real_values(tmp_path):
    rows = read_rows(_copy(BENCH / "paper" / "phonebook.db", tmp_path), full=True)
    assert len(rows) == 10 and all(isinstance(r, ResultRow) for r in rows)  # the one 'running' run is not a row
    r = rows[0]
    assert r.run_id == "185d2eb77ce0904ca13919e7f3fb3348e4e3ec560d6f54c2fcaaea3e4cd42f9a"
    assert (r.benchmark, r.model, r.method, r.rank, r.length, r.ratio, r.records, r.seed) == ("phonebook", "smollm2-135m", "sft", 1, 300, None, 30, 0)
    assert (r.loss_init, r.loss_final, r.delta_loss) == (4.3767583355759125, 1.3881697073903387, 2.988588628185574)
    assert (r.token_accuracy, r.token_accuracy_tf, r.exact_match, r.certified) == (0.3515151515151515, 0.5696969696969697, 0.0, 0.0)
    assert (r.min_prob, r.steps, r.steps_to_certify, r.seconds) == (0.026639174669981003, 120, None, 192.046)
    assert r.first_failure[:4] == [0, 1, 1, 0] and len(r.first_failure) == len(r.earliest_stubborn) == 30
    assert (r.lr, r.max_steps, r.margin, r.batch_size, r.preset, r.dtype, r.device) == (0.01, 120, 0.0, 10, "probe", "fp32", "cpu")
    # the point's keys the row does not carry, for grouping by budget; the row's own dtype wins over the point's "auto"
    assert (r["lr_schedule"], r["max_grad_norm"], r["stop_when_certified"]) == ("linear", 1.0, False)
    assert r.point["dtype"] == "auto" and r["dtype"] == "fp32"
    assert Budget.from_row(r) == Budget(max_steps=120, lr=0.01, lr_schedule="linear", max_grad_norm=1.0, batch_size=10, stop_when_certified=False)
    # the attachments: per-position probabilities and argmax checks (30 records x 11 targets), the curve (steps 0..120)
    assert len(r.probs) == len(r.correct) == 30 and sum(map(len, r.probs)) == 330
    assert (r.probs[0][:2], r.correct[0][:2]) == ([0.25827762484550476, 0.09435287863016129], [False, False])
    assert len(r.curve) == 121 and r.curve[0] == {"step": 0, "loss": 4.27640962600708, "certified": 0.0, "stubborn": 110,
                                                 "min_prob": 1.7110002659137535e-07, "first_error": None, "earliest_stubborn": None}


def test_a_row_is_also_the_mapping_it_was_stored_as(tmp_path):
    (r, *_) = read_rows(_copy(BENCH / "law" / "law.db", tmp_path))  # written before rows had margin and batch_size
    assert list(r) == ["run_id", *ROW_FIELDS, "lr", "max_steps", "preset", "dtype", "device"]
    assert r.margin is None and "margin" not in r and r.get("margin") is None
    assert r == {"run_id": r.run_id, **r.to_json()} and dict(r) == {"run_id": r.run_id, **r.to_json()}
    assert (r["benchmark"], r.ratio, r.steps_to_certify, r.dtype) == ("stress", 0.0, 26, "bf16")
    with pytest.raises(KeyError):
        r["lr_schedule"]  # read without its point


@pytest.mark.parametrize("store", STORES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_committed_store_reads(store, tmp_path):
    rows = read_rows(_copy(store, tmp_path), full=True)
    assert rows and all(r.run_id and r.point and r.curve is not None and r.probs is not None for r in rows)
    assert all(set(ROW_FIELDS) <= set(r) and set(SETTINGS_FIELDS) & set(r) for r in rows)
    assert all(r.delta_loss == pytest.approx(r.loss_init - r.loss_final) for r in rows if r.delta_loss is not None)


def test_committed_law_store_gives_the_committed_fit(tmp_path):
    """benchmarks/law/fit.json was fitted from benchmarks/law/law.db: the typed rows give the same PhoneBook fit."""
    from memft.research.law import read_fits

    rows = read_rows(_copy(BENCH / "law" / "law.db", tmp_path), with_point=True)
    want = {f.setting: f for f in read_fits(BENCH / "law" / "fit.json")}["PhoneBook"]
    (got,) = [f for f in fit_settings(rows, n_boot=0) if f.setting == "PhoneBook"]
    assert (got.n, got.n_excluded, got.n_saturated) == (want.n, want.n_excluded, want.n_saturated)
    assert got.fit.params() == pytest.approx(want.fit.params(), rel=1e-6)
    assert got.fit.r2 == pytest.approx(want.fit.r2, rel=1e-9) and got.loss_init_median == want.loss_init_median


def test_a_row_built_directly_and_from_a_dict():
    r = ResultRow(rank=2, length=64, extra={"note": 1})
    assert list(r) == [*ROW_FIELDS, "note"] and r["rank"] == 2 and r["note"] == 1 and r["loss_init"] is None
    d = {"rank": 2, "length": 64, "delta_loss": 1.0, "lr": 0.02, "lr_schedule": "linear"}
    r = ResultRow.from_json(d)
    assert r == d and r.to_json() == d and r.extra == {"lr_schedule": "linear"} and r.lr == 0.02
