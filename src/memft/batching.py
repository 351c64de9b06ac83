"""Encoded records -> padded tensors, and the index of every target token in them.

Sequences are right-padded: real tokens keep positions 0..n-1, so hidden states of real tokens do not depend on the
padding (which is what lets the frozen-prefix cache store them per record).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from memft.encoding import Encoded


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


def collate(items: Sequence[Encoded], pad_id: int) -> Batch:
    T = max(len(e.ids) for e in items)
    B = len(items)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    rows, cols, targets, offset = [], [], [], []
    for b, e in enumerate(items):
        n = len(e.ids)
        input_ids[b, :n] = torch.tensor(e.ids)
        mask[b, :n] = 1
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


def chunks(indices: Sequence[int], items: Sequence[Encoded], size: int) -> list[list[int]]:
    """Split record indices into micro-batches of at most `size`, grouped by length to waste little padding."""
    order = sorted(indices, key=lambda i: len(items[i].ids))
    return [order[i : i + size] for i in range(0, len(order), size)]
