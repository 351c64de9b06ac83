"""Recall odds under sampling: the warpers match Hugging Face's, and the odds match real sampled generations."""

import math

import pytest
import torch
from transformers import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from memft.model import peft_lora
from memft.config import LoraSettings, TrainConfig
from memft.prompts.encoding import encode_all
from memft.errors import ConfigError
from memft.certify.evaluate import teacher_forced
from memft.model.forward import Runner
from memft.research.bench.phonebook import phonebook
from memft.checks.sampling import (
    check_sampling,
    generation_knobs,
    odds_of,
    recall_odds,
    sample_recall,
    sampling_probs,
    target_sampling_prob,
    warp_scores,
)
from memft.training.loop import train

E = math.e


def test_hand_computed_top_p():
    # softmax([2, 1, 0]) = (e^2, e, 1) / (e^2 + e + 1) = (0.6652, 0.2447, 0.0900).
    # top_p = 0.7: ascending cumulative mass 0.0900, 0.3348, 1.0; HF drops tokens whose cumulative mass is
    # <= 1 - 0.7 = 0.3, i.e. token 2 only. (Token 0 alone holds 0.665 < 0.7, so token 1 must stay.)
    # Renormalised over {0, 1}: e^2 / (e^2 + e) = e / (e + 1) = 0.73106, 1 / (e + 1) = 0.26894.
    p = sampling_probs(torch.tensor([[2.0, 1.0, 0.0]]), temperature=1.0, top_p=0.7)
    assert p.dtype == torch.float64
    assert torch.allclose(p[0], torch.tensor([E / (E + 1), 1 / (E + 1), 0.0], dtype=torch.float64), atol=1e-7)
    # top_p = 0.6: token 0 alone (0.665) is enough -> one-hot.
    assert sampling_probs(torch.tensor([[2.0, 1.0, 0.0]]), 1.0, top_p=0.6)[0].tolist() == [1.0, 0.0, 0.0]


def test_hand_computed_temperature_and_top_k_ties():
    # T = 2: scores [1, 0.5, 0] -> (e, e^0.5, 1) / (e + e^0.5 + 1).
    z = E + math.sqrt(E) + 1
    p = sampling_probs(torch.tensor([[2.0, 1.0, 0.0]]), temperature=2.0)
    assert torch.allclose(p[0], torch.tensor([E / z, math.sqrt(E) / z, 1 / z], dtype=torch.float64), atol=1e-7)
    # top_k = 2 on [3, 2, 2, 1]: the 2nd largest score is 2, and HF removes only scores strictly below it,
    # so both tied 2s stay: (e^3, e^2, e^2, 0) / (e^3 + 2 e^2) = (e, 1, 1, 0) / (e + 2).
    p = sampling_probs(torch.tensor([[3.0, 2.0, 2.0, 1.0]]), temperature=1.0, top_k=2)
    assert torch.allclose(p[0], torch.tensor([E / (E + 2), 1 / (E + 2), 1 / (E + 2), 0.0], dtype=torch.float64))
    # top_k = 1 keeps the argmax only; top_k larger than the vocabulary keeps everything.
    assert sampling_probs(torch.tensor([[3.0, 2.0, 1.0]]), 1.0, top_k=1)[0].tolist() == [1.0, 0.0, 0.0]
    x = torch.tensor([[3.0, 2.0, 1.0]])
    assert torch.allclose(sampling_probs(x, 1.0, top_k=99), x.double().softmax(-1))


def hf_probs(logits: torch.Tensor, T: float, P: float, K: int) -> torch.Tensor:
    """The reference: HF's own warpers, added under the conditions and in the order of `_get_logits_processor`."""
    procs = LogitsProcessorList()
    if T != 1.0:
        procs.append(TemperatureLogitsWarper(T))
    if K != 0:
        procs.append(TopKLogitsWarper(top_k=K, min_tokens_to_keep=1))
    if P < 1.0:
        procs.append(TopPLogitsWarper(top_p=P, min_tokens_to_keep=1))
    return procs(torch.zeros((logits.shape[0], 1), dtype=torch.long), logits.clone())


def spec_scores(logits: torch.Tensor, T: float, P: float, K: int) -> torch.Tensor:
    """The rule memft.checks.sampling's docstring states, written out here independently of transformers: scores / T;
    top-k removes every score below the K-th largest (ties with it kept); top-p removes, in ascending sorted order,
    the tokens whose cumulative softmax mass is <= 1 - P, never the largest."""
    s = logits.float()
    if T != 1.0:
        s = s / T
    if K != 0:
        kth = torch.topk(s, min(max(K, 1), s.shape[-1]), dim=-1).values[:, -1:]
        s = s.masked_fill(s < kth, -math.inf)
    if P < 1.0:
        asc, order = torch.sort(s, descending=False)
        drop = asc.softmax(dim=-1).cumsum(dim=-1) <= (1 - P)
        drop[:, -1] = False
        s = s.masked_fill(drop.scatter(1, order, drop), -math.inf)
    return s


