import pytest

from memft import api
from memft.prompts.encoding import Encoded, encode
from memft.errors import RecordsError
from memft.prompts.parity import check_parity, stop_ids
from memft.prompts.records import Record


def test_a_value_holding_the_stop_token_is_refused_before_training(tmp_path, tiny):
    # "<|im_end|>" is the tiny tokenizer's eos: recall would stop in the middle of this value.
    with pytest.raises(RecordsError, match=r"record 'k:': train/recall parity fails: its value contains a stop token at position 2"):
        api.write([Record("k:", "ab<|im_end|>cd")], tmp_path / "ad", base=tiny)
    assert not (tmp_path / "ad").exists()


def test_a_training_prefix_recall_would_not_feed_is_named(tiny):
    tok = tiny.tokenizer
    good = encode(Record("Alice:", "555"), tok)
    check_parity([good], tok, "raw")
    with_bos = Encoded(good.key, (tok.bos_token_id,) + good.prompt, good.targets)  # e.g. a pipeline that adds BOS
    with pytest.raises(RecordsError, match=r"record 'Alice:'.*recall feeds 6 prompt tokens but training used 7, first difference at token 0"):
        check_parity([with_bos], tok, "raw")
    chat = encode(Record("Alice:", "555"), tok, "chat")
    with pytest.raises(RecordsError, match="check BOS, chat template"):
        check_parity([chat], tok, "raw")  # trained with the chat template, recalled raw
    check_parity([chat], tok, "chat")
    no_eos = Encoded(good.key, good.prompt, good.targets[:-1])
    with pytest.raises(RecordsError, match="does not end with a token recall stops at"):
        check_parity([no_eos], tok, "raw")


def test_stop_ids_include_the_generation_config_and_date_templates_are_refused(tiny):
    tok = tiny.tokenizer
    tiny.model.generation_config.eos_token_id = [tok.eos_token_id, 100]
    assert stop_ids(tok, tiny.model) == {tok.eos_token_id, 100}
    item = encode(Record("k:", value_ids=(5, 100, 6)), tok)
    with pytest.raises(RecordsError, match="a stop token at position 1"):
        check_parity([item], tok, "raw", tiny.model)
    tok.chat_template = "{{ strftime_now('%d %b %Y') }}" + tok.chat_template
    with pytest.raises(RecordsError, match="inserts the current date"):
        check_parity([encode(Record("k:", "v"), tok)], tok, "chat")
