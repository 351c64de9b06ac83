"""Data-aware LoRA init: each adapted module's A from the inputs it sees at the records' target positions.

Why: the inputs of a decoder layer's MLP share a large common component (the mean hidden state, dominated by a few
massive dimensions), and PEFT's random A passes it on to every record alike. Then the gradients that tell one
record's key from another's are small beside a common mode that every batch kicks around, and training sits on the
"digit format" plateau; this init leaves it sooner (benchmarks/README.md, Scale, has the measurements).

"centered" init: the rows of A are the top-r principal directions of the module's inputs after removing their mean
direction, each scaled to unit variance (A x then has mean 0 and covariance I over the records' positions). B stays
zero, so the adapter's output is still zero and training starts from the base model exactly; only the directions
the adapter reads change. It applies to a fresh adapter only (every B zero); a trained one keeps its A. PEFT's EVA
(`peft.initialize_lora_eva_weights`) is the closest library routine, but it takes the uncentered SVD of the
activations (the common component is then its first direction, the one to avoid) and runs the whole model over a
dataloader, where memft already runs just the adapted layers from its frozen-prefix cache.

"null" init (issue 24, always-on locality): the rows of A are the directions in which the module's inputs on general
text have the least energy: the eigenvectors of their uncentered second moment E[x x^T] with the smallest
eigenvalues (the low-variance subspace LoRA-Null and AlphaEdit project onto), each scaled so that the records'
features (row . x) have unit RMS. B·A·x is then small on text like that by construction, while the records still
reach the adapter through whatever energy their inputs have there (null_init.NullReport measures both).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

MIN_VARIANCE = 1e-8  # directions with less variance than this share of the largest keep PEFT's random row
RIDGE = 1e-6  # null_rows(contrast=True): this share of the text's mean energy per dimension is added to every direction


class Moments:
    """Running count, sum and sum of outer products of vectors [*, d], in float64."""

    def __init__(self, d: int):
        self.n = 0
        self.s1 = torch.zeros(d, dtype=torch.float64)
        self.s2 = torch.zeros(d, d, dtype=torch.float64)

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).to("cpu", torch.float64)
        self.n += x.shape[0]
        self.s1 += x.sum(0)
        self.s2 += x.T @ x


def centered_rows(m: Moments, fallback: torch.Tensor) -> torch.Tensor:
    """Rows [r, d]: the top-r principal directions of the inputs with their mean direction removed, scaled so that
    each feature (row . x) has unit variance; where the data has too little variance, fallback's rows (made
    orthogonal to the mean). Pure function of the moments.

    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(4000, 6, generator=g) * torch.tensor([5.0, 3, 1, 1, 1, 1]) + torch.tensor([0, 0, 0, 0, 0, 40.0])
    >>> mo = Moments(6); mo.add(x)
    >>> a = centered_rows(mo, torch.zeros(2, 6))
    >>> feats = x @ a.T  # [4000, 2]: the two widest directions (dims 0 and 1), unit variance, the mean 40 gone
    >>> [round(v, 2) for v in feats.std(0).tolist()], abs(feats.mean(0)).max().item() < 0.2, a.abs().argmax(1).tolist()
    ([1.0, 1.0], True, [0, 1])
    """
    r, d = fallback.shape
    mu = m.s1 / max(m.n, 1)
    cov = m.s2 / max(m.n, 1) - torch.outer(mu, mu)
    u = mu / mu.norm() if float(mu.norm()) > 0 else torch.zeros_like(mu)
    proj = torch.eye(d, dtype=torch.float64) - torch.outer(u, u)
    evals, evecs = torch.linalg.eigh(proj @ cov @ proj)
    evals, evecs = evals.flip(0)[:r], evecs.flip(1)[:, :r].T  # [r], [r, d]: largest first
    rows = fallback.detach().to(torch.float64) @ proj  # orthogonal to the mean, as the data-driven rows are
    usable = torch.isfinite(evals) & (evals > MIN_VARIANCE * max(float(evals[0]) if evals.numel() else 0.0, 0.0)) & (evals > 0)
    k = int(usable.sum())
    rows[:k] = evecs[:k] / evals[:k].sqrt()[:, None]
    return rows.to(fallback.dtype)


def second_moment(m: Moments) -> torch.Tensor:
    """E[x x^T] [d, d] (uncentered), float64; zeros when nothing was added."""
    return m.s2 / max(m.n, 1)


def null_rows(text: Moments, records: Moments, fallback: torch.Tensor, contrast: bool = False) -> torch.Tensor:
    """Rows [r, d] in the directions general text's inputs barely use, each scaled so that the records' features
    (row . x) have unit RMS (a direction where the records have no energy, less than MIN_VARIANCE of their largest,
    keeps unit norm). Pure function of the moments; `fallback` gives the shape and dtype.

    contrast=False: the r eigenvectors of the text's uncentered second moment with the smallest eigenvalues (the
    text's least-used subspace, whatever the records do there), smallest first. contrast=True: the r directions with
    the least text energy per unit of the records' energy (generalized eigenvectors of the two second moments,
    the text's with a RIDGE), least first: the text's null space as far as the records still reach into it.

    >>> x = torch.tensor([[3.0, 0, 0], [0, 2, 0], [-3, 0, 0], [0, -2, 0]])  # text: no energy at all along dim 2
    >>> t = Moments(3); t.add(x)
    >>> rec = Moments(3); rec.add(torch.tensor([[0.0, 0, 4], [0, 0, -4]]))  # records: RMS 4 along dim 2
    >>> a = null_rows(t, rec, torch.zeros(2, 3))
    >>> a.abs().tolist()  # dim 2 (text energy 0), scaled to 1/4; then dim 1 (text 2) where records have no energy
    [[0.0, 0.0, 0.25], [0.0, 1.0, 0.0]]
    >>> rec.add(torch.tensor([[1.0, 0, 0], [0, 1, 0]]))  # records: now some energy along dims 0 and 1 as well
    >>> c = null_rows(t, rec, torch.zeros(2, 3), contrast=True).abs()
    >>> c.argmax(1).tolist(), [round(v, 3) for v in c.max(1).values.tolist()]  # dim 2, then dim 1 (text per records 8 < 18 of dim 0)
    ([2, 1], [0.354, 2.0])
    """
    ct, cr = second_moment(text), second_moment(records)
    r, d = fallback.shape
    if contrast:
        eye = torch.eye(d, dtype=torch.float64)
        low = torch.linalg.cholesky(ct + RIDGE * max(float(ct.trace()) / d, 1e-300) * eye)
        inv = torch.linalg.solve_triangular(low, eye, upper=False)  # L^-1: text energy becomes the identity
        _, w = torch.linalg.eigh(inv @ cr @ inv.T)  # ascending records' energy per unit text energy
        rows = (inv.T @ w[:, -r:]).T.flip(0)  # [r, d], least text per records first
    else:
        _, evecs = torch.linalg.eigh(ct)  # ascending
        rows = evecs[:, :r].T  # [r, d], least text energy first
    rows = rows / rows.norm(dim=1, keepdim=True)
    rec = (rows @ cr * rows).sum(1)  # [r]: records' mean (row . x)^2
    top = float(torch.linalg.eigvalsh(cr)[-1]) if records.n else 0.0
    ok = torch.isfinite(rec) & (rec > MIN_VARIANCE * top) & (rec > 0)
    rows[ok] = rows[ok] / rec[ok].sqrt()[:, None]
    return rows.to(fallback.dtype)


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The PEFT LoRA layers of `model` holding the default adapter, by module name."""
    return {n: m for n, m in model.named_modules() if isinstance(getattr(m, "lora_A", None), nn.ModuleDict) and "default" in m.lora_A}


