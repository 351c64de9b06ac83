"""Greedy decoding that keeps what it computed, so a rewrite can start training from it.

Recovering the records an adapter holds (memft.store.ledger.recover) is a greedy recall of every key. Training
on them afterwards (memft.memory.rewrite) then needs, for the same token sequences, the hidden states entering the
lowest adapted layer (memft.model.forward.Runner's frozen-prefix cache) and one full-vocabulary check of every record.
Both are already in the decoding: the lower layers are frozen, so the states entering layer `start` while decoding
prompt + generated[:-1] are the ones a teacher-forced pass over prompt + generated would compute; and the logits at
each decoding step are the teacher-forced logits at that target, with the generated token as the target (the
argmax, by construction of greedy). On 1,000 PhoneBook records the lower 26 layers were most of both costs, so
computing them once halves that part of an append.

`greedy_recall` is a plain greedy loop over the causal LM with a KV cache (left-padded batches, positions counted
from each row's first real token, as `generate` does); tests check it gives `evaluate.greedy`'s ids, the Runner's
prefixes and `teacher_forced`'s statistics. It is not `generate(output_logits=True)` because that keeps every
step's [B, V] logits until the batch ends (about 600 MB for 256 prompts of 12 steps at a 49k vocabulary); this loop
reduces each step to its statistics at once.

Core layer. May import: batching, forward, metrics, evaluate; torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from memft.model.batching import pad
from memft.prompts.encoding import Encoded
from memft.model.forward import Runner, causal_lm, decoder_of
from memft.prompts.keyed import activated
from memft.certify.metrics import TokenStats
from memft.model.vocab import COMPETITORS


@dataclass
class Recall:
    """What greedy decoding of one prompt saw."""

    ids: list[int]  # generated ids, up to and including the first eos (all of them when it never came)
    stats: TokenStats  # per generated token, as a teacher-forced pass with `ids` as the targets would give it
    # Hidden states [len(prompt) + len(ids) - 1, H] entering layer `start` (the positions that were fed: the prompt
    # and every generated token but the last); None when decoding ran without a split point.
    prefix: torch.Tensor | None = None
    competitors: list[int] = field(default_factory=list)  # top-COMPETITORS ids of every step (memft.model.vocab)


@torch.no_grad()
def greedy_recall(model: Any, prompts: Sequence[Sequence[int]], eos: int, pad_id: int, max_new: int, start: int = 0,
                  batch_size: int = 256) -> list[Recall]:
    """Greedy decoding of every prompt for at most `max_new` tokens (stopping at `eos`) -> one Recall per prompt.

    start > 0 on a decoder memft.model.forward can split: each Recall also holds the hidden states entering layer
    `start` (what the Runner caches). Prompts are decoded in batches of `batch_size`, sorted by length; a row
    that reaches eos goes on decoding until every row of its batch has, and its extra steps are dropped.
    """
    lm = causal_lm(model)
    dec = decoder_of(lm)
    split = dec is not None and 0 < start < len(dec.layers)
    device = next(lm.parameters()).device
    seen: list[torch.Tensor] = []
    hook = None
    if split:
        def grab(_mod: Any, args: tuple, kwargs: dict) -> None:
            seen.append((args[0] if args else kwargs["hidden_states"]).detach())
        hook = dec.layers[start].register_forward_pre_hook(grab, with_kwargs=True)
    out: list[Recall | None] = [None] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    try:
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            seen.clear()
            for i, rec in zip(idx, _decode_batch(lm, [prompts[i] for i in idx], eos, pad_id, max_new, device, seen if split else None)):
                out[i] = rec
    finally:
        if hook is not None:
            hook.remove()
    return out  # type: ignore[return-value]


def step_stats(logits: torch.Tensor, k: int = COMPETITORS) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One greedy step's token and its statistics from logits [B, V] -> (next ids [B], {"prob", "loss", "gap": [B]
    float32, "top": [B, k] ids}), as `evaluate.token_table` gives them with the next id as the target.

    Reduced with one top-k and one logsumexp, without a [B, V] log-softmax, scatter or argmax pass (each such pass
    over a 49k vocabulary costs about as much as the top-k; see benchmarks/README.md, Scale II):
    log p(t) = logit_t - logsumexp(logits) in float32; the best other token's logit is the second top-k value
    (equal to the first on a tie, so the gap is then 0, as token_table's scatter-and-max gives); the id is the
    lowest of the ids tied at the top, which is `argmax`'s (and generate's) choice, whatever order top-k gives
    ties in (rows where all k are tied fall back to argmax).

    >>> nxt, st = step_stats(torch.tensor([[0.0, 2.0, 2.0, -1.0]]), k=2)
    >>> nxt.tolist(), round(float(st["gap"][0]), 6), st["top"].shape
    ([1], 0.0, torch.Size([1, 2]))
    """
    V = logits.shape[-1]
    vals, idx = logits.topk(min(max(k, 2), V), dim=-1)  # [B, K] descending, in the logits' dtype
    tied = vals == vals[:, :1]  # [B, K] ids tied with the best
    nxt = torch.where(tied, idx, V).min(-1).values  # [B] the lowest tied id
    if bool(tied[:, -1].any()):  # more ties than k: some lower id may lie outside the top-k
        nxt = torch.where(tied[:, -1], logits.argmax(-1), nxt)
    x = logits.float()  # [B, V]; bf16 -> fp32 is exact
    lse = torch.logsumexp(x, dim=-1)  # [B]
    lp = x.gather(1, nxt[:, None]).squeeze(1) - lse  # [B] log p(next)
    other = vals[:, 1].float() - lse if V > 1 else torch.full_like(lse, float("-inf"))  # [B] best other token
    p = lp.exp()
    return nxt, {"prob": p, "loss": -lp, "gap": p - other.exp(), "top": idx[:, :k]}


