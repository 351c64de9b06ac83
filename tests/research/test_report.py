from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

from memft.research import plots, report
from memft.research.report import build_report, rows_for_fit
from tests.research.test_plots import FIT, synthetic_rows

# Shaped like law.fit_settings entries: one per (setting, model, method); a setting that could not be fitted is kept
# with its reason in "skipped".
FITS = [
    FIT | {"setting": "PhoneBook", "model": None, "method": "sft", "r2": 0.99, "mape": 0.02, "alpha_ci": [0.25, 0.35],
           "heldout_mape": 0.031, "eps": 0.05, "skipped": None},
    {"setting": "PhoneBook", "model": None, "method": "memft-ot", "C": 2.2, "alpha": 0.3, "beta": 0.5, "b": 0.11,
     "r2": 0.98, "n": 9, "heldout_mape": None, "heldout_reason": "2 distinct lengths", "skipped": None},
    {"setting": "r100", "model": None, "method": "sft", "n": 3, "n_excluded": 0, "skipped": "3 points; need 5"},
]
FITTED = [f for f in FITS if not f.get("skipped")]


class Refs(HTMLParser):
    """Collects every href/src and the text of table cells."""

    def __init__(self):
        super().__init__()
        self.refs, self.cells, self._in_td = [], [], False

    def handle_starttag(self, tag, attrs):
        self.refs += [v for k, v in attrs if k in ("href", "src") and v is not None]
        if tag == "td":
            self._in_td = True
            self.cells.append("")

    def handle_endtag(self, tag):
        if tag == "td":
            self._in_td = False

    def handle_data(self, data):
        if self._in_td:
            self.cells[-1] += data


def _parse(index: Path) -> Refs:
    p = Refs()
    p.feed(index.read_text(encoding="utf-8"))
    return p


# Rendering is most of a report's time: the fast tests draw one law figure (drawn per fit) and one other; every
# figure is drawn by test_empty_store_builds and test_plots.py, and the whole report by test_cli_law.py (slow).
FEW_FIGURES = {k: plots.ALL_FIGURES[k] for k in ("predicted_vs_true", "failure_histogram")}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    rows = synthetic_rows()
    rows[0]["method"] = "sft<script>"  # text from rows is escaped
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report, "ALL_FIGURES", FEW_FIGURES)
        index = build_report(rows, FITS, tmp_path_factory.mktemp("rep"), title="t & <b>")
    return index, _parse(index)


def test_self_contained_and_links_resolve(built):
    index, p = built
    text = index.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    assert "<script>" not in text and "sft&lt;script&gt;" in text and "<title>t &amp; &lt;b&gt;</title>" in text
    embedded = [r for r in p.refs if r.startswith("data:")]
    assert embedded and all(r.startswith("data:image/png;base64,") for r in embedded)
    relative = [r for r in p.refs if not r.startswith("data:")]
    assert relative and all(r.startswith("figures/") for r in relative)
    for r in relative:
        assert (index.parent / unquote(r)).is_file(), r
    # law figures once per fit, the others once; each embedded and linked as PNG and SVG
    n = sum(len(FITTED) if s.fit != "no" else 1 for s in FEW_FIGURES.values())
    assert n == 3 and len(embedded) == n and len(relative) == 2 * n
    assert {Path(r).suffix for r in relative} == {".png", ".svg"}


def test_tables_and_spearman_line(built):
    index, p = built
    text = index.read_text(encoding="utf-8")
    rho, n = plots.stubborn_failure_spearman(synthetic_rows())
    assert f"at the end of training: <b>{rho:.3f}</b>" in text and f"(n = {n} records with both)" in text
    cells = p.cells
    # law fits: interval, MAPE and held-out error in percent; a missing held-out error says why; a skipped fit says why
    i = cells.index("PhoneBook")
    # (no model column: every fit has model None)
    assert cells[i : i + 10] == ["PhoneBook", "sft", "2", "0.3 [0.25, 0.35]", "0.5", "0.1", "0.99", "2.0", "9", "3.1% MAPE"]
    assert "— (2 distinct lengths)" in cells and "skipped: 3 points; need 5" in cells
    # method comparison for (phonebook, sft, rank 2): exact 50%, token acc 75%, certified 50%, median steps 200
    i = next(i for i in range(len(cells) - 2) if cells[i : i + 3] == ["phonebook", "sft", "2"])
    assert cells[i + 3 : i + 8] == ["3", "50.0", "75.0", "50.0", "200"]
    # rank 1 never certified in the fixture: no median
    j = next(i for i in range(len(cells) - 2) if cells[i : i + 3] == ["phonebook", "memft-ot", "1"])
    assert cells[j + 7] == "—"


