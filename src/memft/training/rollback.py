"""Backtracking for the "progress" learning-rate schedule: put back the best parameters after a collapse.

Near the end of a large write, Adam can scramble in one epoch what took twenty to learn (benchmarks/README.md,
Scale, has a case). Large-model training
meets loss spikes the same way and answers them by going back to a checkpoint from before the spike with a smaller
step; `Rollback` does that in memory. It keeps a copy of the trainable parameters and the optimizer state whenever
the certified share reaches a new best (by MIN_GAIN), and when the share falls more than DROP below that best it
restores the copy and halves `factor`, which scales the learning rate from then on.

The share it reads is training's running one (each record's latest statistics, up to one epoch old), so it is a
guide, not a verdict: certification is still decided by a full pass (memft.training.loop).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch

MIN_GAIN = 0.01  # a new best share by at least this much takes a new copy
DROP = 0.2  # a fall of more than this below the best share is a collapse
MIN_BEST = 0.2  # below this best share there is little to lose, and no rollback


class Rollback:
    """Best-so-far copy of `params` and `opt`'s state, by certified share.

    >>> p = torch.nn.Parameter(torch.zeros(2)); opt = torch.optim.SGD([p], lr=1.0)
    >>> rb = Rollback([p], opt)
    >>> rb.observe(0.5), rb.observe(0.6)
    (False, False)
    >>> with torch.no_grad(): _ = p.add_(7.0)
    >>> rb.observe(0.3), p.tolist(), rb.factor, rb.rollbacks
    (True, [0.0, 0.0], 0.5, 1)
    >>> rb.observe(0.45), rb.observe(0.2), rb.factor  # the restored share is the new reference: 0.2 is a fall from 0.45
    (False, True, 0.25)
    """

    def __init__(self, params: Sequence[torch.Tensor], opt: torch.optim.Optimizer):
        self.params = list(params)
        self.opt = opt
        self.best = -1.0
        self.factor = 1.0
        self.rollbacks = 0
        self._saved: tuple[list[torch.Tensor], dict[str, Any]] | None = None

    def rebase(self) -> None:
        """The share's basis changed (a full-vocabulary check replaced optimistic restricted statuses): the next
        observation is the new reference, and a fall to it is not a collapse."""
        self.best = -1.0

    def observe(self, share: float) -> bool:
        """Take a copy at a new best; after a collapse restore the best copy and halve the factor. True: restored."""
        if share >= self.best + MIN_GAIN:
            self.best = share
            self._saved = ([p.detach().clone() for p in self.params], copy.deepcopy(self.opt.state_dict()))
            return False
        if self._saved is not None and self.best >= MIN_BEST and share < self.best - DROP:
            values, state = self._saved
            with torch.no_grad():
                for p, v in zip(self.params, values):
                    p.copy_(v)
            self.opt.load_state_dict(copy.deepcopy(state))
            self.factor *= 0.5
            self.rollbacks += 1
            # The best share was read from statuses up to an epoch old; the restored parameters' own share (the
            # next observation, after a fresh check) is the new reference, so one collapse is one rollback.
            self.best = -1.0
            return True
        return False
