"""Teacher-forced certification in one forward pass, and real generation with the KV cache (greedy, or sampled
through `generate`'s knobs by memft.checks.sampling).

The per-token loss is defined here once (`token_nll`: float32 log-softmax at the target); training, the Trainer
integration and the audit call it. Core layer. May import: batching, encoding, forward, metrics; torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from memft.model.batching import Batch, chunks, pad
from memft.prompts.encoding import Encoded, decode_value
from memft.model.forward import Runner
from memft.prompts.keyed import activated
from memft.certify.metrics import RecordReport, TokenStats, first_false, record_report
from memft.model.vocab import TrainVocab


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    """Log-probabilities [N, V] of logits [N, V], in float32 whatever the model's precision."""
    return F.log_softmax(logits.float(), dim=-1)


def at_targets(logp: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logp [N, V] at each row's target [N] -> [N]."""
    return logp.gather(1, targets[:, None]).squeeze(1)


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy in nats of each target: logits [N, V], targets [N] -> [N] (float32, with grad when the logits
    have one): logsumexp(logits) - logit_target, the same value as -log_softmax at the target without the [N, V]
    log-softmax. The loss every objective weights (via token_table), the Trainer integration and the audit use."""
    x = logits.float()
    return torch.logsumexp(x, dim=-1) - at_targets(x, targets)


def token_table(logits: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
    """Per-target-token loss (token_nll), probability, argmax check and gap from logits [N, V] -> dict of [N] tensors.

    gap = p(target) - p(best other token): > 0 exactly where the target is the strict argmax; how far a precision
    shift (merging, bf16) can move the probabilities before greedy decoding picks another token.

    Reduced with one logsumexp and one top-2, not a log-softmax, scatter and argmax over [N, V] (each such pass
    over a 49k vocabulary costs about as much; a full check of 2,048 target positions took 0.72 s this way against
    1.22 s on one core: benchmarks/README.md, Scale II). The best other token is the top value when the target is
    not at the top, else the second; "correct" is argmax's (the lowest id of a tie at the top wins), with argmax
    itself run only for rows tied at the top.
    """
    x = logits.float()  # [N, V]
    lse = torch.logsumexp(x, dim=-1)  # [N]
    lt = at_targets(x, batch.targets)  # [N] target logits
    lp = lt - lse  # [N] = -token_nll(logits, batch.targets)
    if x.shape[-1] > 1:
        vals = x.topk(2, dim=-1).values  # [N, 2]
        at_top = lt >= vals[:, 0]
        other = torch.where(at_top, vals[:, 1], vals[:, 0]) - lse  # [N] log p of the best non-target token
        correct = at_top.clone()
        tie = at_top & (vals[:, 1] >= vals[:, 0])  # the target shares the top: argmax takes the lowest id
        if bool(tie.any()):
            correct[tie] = x[tie].argmax(-1) == batch.targets[tie]
    else:
        other, correct = torch.full_like(lse, float("-inf")), torch.ones_like(lt, dtype=torch.bool)
    p = lp.exp()
    # The gap is a statistic, never trained on: detached (at an exact tie top-k's gradient would pick either id).
    return {"loss": -lp, "prob": p, "correct": correct.detach(), "gap": (p - other.exp()).detach()}


def split_per_record(table: dict[str, torch.Tensor], batch: Batch) -> list[TokenStats]:
    """[N] token tensors -> one TokenStats per record of the batch (targets are stored record by record)."""
    sizes = batch.lengths.tolist()
    cols = {k: v.detach().cpu().split(sizes) for k, v in table.items()}
    tg = batch.targets.cpu().split(sizes)
    return [
        TokenStats(targets=tg[b].tolist(), prob=cols["prob"][b].tolist(), correct=cols["correct"][b].tolist(), loss=cols["loss"][b].tolist(),
                   gap=cols["gap"][b].tolist())
        for b in range(len(sizes))
    ]


# Target tokens per micro-batch of a forward-only pass: its full-vocabulary logits are [CHECK_TARGETS, V] floats
# (with the log-softmax, about 2 x 400 MB at a 49k vocabulary), whatever the record count of the batch.
CHECK_TARGETS = 2048


@torch.no_grad()
def teacher_forced(runner: Runner, batch_size: int = 64, indices: Sequence[int] | None = None,
                   see_logits: Callable[[torch.Tensor], Any] | None = None, vocab: TrainVocab | None = None,
                   max_targets: int | None = CHECK_TARGETS) -> dict[int, TokenStats]:
    """One teacher-forced forward pass over the records -> {record index: TokenStats}.

    `see_logits` is given the full-vocabulary logits [N, V] of every micro-batch (training collects competitor
    tokens from them). With `vocab` the head scores only its tokens: a cheap re-check whose probabilities are upper
    bounds (TokenStats.targets then hold indices into vocab.ids); it never certifies.
    """
    indices = range(len(runner.items)) if indices is None else indices
    out: dict[int, TokenStats] = {}
    for idx in chunks(list(indices), runner.items, batch_size, max_targets):
        logits, batch = runner.logits(idx, vocab=vocab)
        if see_logits is not None and vocab is None:
            see_logits(logits)
        for i, st in zip(idx, split_per_record(token_table(logits, batch), batch)):
            out[i] = st
    return out


@torch.no_grad()
def generate(model: Any, prompts: Sequence[Sequence[int]], tokenizer: Any, max_new: Sequence[int], batch_size: int = 32,
             **knobs: Any) -> list[list[int]]:
    """`model.generate` from each prompt -> its ids up to and including the first eos, per prompt.

    Prompts are sorted by length (stable) into left-padded batches of `batch_size` rows with the KV cache; a batch
    generates the largest `max_new` [per prompt] of its rows. `knobs`: generate's decoding options (greedy:
    do_sample=False; sampling: memft.checks.sampling.generation_knobs)."""
    device = next(model.parameters()).device
    pad_id, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    out: list[list[int]] = [[] for _ in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        ids, mask = pad([prompts[i] for i in idx], pad_id, left=True)  # [B, P]
        with activated(model, ids):  # PeftModel.generate passes a keyed adapter's offsets too; a wrapped LM needs these
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max(max_new[i] for i in idx),
                                 eos_token_id=eos, pad_token_id=pad_id, **knobs)  # [B, P + new]
        for b, i in enumerate(idx):
            out[i] = cut_at_eos(gen[b, ids.shape[1] :].tolist(), eos)
    return out


def greedy(model: Any, items: Sequence[Encoded], tokenizer: Any, batch_size: int = 32,
           max_new: int | Sequence[int] | None = None) -> list[list[int]]:
    """Greedy decoding from each record's prompt -> generated ids per record (see `generate`).

    Generation stops at eos or after len(targets) + 1 tokens (enough to see a missing eos), or `max_new` tokens
    (one for all, or one per record).
    """
    if max_new is None or isinstance(max_new, int):
        limits = [max_new or len(e.targets) + 1 for e in items]
    else:
        limits = [min(m, len(e.targets) + 1) for m, e in zip(max_new, items)]
    return generate(model, [e.prompt for e in items], tokenizer, limits, batch_size, do_sample=False, num_beams=1)


def cut_at_eos(seq: list[int], eos: int) -> list[int]:
    """Generated ids -> the ids up to and including the first eos (all of them when there is none)."""
    return seq[: seq.index(eos) + 1] if eos in seq else seq


# Tokens generated past a failing record's first teacher-forced error ("divergence"): room for decoding with the
# KV cache to disagree with the teacher-forced pass by a rounding near a tie, and show where it does fail.
DIVERGENCE_SLACK = 8


def evaluate(
    model: Any,
    tokenizer: Any,
    items: Sequence[Encoded],
    generate: str = "uncertified",
    batch_size: int = 64,
    runner: Runner | None = None,
    stats: dict[int, TokenStats] | None = None,
) -> list[RecordReport]:
    """Per-record reports. generate: "never" | "uncertified" (only where certification fails) | "always" |
    "divergence" (where certification fails, only to just past the first position teacher forcing found wrong).

    "divergence" is what a write reports with: greedy decoding follows the targets up to the first position whose
    target is not the argmax and leaves them there (memft.certify.metrics: certified iff greedy reproduces the record), so
    generating further only adds the text after the failure, at the cost of a whole value's length. A long value
    that was not learned (2,000 characters: 2,002 tokens of the tiny model) cost minutes of generation on a busy
    CPU after training, with nothing printed. Its free-run `token_accuracy` counts the positions not generated as
    wrong, and its `recalled` text ends just past the failure.

    A certified record is exact by construction, so generation for it is only a cross-check. `stats`: the
    teacher-forced statistics of every record with the model's current parameters, when already computed
    (training's final pass, memft.training.loop.TrainResult.final); else one pass computes them.
    """
    if stats is None or set(stats) != set(range(len(items))):
        runner = runner or Runner(model, items, tokenizer.pad_token_id)
        stats = teacher_forced(runner, batch_size)
    failing = [i for i in range(len(items)) if not all(stats[i].correct)]
    want = {"never": [], "uncertified": failing, "divergence": failing, "always": list(range(len(items)))}[generate]
    limits = [first_false(stats[i].correct) + 1 + DIVERGENCE_SLACK for i in want] if generate == "divergence" else None
    gen = dict(zip(want, greedy(model, [items[i] for i in want], tokenizer, batch_size, limits))) if want else {}
    reports = []
    for i, e in enumerate(items):
        g = gen.get(i)
        if g is None and generate != "never" and all(stats[i].correct):
            g = list(e.targets)  # certified => greedy reproduces the targets exactly (see memft.certify.metrics)
        recalled = decode_value(g, tokenizer) if g is not None else None
        reports.append(record_report(e.key, stats[i], g, recalled))
    return reports
