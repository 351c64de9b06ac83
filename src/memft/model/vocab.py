"""The output tokens a training step scores: every target id plus the competitors full-vocabulary checks have seen.

A training step of a large record set spends about a third of its work on the LM head: 11 value positions of a
phone number times a 49k vocabulary, forward and backward. But at a value position only a few tokens carry any
probability: the targets of the record set (digits, eos) and the tokens the model ranks near them. `TrainVocab`
holds that set; training scores the head on it alone (`forward.Runner.logits(vocab=...)`), which is the exact
cross-entropy of the softmax restricted to the set. It starts as the targets plus, for each, the NEIGHBOURS tokens
whose head rows are most like its own (`add_neighbours`: what rises with a target when its logit is pushed up), and
every full-vocabulary check adds the top COMPETITORS tokens of each position it sees (`add_competitors`). So a
token that starts to compete joins the set at the next full check, and the restricted loss converges to the full
one where it matters.

Certification is never decided on a restricted head: p over a subset is an upper bound of the full p, so training
uses it only to pick which records to train; success is declared only after a full-vocabulary pass
(memft.training.loop).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

COMPETITORS = 8  # tokens per checked position that join the set: the ones that can take the argmax next
NEIGHBOURS = 32  # tokens per distinct target whose head rows score highest against the target's own row
MAX_SHARE = 0.25  # neighbours stop being added once the set holds this share of the vocabulary


class TrainVocab:
    """A growing set of token ids of a vocabulary of `size`, with the map full id -> index in the set.

    >>> v = TrainVocab(10, [7, 2, 2])
    >>> v.ids.tolist(), v.local(torch.tensor([7, 2])).tolist()
    ([2, 7], [1, 0])
    >>> v.add([5, 7]), v.ids.tolist()
    (1, [2, 5, 7])
    """

    def __init__(self, size: int, ids: Iterable[int] = ()):
        self.size = size
        self._member = torch.zeros(size, dtype=torch.bool)
        self._ids = torch.zeros(0, dtype=torch.long)
        self._local = torch.full((size,), -1, dtype=torch.long)
        self.add(ids)

    def __len__(self) -> int:
        return int(self._ids.numel())

    @property
    def ids(self) -> torch.Tensor:
        """[V'] the member ids, ascending."""
        return self._ids

    def add(self, ids: Iterable[int] | torch.Tensor) -> int:
        """Add ids; returns how many were new."""
        t = torch.as_tensor(list(ids) if not isinstance(ids, torch.Tensor) else ids, dtype=torch.long).flatten().cpu()
        if t.numel() and (t.min() < 0 or t.max() >= self.size):
            raise ValueError(f"token ids must lie in [0, {self.size}), got {t.min().item()}..{t.max().item()}")
        new = t[~self._member[t]].unique()
        if new.numel():
            self._member[new] = True
            self._ids = self._member.nonzero().squeeze(1)
            self._local[self._ids] = torch.arange(self._ids.numel())
        return int(new.numel())

    def add_competitors(self, logits: torch.Tensor, k: int = COMPETITORS) -> int:
        """Add the top-k ids of each row of full-vocabulary logits [N, V]; returns how many were new."""
        if logits.numel() == 0:
            return 0
        return self.add(logits.detach().topk(min(k, logits.shape[-1]), dim=-1).indices)

    @torch.no_grad()
    def add_neighbours(self, weight: torch.Tensor, k: int = NEIGHBOURS) -> int:
        """Add, for every member, the k tokens whose head rows w_u score highest against its own row (w_u . w_t).

        Why: raising a target's logit raises the logits of tokens with similar head rows too (a digit and its
        look-alikes), and outside the set nothing pushes those back; a full check found them only once they had
        taken the argmax, and the certified share of a large write collapsed faster than the rate alone explains
        (benchmarks/README.md, Scale). Returns how many were new; stops at MAX_SHARE of the vocabulary.
        """
        members = self._ids.clone()
        added = 0
        for chunk in members.split(256):
            if len(self) >= MAX_SHARE * self.size:
                break
            w = weight.detach()
            scores = w @ w[chunk.to(w.device)].T  # [V, c]
            added += self.add(scores.topk(min(k, w.shape[0]), dim=0).indices.cpu())
        return added

    def local(self, targets: torch.Tensor) -> torch.Tensor:
        """Full ids [N] (all members) -> their indices in `ids` [N], on the device of `targets`."""
        out = self._local.to(targets.device)[targets]
        assert bool((out >= 0).all()), "every target id must be in the training vocabulary"
        return out
