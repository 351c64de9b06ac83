import pytest

from memft.prompts.encoding import decode_value, encode, prompt_ids
from memft.errors import RecordsError
from memft.model.base import tiny_tokenizer
from memft.prompts.records import Record


def test_layout_prompt_value_eos():
    tok = tiny_tokenizer()
    e = encode(Record("Key:", " v{1}"), tok)
    assert e.prompt == tuple(tok("Key:", add_special_tokens=False)["input_ids"])
    assert e.targets[-1] == tok.eos_token_id and e.n_value == len(" v{1}".encode())
    assert decode_value(list(e.targets), tok) == " v{1}"


def test_chat_template_prompt_ends_with_assistant_turn():
    tok = tiny_tokenizer()
    ids = prompt_ids("hi", tok, "chat")
    assert tok.decode(list(ids)) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_token_id_values_pass_through_and_are_range_checked():
    tok = tiny_tokenizer()
    assert encode(Record("k", value_ids=(5, 6)), tok).targets == (5, 6, tok.eos_token_id)
    with pytest.raises(RecordsError, match="outside the vocabulary"):
        encode(Record("k", value_ids=(5, 10_000)), tok)


class LossyTokenizer:
    """Stands in for a tokenizer that normalizes text (e.g. strips a trailing space)."""

    eos_token_id = 0

    def __len__(self):
        return 100

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [1] * len(text.rstrip())}

    def decode(self, ids, **_):
        return "x" * len(ids)


def test_value_that_does_not_round_trip_is_an_error_naming_the_record():
    with pytest.raises(RecordsError, match=r"record 'alice': its value does not survive"):
        encode(Record("alice", "xx "), LossyTokenizer())


def test_conflicting_records_are_found_before_training(tiny, tmp_path):
    from memft import api
    from memft.prompts.encoding import encode_all, target_conflicts

    a, b = Record("Bob:", " 1"), Record("Bob: ", "2")  # the tiny tokenizer: "Bob: " = "Bob:" + " ", then " 1" = " " + "1"
    assert target_conflicts(encode_all([a, b], tiny.tokenizer)) == ("Bob:", "Bob: ", 0)
    assert target_conflicts(encode_all([a, Record("Bob: ", "x"), Record("Bo", "b")], tiny.tokenizer)) == ("Bob:", "Bob: ", 0)
    assert target_conflicts(encode_all([a, Record("Bob;", "2")], tiny.tokenizer)) is None
    with pytest.raises(RecordsError, match=r"records 'Bob:' and 'Bob: ' need different tokens after the same text"):
        api.write([a, b], tmp_path / "ad", base=tiny)
    assert not (tmp_path / "ad").exists()
