import json

import pytest

from memft.errors import RecordsError
from memft.prompts.records import Record, load_records, parse_records, write_records


def _load(tmp_path, text: str | bytes):
    p = tmp_path / "r.jsonl"
    p.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return load_records(p)


def test_reads_key_value_and_paper_field_names(tmp_path):
    recs = _load(
        tmp_path,
        '{"key": "a:", "value": "1"}\n\n{"id": 3, "query": "b:", "target": "0042", "target_len": 4}\n'
        '{"question": "c?", "matching": "x y"}\n',
    )
    assert [(r.key, r.value) for r in recs] == [("a:", "1"), ("b:", "0042"), ("c?", "x y")]


def test_value_ids_records(tmp_path):
    (r,) = _load(tmp_path, '{"key": "k", "value_ids": [5, 0, 7]}\n')
    assert r.value is None and r.value_ids == (5, 0, 7)


@pytest.mark.parametrize(
    "text, needle",
    [
        ('{"key": "a", "value": "1"}\n{"key": "b", "value": "2"\n', "r.jsonl:2: not valid JSON"),
        ('{"value": "1"}\n', "r.jsonl:1: no `key` field"),
        ('{"key": "a"}\n', "r.jsonl:1: key 'a' has no `value` field"),
        ('{"key": "a", "value": 5551234}\n', "is a JSON number or boolean; quote it"),
        ('{"key": "A:", "value": "1", "value": "2"}\n', "r.jsonl:1: the field `value` appears twice"),
        ('{"key": "a", "value": ""}\n', "is empty"),
        ("\n\n", "no records"),
        ('[1, 2]\n', "expected a JSON object"),
        ('{"key": "", "value": "x"}\n', "non-empty string"),
        ('{"key": "a", "value_ids": [1, -2]}\n', "token ids"),
        ('{"key": "a", "value": ["x"]}\n', "must be a string"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, text, needle):
    with pytest.raises(RecordsError) as e:
        _load(tmp_path, text)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_not_utf8_names_the_line(tmp_path):
    with pytest.raises(RecordsError, match=r"r.jsonl:2: bytes that are not UTF-8"):
        _load(tmp_path, b'{"key": "a", "value": "1"}\n{"key": "b", "value": "\xff"}\n')


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(RecordsError, match="file not found"):
        load_records(tmp_path / "nope.jsonl")
    with pytest.raises(RecordsError, match="is a folder"):
        load_records(tmp_path)


def test_conflicting_keys_are_all_listed_and_exact_repeats_dropped(tmp_path):
    text = "\n".join(
        json.dumps(o)
        for o in [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}, {"key": "a", "value": "9"}, {"key": "b", "value": "3"}, {"key": "c", "value": "4"}, {"key": "c", "value": "4"}]
    )
    with pytest.raises(RecordsError, match=r"2 key\(s\) have conflicting values: 'a', 'b'"):
        _load(tmp_path, text)
    assert len(parse_records(['{"key": "c", "value": "4"}', '{"key": "c", "value": "4"}'])) == 1


def test_line_separator_inside_value_is_not_a_line_break(tmp_path):
    (r,) = _load(tmp_path, '{"key": "k", "value": "a\u2028b"}\n')
    assert r.value == "a\u2028b"


def test_write_then_load_roundtrip(tmp_path):
    a = [Record("x", "1"), Record("y", value_ids=(3, 4))]
    write_records(a, tmp_path / "o.jsonl")
    assert load_records(tmp_path / "o.jsonl") == a


def test_record_needs_exactly_one_value():
    with pytest.raises(ValueError):
        Record("k")
    with pytest.raises(ValueError):
        Record("k", "v", (1,))


def test_paper_files_load(shared_paper):
    pb = load_records(shared_paper / "phonebook" / "qwen" / "PB1000.jsonl")
    assert len(pb) == 100 and pb[0].key == "Jerry Becerra:" and pb[0].value == "9100672710"
    (lc,) = load_records(shared_paper / "long_context" / "random.jsonl")
    assert lc.key.startswith("Please output") and len(lc.value) > 1000


def test_trust_rules_for_record_lines():
    import pytest

    from memft.errors import RecordsError
    from memft.prompts.records import MAX_CHARS, parse_records

    cases = (
        ('{"key": "k", "value": "v", "value_ids": [1]}', "has both `value_ids` and `value`; keep one of them"),
        ('{"key": "k", "value": "a\\ud800b"}', "is not valid Unicode (a lone surrogate at character 1)"),
        ('{"key": "\\udfff", "value": "v"}', "`key` is not valid Unicode"),
        ('{"key": "k", "value": "' + "x" * (MAX_CHARS + 1) + '"}', f"has more than the {MAX_CHARS} characters"),
    )
    for line, needle in cases:
        with pytest.raises(RecordsError) as e:
            parse_records([line], "f.jsonl")
        assert str(e.value).startswith("f.jsonl:1: ") and needle in str(e.value), str(e.value)[:200]
