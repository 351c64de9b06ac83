"""One optimizer step: the loss of a step's batch (the objective's, unlikelihood for records to forget, the
preservation term), the optimizer's parameter groups and its learning rate.

Core layer (training).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from memft import objectives
from memft.certify.evaluate import split_per_record, token_table
from memft.certify.metrics import STUBBORN_P, earliest_stubborn, first_false
from memft.config import TrainConfig
from memft.model.forward import Runner
from memft.model.vocab import TrainVocab
from memft.training.preserve import Preserver
from memft.training.rollback import Rollback
from memft.training.status import StatusBook


PROGRESS_FLOOR = 0.1


def lr_at(step: int, cfg: TrainConfig, certified: float = 0.0) -> float:
    """Learning rate of the update made at loop step `step` (0-based): cfg.lr ("constant"); for "linear"
    cfg.lr * (1 - step / cfg.max_steps), from cfg.lr at step 0 down to 0 at max_steps; for "progress"
    cfg.lr * max(PROGRESS_FLOOR, 1 - certified), smaller steps as the share of certified records grows.

    Why "progress": Adam's steps keep their size as the loss goes to zero, and near the end they scrambled what
    was learnt (benchmarks/README.md, Scale); a decay tied to max_steps cannot help a run that stops at certification, long before its budget ends.

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




@dataclass
class Pass:
    """A training step's forward pass over records `idx`: the token table (with gradients), the batch, each token's
    record index and whether it belongs to a record to forget, and the step's row statistics."""

    idx: list[int]
    tab: dict[str, torch.Tensor]
    batch: Any
    record: torch.Tensor  # [N] record index of each token
    drop: torch.Tensor  # [N] True where the record is one to forget
    row: dict[str, float]


def forward_pass(runner: Runner, idx: list[int], vocab: TrainVocab | None, book: StatusBook) -> Pass:
    """The forward pass of a training step over `idx`; its statistics go into the book (optimistic with the
    restricted head, whose p is an upper bound)."""
    logits, batch = runner.logits(idx, vocab=vocab)  # [N, V], or [N, V'] restricted
    tab = token_table(logits, batch)
    seen = {k: v.detach() for k, v in tab.items()}
    book.see_all(dict(zip(idx, split_per_record(seen, batch))))
    if vocab is not None:
        book.optimistic()
    record = torch.tensor(idx, device=batch.rows.device)[batch.rows]
    drop = torch.tensor([i in book.forget for i in idx], dtype=torch.bool, device=record.device)[batch.rows]
    row: dict[str, float] = {}
    if (~drop).any():
        row = {"loss": float(seen["loss"][~drop].mean()), "stubborn": int((seen["prob"][~drop] <= STUBBORN_P).sum()),
               "min_prob": float(seen["prob"][~drop].min())}
    if len(idx) == 1:  # one record per step (the stress test): its phase-transition positions, for free
        row |= {"first_error": first_false(seen["correct"].tolist()), "earliest_stubborn": earliest_stubborn(seen["prob"].tolist())}
    return Pass(idx, tab, batch, record, drop, row)


def objective_loss(p: Pass | None, cfg: TrainConfig, book: StatusBook, state: dict[str, Any], step: int) -> tuple[Any, dict[str, Any]]:
    """The objective's loss over the kept records' tokens, plus unlikelihood over the tokens of records to forget
    that are still recalled; (None, {}) when there is nothing to learn from."""
    if p is None:
        return None, {}
    keep = ~p.drop
    loss, stats = None, {}
    state.update(step=step, max_steps=cfg.max_steps, n_records=book.n)  # what schedules (curricula) may read
    if keep.any():
        tokens = objectives.Tokens(loss=p.tab["loss"][keep], correct=p.tab["correct"][keep], record=p.record[keep], offset=p.batch.offset[keep])
        loss, stats = objectives.get(cfg.method)(tokens, state, **cfg.method_options)
    if book.forget:
        still = torch.tensor([not book.ok[i] for i in p.idx], dtype=torch.bool, device=p.record.device)[p.batch.rows] & p.drop
        floss, fstats = objectives.unlikelihood(p.tab["prob"], still)
        stats.update(fstats)
        loss = floss if loss is None else (loss if floss is None else loss + floss)
    return loss, stats


def with_preservation(loss: Any, stats: dict[str, Any], preserve: Preserver | None, step: int) -> Any:
    """The step's loss plus the preservation term (memft.training.preserve), which changes the gradient only."""
    if loss is None or preserve is None:
        return loss
    ploss, pstats = preserve.loss(step)
    stats.update(pstats)
    return loss + ploss


class Updater:
    """AdamW over the adapter's trainable parameters, with gradient clipping and the scheduled rate; under the
    progress schedule, `guard` backtracks after a collapse of the certified share (memft.training.rollback)."""

    def __init__(self, model: Any, cfg: TrainConfig):
        self.cfg = cfg
        self.opt = torch.optim.AdamW(param_groups(model, cfg.a_lr_scale), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.params = [p for g in self.opt.param_groups for p in g["params"]]  # what is trained (a frozen A is not)
        self.guard = Rollback(self.params, self.opt) if cfg.lr_schedule == "progress" else None

    def step(self, loss: Any, step: int, certified: float) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        factor = self.guard.factor if self.guard is not None else 1.0
        for group in self.opt.param_groups:
            group["lr"] = lr_at(step, self.cfg, certified) * group["scale"] * factor
        self.opt.step()
