"""memft with TRL's SFTTrainer (memft.integrations.trl), on the tiny model (CPU)."""

import pytest

from memft.config import TrainConfig
from memft.prompts.encoding import encode_all
from memft.errors import RecordsError
from memft.integrations import CertificationStop, check_trl_parity, features, sft_dataset, trl_prepare
from memft.prompts.records import Record
from memft.training.loop import train
from tests.integrations.test_trainer import RECORDS, certified_and_exact, lora_on, trainer_args


@pytest.mark.slow  # a full TRL SFTTrainer run
def test_trl_sft_trainer_with_accumulation_certifies(tiny, tmp_path):
    from trl import SFTConfig, SFTTrainer

    from memft.model.base import load_base

    # reference: memft's own full-batch sft loop; TRL's token-sum / num_items_in_batch loss over 2 micro-batches of 2
    # records has the same gradient, so (without gradient clipping) it certifies at the same step
    ref_model = lora_on(load_base("tiny-random", device="cpu", dtype="fp32"))
    items = encode_all(RECORDS, tiny.tokenizer)
    ref = train(ref_model, items, tiny.tokenizer.pad_token_id, TrainConfig(method="sft", lr=1e-2, max_steps=200, margin=0.5, active_set=False), 2)

    model = lora_on(tiny)
    ds = sft_dataset(RECORDS, tiny.tokenizer)
    stop = CertificationStop(ds, tiny.tokenizer)
    args = trainer_args(
        tmp_path, SFTConfig, per_device_train_batch_size=2, gradient_accumulation_steps=2, max_grad_norm=0.0, bf16=False,
        activation_checkpointing=False, max_length=None,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tiny.tokenizer, callbacks=[stop])
    rows = features(RECORDS, tiny.tokenizer)
    assert sorted(trainer.train_dataset["labels"]) == sorted(r["labels"] for r in rows)  # TRL kept memft's labels
    assert sorted(trainer.train_dataset["input_ids"]) == sorted(r["input_ids"] for r in rows)  # and added no eos
    trainer.train()
    assert stop.certified_at == ref.certified_at == trainer.state.global_step < 200
    assert stop.min_prob == pytest.approx(ref.history[-1]["min_prob"], abs=1e-4) and stop.min_prob > 0.5
    assert certified_and_exact(model, tiny.tokenizer, RECORDS) == [(True, True)] * len(RECORDS)


def test_trl_builds_the_same_labels_from_completion_mask(tiny):
    ds = sft_dataset(RECORDS, tiny.tokenizer).remove_columns("labels")
    want = [r["labels"] for r in features(RECORDS, tiny.tokenizer)]
    assert trl_prepare(ds, tiny.tokenizer, completion_only_loss=True)["labels"] == want
    # without completion_only_loss TRL trains the prompt too: why sft_dataset ships the labels
    assert trl_prepare(ds, tiny.tokenizer, completion_only_loss=False)["labels"] == ds["input_ids"]


def _merging_tokenizer():
    """Byte-level like the tiny one, plus one merge a + b -> ab, so tokens can merge across a key/value boundary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["ab"] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[("a", "b")]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk)
    tok.add_special_tokens({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"})
    return tok


def test_trl_parity_holds_for_byte_level_raw_prompts(tiny):
    assert check_trl_parity(RECORDS, tiny.tokenizer) is None


def test_trl_parity_reports_tokens_merged_across_the_boundary():
    tok = _merging_tokenizer()
    recs = [Record("xa", "b"), Record("k:", "v")]
    with pytest.raises(RecordsError) as err:
        check_trl_parity(recs, tok)
    msg = str(err.value)
    assert msg.startswith("1 record(s)") and "'xa'" in msg and "'k:'" not in msg
    assert "TRL trains ['ab', '<|im_end|>'] after 1 prompt tokens, memft trains ['b', '<|im_end|>'] after 2" in msg
    assert "sft_dataset" in msg


def test_trl_parity_reports_chat_end_of_turn_and_token_id_values(tiny):
    recs = [Record("Ann:", "12"), Record("ids:", value_ids=(5, 6))]
    with pytest.raises(RecordsError) as err:
        check_trl_parity(recs, tiny.tokenizer, template="chat")
    msg = str(err.value)
    assert msg.startswith("2 record(s)")
    assert "record 'Ann:': TRL trains ['1', '2', '<|im_end|>', '\\n']" in msg  # the template's newline after eos
    assert "record 'ids:': its value is token ids" in msg
