"""Long-context stress test: one prompt -> one target of exactly ℓ tokens, natural text with a fraction ρ made random.

The target is a window of `length` consecutive tokens of a natural text; then round(ρ·ℓ) of its positions are
replaced by random non-special vocabulary tokens. ρ = 0 is plain text, ρ = 1 pure random tokens. Targets are token
ids (`Record.value_ids`), since random tokens do not survive a decode -> encode round trip.

Default text: CPython's `pydoc_data.topics` (the English documentation topics, shipped with every Python), so no
download is needed; it changes between Python versions, so pass `text` to pin the source exactly.

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Collection
from pathlib import Path
from typing import Any

from memft.prompts.heldout import default_text  # noqa: F401 - also this module's (the stress text)
from memft.prompts.encoding import text_ids  # noqa: F401 - also this module's: the stress targets are text_ids of natural text
from memft.errors import ConfigError
from memft.prompts.records import Record, load_records

DEFAULT_PROMPT = "Please output the content of the memory stored in this adapter."


def stress_with_positions(
    length: int,
    ratio: float,
    tokenizer: Any,
    seed: int = 0,
    text: str | None = None,
    prompt: str = DEFAULT_PROMPT,
    exclude: Collection[int] = (),
) -> tuple[Record, list[int]]:
    """The stress record (see `stress`) and the sorted positions in [0, length) whose tokens were replaced.

    `exclude`: token ids never drawn as random tokens (memft.model.base.unreachable_tokens: ids that greedy decoding
    cannot produce with a given model). They are rejected and redrawn, so a record that drew none of them is
    the same with or without `exclude`."""
    if length <= 0:
        raise ConfigError(f"stress: length must be a positive number of tokens, got {length}")
    if not 0.0 <= ratio <= 1.0:
        raise ConfigError(f"stress: ratio is the fraction of tokens made random, in [0, 1]; got {ratio}")
    if not prompt:
        raise ConfigError("stress: the prompt is empty; give a non-empty key prompt")
    source = "the pydoc_data.topics text" if text is None else "the given text"
    ids = text_ids(default_text() if text is None else text, tokenizer, source)
    if len(ids) < length:
        raise ConfigError(f"stress: {source} is {len(ids)} tokens long, shorter than length={length}; give a longer text")

    rng = random.Random(seed)
    # Draw order matters: the window first, then one full permutation of positions, then one token per position in
    # permutation order. So, for one seed, every ρ shares the same text window, and the replaced positions and
    # their tokens at a smaller ρ are a subset of those at a larger ρ (nested noise levels).
    start = rng.randrange(len(ids) - length + 1)
    window = ids[start : start + length]
    order = list(range(length))
    rng.shuffle(order)
    positions = order[: round(ratio * length)]
    vocab = sorted(set(range(len(tokenizer))) - set(tokenizer.all_special_ids))  # non-special ids, ascending
    if len(vocab) < 2:
        raise ConfigError("stress: the tokenizer has fewer than two non-special tokens to draw random tokens from")
    target = list(window)
    for p in positions:
        # Uniform over the non-special tokens other than the original, so every replaced position really changes
        # and the fraction of changed tokens is exactly round(ρ·ℓ)/ℓ. (The original is non-special: text_ids.)
        while True:
            j = rng.randrange(len(vocab) - 1)
            if j >= bisect.bisect_left(vocab, window[p]):
                j += 1
            if vocab[j] not in exclude:
                break
        target[p] = vocab[j]
    return Record(key=prompt, value_ids=tuple(target)), sorted(positions)


def stress(
    length: int,
    ratio: float,
    tokenizer: Any,
    seed: int = 0,
    text: str | None = None,
    prompt: str = DEFAULT_PROMPT,
    exclude: Collection[int] = (),
) -> Record:
    """One record: `prompt` -> `length` token ids of natural text with round(ratio·length) positions made random.

    The text window starts at a seeded token offset of the tokenized `text` (default: `default_text()`); the
    replaced positions are drawn uniformly without replacement, each given a uniformly random non-special token
    that differs from the original.

    >>> from memft.model.base import tiny_tokenizer
    >>> r = stress(8, 0.0, tiny_tokenizer(), text="hello stress test")
    >>> len(r.value_ids), tiny_tokenizer().decode(list(r.value_ids)) in "hello stress test"
    (8, True)
    """
    return stress_with_positions(length, ratio, tokenizer, seed, text, prompt, exclude)[0]


def load_paper_stress(path: str | Path, tokenizer: Any, length: int | None = None) -> Record:
    """The paper's long-context file (`question`/`matching` JSON, first line) as question -> first `length` tokens.

    `matching` is tokenized with `tokenizer` (add_special_tokens=False); `length=None` keeps all its tokens.
    """
    first = load_records(path)[0]
    ids = list(first.value_ids) if first.value_ids is not None else text_ids(first.value or "", tokenizer, str(path))
    if length is not None:
        if length <= 0:
            raise ConfigError(f"load_paper_stress: length must be a positive number of tokens, got {length}")
        if length > len(ids):
            raise ConfigError(f"{path}: the target is {len(ids)} tokens with this tokenizer, fewer than length={length}")
        ids = ids[:length]
    return Record(key=first.key, value_ids=tuple(ids))
