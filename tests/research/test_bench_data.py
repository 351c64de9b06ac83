import json
import re

import pytest

from memft.model.base import tiny_tokenizer
from memft.prompts.records import load_records
from memft.research.bench.phonebook import FIRST, LAST, phonebook, phonebook_by_length, value_tokens
from memft.research.bench.rule import rule_split
from memft.research.bench.stress import DEFAULT_PROMPT, default_text, load_paper_stress, stress, stress_with_positions

ASCII = "The quick brown fox jumps over the lazy dog. " * 20  # 900 bytes = 900 tiny-tokenizer tokens


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


# ---------------------------------------------------------------- PhoneBook by answer tokens


def test_phonebook_unchanged_by_the_extension():
    # Golden values from the committed generator: other code and saved results depend on them.
    book = phonebook(3, seed=0)
    assert [(r.key, r.value) for r in book] == [
        ("Angela Miller:", "4876475938"),
        ("Brenda Brown:", "2421948924"),
        ("Michael Brooks:", "1157815659"),
    ]
    assert book == phonebook(3, seed=0) and book != phonebook(3, seed=1)


@pytest.mark.parametrize(("ell", "n"), [(10, 1), (19, 1), (100, 10), (105, 10), (1000, 100)])
def test_phonebook_by_length_counts_value_tokens(tok, ell, n):
    # Byte-level tokenizer: every 10-digit number is exactly 10 value tokens, so ℓ -> floor(ℓ / 10) records.
    book = phonebook_by_length(ell, tok, seed=0)
    assert len(book) == n and value_tokens(book, tok) == 10 * n
    assert len({r.key for r in book}) == n


def test_phonebook_by_length_is_seeded_and_nested(tok):
    small, big = phonebook_by_length(50, tok, seed=3), phonebook_by_length(200, tok, seed=3)
    assert big[:5] == small
    assert phonebook_by_length(200, tok, seed=3) == big
    assert phonebook_by_length(200, tok, seed=4) != big


def test_phonebook_by_length_errors(tok):
    with pytest.raises(ValueError, match="smaller than one record"):
        phonebook_by_length(9, tok)
    with pytest.raises(ValueError, match="positive"):
        phonebook_by_length(0, tok)
    assert (len(FIRST), len(LAST)) == (108, 97)


@pytest.mark.slow  # tokenizes all 10,476 names, twice
def test_phonebook_by_length_holds_every_name_and_no_more(tok):
    # 108 first x 97 last names = 10,476 records of 10 tokens: 104,760 value tokens in all.
    assert len(phonebook_by_length(104_760, tok)) == 10_476
    with pytest.raises(ValueError, match="exceeds the 104760 value tokens of all 10476 names"):
        phonebook_by_length(104_761, tok)


# ---------------------------------------------------------------- long-context stress


@pytest.mark.parametrize("ratio", [0.0, 0.2, 0.5, 1.0])
@pytest.mark.parametrize("length", [50, 333])
def test_stress_replaces_exactly_round_ratio_length(tok, ratio, length):
    rec, pos = stress_with_positions(length, ratio, tok, seed=7, text=ASCII)
    plain, none = stress_with_positions(length, 0.0, tok, seed=7, text=ASCII)  # same seed: same text window
    assert none == [] and rec.key == DEFAULT_PROMPT
    assert len(rec.value_ids) == length
    k = round(ratio * length)
    assert len(pos) == len(set(pos)) == k and all(0 <= p < length for p in pos)
    changed = [i for i in range(length) if rec.value_ids[i] != plain.value_ids[i]]
    assert changed == pos  # replaced positions all changed; the others hold the natural-text tokens
    assert len(changed) / length == k / length
    special = set(tok.all_special_ids)
    assert all(rec.value_ids[p] not in special and 0 <= rec.value_ids[p] < len(tok) for p in pos)


def test_stress_plain_text_is_a_window_of_the_source(tok):
    rec = stress(120, 0.0, tok, seed=1, text=ASCII)
    assert tok.decode(list(rec.value_ids)) in ASCII
    # Default source: a window of the tokenized pydoc topics (decode may show a cut UTF-8 character at the edges).
    src = default_text()
    ids = tok(src, add_special_tokens=False)["input_ids"]
    rec = stress(300, 0.0, tok, seed=5)
    window = list(rec.value_ids)
    assert bytes(window) in bytes(ids)  # tiny ids are < 256: search the id sequence as a byte string
    assert tok.decode(window).strip("\ufffd") in src


def test_stress_is_seeded_and_noise_levels_nest(tok):
    a = stress(200, 0.5, tok, seed=0)
    assert stress(200, 0.5, tok, seed=0) == a
    assert stress(200, 0.0, tok, seed=0) != stress(200, 0.0, tok, seed=1)  # different text windows
    assert stress(100, 0.5, tok, seed=0, text=ASCII[:100]) != stress(100, 0.5, tok, seed=1, text=ASCII[:100])
    lo, p_lo = stress_with_positions(200, 0.2, tok, seed=0, text=ASCII)
    hi, p_hi = stress_with_positions(200, 0.6, tok, seed=0, text=ASCII)
    assert set(p_lo) <= set(p_hi)
    assert all(lo.value_ids[p] == hi.value_ids[p] for p in p_lo)


