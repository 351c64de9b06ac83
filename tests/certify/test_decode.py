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


def test_step_stats_equal_token_table_with_the_next_token_as_target():
    """The reduced statistics of a greedy step are evaluate.token_table's (log-softmax, scatter, max) for the argmax target,
    ties included: exact ties give gap 0 and the lowest tied id, as argmax and generate take it."""
    from memft.certify.decode import step_stats

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 50, generator=g) * 3
    logits[1, [4, 9]] = logits[1].max() + 1.0  # a tie for the top
    logits[2] = 0.0  # all tied
    logits = torch.cat([logits, logits.to(torch.bfloat16).float()])  # bf16-rounded rows tie more often
    nxt, st = step_stats(logits, k=8)
    assert nxt.tolist() == logits.argmax(-1).tolist() and nxt[1] == 4 and nxt[2] == 0
    lp = torch.log_softmax(logits, -1)  # what token_table computes
    want_lp = lp.gather(1, nxt[:, None]).squeeze(1)
    other = lp.scatter(1, nxt[:, None], float("-inf")).max(-1).values
    assert torch.allclose(st["loss"], -want_lp, atol=1e-6)
    assert torch.allclose(st["prob"], want_lp.exp(), atol=1e-6)
    assert torch.allclose(st["gap"], want_lp.exp() - other.exp(), atol=1e-6)
    assert st["gap"][1] == 0 and st["gap"][2] == 0
    assert [set(r) for r in st["top"].tolist()][0] == set(logits[0].topk(8).indices.tolist())


@pytest.mark.parametrize("batch_size", [2, 3])
def test_batched_recall_equals_one_by_one(tiny, batch_size):
    """Decoding prompts of different lengths together (left-padded, KV cache) gives each the ids, statistics and
    prefixes it gets decoded alone."""
    tok = tiny.tokenizer
    model, start = _model(tiny)
    prompts = [e.prompt for e in encode_all([Record(k, "v") for k in KEYS], tok)]
    alone = [greedy_recall(model, [p], tok.eos_token_id, tok.pad_token_id, 6, start=start, batch_size=1)[0] for p in prompts]
    together = greedy_recall(model, prompts, tok.eos_token_id, tok.pad_token_id, 6, start=start, batch_size=batch_size)
    for a, b in zip(alone, together):
        assert a.ids == b.ids and a.stats.targets == b.stats.targets
        for k in ("prob", "loss", "gap"):
            assert getattr(b.stats, k) == pytest.approx(getattr(a.stats, k), abs=1e-5)
        assert torch.allclose(a.prefix, b.prefix, rtol=1e-4, atol=1e-4)  # padding changes the summation order only


def test_step_stats_picks_the_lowest_tied_id_beyond_k():
    from memft.certify.decode import step_stats

    logits = torch.zeros(2, 20)
    logits[0, [3, 7, 11, 15]] = 1.0  # four tied at the top, k = 2: the lowest is not necessarily in topk's two
    logits[1, 19] = 1.0
    nxt, st = step_stats(logits, k=2)
    assert nxt.tolist() == [3, 19] and st["gap"][0] == 0 and st["gap"][1] > 0


def test_forced_greedy_corrects_any_guess_to_greedy(tiny):
    """From the right guess, a wrong token, a guess cut short, one too long or none at all, decoding with
    teacher-forced logits ends at what greedy generation gives (fp32: the KV cache agrees with teacher forcing)."""
    from memft.certify.decode import forced_greedy

    tok = tiny.tokenizer
    model, _ = _model(tiny)
    probes = [Encoded(k, e.prompt, (tok.eos_token_id,)) for k, e in zip(KEYS, encode_all([Record(k, "v") for k in KEYS], tok))]
    want = greedy(model, probes, tok, batch_size=5, max_new=6)
    guesses = [list(want[0]), [(t + 1) % 200 for t in want[1]], want[2][:1], list(want[3]) + [7, 7, 7], []]
    got = forced_greedy(model, [e.prompt for e in probes], guesses, tok.eos_token_id, tok.pad_token_id, 6, batch_size=2)
    assert got == want


def test_recovery_decodes_again_what_the_kv_cache_gave_otherwise(tmp_path, monkeypatch):
    """A held record whose KV-cached recall comes back with a wrong token (as a bf16 rounding near a tie can) is
    recovered by decoding it again with teacher-forced logits."""
    from memft import api
    from memft.certify import decode
    from memft.config import RuntimeConfig, TrainConfig
    from memft.store import ledger
    from memft.research.bench.phonebook import phonebook

    recs = phonebook(3, seed=6)
    ad = tmp_path / "ad"
    assert api.write(recs, ad, model="tiny-random", lora=LoraSettings(rank=8, preset="all"), train=TrainConfig(lr=2e-2, max_steps=300),
                     runtime=RuntimeConfig(device="cpu", dtype="fp32")).all_certified
    real = decode.greedy_recall

    def off_by_one(*a, **kw):
        out = real(*a, **kw)
        out[1].ids[2] = (out[1].ids[2] + 1) % 200  # the second record's third token comes back wrong
        return out

    monkeypatch.setattr(decode, "greedy_recall", off_by_one)
    got, lost, seen = ledger.recover_recalls(api.load_adapter(ad, "cpu"))
    assert got == recs and lost == [] and set(seen) == {recs[0].key, recs[2].key}  # the fixed one: stats computed afresh
