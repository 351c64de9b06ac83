"""`memft law fit`, `memft plan` and `memft report` on a store filled with rows that follow a known law."""

import json
from html.parser import HTMLParser

import numpy as np
import pytest

from memft.research.results import Store, run_id

TRUE = {"C": 2.0, "alpha": 0.6, "beta": 0.4, "b": 0.1}


from tests.cli.test_cli import memft as _memft


def _store(path, settings=(("stress", 0.0), ("stress", 1.0), ("phonebook", None))):
    rng = np.random.default_rng(0)
    with Store(path) as st:
        for bench, ratio in settings:
            for r in (1, 2, 4, 8, 16):
                for ell in (64, 128, 256, 512):
                    d = TRUE["C"] * r ** TRUE["alpha"] * ell ** -TRUE["beta"] + TRUE["b"]
                    d *= 1 + 0.01 * rng.standard_normal()
                    cfg = {"benchmark": bench, "ratio": ratio, "rank": r, "length": ell, "model": "m", "method": "sft", "seed": 0}
                    rid = run_id(cfg)
                    st.claim(rid, cfg)
                    st.finish(rid, {**cfg, "loss_init": 5.0, "loss_final": 5.0 - d, "delta_loss": d,
                                    "first_failure": [ell // r], "earliest_stubborn": [ell // r - 1], "stubborn_positions": [[ell // r - 1]]},
                              positions=[{"prob": [0.9, 0.4, 0.7], "correct": [True, False, True]}])
    return path


@pytest.fixture
def store(tmp_path):
    return _store(tmp_path / "s.db")


def test_law_fit_and_plan(store, tmp_path):
    r = _memft("law", "fit", store, "--json", tmp_path / "fit.json", "--n-boot", "20")
    assert r.returncode == 0, r.stderr
    fits = {f["setting"]: f for f in json.loads((tmp_path / "fit.json").read_text())["fits"]}
    assert {"r0", "r100", "Combined", "PhoneBook"} <= set(fits)
    for f in fits.values():
        assert abs(f["alpha"] - 0.6) < 0.05 and abs(f["beta"] - 0.4) < 0.05 and f["r2"] > 0.99
        power, sat = f["forms"]  # both forms on every point: they follow a power law far from the ceiling
        assert (power["form"], sat["form"], power["n"]) == ("power", "saturating", f["n"] + f["n_excluded"]) and power["aic"] < sat["aic"]
        assert f["lengths"] == [64, 512] and f["ranks"] == [1, 16]
    assert "power law vs saturating" in r.stdout + r.stderr  # rich tables go to the console
    # the points reach ΔL 2.1 of L_init 5 at rank 16: no rank up to 16 reaches ln 2 at ℓ = 500, so the plan is refused
    refused = _memft("plan", "--length", "500", "--law", tmp_path / "fit.json")
    assert refused.returncode == 2 and "needs a rank above the largest the fit was measured on (16)" in refused.stderr
    assert "outside the lengths the fit was measured on (64–512)" in _memft("plan", "--length", "2000", "--law", tmp_path / "fit.json").stderr
    doc = json.loads((tmp_path / "fit.json").read_text())
    for f in doc["fits"]:  # a file written before fits recorded their range plans as before (the power law's arithmetic)
        f.pop("lengths"), f.pop("ranks"), f.pop("forms")
    (tmp_path / "fit.json").write_text(json.dumps(doc))
    p1 = json.loads(_memft("plan", "--length", "500", "--law", tmp_path / "fit.json", "--json").stdout)
    p2 = json.loads(_memft("plan", "--records", "200", "--tokens-per-record", "10", "--law", tmp_path / "fit.json", "--json").stdout)
    assert p1["length"] == 500 and p2["length"] == 2000 and p1["rank"] <= p2["rank"] and p1["law"] == "power"
    # by hand: smallest r with 5 - (2 r^0.6 500^-0.4 + 0.1) < ln 2, using the fitted parameters
    f = fits["Combined"]
    need = (5.0 - np.log(2) - f["b"]) / (f["C"] * 500 ** -f["beta"])
    assert p1["rank"] == int(np.floor(need ** (1 / f["alpha"]))) + 1
    bad = _memft("plan", "--length", "500", "--records", "3", "--law", tmp_path / "fit.json")
    assert bad.returncode == 2 and "exactly one of" in bad.stderr


@pytest.mark.slow  # ~15 s of matplotlib figure layout for one fit; test_report.py builds a report in the fast suite
def test_report_cli_writes_a_self_contained_page(tmp_path):
    # One setting keeps the rendering short (each fit draws its own figures); test_report.py checks the contents.
    store = _store(tmp_path / "pb.db", settings=(("phonebook", None),))
    with Store(tmp_path / "empty.db"):
        pass
    rep = _memft("report", store, tmp_path / "empty.db", "--out", tmp_path / "rep", "--n-boot", "10")
    assert rep.returncode == 0, rep.stderr
    index = tmp_path / "rep" / "index.html"
    text = index.read_text()
    claims = json.loads((tmp_path / "rep" / "claims.json").read_text())
    assert claims["stores"] == [str(store), str(tmp_path / "empty.db")] and len(claims["claims"]) == 9
    # the rows were early-stopped runs with no budget keys: every comparison and the law claim are untested
    assert [c["verdict"] for c in claims["claims"]].count("untested") == 6 and claims["rule"].startswith("The rule: identity")
    assert "<h2>Paper claims</h2>" in text and (tmp_path / "rep" / "claims.md").read_text().startswith("The rule: identity")
    assert "data:image/png;base64," in text and "http://" not in text and "https://" not in text
    assert "PhoneBook" in text and "predicted_vs_true" in text  # the fit's table row and its figures

    class Links(HTMLParser):
        refs: list = []

        def handle_starttag(self, tag, attrs):
            self.refs += [v for k, v in attrs if k in ("href", "src") and v and not v.startswith(("data:", "#"))]

    links = Links()
    links.feed(text)
    assert links.refs and all((index.parent / ref).exists() for ref in links.refs)


def test_missing_store_is_exit_2(tmp_path):
    r = _memft("law", "fit", tmp_path / "none.db")
    assert r.returncode == 2 and "no such results store" in r.stderr


def test_law_fit_reads_several_stores_of_one_budget_only(store, tmp_path):
    other = tmp_path / "other.db"
    with Store(other) as st:  # the same law, but its runs trained another budget
        cfg = {"benchmark": "stress", "ratio": 1.0, "rank": 1, "length": 64, "model": "m", "method": "sft", "seed": 0, "max_steps": 150}
        st.claim(run_id(cfg), cfg)
        st.finish(run_id(cfg), {**cfg, "loss_init": 5.0, "loss_final": 4.0, "delta_loss": 1.0})
    bad = _memft("law", "fit", store, other)
    assert bad.returncode == 2 and "2 training budgets" in bad.stderr and "fit the stores of one budget together" in bad.stderr
    copy = tmp_path / "copy.db"
    copy.write_bytes(store.read_bytes())
    both = _memft("law", "fit", store, copy, "--json", tmp_path / "fit.json", "--n-boot", "0")
    assert both.returncode == 0, both.stderr
    fits = {f["setting"]: f for f in json.loads((tmp_path / "fit.json").read_text())["fits"]}
    assert fits["Combined"]["n"] == 2 * 40  # every stress row of both stores


def test_fit_file_says_its_budget_and_plan_repeats_it(store, tmp_path):
    single = tmp_path / "one.db"
    with Store(single) as st:
        cfg = {"benchmark": "stress", "ratio": 1.0, "rank": 1, "length": 64, "model": "m", "method": "sft", "seed": 0, "max_steps": 150,
               "lr_schedule": "linear", "batch_size": 1, "stop_when_certified": False}
        st.claim(run_id(cfg), cfg)
        st.finish(run_id(cfg), {**cfg, "loss_init": 5.0, "loss_final": 4.0, "delta_loss": 1.0})
    assert _memft("law", "fit", single, "--json", tmp_path / "one.json", "--n-boot", "0").returncode == 0
    (entry, *_) = json.loads((tmp_path / "one.json").read_text())["fits"]  # one row: skipped, but it says its budget
    assert entry["budget"] == {"max_steps": 150, "lr": None, "lr_schedule": "linear", "max_grad_norm": None, "batch_size": 1,
                               "stop_when_certified": False}
    _memft("law", "fit", store, "--json", tmp_path / "fit.json", "--n-boot", "0")
    doc = json.loads((tmp_path / "fit.json").read_text())
    for f in doc["fits"]:
        f["budget"] = entry["budget"]
        f.pop("ranks")  # its points never reach ln 2 (rank 16 at most): plan past them with the power law's arithmetic
    (tmp_path / "fit.json").write_text(json.dumps(doc))
    out = _memft("plan", "--length", "64", "--law", tmp_path / "fit.json", "--form", "power").stdout
    assert "[fit Combined, sft, power law, at a budget of 150 steps (linear lr, batch 1); held-out length error" in out


def test_shipped_default_fits_say_their_budgets_and_held_out_error():
    stress = _memft("plan", "--length", "128")
    assert stress.returncode == 0, stress.stderr
    assert stress.stdout.startswith("ℓ = 128: rank 2 (power of two: 2), predicted final loss 0.498 ")
    assert ("[fit Combined, sft, saturating law, at a budget of 150 steps (linear lr, batch 1); held-out length error "
            "(leave-one-length-out MAPE of ΔL) 2.6 %]") in stress.stdout
    pb = _memft("plan", "--records", "10", "--setting", "PhoneBook")
    assert pb.returncode == 0 and "power law, at a budget of 30 steps (constant lr); held-out length error (leave-one-length-out MAPE of ΔL) 3.1 %]" in pb.stdout
    far = _memft("plan", "--length", "256")  # rank 4 held 77 % of 256 tokens in 150 steps: the law is not extrapolated
    assert far.returncode == 2 and far.stderr.count("\n") == 1 and "above the largest the fit was measured on (4)" in far.stderr


def test_the_cli_saturation_default_is_the_law_packages():
    from memft.cli import lawcmd
    from memft.research.law.select import SATURATION_EPS

    assert lawcmd.SATURATION_EPS == SATURATION_EPS
