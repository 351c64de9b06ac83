"""Recall answers only for keys the adapter holds: no invented values, nearest held keys, many keys in one load."""

import json

import pytest

from memft import api
from memft.config import LoraSettings, RuntimeConfig, TrainConfig
from memft.errors import RecordsError
from memft.prompts.records import Record
from tests.cli.test_cli import memft

RECS = [Record("Carol Whyte:", "555-0199"), Record("Bob Stone:", "x-7")]


@pytest.fixture(scope="module")
def ad(tmp_path_factory):
    out = tmp_path_factory.mktemp("recall") / "ad"
    res = api.write(RECS, out, model="tiny-random", lora=LoraSettings(rank=8, preset="all"),
                    train=TrainConfig(lr=2e-2, max_steps=300), runtime=RuntimeConfig(device="cpu", dtype="fp32"))
    assert res.all_certified
    return out


def test_api_recall_says_held_or_not_held(ad):
    ld = api.load_adapter(ad, device="cpu")
    got = api.recall(ld, "Carol Whyte:")
    assert (got.key, got.value, got.certified, got.held, got.nearest) == ("Carol Whyte:", "555-0199", True, True, [])
    miss = api.recall(ld, "Carol White:")
    assert (miss.value, miss.certified, miss.held, miss.min_prob) == ("", False, False, 0.0)
    assert miss.nearest == ["Carol Whyte:"]
    raw = api.recall(ld, "Carol White:", raw=True)  # asked for explicitly: generated, still marked not held
    assert raw.held is False and raw.certified is False and raw.min_prob > 0.0
    many = api.recall_many(ld, ["Bob Stone:", "password:", "Carol Whyte:"])
    assert [(r.key, r.held, r.value) for r in many] == [("Bob Stone:", True, "x-7"), ("password:", False, ""), ("Carol Whyte:", True, "555-0199")]
    for bad in ("", "\ud800"):
        with pytest.raises(RecordsError, match="key"):
            api.recall(ld, bad)


def test_cli_recall_of_a_key_not_held_exits_1_with_nearest_keys(ad):
    r = memft("recall", ad, "Carol White:", "--device", "cpu")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == ("memft: not held: 'Carol White:' (nearest held keys: 'Carol Whyte:'); "
                        "`memft ledger DIR` lists every held key; --raw generates anyway\n")
    raw = memft("recall", ad, "Carol White:", "--raw", "--device", "cpu")
    assert raw.returncode == 0 and raw.stdout.endswith("\n") and "invented, not recalled" in raw.stderr
    ok = memft("recall", ad, "Bob Stone:", "--device", "cpu")
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "x-7\n", "")
    j = json.loads(memft("recall", ad, "nobody", "--json", "--device", "cpu").stdout)
    assert j == {"key": "nobody", "held": False, "value": None, "certified": False, "min_prob": 0.0, "nearest": []}


def test_cli_recall_many_keys_from_stdin_as_json_lines(ad):
    keys = 'Bob Stone:\r\n{"key": "Carol Whyte:"}\n\nstaging api key:\n'
    p = memft("recall", ad, "--keys", "-", "--device", "cpu", input=keys)
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "not held: 'staging api key:'" in p.stderr
    assert [(r["key"], r["held"], r["value"]) for r in rows] == [("Bob Stone:", True, "x-7"), ("Carol Whyte:", True, "555-0199"),
                                                                ("staging api key:", False, None)]


def test_cli_recall_bad_keys_are_one_line_exit_2(ad, tmp_path):
    (tmp_path / "bin.txt").write_bytes(b"\xff\n")
    for args, needle in ((["", "--device", "cpu"], "the key is empty"), (["--keys", tmp_path / "none.txt"], "cannot read it"),
                         (["--keys", tmp_path / "bin.txt"], "not UTF-8"), ([], "give one KEY or --keys FILE")):
        r = memft("recall", ad, *args)
        assert r.returncode == 2 and needle in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)


