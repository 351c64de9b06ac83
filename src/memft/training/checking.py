"""Checker: the forward-only passes that bring a StatusBook up to date.

A full check scores every record over the full vocabulary (what certifies); the cheap re-check of resting records
scores only the training vocabulary when the head is restricted (optimistic: it never certifies). Checks run in
micro-batches of at least CHECK_BATCH records whatever the training batch: larger matrix products, same statistics.

Core layer (training).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from memft.certify.evaluate import teacher_forced
from memft.model.forward import Runner
from memft.model.vocab import TrainVocab
from memft.training.status import StatusBook, Work

CHECK_BATCH = 64


class Checker:
    def __init__(self, runner: Runner, book: StatusBook, work: Work, budget: Any, vocab: TrainVocab | None, batch: int,
                 guard: Any = None):
        self.runner, self.book, self.work, self.budget, self.vocab, self.guard = runner, book, work, budget, vocab, guard
        self.batch = max(batch, CHECK_BATCH)
        self.see_logits = vocab.add_competitors if vocab is not None else None  # competitors the restricted head must score

    def __call__(self, indices: Sequence[int] | None = None, full: bool = True) -> None:
        """Forward-only statistics of `indices` (default: every record, which makes the statuses fresh). full=False
        with a restricted head: the cheap re-check, over the training vocabulary (optimistic)."""
        n = self.book.n
        indices = range(n) if indices is None else indices
        self.book.see_all(teacher_forced(self.runner, self.batch, indices, self.see_logits, vocab=None if full else self.vocab))
        self.work.checked += len(indices)
        self.work.since_check = 0
        if full or self.vocab is None:
            self.book.full_pass(len(indices))
            if len(indices) == n:
                self.budget.spent()
            if self.vocab is not None and self.guard is not None:
                self.guard.rebase()  # exact statuses replace optimistic ones: a lower share here is no collapse
        else:
            self.book.optimistic()
