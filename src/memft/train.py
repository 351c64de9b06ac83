"""The training loop: one optimizer step per batch of records, stopping as soon as every record is certified.

Two ways to pick the records of a step (TrainConfig.active_set):
- plain (research runs): every record, full batch or seeded reshuffled epochs. Each step's gradient is the
  objective's over all the records of its batch, as the paper trains. Under a curriculum an epoch is drawn from
  the records of its current stage only (objectives.stage_records), as the reference code draws them.
- active set (memft write): an epoch is one pass over the records that have not yet reached the
  training bar `metrics.exit_margin(margin)`; the others get no backward pass. They are re-checked with forward-only
  passes (a third of a training pass each) at least once per epoch's worth of trained records and whenever the
  active set runs empty, and any that slipped join it again. A store of many records then pays full training only for what it has not learned yet.
  (append/forget of small adapters replay every record: see memft.memory.rewrite.)
In both, success is only declared after a teacher-forced pass over every record, over the full vocabulary, with the
final parameters (TrainResult.final).

Options for large record sets (memft.sizing picks them for more than 64 records):
- head_vocab="restricted": training steps and the re-checks of resting records score only the training vocabulary
  (memft.vocab); its probabilities bound the full ones from above, so they never certify.
- lora_init="centered": a fresh adapter's A comes from the inputs its modules see in the first check (memft.lora_init).
- lr_schedule="progress": lr x max(0.1, 1 - certified share), and a collapse of that share puts the best
  parameters back with half the rate (memft.rollback).
"""

from __future__ import annotations

import math
import random
import time
from contextlib import nullcontext
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from memft import lora_init, objectives
from memft.config import TrainConfig
from memft.encoding import Encoded
from memft.evaluate import split_per_record, teacher_forced, token_table
from memft.forward import Runner
from memft.metrics import STUBBORN_P, earliest_stubborn, exit_margin, first_false, forgotten, meets_margin
from memft.preserve import Preserver
from memft.rollback import Rollback
from memft.vocab import TrainVocab


CHECK_BATCH = 64

# A forward-only pass over a record costs about a third of a training pass over it (no backward pass, no
# optimizer step; measured in benchmarks/README.md, Scale).
FORWARD_COST = 1 / 3


@dataclass
class CheckBudget:
    """Rations the active set's full confirmation checks, so that a record set that hovers at the bar cannot spend
    its time re-checking (issue 22: a full check of every record ran on almost every step).

    The bound: a full check of the n records is allowed once the record passes trained since the last full check
    reach n * FORWARD_COST, so full checks cost at most as much compute as the training they follow. Until then, a
    run whose resting records are all at the bar trains those nearest it (`nearest_bar`, from `train`'s epoch pool),
    which is what keeps them from drifting back.

    >>> b = CheckBudget(n=90); b.allowed, b.needed
    (False, 30)
    >>> b.trained(29); b.allowed
    False
    >>> b.trained(1); b.allowed, b.needed
    (True, 0)
    >>> b.spent(); b.allowed
    False
    """

    n: int
    since: int = 0  # record passes trained since the last full check

    @property
    def needed(self) -> int:
        """Record passes still to train before the next full check is allowed."""
        return max(0, math.ceil(self.n * FORWARD_COST) - self.since)

    @property
    def allowed(self) -> bool:
        return self.needed == 0

    def trained(self, k: int) -> None:
        self.since += k

    def spent(self) -> None:
        self.since = 0


@dataclass
class TrainResult:
    steps: int  # optimizer updates made
    certified_at: int | None  # first step at which every record was certified (None: never)
    loss_init: float  # mean target-token loss before training
    seconds: float
    # One row per step; a step that trains one record (the stress test) also holds its first_error (first offset
    # whose target is not the argmax) and earliest_stubborn (first p <= 0.5), before the update, or None.
    history: list[dict[str, float]] = field(default_factory=list)
    trained: int = 0  # record passes with a backward pass (trained / records = epochs of training)
    checked: int = 0  # record passes forward-only (certification checks)
    tokens: int = 0  # target tokens that went through a training step
    # {record index: TokenStats} of the last full-vocabulary pass over every record with the final parameters
    # (what certification was decided on); evaluation reuses it instead of running the model again.
    final: dict[int, Any] = field(default_factory=dict)


