"""CLI of the memory store: append, forget, ledger, verify's deployment and sampling options, audit registration."""

import json

import pytest

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


@pytest.mark.slow  # three writes and an append; the refusals are checked fast below
def test_store_through_the_cli(tmp_path):
    """More records than --shard-size: a store; every command takes it or refuses it in one line."""
    st = tmp_path / "st"
    pairs = [(f"P{i}:", f"{i}{i}-{i * 7}") for i in range(6)]
    recs = _recs(tmp_path, "r.jsonl", pairs)
    w = memft("write", recs, "--out", st, "--shard-size", "3", "--max-steps", "300", "--activation", "always", "--quiet",
              "--json", tmp_path / "w.json", *FAST)
    assert w.returncode == 0, w.stderr
    rep = json.loads((tmp_path / "w.json").read_text())
    assert rep["shard_count"] == 2 and rep["records"] == 6 and rep["certified"] == 1.0 and [s["records"] for s in rep["shards"]] == [3, 3]
    assert memft("recall", st, "P4:").stdout == "44-28\n"
    lines = [json.loads(x) for x in memft("recall", st, "--keys", "-", input="P0:\nQ:\n").stdout.splitlines()]
    assert [(x["key"], x["held"], x["value"]) for x in lines] == [("P0:", True, "00-0"), ("Q:", False, None)]
    assert memft("verify", st, recs, "--quiet").returncode == 0
    book = json.loads(memft("ledger", st, "--json").stdout)
    assert book["records"] == 6 and book["shard_size"] == 3 and [s["shard"] for s in book["shards"]] == ["shard-000", "shard-001"]
    more = _recs(tmp_path, "m.jsonl", [("P6:", "66-42")])
    a = memft("append", st, more, "--quiet", "--json", tmp_path / "a.json")
    assert a.returncode == 0, a.stderr
    assert [s["shard"] for s in json.loads((tmp_path / "a.json").read_text())["shards"]] == ["shard-002"]  # both full: a new shard
    assert memft("recall", st, "P6:").stdout == "66-42\n"
    au = memft("audit", st, "--windows", "2", "--quiet", "--json", tmp_path / "au.json")
    assert au.returncode == 0, au.stderr
    audit = json.loads((tmp_path / "au.json").read_text())
    assert [s["shard"] for s in audit["shards"]] == ["shard-000", "shard-001", "shard-002"]
    assert audit["worst"]["kl_mean"] == max(s["divergence"]["kl_mean"] for s in audit["shards"])
    r = memft("forget", st, "Nobody:")
    assert r.returncode == 2 and "not in this store" in r.stderr and r.stderr.count("\n") == 1


def test_store_refusals_are_one_line(tmp_path):
    from memft.store import shards

    st = tmp_path / "st"
    st.mkdir()
    shards.write_meta(st, shards.StoreMeta(3))
    for i in range(3):
        (st / shards.shard_name(i)).mkdir()
    recs = _recs(tmp_path, "r.jsonl", [(f"P{i}:", str(i)) for i in range(4)])
    for args, msg in ((("export", st, "--gguf", tmp_path / "x.gguf"), "a memory store of 3 shards"),
                      (("verify", st, recs, "--merged"), "give a shard, e.g."),
                      (("write", recs, "--out", tmp_path / "o", "--shard-size", "3", "--rank", "auto", *FAST), "leave --shard-size out"),
                      (("write", recs, "--out", tmp_path / "o", "--shard-size", "-1", *FAST), "--shard-size -1"),
                      (("append", st, recs, "--deploy", "llama.cpp"), "a store's shards are written for PyTorch")):
        r = memft(*args)
        assert r.returncode == 2 and msg in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)
    assert not (tmp_path / "o").exists()


def test_rank_auto_writes_one_adapter_whatever_the_count(tmp_path, monkeypatch):
    """--rank auto (and --deploy) make one adapter: more records than the default shard size do not make a store."""
    from memft.cli import main as cli_main

    seen = []
    monkeypatch.setattr(cli_main, "_write_auto", lambda recs, out, *a: seen.append(len(recs)) or (_ for _ in ()).throw(SystemExit(7)))
    recs = _recs(tmp_path, "r.jsonl", [(f"K{i}:", str(i)) for i in range(1001)])
    r = memft("write", recs, "--out", tmp_path / "o", "--rank", "auto", "--quiet", *FAST)
    assert r.returncode == 7 and seen == [1001]
