"""Train/recall parity: the sequence an adapter is trained on must be exactly what recall feeds and stops at.

Certification proves that greedy decoding from the *training* prefix reproduces the value and then the stop token.
That proof transfers to recall only if recall builds the same prefix (BOS, chat template, system prompt, leading
spaces) and stops at the same token, and if nothing inside the value stops generation early. Checked before any
training, record by record; a problem is a RecordsError naming the record.

Core layer: may import other core modules only; the memory store, checks, research tools, integrations and the CLI build on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from memft.prompts.encoding import Encoded, prompt_ids
from memft.errors import RecordsError
from memft.prompts.keyed import invocation_ids, last_start


def stop_ids(tokenizer: Any, model: Any = None) -> set[int]:
    """Token ids that end generation: the tokenizer's eos, plus the model's generation_config eos ids (what a plain
    `model.generate` stops at)."""
    ids = {int(tokenizer.eos_token_id)}
    gen = getattr(model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None) if gen is not None else None
    if isinstance(extra, int):
        ids.add(extra)
    elif isinstance(extra, Iterable):
        ids.update(int(i) for i in extra)
    return ids


def template_problems(tokenizer: Any, template: str) -> list[str]:
    """Chat templates that render differently at another time (the current date in the system prompt)."""
    src = getattr(tokenizer, "chat_template", None) or ""
    if template == "chat" and "strftime_now" in src:
        return ["the chat template inserts the current date, so recall on another day would see another prompt; use --template raw"]
    return []


def parity_problems(item: Encoded, recall_prompt: Sequence[int], stops: set[int]) -> list[str]:
    """Why recall, feeding `recall_prompt` and stopping at `stops`, would not see `item`'s training sequence.

    >>> parity_problems(Encoded("k", (1, 2), (5, 6, 9)), (1, 2), {9})
    []
    >>> parity_problems(Encoded("k", (1, 2), (5, 9, 6, 9)), (1, 2), {9})[0][:45]
    'its value contains a stop token at position 1'
    >>> parity_problems(Encoded("k", (1, 2), (5, 9)), (7, 1, 2), {9})[0][:60]
    'recall feeds 3 prompt tokens but training used 2, first diff'
    """
    problems = []
    recall = tuple(recall_prompt)
    if recall != tuple(item.prompt):
        n = next((i for i, (a, b) in enumerate(zip(recall, item.prompt)) if a != b), min(len(recall), len(item.prompt)))
        problems.append(
            f"recall feeds {len(recall)} prompt tokens but training used {len(item.prompt)}, first difference at token {n} "
            f"(recall {list(recall[n:n + 3])} vs training {list(item.prompt[n:n + 3])}): check BOS, chat template, system prompt and leading spaces"
        )
    if not item.targets or item.targets[-1] not in stops:
        problems.append(f"its training sequence does not end with a token recall stops at ({sorted(stops)})")
    inner = [i for i, t in enumerate(item.targets[:-1]) if t in stops]
    if inner:
        problems.append(
            f"its value contains a stop token at position {inner[0]}, so recall would end there; "
            "remove it from the value (a literal special token such as the eos text counts)"
        )
    return problems


def keyed_problems(item: Encoded, tokens: Sequence[int]) -> list[str]:
    """Why a keyed adapter would not act on `item` as trained: PEFT activates from the last occurrence of the
    invocation `tokens` in the whole sequence while training (and while certifying), but in the prompt alone while
    generating; the two agree only if that occurrence lies inside the prompt.

    >>> keyed_problems(Encoded("k", (7, 8, 1), (5, 9)), (7, 8))
    []
    >>> keyed_problems(Encoded("k", (7, 1), (8, 9)), (7, 8))[0][:45]
    'its prompt does not hold the invocation token'
    >>> keyed_problems(Encoded("k", (7, 8, 1), (7, 8, 9)), (7, 8))[0][:40]
    'its value holds the invocation tokens [7'
    """
    s = last_start(item.ids, tokens)
    if s is None or last_start(item.prompt, tokens) is None:
        return [f"its prompt does not hold the invocation tokens {list(tokens)} intact (the key's first characters merge with them); "
                "start the key with a space or choose another --invocation"]
    if s + len(tokens) > len(item.prompt):
        return [f"its value holds the invocation tokens {list(tokens)} (or completes them), so the adapter would switch on at another "
                "place while training than while generating; remove them from the value or choose another --invocation"]
    return []


def check_parity(items: Sequence[Encoded], tokenizer: Any, template: str, model: Any = None, invocation: str = "") -> None:
    """Raise RecordsError for the first record whose training sequence recall would not reproduce (with a keyed
    adapter's `invocation`: also where the adapter would not switch on as trained)."""
    problems = template_problems(tokenizer, template)
    if problems:
        raise RecordsError(f"--template {template}: {problems[0]}")
    stops = stop_ids(tokenizer, model)
    tokens = invocation_ids(invocation, tokenizer) if invocation else None
    for item in items:
        problems = parity_problems(item, prompt_ids(item.key, tokenizer, template, invocation), stops)
        if tokens is not None:
            problems += keyed_problems(item, tokens)
        if problems:
            raise RecordsError(f"record {item.key!r}: train/recall parity fails: {problems[0]}")
