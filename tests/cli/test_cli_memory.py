"""CLI of the memory store: append, forget, ledger, verify's deployment and sampling options, audit registration."""

import json

from tests.cli.test_cli import FAST, memft
from tests.conftest import write_jsonl


def _recs(tmp_path, name, pairs):
    return write_jsonl(tmp_path / name, [json.dumps({"key": k, "value": v}) for k, v in pairs])


def test_append_forget_ledger_and_verify_deploy(tmp_path):
    ad = tmp_path / "ad"
    first = _recs(tmp_path, "a.jsonl", [("Ann:", "0042"), ("Bob:", "x-7")])
    assert memft("write", first, "--out", ad, "--max-steps", "300", "--activation", "always", "--quiet", *FAST).returncode == 0  # always: merged below
    more = _recs(tmp_path, "b.jsonl", [("Cy:", "q?1"), ("Ann:", "9999")])
    clash = memft("append", ad, more, "--quiet")
    assert clash.returncode == 2 and clash.stderr.count("\n") == 1 and "'Ann:'" in clash.stderr and "--update" in clash.stderr
    up = memft("append", ad, more, "--update", "--quiet", "--json", tmp_path / "up.json", "--device", "cpu")
    assert up.returncode == 0, up.stderr
    rep = json.loads((tmp_path / "up.json").read_text())
    assert rep["saved"] and rep["plan"]["added"] == ["Cy:"] and rep["plan"]["changed"] == ["Ann:"] and rep["certified"] == 1.0
    assert memft("recall", ad, "Ann:").stdout == "9999\n"
    gone = memft("forget", ad, "Bob:", "--quiet", "--device", "cpu")
    assert gone.returncode == 0, gone.stderr
    assert memft("recall", ad, "Bob:").stdout != "x-7\n"
    unknown = memft("forget", ad, "Nobody:", "--quiet")
    assert unknown.returncode == 2 and "not in this adapter" in unknown.stderr
    book = json.loads(memft("ledger", ad, "--json").stdout)
    assert [e["key"] for e in book["entries"]] == ["Cy:", "Ann:"] and [h["op"] for h in book["history"]] == ["write", "append", "forget"]
    held = _recs(tmp_path, "held.jsonl", [("Cy:", "q?1"), ("Ann:", "9999")])
    # (--plain-peft's subprocess is exercised by the slow tests of test_deploy.py)
    dep = memft("verify", ad, held, "--merged", "--dtype", "fp32", "--device", "cpu", "--quiet", "--json", tmp_path / "d.json")
    assert dep.returncode == 0, dep.stderr
    checks = json.loads((tmp_path / "d.json").read_text())["deploy"]
    assert [c["setting"] for c in checks] == ["merged into base, fp32"]
    assert checks[0]["certified"] == 2 and checks[0]["records"] == 2 and checks[0]["lost"] == []


def test_verify_sampling_options_are_checked_up_front(tmp_path):
    f = _recs(tmp_path, "r.jsonl", [("k:", "v")])
    for args, msg in (
        (["--temperature", "0"], "--temperature must be a finite number > 0"),
        (["--temperature", "1", "--top-p", "1.5"], "--top-p must be in (0, 1]"),
        (["--samples", "5"], "--samples needs --temperature"),
    ):
        r = memft("verify", tmp_path / "missing", f, *args)
        assert r.returncode == 2 and msg in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)


def test_new_commands_answer_help():
    for cmd in ("append", "forget", "ledger", "audit"):
        h = memft(cmd, "--help")
        assert h.returncode == 0 and "Usage" in h.stdout, cmd
