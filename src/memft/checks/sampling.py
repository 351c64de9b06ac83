"""Recall odds under sampling: the exact probability that temperature / top-k / top-p sampling gives a value back.

Certification covers greedy decoding. Under sampling, the chance that one draw reproduces the whole value (and then
stops) is the product over target positions (value tokens + eos) of the sampling probability of the target token,
given the correct prefix — all factors come from one teacher-forced pass.

The sampling distribution is the one `model.generate(do_sample=True, temperature=T, top_k=K, top_p=P)` draws from
(transformers 5.x, `GenerationMixin._get_logits_processor` and `generation/logits_process.py`):
  1. temperature: scores / T (skipped at T == 1);
  2. top-k (skipped at K == 0): every token whose score is below the K-th largest score is removed, so ties with
     the K-th are all kept; K is raised to min_tokens_to_keep (1) and capped at the vocabulary size;
  3. top-p (skipped at P == 1): sort the scores ascending, remove the tokens whose cumulative softmax mass is
     <= 1 - P, never the last (largest) one; ties straddling the cut are broken by `torch.sort`, as in HF;
  4. removed tokens get -inf, and the next token is drawn from the softmax of what is left.
The filters are transformers' own warpers (warp_scores), so the kept sets are those of `generate` bit for bit;
scores stay float32 through them, as in `generate`; the final softmax and the products are float64.

Checks layer: may import the core, the memory store and the other checks.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from memft.model.batching import chunks
from memft.prompts.encoding import Encoded
from memft.errors import ConfigError
from memft.certify.evaluate import generate
from memft.model.forward import Runner

_ROWS = 256  # rows filtered at a time: the sort and its indices cost ~12 bytes x V per row


def check_sampling(temperature: float, top_p: float = 1.0, top_k: int = 0) -> None:
    """Raise ConfigError naming every impossible sampling option at once."""
    problems = []
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, numbers.Real)
        or not (math.isfinite(temperature) and temperature > 0)
    ):
        problems.append(
            f"--temperature must be a finite number > 0, got {temperature!r} "
            "(temperature 0 is greedy decoding, which certification already covers; use e.g. 0.7)"
        )
    if isinstance(top_p, bool) or not isinstance(top_p, numbers.Real) or not (0 < top_p <= 1):
        problems.append(f"--top-p must be in (0, 1], got {top_p!r} (1 turns top-p off; use e.g. 0.9)")
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 0:
        problems.append(f"--top-k must be an integer >= 0, got {top_k!r} (0 turns top-k off; use e.g. 50)")
    if problems:
        raise ConfigError("; ".join(problems))


def warp_scores(logits: torch.Tensor, temperature: float, top_p: float = 1.0, top_k: int = 0) -> torch.Tensor:
    """Logits [N, V] -> float32 scores [N, V] after transformers' own temperature, top-k and top-p warpers, in the
    order and with the skips of `generate` (-inf = removed)."""
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    s = logits.float()
    if temperature != 1.0:
        s = TemperatureLogitsWarper(float(temperature))(None, s)
    if top_k != 0:
        s = TopKLogitsWarper(top_k=int(top_k), min_tokens_to_keep=1)(None, s)
    if top_p < 1.0:
        s = TopPLogitsWarper(top_p=float(top_p), min_tokens_to_keep=1)(None, s)
    return s


def sampling_probs(logits: torch.Tensor, temperature: float, top_p: float = 1.0, top_k: int = 0) -> torch.Tensor:
    """Logits [N, V] -> the distribution [N, V] (float64) that HF sampling draws each next token from.

    >>> p = sampling_probs(torch.tensor([[2.0, 1.0, 0.0]]), temperature=1.0, top_p=0.7)
    >>> [round(x, 4) for x in p[0].tolist()]  # token 2 (mass 0.09) is cut; e/(e+1), 1/(e+1) remain
    [0.7311, 0.2689, 0.0]
    """
    return warp_scores(logits, temperature, top_p, top_k).double().softmax(dim=-1)


def target_sampling_prob(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float, top_p: float = 1.0, top_k: int = 0
) -> torch.Tensor:
    """Logits [N, V], target ids [N] -> the sampling probability [N] (float64) of each target token."""
    out = [
        sampling_probs(rows, temperature, top_p, top_k).gather(1, t[:, None]).squeeze(1)
        for rows, t in zip(logits.split(_ROWS), targets.split(_ROWS))
    ]
    return torch.cat(out) if out else logits.new_zeros(0, dtype=torch.float64)


@dataclass
class Odds:
    """One record's chance that a single sampled generation is exactly its value followed by eos."""

    prob: float  # product of the per-position factors
    log_prob: float  # sum of their logs (-inf when a target token is filtered out)
    per_position: list[float]  # sampling probability of each target token (value tokens, then eos)
    weakest: int  # position of the smallest factor (0 = first value token)