def test_reports_leave_recalled_values_out_unless_revealed(ad, tmp_path):
    from tests.conftest import write_jsonl

    guess = write_jsonl(tmp_path / "g.jsonl", [json.dumps({"key": "Carol Whyte:", "value": "555-0100"})])  # wrong guess
    v = memft("verify", ad, guess, "--generate", "--quiet", "--device", "cpu", "--json", tmp_path / "v.json")
    assert v.returncode == 1
    text = (tmp_path / "v.json").read_text()
    rec = json.loads(text)["per_record"][0]
    assert "555-0199" not in text and "555-0199" not in v.stdout + v.stderr  # the true value does not spill
    # nor its length, nor how much of the guess is right (6 of 8 characters)
    assert (rec["recalled"], rec["recalled_chars"], rec["exact"], rec["first_failure"]) == (None, None, False, None)
    assert rec["token_accuracy"] is None and rec["first_error_tf"] is None and rec["stubborn_positions"] is None
    memft("verify", ad, guess, "--generate", "--reveal", "--quiet", "--device", "cpu", "--json", tmp_path / "r.json")
    shown = json.loads((tmp_path / "r.json").read_text())["per_record"][0]
    assert (shown["recalled"], shown["recalled_chars"], shown["first_failure"]) == ("555-0199", 8, 6)


def test_a_diverging_write_exits_2_and_keeps_the_good_adapter(ad, tmp_path):
    from tests.conftest import write_jsonl
    from tests.cli.test_cli import FAST

    before = {p.name: p.read_bytes() for p in ad.iterdir()}
    recs = write_jsonl(tmp_path / "r.jsonl", [json.dumps({"key": "k:", "value": "v"})])
    fast = [a if a != "0.02" else "1e30" for a in FAST]  # --lr 1e30: finite, but the loss turns NaN at once
    w = memft("write", recs, "--out", ad, "--quiet", "--json", tmp_path / "w.json", *fast)
    assert w.returncode == 2 and w.stderr.startswith("memft: error: training diverged at step ") and w.stderr.count("\n") == 1
    assert {p.name: p.read_bytes() for p in ad.iterdir()} == before and not (tmp_path / "w.json").exists()
    for opt in (["--lr", "inf"], ["--alpha", "nan"]):
        r = memft("write", recs, "--out", ad, "--quiet", *FAST, *opt)
        assert r.returncode == 2 and "must be a finite number" in r.stderr and r.stderr.count("\n") == 1


def _edit_json(name, change):
    def edit(d):
        obj = json.loads((d / name).read_text())
        change(obj)
        (d / name).write_text(json.dumps(obj))

    return edit


