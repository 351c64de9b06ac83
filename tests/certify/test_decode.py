"""greedy_recall must give evaluate.greedy's ids, the Runner's cached prefixes and teacher_forced's statistics
for the generated sequences: a rewrite trains from what it returns instead of computing them again."""

import pytest
import torch

from memft.model import peft_lora
from memft.config import LoraSettings
from memft.certify.decode import greedy_recall
from memft.prompts.encoding import Encoded, encode_all
from memft.certify.evaluate import greedy, teacher_forced
from memft.model.forward import Runner
from memft.prompts.records import Record

KEYS = ["a:", "a much longer key here:", "k", "phone of Ada Lovelace:", "x y z:"]


def _model(tiny, layers=(2, 3)):
    model, place = peft_lora.attach(tiny.model, LoraSettings(rank=4, layers=layers), seed=1)
    for n, p in model.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.5)  # B starts at zero: make the adapter change the output
    return model, min(place["layers"])


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_recall_equals_generate_prefix_cache_and_teacher_forced(tiny, batch_size):
    tok = tiny.tokenizer
    model, start = _model(tiny)
    probes = [Encoded(k, e.prompt, (tok.eos_token_id,)) for k, e in zip(KEYS, encode_all([Record(k, "v") for k in KEYS], tok))]
    want = greedy(model, probes, tok, batch_size=3, max_new=6)
    got = greedy_recall(model, [e.prompt for e in probes], tok.eos_token_id, tok.pad_token_id, 6, start=start, batch_size=batch_size)
    assert [r.ids for r in got] == want
    # The generated sequences, teacher-forced: same statistics, same hidden states entering layer `start`.
    items = [Encoded(e.key, e.prompt, tuple(r.ids)) for e, r in zip(probes, got)]
    runner = Runner(model, items, tok.pad_token_id, start=start, cache=True)
    ref = teacher_forced(runner, batch_size=4)
    for i, r in enumerate(got):
        assert r.stats.targets == list(items[i].targets)
        assert all(ref[i].correct) and r.stats.correct == [True] * len(r.ids)
        for k in ("prob", "loss", "gap"):
            assert getattr(r.stats, k) == pytest.approx(getattr(ref[i], k), abs=1e-4)
        assert r.prefix.shape == (len(items[i].ids) - 1, runner._prefix[i].shape[1])
        assert torch.allclose(r.prefix, runner._prefix[i][:-1], rtol=1e-4, atol=1e-4)  # the last position is never fed
        assert all(0 <= t < tiny.model.config.vocab_size for t in r.competitors) and r.ids[0] in r.competitors


def test_recall_without_split_point_has_no_prefix(tiny):
    tok = tiny.tokenizer
    model, _ = _model(tiny)
    got = greedy_recall(model, [(5, 6, 7)], tok.eos_token_id, tok.pad_token_id, 3, start=0)
    assert got[0].prefix is None and len(got[0].ids) <= 3