def test_stress_errors(tok):
    with pytest.raises(ValueError, match="shorter than length=901"):
        stress(901, 0.0, tok, text=ASCII)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        stress(10, 1.5, tok, text=ASCII)
    with pytest.raises(ValueError, match="special tokens"):
        stress(10, 0.0, tok, text=ASCII + "<|im_end|>")


# ---------------------------------------------------------------- linear rule


def test_rule_values_follow_the_rule_and_splits_are_disjoint():
    train, test = rule_split(300, 50, seed=2)
    assert (len(train), len(test)) == (300, 50)
    pairs = []
    for r in train + test:
        m = re.fullmatch(r"f\((-?\d+), (-?\d+)\) =", r.key)
        assert m, r.key
        x, y = int(m[1]), int(m[2])
        assert 0 <= x <= 99 and 0 <= y <= 99
        assert r.value == f" {3 * x + 5 * y + 7}"
        pairs.append((x, y))
    assert len(set(pairs)) == 350  # distinct, so train and test are disjoint
    assert rule_split(300, 50, seed=2) == (train, test) and rule_split(300, 50, seed=3) != (train, test)


def test_rule_custom_coefficients_and_full_grid():
    train, test = rule_split(3, 1, seed=0, low=-1, high=0, a=2, b=-1, c=0)
    assert {r.key for r in train + test} == {"f(-1, -1) =", "f(-1, 0) =", "f(0, -1) =", "f(0, 0) ="}
    values = {r.key: r.value for r in train + test}
    assert values["f(-1, 0) ="] == " -2" and values["f(0, -1) ="] == " 1"
    with pytest.raises(ValueError, match="more than the 4 distinct pairs"):
        rule_split(4, 1, low=-1, high=0)


# ---------------------------------------------------------------- the paper's files


def test_load_paper_stress(tok, shared_paper):
    for name in ("random.jsonl", "sample_0_tok29709_noise_0.jsonl"):
        path = shared_paper / "long_context" / name
        raw = json.loads(path.read_text(encoding="utf-8").split("\n")[0])
        full = load_paper_stress(path, tok)
        assert full.key == raw["question"]
        assert len(full.value_ids) == len(raw["matching"].encode("utf-8"))  # byte-level: one token per byte
        assert tok.decode(list(full.value_ids)) == raw["matching"]
        head = load_paper_stress(path, tok, length=64)
        assert head.value_ids == full.value_ids[:64]
    with pytest.raises(ValueError, match="fewer than length"):
        load_paper_stress(path, tok, length=len(full.value_ids) + 1)


def test_paper_pb1000_is_1000_value_tokens(shared_paper):
    path = shared_paper / "phonebook" / "qwen" / "PB1000.jsonl"
    records = load_records(path)
    raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(records) == 100 and sum(o["target_len"] for o in raw) == 1000
    assert all(len(r.value) == 10 and r.value.isdigit() for r in records)


def test_stress_exclude_redraws_only_where_needed():
    tok = tiny_tokenizer()
    text = "The quick brown fox jumps over the lazy dog. " * 20
    rec, pos = stress_with_positions(64, 0.5, tok, seed=3, text=text)
    same, _ = stress_with_positions(64, 0.5, tok, seed=3, text=text, exclude={10**6})
    assert same == rec  # nothing excluded was drawn: identical record
    drawn = {rec.value_ids[p] for p in pos}
    other, pos2 = stress_with_positions(64, 0.5, tok, seed=3, text=text, exclude=drawn)
    assert pos2 == pos and not drawn & {other.value_ids[p] for p in pos}


def test_the_registry_gives_each_generator_under_one_signature(tok):
    from memft.errors import ConfigError
    from memft.research import bench

    assert list(bench.BENCHMARKS) == ["phonebook", "stress", "rule"]
    assert bench.make("phonebook", bench.DataSpec(40), tok, 3) == (phonebook_by_length(40, tok, seed=3), None)
    assert bench.make("rule", bench.DataSpec(4, heldout=2), tok, 1) == rule_split(4, 2, seed=1)
    (rec,), held = bench.make("stress", bench.DataSpec(8, ratio=0.5, text=ASCII), tok, 0)
    assert held is None and rec == stress(8, 0.5, tok, seed=0, text=ASCII)
    with pytest.raises(ConfigError, match="stress needs a ratio"):
        bench.make("stress", bench.DataSpec(8), tok, 0)
    with pytest.raises(ConfigError, match="unknown benchmark 'nope': use one of phonebook, stress, rule"):
        bench.get("nope")
    assert bench.BENCHMARKS["stress"].default_lengths == (64, 128, 256)
