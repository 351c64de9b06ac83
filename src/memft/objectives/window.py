"""The spatial window (MemFT-SW's intra-record part): per-token weights around each record's first argmax error.

Pure functions of detached tensors (torch imported inside) and of a `state` dict that persists across steps.
Notation: L_t [N] detached losses, p_t = exp(-L_t); anchor a = a record's first offset whose target is not the
argmax; d = t - a; W the `window` option and W_cur = factor * W the current window of a record.
Two rules: "reference" (the paper's code, memft-sw) and "v01" (memft 0.1, memft-sw-v01).

Core layer: may import other core modules only; the memory store, checks, research tools, integrations and the CLI build on it.
"""

from __future__ import annotations

from typing import Any

from memft.certify.metrics import L_CRIT  # the loss of a token with p = 0.5, defined once
RULES = ("reference", "v01")


def sw_base(loss: Any, s: float) -> Any:
    """Soft-threshold base weights b_t = sigmoid(s * (L_t - ln 2)) [N] from detached losses L_t [N]: 0.5 at p = 0.5,
    -> 1 for failing tokens, -> 0 for confident ones. With s = 1, b_t = 1 / (1 + 2 p_t)."""
    import torch

    return torch.sigmoid(s * (loss - L_CRIT))


def window_weights(base: Any, d: Any, width: Any, tau: float, floor: float) -> Any:
    """The reference's spatial-window weights [N] of tokens of records with an error (memft-sw).

    base [N] b_t; d [N] t - a, the token's offset minus its record's anchor (first argmax error); width [N] W_cur of
    its record. Positions a .. a + W_cur - 1 are the window (relative position < W_cur):
        w_t = b_t                   for d < 0             (before the anchor: decay 1)
        w_t = b_t * exp(-d / tau)   for 0 <= d < W_cur    (the window)
        w_t = b_t * floor           for d >= W_cur        (past the window)
    """
    import torch

    dd = d.to(base.dtype)
    inside = base * torch.exp(-dd / tau)
    return torch.where(d < 0, base, torch.where(dd < width, inside, base * floor))


def window_weights_v01(base: Any, d: Any, width: Any, tau: float, floor: float) -> Any:
    """memft 0.1's spatial-window weights [N] (memft-sw-v01), same arguments as window_weights:
        w_t = b_t * exp(-d / tau)   for 0 <= d <= W_cur   (a .. a + W_cur, both ends)
        w_t = floor                 elsewhere             (a constant, not scaled by b_t)
    """
    import torch

    dd = d.to(base.dtype)
    inside = (d >= 0) & (dd <= width)
    return torch.where(inside, base * torch.exp(-dd / tau), torch.full_like(base, float(floor)))


def stuck_count(prev_anchor: int | None, count: int, anchor: int) -> int:
    """Consecutive observations of a record with an unchanged anchor: count + 1 when `anchor` equals the previous
    observation's, else 0 (a first observation, prev_anchor None, gives 0). Anchors 3, 3, 3, 3, 5 -> 0, 1, 2, 3, 0."""
    return count + 1 if anchor == prev_anchor else 0


def grow_factor(count: int, factor: float, patience: int, grow: float, cap: float) -> float:
    """The reference's window factor after an observation with stuck count `count` (W_cur = factor * W):
    min(factor + grow, cap) when count >= patience, else 1. With patience 3, grow 0.5, cap 4 and one anchor the
    factors are 1, 1, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4: it grows at every observation from the fourth on."""
    return min(factor + grow, cap) if count >= patience else 1.0


def grow_factor_v01(count: int, factor: float, patience: int, grow: float, cap: float) -> tuple[int, float]:
    """memft 0.1's rule: (count, factor) after an observation; when count reaches patience the factor grows once,
    min(factor + grow, cap), and count restarts at 0. One anchor: 1, 1, 1, 1.5, 1.5, 1.5, 2, ... (every third)."""
    return (0, min(factor + grow, cap)) if count == patience else (count, factor)


def factors(records: list[int], anchors: list[int], active: list[bool], state: dict, rule: str, patience: int, grow: float, cap: float) -> list[float]:
    """The window factor of each record this step (0 where unused); updates state["sw_windows"] {record: [anchor, count, factor]}.

    An observation is a step in which the record is in the batch, active and has an error (anchor >= 0). A record
    outside the curriculum is not trained, so its window does not age; a certified record drops its entry.
    """
    track: dict[int, list] = state.setdefault("sw_windows", {})
    out = []
    for r, a, on in zip(records, anchors, active):
        if not on or a < 0:
            if on:
                track.pop(r, None)
            out.append(0.0)
            continue
        prev, count, factor = track.get(r, (None, 0, 1.0))
        count = stuck_count(prev, count, a)
        if rule == "reference":
            factor = grow_factor(count, factor, patience, grow, cap)
        else:
            factor = 1.0 if count == 0 else factor
            count, factor = grow_factor_v01(count, factor, patience, grow, cap)
        track[r] = [a, count, factor]
        out.append(factor)
    return out
