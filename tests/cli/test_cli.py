"""The CLI is an interface users script against: exit codes, stdout, one-line errors.

Commands run in-process through `memft.cli.main.main(argv)` (what the console script calls), with stdin, stdout and
stderr swapped for buffers: the same parsing, exit codes and one-line errors as a subprocess, without importing torch
again per call. `memft_process` runs a real subprocess, for what only a fresh process shows (start-up imports).
"""

import io
import json
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout

import pytest

from tests.conftest import write_jsonl

FAST = ["--model", "tiny-random", "--preset", "all", "--lr", "0.02", "--device", "cpu"]


def memft(*args, input=None):
    """Run `memft ARGS` in this process -> CompletedProcess(returncode, stdout, stderr), as subprocess.run gives."""
    from memft.cli.main import main

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    stdin = io.TextIOWrapper(io.BytesIO((input or "").encode("utf-8")), encoding="utf-8")
    saved_stdin, sys.stdin = sys.stdin, stdin
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                main(argv)
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.stdin = saved_stdin
    return subprocess.CompletedProcess(["memft", *argv], code, out.getvalue(), err.getvalue())


def memft_process(*args):
    return subprocess.run([sys.executable, "-m", "memft.cli.main", *map(str, args)], capture_output=True, text=True)


def test_help_and_version_do_not_import_torch():
    code = "import sys; from memft.cli.main import app; assert 'torch' not in sys.modules, 'torch imported at startup'"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    v = memft_process("--version")
    assert v.returncode == 0 and v.stdout.startswith("memft ")
    for cmd in ("write", "recall", "verify", "demo"):
        h = memft(cmd, "--help")
        assert h.returncode == 0 and "Usage" in h.stdout


def test_write_recall_verify_end_to_end(tmp_path):
    recs = [
        {"key": "Ann:", "value": "{x}\\n"},
        {"key": "url?", "value": "https://a.b/c?d=1"},
        {"key": "Zoë", "value": "é\nü"},
        {"key": "pin", "value": "0042"},
    ]
    f = write_jsonl(tmp_path / "r.jsonl", [json.dumps(r, ensure_ascii=False) for r in recs])
    out = tmp_path / "ad"
    w = memft("write", f, "--out", out, "--max-steps", "300", "--json", tmp_path / "w.json", "--quiet", *FAST)
    assert w.returncode == 0, w.stderr
    rep = json.loads((tmp_path / "w.json").read_text())
    assert rep["certified"] == 1.0 and rep["records"] == 4
    meta = json.loads((out / "memft.json").read_text())
    assert meta["base"]["spec"] == "tiny-random" and meta["records"]["count"] == 4 and meta["template"] == "raw"
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    for r in recs:
        got = memft("recall", out, r["key"], "--device", "cpu")
        assert got.returncode == 0 and got.stdout == r["value"] + "\n"
    j = json.loads(memft("recall", out, "pin", "--json", "--device", "cpu").stdout)
    assert j["value"] == "0042" and j["certified"] is True and 0.0 < j["min_prob"] <= 1.0
    v = memft("verify", out, f, "--json", tmp_path / "v.json", "--generate", "--quiet", "--device", "cpu")
    assert v.returncode == 0, v.stderr
    vj = json.loads((tmp_path / "v.json").read_text())
    assert vj["exact_match"] == 1.0 and vj["certified"] == 1.0 and vj["token_accuracy"] == 1.0
    assert [p["key"] for p in vj["per_record"]] == [r["key"] for r in recs]
    # A record the adapter never saw is not recalled: exit 1 and a failure position.
    other = write_jsonl(tmp_path / "o.jsonl", [json.dumps({"key": "Ann:", "value": "something else"})])
    v2 = memft("verify", out, other, "--json", tmp_path / "v2.json", "--quiet", "--device", "cpu", "--reveal")
    assert v2.returncode == 1
    assert json.loads((tmp_path / "v2.json").read_text())["per_record"][0]["first_failure"] == 0


