"""The "null" LoRA init (TrainConfig.lora_init="null"): a fresh adapter's A confined to the directions its modules'
inputs on general text barely use, so that an always-on adapter leaves that text nearly alone (issue 24).

For each adapted module: the uncentered second moment of its inputs over windows of general text (the preservation
text, memft.training.preserve.default_text: Python docstrings, a different source from the audit's held-out pydoc
topics, so `memft audit` measures text the init never saw) and over the records' target-predicting positions; A's
rows are memft.model.lora_init.null_rows of the two ("null": the text's least-used directions; "null-contrast": the
least text energy per unit of the records'). B stays zero, so training starts from the base exactly.

Core layer (training).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from memft.model import lora_init
from memft.model.forward import Runner
from memft.prompts.encoding import Encoded, text_ids
from memft.training import preserve

INITS = {"null": False, "null-contrast": True}  # TrainConfig.lora_init -> null_rows(contrast=...)
# Text positions whose inputs make the second moment: the smallest eigenvalues of a sample second moment sit below
# the true ones when the sample is not many times the dimension (the MLP's down projection reads 1,536 dims on
# SmolLM2), so this takes many more positions than the preservation term's pool.
WINDOWS = 128
WINDOW_TOKENS = 128


@dataclass(frozen=True)
class NullReport:
    """What the init did, per module name: text_to_records = mean over A's rows of E_text[(row . x)^2] /
    E_records[(row . x)^2] (how strongly general text still drives the adapter compared with the records it is
    trained on; ~1 for an init that ignores the text); positions of text and records the moments came from."""

    text_to_records: dict[str, float]
    text_positions: int
    record_positions: int


def text_items(tokenizer: object, windows: int = WINDOWS, window: int = WINDOW_TOKENS) -> list[Encoded]:
    """Windows of the preservation text as records (first token the prompt, the rest targets), so that a Runner
    feeds every position that predicts a next token."""
    source = "the default preservation text"
    ws = preserve.windows_of(text_ids(preserve.default_text(), tokenizer, source), window=window, n=windows, source=source)
    return [Encoded(key=f"text-{i}", prompt=(w[0],), targets=tuple(w[1:])) for i, w in enumerate(ws)]


@torch.no_grad()
def moments_of(model: nn.Module, items: Sequence[Encoded], pad_id: int, start: int, batch: int = 16) -> dict[str, lora_init.Moments]:
    """Each LoRA layer's input moments at the target-predicting positions of `items`."""
    runner = Runner(model, items, pad_id, start=start)
    with lora_init.capture_inputs(model, runner) as moments:
        for s in range(0, len(items), batch):
            runner.logits(list(range(s, min(s + batch, len(items)))))
    return moments


@torch.no_grad()
def apply_null(model: nn.Module, tokenizer: object, items: Sequence[Encoded], start: int,
               text: Sequence[Encoded] | None = None, contrast: bool = False) -> NullReport:
    """Set every LoRA layer's A to null_rows(its inputs on `text` (default: text_items), on the records `items`)."""
    pad = tokenizer.pad_token_id
    mt = moments_of(model, text if text is not None else text_items(tokenizer), pad, start)
    mr = moments_of(model, items, pad, start)
    mods, ratio = lora_init.lora_layers(model), {}
    for name, mod in mods.items():
        a = mod.lora_A["default"].weight
        rows = lora_init.null_rows(mt[name], mr[name], a, contrast)
        a.copy_(rows)
        r = rows.double()
        on_text = (r @ lora_init.second_moment(mt[name]) * r).sum(1)
        on_records = (r @ lora_init.second_moment(mr[name]) * r).sum(1)
        ratio[name] = float((on_text / on_records.clamp_min(1e-300)).mean())
    n_text, n_rec = (next(iter(m.values())).n if m else 0 for m in (mt, mr))
    return NullReport(ratio, n_text, n_rec)