def _decode_batch(lm: Any, prompts: Sequence[Sequence[int]], eos: int, pad_id: int, max_new: int, device: Any,
                  seen: list[torch.Tensor] | None) -> list[Recall]:
    from transformers import DynamicCache

    B = len(prompts)
    ids, mask = pad(prompts, pad_id, left=True)  # [B, P]
    ids, mask = ids.to(device), mask.to(device)
    P = ids.shape[1]
    pos = (mask.cumsum(-1) - 1).clamp(min=0)  # [B, P]: each row counts from its first real token, as generate does
    cache = DynamicCache(config=lm.config)
    gen = torch.empty((B, 0), dtype=torch.long, device=device)
    cols: dict[str, list[torch.Tensor]] = {"prob": [], "loss": [], "gap": [], "top": []}
    done = torch.zeros(B, dtype=torch.bool, device=device)
    inp = ids
    with activated(lm, ids):  # a keyed adapter: the prompt's offsets, kept for every later step (memft.prompts.keyed)
        for _ in range(max_new):
            logits = lm(input_ids=inp, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]  # [B, V]
            nxt, st = step_stats(logits)
            for k, v in st.items():
                cols[k].append(v)
            gen = torch.cat([gen, nxt[:, None]], dim=1)
            done |= nxt == eos
            if bool(done.all()):
                break
            inp = nxt[:, None]
            mask = torch.cat([mask, mask.new_ones((B, 1))], dim=1)
            pos = pos[:, -1:] + 1
    prob, loss, gap = (torch.stack(cols[k], 1).cpu() for k in ("prob", "loss", "gap"))  # [B, S]
    top = torch.stack(cols["top"], 1).cpu()  # [B, S, K]
    states = torch.cat(seen, dim=1) if seen is not None else None  # [B, P + fed, H]: left-padded prompt, then the fed tokens
    recs = []
    for b, prompt in enumerate(prompts):
        g = gen[b].tolist()
        n = g.index(eos) + 1 if eos in g else len(g)
        g = g[:n]
        stats = TokenStats(targets=g, prob=prob[b, :n].tolist(), correct=[True] * n, loss=loss[b, :n].tolist(), gap=gap[b, :n].tolist())
        prefix = None
        if states is not None:
            # Real positions: the prompt's (the last len(prompt) columns of the prompt block), then n - 1 fed tokens.
            prefix = torch.cat([states[b, P - len(prompt):P], states[b, P:P + n - 1]], dim=0).clone()
        recs.append(Recall(ids=g, stats=stats, prefix=prefix, competitors=sorted(set(top[b, :n].flatten().tolist()))))
    return recs


@torch.no_grad()
def forced_greedy(model: Any, prompts: Sequence[Sequence[int]], guesses: Sequence[Sequence[int]], eos: int, pad_id: int,
                  max_new: int, batch_size: int = 64) -> list[list[int]]:
    """The sequence greedy decoding gives each prompt when every step's logits come from a teacher-forced pass
    (memft.model.forward.Runner, the computation that certifies) instead of the KV cache, starting from a guess (what
    KV-cached decoding gave) -> ids up to and including the first eos, or max_new ids.

    Why: in bf16 the KV-cached logits differ from the teacher-forced ones by rounding, and a record certified with
    a near tie between two tokens (p > 0.5 for one, the rest nearly all on the other) can come back otherwise from
    the KV cache. Each round runs one teacher-forced pass over every unfinished sequence plus one position: a
    sequence whose guess departs from the pass's argmax is cut there and takes the argmax; one that agrees
    everywhere grows by the argmax at its end. So each round fixes or adds at least one token, and a sequence
    ends when it agrees with its pass everywhere and ends in eos or holds max_new ids: the sequence the
    certification pass would call the argmax at every position.
    """
    seqs = [list(g[:max_new]) for g in guesses]
    todo = list(range(len(prompts)))
    for _ in range(2 * max_new + 1):  # each round fixes or adds a token: at most max_new of each
        if not todo:
            break
        # The last target is a placeholder: its logits row is the prediction after the sequence.
        items = [Encoded(key=str(i), prompt=tuple(prompts[i]), targets=tuple(seqs[i]) + (pad_id,)) for i in todo]
        runner = Runner(model, items, pad_id)
        nxt = []
        for s in range(0, len(items), batch_size):
            idx = list(range(s, min(s + batch_size, len(items))))
            logits, batch = runner.logits(idx)  # [N, V]
            ids, _ = step_stats(logits)
            nxt += [t.tolist() for t in ids.split(batch.lengths.tolist())]
        left = []
        for i, am in zip(todo, nxt):
            seq = seqs[i]
            j = next((k for k, t in enumerate(seq) if am[k] != t), None)
            if j is not None:
                seqs[i] = seq[:j] + [am[j]]
            elif (seq and seq[-1] == eos) or len(seq) >= max_new:
                continue  # agrees with its pass at every position: done
            else:
                seqs[i] = seq + [am[len(seq)]]
            left.append(i)
        todo = left
    return seqs
