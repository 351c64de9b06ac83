"""Encoded records -> padded tensors, and the index of every target token in them.

Sequences are right-padded: real tokens keep positions 0..n-1, so hidden states of real tokens do not depend on the
padding (which is what lets the frozen-prefix cache store them per record).

Core layer: may import other core modules only; the memory store, checks, research tools, integrations and the CLI build on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from memft.prompts.encoding import Encoded


@dataclass
class Batch:
    """B records padded to length T; N target tokens in all.

    input_ids [B, T], attention_mask [B, T], position_ids [B, T];
    rows/cols [N]: (record, position) whose logits predict target token `targets` [N];
    offset [N]: index of each target inside its record's targets (0 = first value token);
    lengths [B]: number of targets of each record.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    targets: torch.Tensor
    offset: torch.Tensor
    lengths: torch.Tensor

    def to(self, device: str | torch.device) -> Batch:
        return Batch(**{k: v.to(device) for k, v in self.__dict__.items()})


def pad(seqs: Sequence[Sequence[int]], pad_id: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Id sequences -> (ids [B, T], attention mask [B, T]), padded with `pad_id` on the right (real tokens keep
    positions 0..n-1) or, with left=True, on the left (every row ends where generation starts).

    >>> ids, mask = pad([[5, 6], [7]], 0, left=True); ids.tolist(), mask.tolist()
    ([[5, 6], [0, 7]], [[1, 1], [0, 1]])
    """
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for b, s in enumerate(seqs):
        span = slice(T - len(s), T) if left else slice(0, len(s))
        ids[b, span] = torch.as_tensor(list(s), dtype=torch.long)
        mask[b, span] = 1
    return ids, mask


def collate(items: Sequence[Encoded], pad_id: int) -> Batch:
    B = len(items)
    input_ids, mask = pad([e.ids for e in items], pad_id)
    T = input_ids.shape[1]
    rows, cols, targets, offset = [], [], [], []
    for b, e in enumerate(items):
        p = len(e.prompt)
        k = len(e.targets)
        rows += [b] * k
        cols += range(p - 1, p - 1 + k)  # the logits at position t predict token t + 1
        targets += e.targets
        offset += range(k)
    positions = torch.arange(T).unsqueeze(0).expand(B, T).clone()
    return Batch(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=positions,
        rows=torch.tensor(rows),
        cols=torch.tensor(cols),
        targets=torch.tensor(targets),
        offset=torch.tensor(offset),
        lengths=torch.tensor([len(e.targets) for e in items]),
    )


# A training step's records are run in groups whose longest sequence is at most this multiple of their shortest:
# padded to one length, a batch of 32 varied records (credentials beside 150-token notes) computed 3.1x the
# positions its records hold; in groups, 1.2x (benchmarks/README.md, Varied records).
GROUP_RATIO = 2.0


def length_groups(lengths: Sequence[int], ratio: float = GROUP_RATIO) -> list[list[int]]:
    """Positions 0..B-1 of a batch grouped so that within a group the longest length is at most `ratio` x the
    shortest; by increasing length, ties in position order. Records of similar lengths make one group (a PhoneBook
    batch runs as before).

    >>> length_groups([30, 10, 12, 25, 100]), length_groups([9, 10, 11]), length_groups([])
    ([[1, 2], [3, 0], [4]], [[0, 1, 2]], [])
    """
    out: list[list[int]] = []
    for b in sorted(range(len(lengths)), key=lambda b: lengths[b]):
        if not out or lengths[b] > ratio * lengths[out[-1][0]]:
            out.append([])
        out[-1].append(b)
    return out


def chunks(indices: Sequence[int], items: Sequence[Encoded], size: int, max_targets: int | None = None) -> list[list[int]]:
    """Split record indices into micro-batches of at most `size` records, grouped by length to waste little
    padding; with `max_targets`, a micro-batch also closes before its target tokens would pass that many (a
    full-vocabulary pass holds [targets, V] logits; one record alone may pass it).

    >>> items = [Encoded("k", (1,), (2,) * n) for n in (3, 1, 2, 5)]
    >>> chunks(range(4), items, 3), chunks(range(4), items, 3, max_targets=6)
    ([[1, 2, 0], [3]], [[1, 2, 0], [3]])
    >>> chunks(range(4), items, 4, max_targets=5)
    [[1, 2], [0], [3]]
    """
    order = sorted(indices, key=lambda i: len(items[i].ids))
    out: list[list[int]] = []
    n_targets = 0
    for i in order:
        k = len(items[i].targets)
        if not out or len(out[-1]) >= size or (max_targets is not None and n_targets + k > max_targets):
            out.append([])
            n_targets = 0
        out[-1].append(i)
        n_targets += k
    return out
