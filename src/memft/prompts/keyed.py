"""Keyed activation: an adapter that acts only from an invocation token sequence on (PEFT's activated LoRA).

PEFT (`LoraConfig(alora_invocation_tokens=..., task_type="CAUSAL_LM")`) applies such an adapter, in every adapted
layer, only at positions from the start of the *last* occurrence of the invocation tokens to the end; every earlier
position, and every position of a text without them, is computed by the unchanged base. `PeftModel.forward` and
`.generate` find that start themselves and pass it to the LoRA layers as `alora_offsets` (counted back from the end
of the padded row: offset = T - start). memft also runs the decoder layers directly (the frozen-prefix cache of
memft.model.forward, the greedy loop of memft.certify.decode); `activated` gives their LoRA layers the same offsets, so those paths
compute exactly what plain PEFT computes.

memft puts the invocation text before every key (memft.prompts.encoding.prompt_ids), so training, certification, recall and
deployment see one prompt. `invocation_ids` refuses an invocation whose tokens change with the text before it;
`placement_problems` (memft.prompts.parity) refuses a record whose value would move the activation start.

Core layer. May import: config, errors; torch and peft inside the functions that need them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

from memft.errors import ConfigError

# Texts that may precede the invocation in a deployed prompt (nothing, a space, a line, a word, a sentence, a
# label); its tokens must be the same after each of them, so that PEFT finds the sequence wherever a caller puts it.
CONTEXTS = ("", " ", "\n", "x", "Hello. ", "Q:", "1", "(")


def invocation_ids(invocation: str, tokenizer: Any) -> tuple[int, ...]:
    """The token ids of `invocation` (no special tokens), checked to come out the same after every text of CONTEXTS;
    ConfigError otherwise, saying which context splits it differently."""
    ids = tuple(int(i) for i in tokenizer(invocation, add_special_tokens=False)["input_ids"])
    if not ids:
        raise ConfigError(f"--invocation {invocation!r} encodes to no tokens; give a visible text such as ' <mem>'")
    for ctx in CONTEXTS:
        seq = tokenizer(ctx + invocation + "x", add_special_tokens=False)["input_ids"]
        if last_start(seq, ids) is None:
            raise ConfigError(f"--invocation {invocation!r}: its tokens {list(ids)} change after the text {ctx!r} (the tokenizer merges them "
                              "with what comes before), so a caller could not invoke the adapter reliably; choose another, e.g. "
                              "one that starts with a space such as ' <mem>'")
    return ids


def last_start(seq: Sequence[int], sub: Sequence[int]) -> int | None:
    """Index where the last occurrence of `sub` starts in `seq` (None: it does not occur). PEFT activates from there.

    >>> last_start([1, 7, 8, 2, 7, 8], [7, 8]), last_start([7, 1, 8], [7, 8]), last_start([7], [7, 8])
    (4, None, None)
    """
    seq, sub = list(seq), list(sub)
    n = len(sub)
    for s in range(len(seq) - n, -1, -1):
        if seq[s:s + n] == sub:
            return s
    return None


def offsets(input_ids: Any, tokens: Sequence[int]) -> list[int | None]:
    """PEFT's `alora_offsets` for a padded batch input_ids [B, T]: T - (start of the last invocation) per row, None
    where a row holds none (the adapter stays off there). Padding on either side gives the same positions.

    >>> import torch
    >>> offsets(torch.tensor([[5, 7, 8, 9, 0], [5, 6, 6, 6, 6]]), [7, 8])
    [4, None]
    """
    T = input_ids.shape[1]
    out: list[int | None] = []
    for row in input_ids.tolist():
        s = last_start(row, tokens)
        out.append(None if s is None else T - s)
    return out


def invocation_of(model: Any) -> tuple[int, ...] | None:
    """The invocation tokens of the active adapter of a PEFT model (or of the causal LM it wraps), None for an
    always-on adapter or a plain model."""
    cfgs = getattr(model, "peft_config", None)
    if not isinstance(cfgs, dict) or not cfgs:
        return None
    name = getattr(model, "active_adapter", None)
    cfg = cfgs.get(name) if isinstance(name, str) and name in cfgs else next(iter(cfgs.values()))
    tokens = getattr(cfg, "alora_invocation_tokens", None)
    return tuple(int(t) for t in tokens) if tokens else None


def _set_offsets(_module: Any, args: tuple, kwargs: dict, alora_offsets: list[int | None]) -> tuple[tuple, dict]:
    kwargs["alora_offsets"] = alora_offsets
    return args, kwargs


@contextmanager
def activated(model: Any, input_ids: Any) -> Iterator[list[int | None] | None]:
    """While inside, every LoRA layer of a keyed `model` gets the offsets of `input_ids` [B, T] (as PeftModel.forward
    would pass them), for forwards that call the decoder layers directly. Later calls on the same rows with fewer
    positions (a KV-cache step) keep them: PEFT clips an offset to the positions present, so new tokens are adapted.
    A no-op (yields None) for an always-on adapter or a plain model."""
    tokens = invocation_of(model)
    if tokens is None:
        yield None
        return
    from peft.tuners.lora import LoraLayer

    offs = offsets(input_ids, tokens)
    hook = partial(_set_offsets, alora_offsets=offs)
    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in model.modules() if isinstance(m, LoraLayer)]
    try:
        yield offs
    finally:
        for h in handles:
            h.remove()