DAMAGE = {
    "truncated weights": (lambda d: (d / "adapter_model.safetensors").write_bytes((d / "adapter_model.safetensors").read_bytes()[:-100]), "unreadable (incomplete metadata"),
    "empty weights": (lambda d: (d / "adapter_model.safetensors").write_bytes(b""), "adapter_model.safetensors: empty;"),
    "missing weights": (lambda d: (d / "adapter_model.safetensors").unlink(), "adapter_model.safetensors: missing"),
    "broken config": (lambda d: (d / "adapter_config.json").write_text("{"), "adapter_config.json: unreadable"),
    "missing config": (lambda d: (d / "adapter_config.json").unlink(), "adapter_config.json: missing"),
    "config rank edited": (_edit_json("adapter_config.json", lambda o: o.update(r=4)), "rank or target modules differ"),
    "meta is a list": (lambda d: (d / "memft.json").write_text("[]"), "not the JSON object memft writes"),
    "meta dtype int3": (_edit_json("memft.json", lambda o: o["certification"].update(dtype="int3")), "dtype 'int3'"),
    "meta names another base": (_edit_json("memft.json", lambda o: o["base"].update(spec="smollm2-135m")), "no longer matches ledger.json in base"),
    "max_target_tokens edited": (_edit_json("memft.json", lambda o: o["records"].update(max_target_tokens=2)), "in max_target_tokens"),
    "ledger entry deleted": (_edit_json("ledger.json", lambda o: o["entries"].pop()), "ledger.json lists 1 record(s) but memft.json says 2"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_or_edited_folder_is_refused_before_loading_a_model(ad, tmp_path, case):
    import shutil

    from memft.errors import AdapterError

    damage, needle = DAMAGE[case]
    d = tmp_path / "ad"
    shutil.copytree(ad, d)
    damage(d)
    with pytest.raises(AdapterError) as e:
        api.load_adapter(d, device="cpu")
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_cli_damaged_folder_is_one_line_exit_2(ad, tmp_path):
    import shutil

    d = tmp_path / "ad"
    shutil.copytree(ad, d)
    DAMAGE["ledger entry deleted"][0](d)
    for args in (["recall", d, "Bob Stone:"], ["append", d, tmp_path / "x.jsonl"]):
        (tmp_path / "x.jsonl").write_text(json.dumps({"key": "n:", "value": "1"}) + "\n")
        r = memft(*args, "--device", "cpu")
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "ledger.json lists 1 record(s)" in r.stderr, r.stderr


def test_plain_progress_lines_at_a_steady_interval():
    from memft.cli.render import plain_progress

    times = iter([0.0, 0.0, 10.0, 31.0, 40.0, 95.0])  # t0, then one per step below
    lines = []
    on_step = plain_progress(100, every=30.0, clock=lambda: next(times), write=lines.append)
    for step, cert in ((0, 0.0), (10, 0.2), (31, 0.5), (40, 0.6), (50, 1.0)):
        on_step({"step": step, "certified": cert, "loss": 0.5, "min_prob": 0.1, "stubborn": 1})
    assert lines == [
        "training step 0/100  certified 0.0%  loss 0.5000  elapsed 0 s",
        "training step 31/100  certified 50.0%  loss 0.5000  elapsed 31 s  left ~69 s (at most)",
        "training step 50/100  certified 100.0%  loss 0.5000  elapsed 95 s",
    ]


def _copy(ad, tmp_path):
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(ad, d)
    return d


def test_a_missing_ledger_is_a_damaged_folder_not_a_license_to_invent(ad, tmp_path):
    d = _copy(ad, tmp_path)
    (d / "ledger.json").unlink()
    for args in (("recall", d, "Carol White:"), ("recall", d, "Carol Whyte:"), ("ledger", d)):
        r = memft(*args, "--device", "cpu") if args[0] == "recall" else memft(*args)
        assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1, (args, r.stderr)
        assert "ledger.json is missing but memft.json lists the records' digests; the adapter is damaged" in r.stderr


@pytest.mark.parametrize("damage", ["bit flip", "alpha"])
def test_edited_weights_or_config_are_damage_not_garbage(ad, tmp_path, damage):
    d = _copy(ad, tmp_path)
    if damage == "bit flip":  # one bit in the last tensor's data: the file still parses
        w = bytearray((d / "adapter_model.safetensors").read_bytes())
        w[-3] ^= 0x10
        (d / "adapter_model.safetensors").write_bytes(bytes(w))
        name = "adapter_model.safetensors"
    else:
        cfg = json.loads((d / "adapter_config.json").read_text())
        cfg["lora_alpha"] = 800
        (d / "adapter_config.json").write_text(json.dumps(cfg))
        name = "adapter_config.json"
    for cmd in (["recall", d, "Carol Whyte:", "--device", "cpu"], ["verify", d, _records(tmp_path), "--quiet", "--device", "cpu"]):
        r = memft(*cmd)
        assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1, r.stderr
        assert f"{name}: its contents differ from the fingerprint memft.json took at save; the adapter is damaged" in r.stderr


def _records(tmp_path):
    from tests.conftest import write_jsonl

    return write_jsonl(tmp_path / "r.jsonl", [json.dumps({"key": r.key, "value": r.value}) for r in RECS])


def test_folders_saved_before_fingerprints_still_load():
    from pathlib import Path

    old = Path(__file__).parent / "data" / "adapter-0.1.0"
    assert "files" not in json.loads((old / "memft.json").read_text())
    ld = api.load_adapter(old, device="cpu")
    assert ld.meta.files is None and len(ld.ledger.entries) == 3


def test_a_held_key_that_was_not_certified_is_printed_with_a_warning_and_exit_1(tmp_path):
    out = tmp_path / "weak"
    res = api.write(RECS, out, model="tiny-random", lora=LoraSettings(rank=8, preset="all"),
                    train=TrainConfig(lr=2e-2, max_steps=1), runtime=RuntimeConfig(device="cpu", dtype="fp32"))
    assert not res.all_certified and (out / "memft.json").exists()  # exit 1 of write still saves
    r = memft("recall", out, "Carol Whyte:", "--device", "cpu")
    assert r.returncode == 1 and r.stdout.endswith("\n")  # what greedy decoding gives, but not vouched for
    assert "'Carol Whyte:' is held but its recall is not certified" in r.stderr and r.stderr.count("\n") == 1
    j = memft("recall", out, "--keys", "-", "--device", "cpu", input="Carol Whyte:\nBob Stone:\n")
    assert j.returncode == 1 and [json.loads(x)["certified"] for x in j.stdout.splitlines()] == [False, False]