def odds_of(factors: torch.Tensor) -> Odds:
    """Per-position sampling probabilities [n] of one record -> its Odds."""
    f = factors.double()
    return Odds(
        prob=float(f.prod()),
        log_prob=float(f.log().sum()),
        per_position=f.tolist(),
        weakest=int(f.argmin()),
    )


@torch.no_grad()
def recall_odds(
    runner: Runner,
    temperature: float,
    top_p: float = 1.0,
    top_k: int = 0,
    batch_size: int = 64,
    indices: Sequence[int] | None = None,
) -> dict[int, Odds]:
    """One teacher-forced pass over the records -> {record index: Odds} under the given sampling settings."""
    check_sampling(temperature, top_p, top_k)
    indices = range(len(runner.items)) if indices is None else indices
    out: dict[int, Odds] = {}
    for idx in chunks(list(indices), runner.items, batch_size):
        logits, batch = runner.logits(idx)  # [N, V]
        p = target_sampling_prob(logits, batch.targets, temperature, top_p, top_k).cpu()  # [N]
        for i, f in zip(idx, p.split(batch.lengths.tolist())):
            out[i] = odds_of(f)
    return out


def generation_knobs(temperature: float, top_p: float = 1.0, top_k: int = 0) -> dict[str, Any]:
    """Keyword arguments for `generate` that make it sample from exactly `sampling_probs(..., T, P, K)`.

    Every knob is explicit: whatever is left unset comes from the model's generation_config (top_k=50 in many),
    and every other logits processor (penalties, min-p, typical-p, banned tokens ...) is turned off.
    """
    off = (
        "min_p", "top_h", "typical_p", "epsilon_cutoff", "eta_cutoff", "repetition_penalty",
        "encoder_repetition_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids",
        "sequence_bias", "min_length", "min_new_tokens", "forced_bos_token_id", "forced_eos_token_id",
        "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens", "guidance_scale",
        "watermarking_config", "stop_strings", "prompt_lookup_num_tokens", "dola_layers", "penalty_alpha",
    )  # fmt: skip
    from transformers import GenerationConfig

    known = GenerationConfig()
    # None turns a knob off; a key this transformers version lacks would be passed on to forward(), so skip it.
    knobs: dict[str, Any] = {k: None for k in off if hasattr(known, k)}
    knobs.update(do_sample=True, num_beams=1, temperature=float(temperature), top_p=float(top_p), top_k=int(top_k))
    return knobs


@torch.no_grad()
def sample_recall(
    model: Any,
    items: Sequence[Encoded],
    tokenizer: Any,
    n: int,
    temperature: float,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
    batch_size: int = 64,
) -> list[int]:
    """Draw n sampled generations per record with `model.generate` -> how many reproduce its targets exactly.

    A draw counts when its ids up to the first eos equal the targets (value ids + eos). Each record's prompt is
    repeated n times across batches of `batch_size` rows; draws are seeded (the caller's RNG state is restored),
    so counts are reproducible for one seed and batch size.
    """
    check_sampling(temperature, top_p, top_k)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ConfigError(f"--samples must be a positive integer, got {n!r}")
    device = next(model.parameters()).device
    rows = [i for i in range(len(items)) for _ in range(n)]  # one row per draw; `generate` groups them by prompt length
    hits = [0] * len(items)
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else None):
        torch.manual_seed(seed)
        gens = generate(model, [items[i].prompt for i in rows], tokenizer, [len(items[i].targets) for i in rows], batch_size,
                        **generation_knobs(temperature, top_p, top_k))
    for i, g in zip(rows, gens):
        hits[i] += g == list(items[i].targets)
    return hits