def test_write_exits_1_when_not_certified_but_saves(tmp_path):
    f = write_jsonl(tmp_path / "r.jsonl", [json.dumps({"key": f"k{i}", "value": f"value number {i}"}) for i in range(4)])
    w = memft("write", f, "--out", tmp_path / "ad", "--max-steps", "1", "--quiet", *FAST)
    assert w.returncode == 1
    assert json.loads((tmp_path / "ad" / "memft.json").read_text())["certification"]["certified"] < 1.0
    # --quiet still says, in one line, what is not exact
    assert w.stdout == "" and w.stderr.count("\n") == 1 and w.stderr.startswith("memft: not exact: 4 of 4 record(s) not certified ('k0'")


@pytest.mark.slow  # a real process to interrupt: ~15 s
def test_ctrl_c_exits_130_with_one_line_and_leaves_the_folder_unchanged(tmp_path):
    import signal
    import time

    f = write_jsonl(tmp_path / "r.jsonl", [json.dumps({"key": "k:", "value": "v"})])
    ad = tmp_path / "ad"
    assert memft("write", f, "--out", ad, "--quiet", *FAST).returncode == 0
    before = {p.name: p.read_bytes() for p in ad.iterdir()}
    long = write_jsonl(tmp_path / "l.jsonl", [json.dumps({"key": f"k{i}:", "value": f"value {i} " * 20}) for i in range(8)])
    p = subprocess.Popen([sys.executable, "-m", "memft.cli.main", "write", str(long), "--out", str(ad), "--max-steps", "100000",
                          "--margin", "0.999999", *FAST], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal's Ctrl-C
    time.sleep(8)  # the model loaded and training under way (the lock file exists since the first write)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130 and err.splitlines()[-1] == "memft: interrupted; the adapter folder is unchanged", err
    assert {q.name: q.read_bytes() for q in ad.iterdir()} == before and not list(tmp_path.glob(".ad.memft-*-*"))


BAD = [
    ('{"key": "a", "value": "1"}\n{"key": "a"', [], "r.jsonl:2: not valid JSON"),
    ('{"key": "a"}', [], "has no `value` field"),
    ('{"key": "a", "value": 123}', [], "quote it"),
    ('{"key": "a", "value": ""}', [], "is empty"),
    ("", [], "no records"),
    ('{"key": "a", "value": "1"}\n{"key": "a", "value": "2"}', [], "conflicting values: 'a'"),
    ('{"key": "a", "value": "1"}', ["--rank", "0"], "--rank must be a positive integer"),
    ('{"key": "a", "value": "1"}', ["--layers", "9"], "--layers 9 out of range"),
    ('{"key": "a", "value": "1"}', ["--layers", "x"], "comma-separated integers"),
    ('{"key": "a", "value": "1"}', ["--model", "no-such-model"], "unknown model 'no-such-model'"),
]


@pytest.mark.parametrize("text, extra, needle", BAD)
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, text, extra, needle):
    f = tmp_path / "r.jsonl"
    f.write_text(text, encoding="utf-8")
    args = ["write", f, "--out", tmp_path / "ad", "--quiet", *FAST, *extra] if "--model" not in extra else ["write", f, "--out", tmp_path / "ad", "--quiet", *extra]
    r = memft(*args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("memft: error:") and needle in lines[0], r.stderr
    assert not (tmp_path / "ad").exists()


def test_bad_input_missing_file_non_utf8_foreign_out(tmp_path):
    r = memft("write", tmp_path / "missing.jsonl", "--out", tmp_path / "ad", *FAST)
    assert r.returncode == 2 and "file not found" in r.stderr
    bad = tmp_path / "b.jsonl"
    bad.write_bytes(b'{"key": "a", "value": "\xff"}\n')
    r = memft("write", bad, "--out", tmp_path / "ad", *FAST)
    assert r.returncode == 2 and "b.jsonl:1: bytes that are not UTF-8" in r.stderr
    good = write_jsonl(tmp_path / "g.jsonl", ['{"key": "a", "value": "1"}'])
    foreign = tmp_path / "docs"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    r = memft("write", good, "--out", foreign, *FAST)
    assert r.returncode == 2 and "not a memft adapter" in r.stderr and "Traceback" not in r.stderr
    assert (foreign / "notes.txt").read_text() == "keep me" and len(list(foreign.iterdir())) == 1
    r = memft("recall", tmp_path / "nowhere", "k")
    assert r.returncode == 2 and "no such adapter folder" in r.stderr
    r = memft("write", good, "--out", tmp_path / "x", "--bogus-option")
    assert r.returncode == 2


def test_demo_on_tiny_model(tmp_path):
    r = memft("demo", "--model", "tiny-random", "--records", "4", "--lr", "0.02", "--out", tmp_path / "demo", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert "exact_match" in r.stderr and "100.0%" in r.stderr and "peak memory" in r.stderr
    recs = [json.loads(x) for x in (tmp_path / "demo" / "demo-records.jsonl").read_text().splitlines()]
    assert len(recs) == 4 and all(len(x["value"]) == 10 and x["value"].isdigit() for x in recs)
    got = memft("recall", tmp_path / "demo", recs[0]["key"], "--device", "cpu")
    assert got.stdout == recs[0]["value"] + "\n"


def test_write_rank_auto_reports_tries(tmp_path):
    f = write_jsonl(tmp_path / "r.jsonl", [json.dumps({"key": f"k{i}:", "value": f"{i * 7919:05d}"}) for i in range(4)])
    w = memft("write", f, "--out", tmp_path / "ad", "--rank", "auto", "--max-rank", "8", "--max-steps", "40", *FAST)
    assert w.returncode == 0, w.stderr
    meta = json.loads((tmp_path / "ad" / "memft.json").read_text())
    tries = meta["rank_search"]["tries"]
    assert tries[0]["rank"] == 1 and meta["lora"]["rank"] == min(t["rank"] for t in tries if t["certified"] == 1.0)
    assert "smallest certifying rank" in w.stderr
    bad = memft("write", f, "--out", tmp_path / "x", "--rank", "big", *FAST)
    assert bad.returncode == 2 and "--rank 'big'" in bad.stderr


def test_out_dot_writes_into_an_empty_working_folder_and_is_refused_up_front_in_a_full_one(tmp_path, monkeypatch):
    f = write_jsonl(tmp_path / "r.jsonl", [json.dumps({"key": "k:", "value": "v"})])
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    w = memft("write", f, "--out", ".", "--quiet", "--json", "w.json", *FAST)
    assert w.returncode == 0, w.stderr
    assert (here / "memft.json").exists() and json.loads((here / "w.json").read_text())["certified"] == 1.0
    assert (tmp_path / ".here.memft-lock").exists() and not list(here.glob("*memft-lock"))
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    monkeypatch.chdir(full)
    w = memft("write", f, "--out", ".", "--quiet", *FAST)
    assert w.returncode == 2 and "holds files that are not a memft adapter" in w.stderr and w.stderr.count("\n") == 1
    assert sorted(p.name for p in full.iterdir()) == ["notes.txt"] and not (tmp_path / ".full.memft-lock").exists()
    w = memft("write", f, "--out", tmp_path / "r.jsonl" / "sub", "--quiet", *FAST)
    assert w.returncode == 2 and "r.jsonl is a file, not a folder" in w.stderr and w.stderr.count("\n") == 1


def test_json_dash_prints_the_report_and_forget_takes_the_training_options_of_append(tmp_path):
    f = write_jsonl(tmp_path / "r.jsonl", [json.dumps({"key": "a:", "value": "1"}), json.dumps({"key": "b:", "value": "2"})])
    out = tmp_path / "ad"
    w = memft("write", f, "--out", out, "--quiet", "--json", "-", *FAST)
    assert w.returncode == 0, w.stderr
    report = json.loads(w.stdout)  # stdout holds the report and nothing else
    assert report["certified"] == 1.0 and report["out"] == str(out) and not (tmp_path / "-").exists()
    g = memft("forget", out, "b:", "--margin", "0.6", "--method", "sft", "--max-steps", "200", "--lr", "0.02", "--device", "cpu",
              "--quiet", "--json", "-")
    assert g.returncode == 0, g.stderr
    assert json.loads(g.stdout)["saved"] is True
    from memft.store.adapters import read_meta

    meta = read_meta(out)
    assert meta.records.count == 1 and meta.train_config().margin == 0.6


def test_ratios_are_fractions_or_percent_signs_never_both_readings_of_one_number():
    bad = memft("bench", "stress", "--model", "tiny-random", "--ratios", "0,50")
    assert bad.returncode == 2 and "50%" in bad.stderr and bad.stderr.count("\n") == 1


def test_a_write_that_ends_exact_but_inside_the_bf16_allowance_says_so_with_exit_0(tmp_path, capsys):
    """Certified records, one of them 0.4 nats from its runner-up while the run held 2.5: exit 0 (the memory is
    exact), one warning line on stderr naming the count, and the count in the JSON report."""
    import json
    from types import SimpleNamespace as S

    import typer

    from memft.certify.metrics import RecordReport, summarize
    from memft.cli.main import _report_write
    from memft.training.sizing import size_for

    reports = [RecordReport("a:", 1, True, None, 1.0, None, None, None, [], None, 0.97, True, 0.03, min_gap=0.95, min_log_odds=3.4),
               RecordReport("b:", 1, True, None, 1.0, None, None, None, [], None, 0.55, True, 0.6, min_gap=0.2, min_log_odds=0.45)]
    res = S(summary=summarize(reports), reports=reports, all_certified=True,
            meta=S(train={"steps": 3, "log_odds_allowance": 2.5}, base=S(dtype="bf16"), extra={}))
    with pytest.raises(typer.Exit) as e:
        _report_write(res, tmp_path / "ad", size_for(2), None, None, tmp_path / "r.json", False, True)
    assert e.value.exit_code == 0
    err = capsys.readouterr().err
    assert "1 of 2 record(s) are exact in this run but closer to another token than the bf16 allowance (2.5 nats)" in " ".join(err.split())
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["within_allowance"] == 1 and rep["min_log_odds"] == pytest.approx(0.45)
    res.meta.train["log_odds_allowance"] = 0.0  # fp32: no allowance, no line
    with pytest.raises(typer.Exit):
        _report_write(res, tmp_path / "ad", size_for(2), None, None, None, False, True)
    assert "allowance" not in capsys.readouterr().err


def test_write_with_a_null_init_freezes_a(tmp_path, monkeypatch):
    """--lora-init null-contrast trains B only (a_lr_scale 0 in the TrainConfig the write gets): trained, A gave most
    of the locality back (README, "A where general text does not reach"); --lora-init centered keeps A trained."""
    from memft import api

    seen = []

    def fake_write(recs, out, model, lora, train, runtime, on_step=None, extra=None, shard_size=None):
        seen.append(train)
        raise SystemExit(7)  # stop before any training: only the settings matter here

    monkeypatch.setattr(api, "write", fake_write)
    recs = write_jsonl(tmp_path / "r.jsonl", ['{"key": "a:", "value": "1"}'])
    for init in ("null-contrast", "centered"):
        assert memft("write", recs, "--out", tmp_path / init, "--model", "tiny-random", "--lora-init", init, "--quiet").returncode == 7
    assert [t.lora_init for t in seen] == ["null-contrast", "centered"] and [t.a_lr_scale for t in seen] == [0.0, 1.0]


def test_usage_errors_are_one_line_with_exit_2(tmp_path):
    """click's own errors (a value of the wrong type, an unknown option or command, a missing argument) are said
    like memft's: one line on stderr naming the command's --help, exit 2, no box, no traceback."""
    recs = write_jsonl(tmp_path / "r.jsonl", ['{"key": "a:", "value": "1"}'])
    for args, said in ((("write", recs, "--out", tmp_path / "o", "--max-steps", "many"), "Invalid value for '--max-steps'"),
                       (("write", recs), "Missing option '--out'"),
                       (("writ",), "No such command 'writ'"),
                       (("recall", "--bogus", tmp_path, "k"), "No such option: --bogus"),
                       (("append",), "Missing argument")):
        r = memft_process(*args)
        assert r.returncode == 2 and r.stderr.startswith("memft: error: " + said) and r.stderr.count("\n") == 1, (args, r.stderr)
        assert "--help`" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()
    h = memft_process()
    assert "Usage" in h.stdout and h.stderr == ""