def is_fresh(model: nn.Module) -> bool:
    """Every B of the default adapter is zero: the adapter's output is zero whatever A is."""
    mods = lora_layers(model)
    return bool(mods) and all(not bool(m.lora_B["default"].weight.any()) for m in mods.values())


@contextmanager
def capture_inputs(model: nn.Module, runner: Any) -> Iterator[dict[str, Moments]]:
    """While open, every LoRA layer's input at the target-predicting positions of the batch `runner` is running
    (`runner.current`, a memft.model.batching.Batch) is added to that layer's Moments."""
    moments: dict[str, Moments] = {}
    hooks = []
    for name, mod in lora_layers(model).items():
        d = mod.lora_A["default"].weight.shape[1]
        moments[name] = Moments(d)

        def hook(_mod: nn.Module, inp: tuple[torch.Tensor, ...], _out: Any, mo: Moments = moments[name]) -> None:
            b = runner.current
            mo.add(inp[0][b.rows, b.cols])  # [N, d]

        hooks.append(mod.register_forward_hook(hook))
    try:
        yield moments
    finally:
        for h in hooks:
            h.remove()


@torch.no_grad()
def apply_centered(model: nn.Module, moments: dict[str, Moments]) -> int:
    """Set each captured layer's A to centered_rows of its inputs; returns the number of layers set."""
    mods = lora_layers(model)
    for name, mo in moments.items():
        if mo.n:
            a = mods[name].lora_A["default"].weight
            a.copy_(centered_rows(mo, a))
    return sum(1 for mo in moments.values() if mo.n)