def awkward_logits(V: int = 40) -> torch.Tensor:
    """Random rows [N, V] plus ties (quantised scores, a flat row) and extreme values (±1e4, -inf, one huge spike)."""
    g = torch.Generator().manual_seed(1)
    rand = torch.randn(32, V, generator=g) * 3
    ties = (torch.randn(16, V, generator=g) * 2).round()  # integer scores: many ties, some at the cut
    flat = torch.zeros(2, V)
    extreme = torch.randn(6, V, generator=g)
    extreme[0, 3] = 1e4
    extreme[1, :5] = -1e4
    extreme[2, 10:] = -math.inf
    extreme[3, ::2] = 30.0
    extreme[4, 0] = 80.0
    extreme[5] = torch.linspace(-50, 50, V)
    return torch.cat([rand, ties, flat, extreme]).float()


SETTINGS = [
    (1.0, 1.0, 0), (0.7, 1.0, 0), (1.0, 0.9, 0), (1.0, 1.0, 5), (0.5, 0.95, 10),
    (1.5, 0.5, 3), (2.0, 0.3, 0), (0.8, 0.99, 1), (1.3, 0.7, 40), (1.0, 0.25, 7),
]  # fmt: skip  (temperature, top_p, top_k): each warper alone, together, and cuts down to one token


@pytest.mark.parametrize("T,P,K", SETTINGS)
def test_equals_hf_warpers(T, P, K):
    logits = awkward_logits()
    ref = hf_probs(logits, T, P, K)  # float32 scores with -inf where HF filters
    ours = warp_scores(logits, T, P, K)
    assert torch.equal(ours == -math.inf, ref == -math.inf), "kept sets must be identical"
    assert torch.equal(ours == -math.inf, spec_scores(logits, T, P, K) == -math.inf), "and the ones the docstring states"
    assert torch.allclose(sampling_probs(logits, T, P, K), ref.double().softmax(-1), atol=1e-6, rtol=0)
    targets = torch.randint(0, logits.shape[1], (logits.shape[0],))
    want = ref.softmax(-1).gather(1, targets[:, None]).squeeze(1).double()
    assert torch.allclose(target_sampling_prob(logits, targets, T, P, K), want, atol=1e-6, rtol=0)


def test_hf_builds_exactly_these_warpers_even_over_a_hostile_generation_config(tiny):
    model = tiny.model
    g = model.generation_config
    g.top_k, g.top_p, g.temperature, g.min_p, g.typical_p, g.repetition_penalty = 1, 0.1, 0.01, 0.9, 0.2, 3.0
    g.no_repeat_ngram_size, g.min_new_tokens, g.suppress_tokens = 1, 20, [48, 49]
    gc, _ = model._prepare_generation_config(None, **generation_knobs(0.7, 0.9, 0))
    procs = model._get_logits_processor(gc, input_ids_seq_length=4, device="cpu")
    assert [type(p) for p in procs] == [TemperatureLogitsWarper, TopPLogitsWarper]  # top_k = 0: off, not 50
    gc, _ = model._prepare_generation_config(None, **generation_knobs(1.0, 1.0, 7))
    procs = model._get_logits_processor(gc, input_ids_seq_length=4, device="cpu")
    assert [type(p) for p in procs] == [TopKLogitsWarper] and procs[0].top_k == 7


def test_plain_sampling_is_softmax_and_product_is_exp_of_log_sum():
    logits = awkward_logits()[:40]
    assert torch.allclose(sampling_probs(logits, 1.0, 1.0, 0), logits.double().softmax(-1), atol=1e-12)
    o = odds_of(torch.tensor([0.5, 0.25, 0.8], dtype=torch.float64))
    assert o.prob == pytest.approx(0.1) and o.log_prob == pytest.approx(math.log(0.1)) and o.weakest == 1
    assert o.per_position == [0.5, 0.25, 0.8]
    z = odds_of(torch.tensor([0.5, 0.0, 0.8], dtype=torch.float64))  # a filtered-out target: impossible
    assert z.prob == 0.0 and z.log_prob == -math.inf and z.weakest == 1