def test_rows_for_fit():
    rows = synthetic_rows()
    assert {(r["benchmark"], r["method"]) for r in rows_for_fit(rows, FITS[1])} == {("phonebook", "memft-ot")}
    assert len(rows_for_fit(rows, FITS[2])) == 3  # r100: the stress rows at ρ = 1
    assert rows_for_fit(rows, FITS[2] | {"setting": "r0"}) == [r for r in rows if r["method"] == "sft"]  # no ρ = 0 rows
    assert {r["benchmark"] for r in rows_for_fit(rows, {"setting": "Combined"})} == {"stress"}
    assert len(rows_for_fit(rows, {"setting": "sft", "model": "other"})) == 9 + 3  # no row has that model: not narrowed
    assert {r["benchmark"] for r in rows_for_fit(rows, {"setting": "stress"})} == {"stress"}
    assert len(rows_for_fit(rows, {"setting": "nothing"})) == len(rows)


def test_empty_store_builds(tmp_path):
    index = build_report([], {}, tmp_path / "out")
    text = index.read_text(encoding="utf-8")
    assert "0 runs." in text and "No law fits." in text and "<b>undefined</b> (n = 0 records" in text
    assert len(list((tmp_path / "out" / "figures").glob("*.png"))) == len(plots.ALL_FIGURES)


def test_paper_claims_section(tmp_path, monkeypatch):
    from memft.research.claims import method_cells, paper_claims
    from tests.research.test_claims import _row

    monkeypatch.setattr(report, "ALL_FIGURES", {})  # the claims section only; figures are tested above
    sft, ot = (0.5, 0.6, 0.4, 0.5, 0.3), (0.7, 0.75, 0.6, 0.65, 0.5)  # +18 ± 2.7 points on 5 seeds, rank 4
    rows = [_row("sft", s, x, rank=4) for s, x in enumerate(sft)] + [_row("memft-ot", s, x, rank=4) for s, x in enumerate(ot)]
    index = build_report(rows, [], tmp_path / "rep", claims=paper_claims(rows), cells=method_cells(rows))
    p = _parse(index)
    text = index.read_text(encoding="utf-8")
    assert "<h2>Paper claims</h2>" in text and "reproduced: <b>1</b>, untested: <b>8</b>." in text and "The rule: identity" in text
    i = p.cells.index("MemFT-OT vs SFT, PhoneBook")
    # 95 % paired t: Δ 20, 15, 20, 15, 20: mean 18.0, sd 2.74, t_{4,.975} = 2.7764 → half 3.40
    assert p.cells[i + 8] == "reproduced (budget-bound)" and "+18.0 points [+14.6, +21.4] (95 % paired t, 5 seeds)" in p.cells[i + 4]
    j = next(k for k in range(len(p.cells) - 1) if p.cells[k : k + 2] == ["phonebook ℓ=550 r=4, 100 steps", "memft-ot"])
    assert p.cells[j + 2 : j + 10] == ["0, 1, 2, 3, 4", "64.0 ± 9.6", "64.0 ± 9.6", "64.0 ± 9.6", "—", "exact match",
                                       "+18.0 points [+14.6, +21.4] (95 % paired t, 5 seeds)", "yes"]
    assert build_report(rows, [], tmp_path / "rep2").read_text(encoding="utf-8").count("<b>reproduced (budget-bound)</b>") == 1  # from the rows