@dataclass
class Warm:
    """What a caller already computed for some records with the model's current parameters, so that training does
    not compute it again (memft.memory.rewrite, from the greedy recall that recovered them: memft.decode).
    stats: {record index: full-vocabulary TokenStats}; prefix: {record index: hidden states entering the start
    layer}; competitors: token ids the restricted head should score (memft.vocab)."""

    stats: dict[int, Any] = field(default_factory=dict)
    prefix: dict[int, torch.Tensor] = field(default_factory=dict)
    competitors: set[int] = field(default_factory=set)


def step_batches(n: int, batch_size: int, seed: int) -> Callable[[], list[int]]:
    """Yields the record indices of each step: all of them (full batch) or seeded reshuffled epochs."""
    return active_batches(lambda: list(range(n)), batch_size, random.Random(seed), full=batch_size >= n)


def active_batches(pool: Callable[[], list[int]], batch_size: int, rng: random.Random, full: bool = False) -> Callable[[], list[int]]:
    """Yields the record indices of each step from epochs over `pool()` (called anew at each epoch start), shuffled
    by `rng`; full=True: the whole pool every step. An empty pool gives an empty step."""
    queue: list[int] = []

    def nxt() -> list[int]:
        nonlocal queue
        if full:
            return pool()
        if not queue:
            queue = pool()
            rng.shuffle(queue)
        take, queue = queue[:batch_size], queue[batch_size:]
        return take

    return nxt


def with_replay(active: list[int], resting: list[int], share: float, rng: random.Random) -> list[int]:
    """The active records plus resting ones drawn at random, so that `share` of the result rests (experience
    replay: their gradients say what must not move); as many as there are, and none when nothing is active.

    >>> out = with_replay([0, 1, 2], list(range(3, 20)), 0.5, random.Random(0))
    >>> out[:3], len(out), all(3 <= i < 20 for i in out[3:]), len(set(out))
    ([0, 1, 2], 6, True, 6)
    >>> sorted(with_replay([0], [5, 6], 0.9, random.Random(0))), with_replay([], [5], 0.5, random.Random(0))
    ([0, 5, 6], [])
    """
    if not share or not active:
        return list(active)
    k = min(len(resting), round(len(active) * share / (1 - share)))
    return list(active) + rng.sample(resting, k)


def nearest_bar(ids: Sequence[int], latest: dict[int, Any], k: int) -> list[int]:
    """The k records of `ids` whose latest statistics have the lowest minimum target probability (ties: lower index).

    >>> from types import SimpleNamespace as S
    >>> nearest_bar([0, 1, 2, 3], {0: S(prob=[0.9, 0.8]), 1: S(prob=[0.99]), 2: S(prob=[0.76]), 3: S(prob=[0.8])}, 2)
    [2, 0]
    """
    return sorted(ids, key=lambda i: (min(latest[i].prob), i))[:k]


PROGRESS_FLOOR = 0.1


def lr_at(step: int, cfg: TrainConfig, certified: float = 0.0) -> float:
    """Learning rate of the update made at loop step `step` (0-based): cfg.lr ("constant"); for "linear"
    cfg.lr * (1 - step / cfg.max_steps), from cfg.lr at step 0 down to 0 at max_steps; for "progress"
    cfg.lr * max(PROGRESS_FLOOR, 1 - certified), smaller steps as the share of certified records grows.

    Why "progress": Adam's steps keep their size as the loss goes to zero, and near the end they scrambled what
    was learnt (300 PhoneBook records, top 4 layers, lr 3e-3: 99.3 % certified at epoch 33, 33.7 % one epoch later);
    a decay tied to max_steps cannot help a run that stops at certification, long before its budget ends.

    >>> from memft.config import TrainConfig
    >>> c = TrainConfig(lr=0.01, lr_schedule="progress")
    >>> [round(lr_at(0, c, s), 6) for s in (0.0, 0.5, 0.99)]
    [0.01, 0.005, 0.001]
    """
    if cfg.lr_schedule == "linear":
        return cfg.lr * max(0.0, 1.0 - step / max(cfg.max_steps, 1))
    if cfg.lr_schedule == "progress":
        return cfg.lr * max(PROGRESS_FLOOR, 1.0 - certified)
    return cfg.lr