def test_bad_options_are_all_reported():
    with pytest.raises(ConfigError) as e:
        check_sampling(0.0, 1.5, -1)
    msg = str(e.value)
    assert "--temperature" in msg and "--top-p" in msg and "--top-k" in msg and "\n" not in msg
    for bad in [(math.nan, 1.0, 0), (math.inf, 1.0, 0), (-1.0, 1.0, 0)]:
        with pytest.raises(ConfigError, match="--temperature"):
            check_sampling(*bad)
    for bad in [(1.0, 0.0, 0), (1.0, math.nan, 0), (1.0, 1.0001, 0)]:
        with pytest.raises(ConfigError, match="--top-p"):
            check_sampling(*bad)
    for bad in [(1.0, 1.0, 2.5), (1.0, 1.0, True), (1.0, 1.0, "5")]:
        with pytest.raises(ConfigError, match="--top-k"):
            check_sampling(*bad)
    check_sampling(0.01, 1.0, 0)
    check_sampling(3, 0.001, 100000)


@pytest.fixture
def trained(tiny):
    """Five phonebook records written into a rank-4 adapter, stopped right at certification (margin 0), so the
    target tokens are the argmax but far from certain: sampling odds land between 0 and 1."""
    items = encode_all(phonebook(5, seed=5), tiny.tokenizer)
    model, _ = peft_lora.attach(tiny.model, LoraSettings(rank=4, preset="all"), seed=0)
    res = train(model, items, tiny.tokenizer.pad_token_id, TrainConfig(lr=2e-2, max_steps=200, margin=0.0), 0)
    assert res.certified_at is not None
    model.eval()
    return model, items, tiny.tokenizer


def test_plain_odds_are_the_teacher_forced_probabilities(trained):
    model, items, tok = trained
    runner = Runner(model, items, tok.pad_token_id)
    tf = teacher_forced(runner, batch_size=2)
    odds = recall_odds(runner, 1.0, batch_size=2)
    for i in range(len(items)):
        assert odds[i].per_position == pytest.approx(tf[i].prob, rel=1e-5)
        assert odds[i].prob == pytest.approx(math.prod(tf[i].prob), rel=1e-5)
        assert odds[i].weakest == min(range(len(tf[i].prob)), key=tf[i].prob.__getitem__)
        assert odds[i].prob == pytest.approx(math.exp(odds[i].log_prob), rel=1e-12)
    assert recall_odds(runner, 1.0, indices=[3]).keys() == {3}


def agrees(p: float, hits: int, n: int) -> bool:
    """Is `hits` out of n draws consistent with success probability p? (4 standard errors + 1% slack)"""
    return abs(hits / n - p) <= 4 * math.sqrt(p * (1 - p) / n) + 0.01


@pytest.mark.slow  # 400 generations per record; the odds' filters are checked fast against hand computation and HF's warpers
def test_odds_match_real_sampling(trained):
    model, items, tok = trained
    T, P, K, n = 1.2, 0.7, 10, 400
    runner = Runner(model, items, tok.pad_token_id)
    odds = [recall_odds(runner, T, P, K)[i].prob for i in range(len(items))]
    assert sum(0.1 <= p <= 0.9 for p in odds) >= 3, f"fixture should give odds between 0 and 1, got {odds}"
    hits = sample_recall(model, items, tok, n, T, P, K, seed=0, batch_size=500)
    for p, h, e in zip(odds, hits, items):
        assert agrees(p, h, n), f"{e.key}: computed {p:.3f}, sampled {h}/{n}"
    # The same check rejects computations that forget one knob: it has the power to catch a wrong formula.
    for wrong in [(T, 1.0, K), (1.0, P, K), (T, P, 0)]:
        bad = recall_odds(runner, *wrong)
        assert not all(agrees(bad[i].prob, hits[i], n) for i in range(len(items))), f"{wrong} was not rejected"


def test_sampling_is_seeded_and_ignores_the_models_generation_config(trained):
    model, items, tok = trained
    clean = sample_recall(model, items, tok, 40, 1.2, 0.7, 10, seed=3, batch_size=64)
    assert sample_recall(model, items, tok, 40, 1.2, 0.7, 10, seed=3, batch_size=64) == clean
    g = model.generation_config  # defaults that would change the distribution if they leaked into generate()
    g.top_k, g.top_p, g.temperature, g.repetition_penalty, g.min_p, g.no_repeat_ngram_size = 1, 0.1, 0.01, 3.0, 0.9, 1
    assert sample_recall(model, items, tok, 40, 1.2, 0.7, 10, seed=3, batch_size=64) == clean
    with pytest.raises(ConfigError, match="--samples"):
        sample_recall(model, items, tok, 0, 1.0)
