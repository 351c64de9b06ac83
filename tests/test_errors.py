"""Errors name the file:line, the key and a position, never the value: every records error, driven with a sentinel
value, is checked for the sentinel (its text, or its token id) on stdout, on stderr and in every JSON report."""

import json

import pytest
import torch

from memft import api
from memft.prompts.encoding import encode
from memft.errors import RecordsError
from memft.prompts.records import MAX_CHARS, Record
from tests.cli.test_cli import FAST, memft
from tests.conftest import write_jsonl

SECRET = "Zq7Sentinel"  # no tokenizer splits it into anything that looks like a key or a message word
SECRET_ID = 98765  # a token id, as a value_ids value


def _bad_files():
    """(name, JSONL lines, what the one-line error says): one per records error a value can cause."""
    return [
        ("number", ['{"key": "n:", "value": 98765}'], "is a JSON number or boolean"),
        ("surrogate", [json.dumps({"key": "s:", "value": SECRET})[:-2] + '\\ud800"}'], "lone surrogate at character"),
        ("too long", [json.dumps({"key": "l:", "value": SECRET * (MAX_CHARS // len(SECRET) + 1)})], "more than the"),
        ("both", [json.dumps({"key": "b:", "value": SECRET, "value_ids": [SECRET_ID]})], "has both"),
        ("duplicate field", ['{"key": "d:", "value": "%s", "value": "%s2"}' % (SECRET, SECRET)], "appears twice"),
        ("two values", [json.dumps({"key": "t:", "value": SECRET}), json.dumps({"key": "t:", "value": SECRET + "x"})], "conflicting values"),
        ("bad JSON", ['{"key": "j:", "value": "%s' % SECRET], "not valid JSON"),
        ("ids outside the vocabulary", [json.dumps({"key": "v:", "value_ids": [5, SECRET_ID]})], "outside the vocabulary"),
        ("stop token inside", [json.dumps({"key": "e:", "value": SECRET + "<|im_end|>" + SECRET})], "a stop token at position"),
        ("prefix clash", [json.dumps({"key": "Bob:", "value": " 1" + SECRET}), json.dumps({"key": "Bob: ", "value": "2" + SECRET})], "need different tokens"),
    ]


def _clean(text: str) -> bool:
    return SECRET not in text and str(SECRET_ID) not in text


@pytest.mark.parametrize("name, lines, says", _bad_files(), ids=[b[0] for b in _bad_files()])
def test_write_errors_never_echo_the_value(tmp_path, name, lines, says):
    f = write_jsonl(tmp_path / "r.jsonl", lines)
    w = memft("write", f, "--out", tmp_path / "ad", "--quiet", "--json", tmp_path / "w.json", *FAST)
    assert w.returncode == 2 and w.stderr.count("\n") == 1 and says in w.stderr, w.stderr
    assert _clean(w.stdout + w.stderr), w.stderr
    assert not (tmp_path / "w.json").exists() and not (tmp_path / "ad").exists()


def test_append_of_a_changed_value_and_verify_reports_never_echo_it(tmp_path):
    ad = tmp_path / "ad"
    f = write_jsonl(tmp_path / "r.jsonl", [json.dumps({"key": "k:", "value": SECRET})])
    assert memft("write", f, "--out", ad, "--quiet", "--max-steps", "300", *FAST).returncode == 0
    other = write_jsonl(tmp_path / "o.jsonl", [json.dumps({"key": "k:", "value": "other"})])
    a = memft("append", ad, other, "--quiet", "--json", tmp_path / "a.json")
    assert a.returncode == 2 and "already hold another value" in a.stderr and _clean(a.stdout + a.stderr)
    for extra in ([], ["--generate"]):  # a wrong guess: the report says not exact, and nothing about the true value
        v = memft("verify", ad, other, "--device", "cpu", "--json", tmp_path / "v.json", *extra)
        report = (tmp_path / "v.json").read_text()
        assert v.returncode == 1 and _clean(v.stdout + v.stderr + report)
        assert json.loads(report)["per_record"][0]["recalled_chars"] is None
    assert _clean(json.dumps(json.loads(memft("ledger", ad, "--json").stdout)) + (ad / "memft.json").read_text())


def test_api_errors_about_tokens_name_a_position_not_the_token(tmp_path):
    class Lossy:  # a tokenizer that changes the value's fourth character on the way back
        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [ord(c) for c in text]}

        def decode(self, ids, **kw):
            return "".join(chr(i) for i in ids[:3]) + "?" + "".join(chr(i) for i in ids[4:])

    with pytest.raises(RecordsError) as e:
        encode(Record("k:", SECRET), Lossy())
    assert "first changes at character 3" in str(e.value) and _clean(str(e.value)) and "Zq7" not in str(e.value)

    from memft.model.base import load_base

    base = load_base("tiny-random", device="cpu", dtype="fp32")
    head = base.model.get_output_embeddings().weight
    with torch.no_grad():
        head[200] = head[150]  # token 200 can never win greedy decoding
    with pytest.raises(RecordsError) as e:
        api.write([Record("k", value_ids=(5, 6, 200))], tmp_path / "ad", base=base)
    assert "position 2" in str(e.value) and "200" not in str(e.value) and "150" not in str(e.value)
