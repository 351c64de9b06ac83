"""The training loop: one optimizer step per batch of records, stopping as soon as every record is certified.

Read `train` top to bottom; each mechanism is a small piece tested on its own:
- StatusBook (status.py): each record's latest statistics and goal, and whether they are fresh;
- BatchPolicy and CheckBudget (batches.py): which records a step trains (plain epochs or the active set) and when
  every record is checked again;
- Checker (checking.py): the forward-only checks;
- forward_pass, objective_loss, with_preservation, Updater (step.py): one step's loss and update.
Success is only declared after a teacher-forced pass over every record, over the full vocabulary, with the final
parameters (TrainResult.final).

Options for large record sets (memft.training.sizing picks them for more than 64 records):
- head_vocab="restricted": training steps and the re-checks of resting records score only the training vocabulary
  (memft.model.vocab); its probabilities bound the full ones from above, so they never certify.
- lora_init="centered": a fresh adapter's A comes from the inputs its modules see in the first check.
- lr_schedule="progress": lr x max(0.1, 1 - certified share), and a collapse of that share puts the best
  parameters back with half the rate (memft.training.rollback).

Core layer (training).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from memft.certify.evaluate import teacher_forced
from memft.certify.metrics import PRECISION_LOG_ODDS, exit_log_odds, exit_margin
from memft.config import TrainConfig
from memft.model import lora_init
from memft.model.base import compute_dtype
from memft.model.forward import Runner
from memft.model.vocab import TrainVocab
from memft.prompts.encoding import Encoded
from memft.training.batches import BatchPolicy, CheckBudget
from memft.training.checking import Checker
from memft.training.preserve import Preserver
from memft.training.status import StatusBook, StepRow, Work
from memft.training.step import Updater, forward_pass, objective_loss, with_preservation


@dataclass
class TrainResult:
    steps: int  # optimizer updates made
    certified_at: int | None  # first step at which every record was certified (None: never)
    loss_init: float  # mean target-token loss before training
    seconds: float
    # One row per step; a step that trains one record (the stress test) also holds its first_error (first offset
    # whose target is not the argmax) and earliest_stubborn (first p <= 0.5), before the update, or None.
    history: list[StepRow] = field(default_factory=list)
    trained: int = 0  # record passes with a backward pass (trained / records = epochs of training)
    checked: int = 0  # record passes forward-only (certification checks)
    tokens: int = 0  # target tokens that went through a training step
    # {record index: TokenStats} of the last full-vocabulary pass over every record with the final parameters
    # (what certification was decided on); evaluation reuses it instead of running the model again.
    final: dict[int, Any] = field(default_factory=dict)
    log_odds: float = 0.0  # the allowance every goal held (allowance(): the precision's, or the config's)


@dataclass
class Warm:
    """What a caller already computed for some records with the model's current parameters, so that training does
    not compute it again (memft.memory.rewrite, from the greedy recall that recovered them: memft.certify.decode).
    stats: {record index: full-vocabulary TokenStats}; prefix: {record index: hidden states entering the start
    layer}; competitors: token ids the restricted head should score (memft.model.vocab)."""

    stats: dict[int, Any] = field(default_factory=dict)
    prefix: dict[int, torch.Tensor] = field(default_factory=dict)
    competitors: set[int] = field(default_factory=set)


def train(
    model: Any,
    items: Sequence[Encoded],
    pad_id: int,
    cfg: TrainConfig,
    start_layer: int,
    on_step: Callable[[StepRow], None] | None = None,
    forget: Collection[int] = (),
    preserve: Preserver | None = None,
    warm: Warm | None = None,
    margins: Mapping[int, float] | None = None,
) -> TrainResult:
    """Train the adapter of `model` (a PEFT model) on `items` until every record meets its goal or cfg.max_steps.

    Goals: a record to keep is certified with cfg.margin (argmax everywhere, every p > margin and every log-odds over
    the best other token >= the precision's allowance, `allowance`); a record whose
    index is in `forget` must stop being recalled (metrics.forgotten), and its tokens get the unlikelihood loss
    instead of the objective's. "certified" in the history and `certified_at` mean: every goal met.
    `preserve` (memft.training.preserve): a term added to every step's loss that keeps the base's predictions on
    unrelated text; it changes the gradient only, never what counts as certified. `warm`: statistics and frozen
    prefixes of some records already computed with the current parameters; the first check skips those records.
    `margins`: {record index: margin} for records that need more than cfg.margin (memft.runtime.deploy_write raises
    it for records a runtime's arithmetic lost); each record's training bar follows its own margin.
    """
    torch.manual_seed(cfg.seed)
    t0, n, warm = time.perf_counter(), len(items), warm or Warm()
    runner = Runner(model, items, pad_id, start=start_layer, cache=True)
    runner.adopt(warm.prefix)
    vocab = restricted_vocab(runner, items, warm) if cfg.head_vocab == "restricted" else None
    active = cfg.active_set and cfg.batch_size < n  # a full batch sees (and trains) every record at every step
    lo = allowance(model, cfg)
    book = StatusBook(n, frozenset(forget), cfg.margin, exit_margin if active else (lambda m: m), margins,
                      log_odds=(lo, exit_log_odds(lo) if active else lo))
    work, budget, update, state = Work(), CheckBudget(n), Updater(model, cfg), {}  # state: the objective's memory
    check = Checker(runner, book, work, budget, vocab, cfg.batch_size, update.guard)
    loss_init = first_check(model, runner, check, warm, cfg)
    policy = BatchPolicy(cfg, book, check, work, active, state)
    history: list[StepRow] = []
    certified_at, step = None, 0
    while True:
        last = step >= cfg.max_steps or (cfg.max_seconds is not None and time.perf_counter() - t0 >= cfg.max_seconds)
        idx = policy.draw(step, last)
        p = forward_pass(runner, idx, vocab, book) if idx else None
        if cfg.batch_size >= n and vocab is None:
            book.full_pass(len(idx))  # a full batch over the full vocabulary has just seen every record
        if not book.fresh and (last or (book.all_ok and (budget.allowed or not active))):
            check()  # statuses may be stale (mini-batches, active set): confirm (as the budget allows), and always at the end
        row: StepRow = {"step": step, "loss": 0.0, "stubborn": 0, "min_prob": 1.0, **(p.row if p else {}), "certified": book.share,
               "active": len(book.active()), "epochs": work.trained / n, "mean_loss": book.mean_loss, "seconds": time.perf_counter() - t0}
        if book.certified and certified_at is None:
            certified_at = step  # the first parameters that meet every goal
        if (book.certified and cfg.stop_when_certified) or last:  # stop before changing them
            history.append(row)
            break
        loss, stats = objective_loss(p, cfg, book, state, step)
        if update.guard is not None and update.guard.observe(row["certified"]):
            check()  # the statuses of the restored parameters
            row["rolled_back"] = update.guard.rollbacks
            loss = None  # this batch's gradient belongs to the parameters just dropped
        loss = with_preservation(loss, stats, preserve, step)
        row.update(stats)
        history.append(row)
        if on_step:
            on_step(row)
        if loss is not None:  # None: the objective has nothing to learn from this batch
            update.step(loss, step, row["certified"])
            book.parameters_changed()
            work.step(len(idx), int(p.batch.lengths.sum()))
            budget.trained(len(idx))
        step += 1
    if on_step:
        on_step(history[-1])
    return TrainResult(steps=step, certified_at=certified_at, loss_init=loss_init, seconds=time.perf_counter() - t0, history=history,
                       trained=work.trained, checked=work.checked, tokens=work.tokens, final=dict(book.latest) if book.fresh else {},
                       log_odds=lo)


def allowance(model: Any, cfg: TrainConfig) -> float:
    """The log-odds every target must hold for its record's goal: cfg.precision_log_odds, else the allowance of the
    precision the frozen base computes in (model.base.compute_dtype)."""
    if cfg.precision_log_odds is not None:
        return float(cfg.precision_log_odds)
    return PRECISION_LOG_ODDS[compute_dtype(model)]


def restricted_vocab(runner: Runner, items: Sequence[Encoded], warm: Warm) -> TrainVocab:
    """The restricted head (memft.model.vocab): the targets, their neighbours in the output embedding and the
    competitors the caller has seen; checks add the competitors they meet."""
    head = runner.lm.get_output_embeddings().weight
    vocab = TrainVocab(head.shape[0], (t for e in items for t in e.targets))
    vocab.add_neighbours(head)
    if warm.competitors:
        vocab.add(torch.tensor(sorted(warm.competitors)))
    return vocab


def first_check(model: Any, runner: Runner, check: Checker, warm: Warm, cfg: TrainConfig) -> float:
    """The statuses before training: every record but those whose statistics `warm` gives (a fresh centered init
    reads the inputs of all of them, and sets A from them: memft.model.lora_init). Returns the mean target loss."""
    book, n = check.book, check.book.n
    centered = cfg.lora_init == "centered" and lora_init.is_fresh(model)
    first = range(n) if centered else [i for i in range(n) if i not in warm.stats]
    with lora_init.capture_inputs(model, runner) if centered else nullcontext() as moments:
        stats0 = teacher_forced(runner, check.batch, first, see_logits=check.see_logits) if first else {}
    if centered:
        lora_init.apply_centered(model, moments)  # every B is zero: the adapter's output, and stats0, are unchanged
    else:
        stats0 = {i: warm.stats[i] for i in range(n) if i in warm.stats} | stats0
    book.see_all(stats0)
    book.settle(range(n))  # records meeting their goal already (a rewrite's held ones) rest until they fail it
    check.work.checked += len(first)
    if len(first) < n:
        # Statistics taken from greedy recall (memft.certify.decode) choose what to train, but they come from a
        # KV-cached decode, not the teacher-forced pass that certifies: a rewrite that needs no training (every
        # goal already met) is confirmed by that pass before it is called certified, as for any other run.
        book.optimistic()
        check.budget.trained(check.budget.needed)  # that confirmation is due at once
    losses0 = [x for i, st in stats0.items() if i not in book.forget for x in st.loss]
    return sum(losses0) / max(len(losses0), 1)