def param_groups(model: Any, a_lr_scale: float) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters: LoRA's A matrices at a_lr_scale x the learning rate (0: frozen),
    everything else at the learning rate; "scale" is each group's multiple of the scheduled rate."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    a = [p for n, p in named if ".lora_A." in n]
    rest = [p for n, p in named if ".lora_A." not in n]
    groups = [{"params": rest, "scale": 1.0}]
    if a and a_lr_scale > 0:
        groups.append({"params": a, "scale": a_lr_scale})
    elif a:
        for p in a:
            p.requires_grad_(False)  # frozen: no gradient is computed for it at all
    return groups


def train(
    model: Any,
    items: Sequence[Encoded],
    pad_id: int,
    cfg: TrainConfig,
    start_layer: int,
    on_step: Callable[[dict[str, float]], None] | None = None,
    forget: Collection[int] = (),
    preserve: Preserver | None = None,
    warm: Warm | None = None,
    margins: Mapping[int, float] | None = None,
) -> TrainResult:
    """Train the adapter of `model` (a PEFT model) on `items` until every record meets its goal or cfg.max_steps.

    Goals: a record to keep is certified with cfg.margin (argmax everywhere and every p > margin); a record whose
    index is in `forget` must stop being recalled (metrics.forgotten), and its tokens get the unlikelihood loss
    instead of the objective's. "certified" in the history and `certified_at` mean: every goal met.
    `preserve` (memft.preserve): a term added to every step's loss that keeps the base's predictions on unrelated
    text; it changes the gradient only, never what counts as certified. `warm`: statistics and frozen prefixes of
    some records already computed with the current parameters; the first check skips those records.
    `margins`: {record index: margin} for records that need more than cfg.margin (memft.runtime.deploy_write raises
    it for records a runtime's arithmetic lost); the training bar of each follows its own margin.
    """
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    opt = torch.optim.AdamW(param_groups(model, cfg.a_lr_scale), lr=cfg.lr, weight_decay=cfg.weight_decay)
    params = [p for g in opt.param_groups for p in g["params"]]  # what is trained (a frozen A is not)
    # The progress schedule backtracks: after a collapse of the certified share, the best parameters come back
    # with half the rate (memft.rollback).
    guard = Rollback(params, opt) if cfg.lr_schedule == "progress" else None
    objective = objectives.get(cfg.method)
    runner = Runner(model, items, pad_id, start=start_layer, cache=True)
    warm = warm or Warm()
    runner.adopt(warm.prefix)
    n = len(items)
    # Restricted head (memft.vocab): training steps score the targets and the competitors that checks have seen.
    vocab = None
    if cfg.head_vocab == "restricted":
        head = runner.lm.get_output_embeddings().weight
        vocab = TrainVocab(head.shape[0], (t for e in items for t in e.targets))
        vocab.add_neighbours(head)
        if warm.competitors:
            vocab.add(torch.tensor(sorted(warm.competitors)))
    see_logits = vocab.add_competitors if vocab is not None else None
    forget = frozenset(forget)
    # The active set only pays where a step holds a share of the records: a full batch already sees every record
    # at every step (statuses for free), and resting records without a gradient drift back (issue 22; the README's
    # "Active set" says what was measured).
    active = cfg.active_set and cfg.batch_size < n
    margin_of = {i: (margins or {}).get(i, cfg.margin) for i in range(n)}
    bar_of = {i: exit_margin(m) if active else m for i, m in margin_of.items()}
    full_batch = cfg.batch_size >= n
    budget = CheckBudget(n)
    # Forward-only checks (and the frozen-prefix cache they fill) run in micro-batches of at least CHECK_BATCH
    # records whatever the training batch: larger matrix products, same statistics.
    check_batch = max(cfg.batch_size, CHECK_BATCH)

    def goal(i: int, correct: Sequence[bool], prob: Sequence[float], margin: float | None = None) -> bool:
        return forgotten(correct, prob) if i in forget else meets_margin(correct, prob, margin_of[i] if margin is None else margin)

    # Per record, from its latest teacher-forced statistics: goal met (ok) and training bar reached (done).
    # Exact for full batch; otherwise up to one epoch stale, so success is confirmed by a full check.
    ok: dict[int, bool] = {}
    done: dict[int, bool] = {}
    latest: dict[int, Any] = {}  # TokenStats of each record's latest pass (at the end: the final full pass)
    rec_loss: dict[int, float] = {}  # latest mean target loss per record kept (the forecast's progress measure)
    work = {"trained": 0, "checked": 0, "tokens": 0, "since_check": 0}

    fresh = True  # the statuses come from a pass over every record with the current parameters

    def see(i: int, st: Any) -> None:
        latest[i] = st
        ok[i], done[i] = goal(i, st.correct, st.prob), goal(i, st.correct, st.prob, bar_of[i])
        if i not in forget:
            rec_loss[i] = sum(st.loss) / len(st.loss)

    def check(indices: Sequence[int] | None = None, full: bool = True) -> None:
        """Forward-only statistics of `indices` (default: every record, which makes the statuses fresh). full=False
        with a restricted head: the cheap re-check of resting records, over the training vocabulary (optimistic)."""
        nonlocal fresh
        indices = range(n) if indices is None else indices
        for i, st in teacher_forced(runner, check_batch, indices, see_logits, vocab=None if full else vocab).items():
            see(i, st)
        work["checked"] += len(indices)
        work["since_check"] = 0
        if full or vocab is None:
            fresh = fresh or len(indices) == n
            if len(indices) == n:
                budget.spent()
            if vocab is not None and guard is not None:
                guard.rebase()  # exact statuses replace optimistic ones: a lower share here is no collapse
        else:
            fresh = False  # optimistic statuses: the next "all met" is confirmed by a full check

    state: dict[str, Any] = {}  # the objective's memory across steps (anchors, curricula)

    def pool() -> list[int]:
        """The records of the next epoch. Active set: once an epoch's worth of records has been trained since the
        last check, the records resting at the bar are re-checked (the active ones were just seen in their
        batches), so each re-check costs at most a third of the training it follows; when none is left active,
        every record is checked."""
        if not active:
            # A curriculum trains only its current stage; drawing the others would waste steps on weight-0 records.
            state.update(step=step, max_steps=cfg.max_steps, n_records=n)
            return objectives.stage_records(cfg.method, state, cfg.method_options) or list(range(n))
        if all(done.values()) and budget.allowed:
            check()
        elif work["since_check"] >= n:
            check([i for i in range(n) if done[i]], full=False)
        resting = [i for i in range(n) if done[i]]
        if len(resting) == n and not (fresh and all(ok.values())):
            # Every record rests, by statuses that may be stale, and the check budget does not yet allow the full
            # check that would confirm them: train those nearest the bar until it does (consolidation).
            return nearest_bar(resting, latest, max(budget.needed, 1))
        return with_replay([i for i in range(n) if not done[i]], resting, cfg.replay, replay_rng)

    centered = cfg.lora_init == "centered" and lora_init.is_fresh(model)
    # The first check: every record, but those whose statistics the caller gives (a fresh centered init reads
    # the inputs of all of them, so it checks all).
    first = range(n) if centered else [i for i in range(n) if i not in warm.stats]
    with lora_init.capture_inputs(model, runner) if centered else nullcontext() as moments:
        stats0 = teacher_forced(runner, check_batch, first, see_logits=see_logits) if first else {}
    if not centered:
        stats0 = {i: warm.stats[i] for i in range(n) if i in warm.stats} | stats0
    if centered:
        lora_init.apply_centered(model, moments)  # every B is zero: the adapter's output, and stats0, are unchanged
    for i, st in stats0.items():
        see(i, st)
    work["checked"] += len(first)
    if len(first) < n:
        # Statistics taken from greedy recall (memft.decode) choose what to train, but they come from a KV-cached
        # decode, not the teacher-forced pass that certifies: a rewrite that needs no training (every goal already
        # met) is confirmed by that pass before it is called certified, as for any other run.
        fresh = False
        budget.trained(budget.needed)  # that confirmation is due at once
    losses0 = [x for i, st in stats0.items() if i not in forget for x in st.loss]
    loss_init = sum(losses0) / max(len(losses0), 1)
    replay_rng = random.Random(cfg.seed + 1)
    next_batch = active_batches(pool, cfg.batch_size, random.Random(cfg.seed), full=full_batch)
    history: list[dict[str, float]] = []
    certified_at = None
    step = 0
    while True:
        last = step >= cfg.max_steps or (cfg.max_seconds is not None and time.perf_counter() - t0 >= cfg.max_seconds)
        # Active set: nothing to draw once every goal is met with these parameters, nor at the end of the budget.
        idx = [] if active and (last or (fresh and all(ok.values()))) else next_batch()
        row: dict[str, float] = {"step": step, "loss": 0.0, "stubborn": 0, "min_prob": 1.0}
        tab = None
        if idx:
            logits, batch = runner.logits(idx, vocab=vocab)  # [N, V], or [N, V'] restricted (then p is an upper bound)
            tab = token_table(logits, batch)
            seen = {k: v.detach() for k, v in tab.items()}
            for i, st in zip(idx, split_per_record(seen, batch)):
                see(i, st)
            if vocab is not None:
                fresh = False  # restricted statuses are optimistic (p over a subset): only a full check certifies
            record = torch.tensor(idx, device=batch.rows.device)[batch.rows]  # [N] record index of each token
            drop = torch.tensor([i in forget for i in idx], dtype=torch.bool, device=record.device)[batch.rows]  # [N]
            if (~drop).any():
                row |= {"loss": float(seen["loss"][~drop].mean()), "stubborn": int((seen["prob"][~drop] <= STUBBORN_P).sum()),
                        "min_prob": float(seen["prob"][~drop].min())}
            if len(idx) == 1:  # one record per step (the stress test): its phase-transition positions, for free
                row |= {"first_error": first_false(seen["correct"].tolist()), "earliest_stubborn": earliest_stubborn(seen["prob"].tolist())}
        # A full batch over the full vocabulary has just seen every record with the current parameters.
        fresh = fresh or (full_batch and len(idx) == n and vocab is None)
        if not fresh and (last or (all(ok.values()) and (budget.allowed or not active))):
            check()  # statuses may be stale (mini-batches, active set): confirm (as the budget allows), and always at the end
        certified = fresh and all(ok.values())
        row |= {"certified": sum(ok.values()) / n, "active": sum(not d for d in done.values()), "epochs": work["trained"] / n,
                "mean_loss": sum(rec_loss.values()) / max(len(rec_loss), 1), "seconds": time.perf_counter() - t0}
        if certified and certified_at is None:
            certified_at = step  # the first parameters that meet every goal
        if (certified and cfg.stop_when_certified) or last:  # stop before changing them
            history.append(row)
            break
        loss, ostats = None, {}
        if tab is not None:
            keep = ~drop
            tokens = objectives.Tokens(loss=tab["loss"][keep], correct=tab["correct"][keep], record=record[keep], offset=batch.offset[keep])
            state.update(step=step, max_steps=cfg.max_steps, n_records=n)  # what schedules (curricula) may read
            loss, ostats = objective(tokens, state, **cfg.method_options) if keep.any() else (None, {})
            if forget:
                still = torch.tensor([not ok[i] for i in idx], dtype=torch.bool, device=record.device)[batch.rows] & drop  # [N]
                floss, fstats = objectives.unlikelihood(tab["prob"], still)
                ostats.update(fstats)
                loss = floss if loss is None else (loss if floss is None else loss + floss)
        if guard is not None and guard.observe(row["certified"]):
            check()  # the statuses of the restored parameters
            row["rolled_back"] = guard.rollbacks
            loss = None  # this batch's gradient belongs to the parameters just dropped
        if loss is not None and preserve is not None:
            ploss, pstats = preserve.loss(step)
            loss = loss + ploss
            ostats.update(pstats)
        row.update(ostats)
        history.append(row)
        if on_step:
            on_step(row)
        if loss is not None:  # None: the objective has nothing to learn from this batch
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg, row["certified"]) * group["scale"] * (guard.factor if guard is not None else 1.0)
            opt.step()
            fresh = False
            work["trained"] += len(idx)
            work["since_check"] += len(idx)
            budget.trained(len(idx))
            work["tokens"] += int(batch.lengths.sum())
        step += 1
    if on_step:
        on_step(history[-1])
    return TrainResult(steps=step, certified_at=certified_at, loss_init=loss_init, seconds=time.perf_counter() - t0, history=history,
                       trained=work["trained"], checked=work["checked"], tokens=work["tokens"], final=dict(latest) if fresh else {})
