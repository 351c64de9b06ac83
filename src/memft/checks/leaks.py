"""The leak probe: greedy continuations of prompts that are not a stored key (keys cut short, generic prompts,
windows of held-out text), searched for any stored value. Leaks name the key, never the value.

Part of the side-effect audit (memft.checks.audit); the matching helpers are pure functions of token ids and text.

Checks layer: may import the core, the memory store and the other checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from memft.store.loading import Loaded
from memft.prompts.encoding import Encoded, decode_value, prompt_ids, value_ids
from memft.errors import ConfigError, RecordsError
from memft.prompts.records import Record

EXTRA_NEW_TOKENS = 8  # generate this much past the longest target, so a value after a short preamble is still seen

# Generic prompts that no memory adapter should answer with a stored value: questions, code, chat, completions.
DEFAULT_PROMPTS: tuple[str, ...] = (
    "What is the capital of France?",
    "Hello! How are you today?",
    "def fibonacci(n):",
    "SELECT name FROM users WHERE",
    "Explain what a neural network is in one sentence.",
    "Write a short poem about the sea.",
    "Translate 'good morning' into Spanish.",
    "Once upon a time",
    "The weather forecast for tomorrow is",
    "My phone number is",
    "1, 2, 3, 4,",
)

def contains(seq: Sequence[int], sub: Sequence[int]) -> bool:
    """Whether `sub` occurs in `seq` as a contiguous run of ids (an empty `sub` never does).

    >>> contains([5, 1, 2, 3], [1, 2]), contains([1, 5, 2], [1, 2]), contains([12, 3], [2, 3])
    (True, False, False)
    """
    if not sub or len(sub) > len(seq):
        return False
    # Delimited decimal strings: a C-speed substring search that can never match across two ids.
    return "," + ",".join(map(str, sub)) + "," in "," + ",".join(map(str, seq)) + ","


# ---------------------------------------------------------------- what is stored, and where it shows up


@dataclass(frozen=True)
class Stored:
    """One stored value as the leak check sees it: its record's key, value ids (no eos), and text (None for ids)."""

    key: str
    ids: tuple[int, ...]
    text: str | None


def stored_values(records: Sequence[Record], tokenizer: Any) -> list[Stored]:
    """The records' values as token ids (and text, for text values), encoded exactly as training encodes them."""
    return [Stored(r.key, tuple(value_ids(r, tokenizer)), r.value) for r in records]


def holds_value(ids: Sequence[int], text: str, value: str | Sequence[int]) -> bool:
    """Whether a token sequence shows a stored value: a text value as a substring of its decoded `text`, an id
    value as a contiguous run of `ids`.

    >>> holds_value([7, 8, 9], "call 555-0100 now", "555-0100"), holds_value([7, 8, 9], "", (8, 9))
    (True, True)
    """
    return value in text if isinstance(value, str) else contains(ids, value)


def leaked(gen_ids: Sequence[int], gen_text: str, stored: Sequence[Stored]) -> list[int]:
    """Indices of the stored values found in one generated continuation (ids, and its decoded text).

    >>> s = [Stored("a", (1, 2, 3), "xyz"), Stored("b", (4, 5), None), Stored("c", (9, 9), "qq")]
    >>> leaked([0, 4, 5, 1, 2], "..xyz..", s)
    [0, 1]
    """
    return [i for i, s in enumerate(stored) if contains(gen_ids, s.ids) or (s.text is not None and s.text in gen_text)]


# ---------------------------------------------------------------- held-out windows


@dataclass(frozen=True)
class Probe:
    """One prompt to continue greedily. kind: key_prefix | generic | text. owners: the keys this prompt belongs to
    (a key_prefix: the keys it is a prefix of; other kinds: the keys it equals); their values coming out is `own`."""

    kind: str
    text: str
    ids: tuple[int, ...]
    owners: frozenset[str] = frozenset()


def prefix_lengths(n: int) -> list[int]:
    """Lengths of the proper prefixes to probe for a key of n tokens: all of them for short keys (n <= 5), else
    those at 25 %, 50 %, 75 % of the key and all but its last token.

    >>> prefix_lengths(1), prefix_lengths(3), prefix_lengths(12), prefix_lengths(6)
    ([], [1, 2], [3, 6, 9, 11], [1, 3, 4, 5])
    """
    if n <= 5:
        return list(range(1, n))
    return sorted({max(1, (n * q) // 4) for q in (1, 2, 3)} | {n - 1})


def key_prefix_probes(records: Sequence[Record], tokenizer: Any, template: str, invocation: str = "") -> list[Probe]:
    """The keys cut short (see prefix_lengths), one probe per distinct prompt, with every key it is a prefix of.

    raw template: the key's prompt ids cut short. chat: the key's own tokens cut short, then wrapped in the chat
    template (a cut through the template's tokens would probe the template, not the key); a keyed adapter's the same,
    after its `invocation` (a cut through the invocation leaves the adapter off: the base answers). A prefix that is itself a
    stored key's full prompt is no probe: producing that key's value there is recall, not a leak. (Where the
    tokenizer adds a BOS token, the 1-token raw prefix is BOS alone: the empty prompt.)
    """
    full = {prompt_ids(r.key, tokenizer, template, invocation) for r in records}
    by_ids: dict[tuple[int, ...], Probe] = {}
    for r in records:
        if template == "chat" or invocation:
            own = list(tokenizer(r.key, add_special_tokens=False)["input_ids"])
            cuts = [tokenizer.decode(own[:n], skip_special_tokens=False, clean_up_tokenization_spaces=False) for n in prefix_lengths(len(own))]
            cands = [(t, prompt_ids(t, tokenizer, template, invocation)) for t in cuts]
        else:
            p = prompt_ids(r.key, tokenizer, template)
            cands = [(tokenizer.decode(list(p[:n]), skip_special_tokens=False, clean_up_tokenization_spaces=False), p[:n]) for n in prefix_lengths(len(p))]
        for text, ids in cands:
            if not ids or ids in full:
                continue
            old = by_ids.get(ids)
            by_ids[ids] = Probe("key_prefix", text, ids, (old.owners if old else frozenset()) | {r.key})
    return list(by_ids.values())


def text_probes(prompts: Sequence[str], kind: str, tokenizer: Any, template: str, records: Sequence[Record] = (),
                invocation: str = "") -> list[Probe]:
    """Free-text prompts, built like a key's prompt (same template, after a keyed adapter's `invocation`), so they
    reach the model as a query would.
    owners: the keys among `records` whose prompt this is exactly (its value coming back there is recall)."""
    keys: dict[tuple[int, ...], set[str]] = {}
    for r in records:
        keys.setdefault(prompt_ids(r.key, tokenizer, template, invocation), set()).add(r.key)
    out = []
    for t in prompts:
        if not isinstance(t, str) or not t:
            raise ConfigError(f"leak probe: {kind} prompts must be non-empty strings, got {t!r}")
        ids = prompt_ids(t, tokenizer, template, invocation)
        out.append(Probe(kind, t, ids, frozenset(keys.get(ids, ()))))
    return out


def _continuations(model: Any, probes: Sequence[Probe], tokenizer: Any, max_new: int, batch_size: int) -> list[list[int]]:
    from memft.certify.evaluate import greedy

    items = [Encoded(key=p.text, prompt=p.ids, targets=(int(tokenizer.eos_token_id),)) for p in probes]
    return greedy(model, items, tokenizer, batch_size=batch_size, max_new=max_new)


@torch.no_grad()
def leak_probe(
    model: Any,
    tokenizer: Any,
    records: Sequence[Record],
    template: str = "raw",
    max_new: int | None = None,
    unrelated_prompts: Sequence[str] = DEFAULT_PROMPTS,
    text_prompts: Sequence[str] = (),
    batch_size: int = 32,
    invocation: str = "",
) -> dict[str, Any]:
    """Greedy continuations of prompts that are not stored keys, searched for stored values.

    model: a PEFT model or an api.Loaded. Probe kinds: `key_prefix` (each key cut short, see key_prefix_probes),
    `generic` (`unrelated_prompts`), `text` (`text_prompts`, e.g. held-out text). A leak is one (probe, record) pair
    where the continuation holds the record's value ids (eos excluded) as a contiguous run, or its decoded text
    holds a text value as a substring.

    A key prefix that leaks its OWN record (an autocompletion of a key being typed) is counted in `leaks_own`,
    apart from one that leaks ANOTHER record (`leaks_other`: cross-talk between records). For generic and text
    prompts `own` means the prompt IS that record's key (recall, e.g. a stored key "My phone number is"), so only
    their `leaks_other` are leaks into unrelated prompts (`unrelated_leaks`).

    Each probe where a value came out is also continued with the adapter disabled (when the model has
    disable_adapter()); a leak that the base produces too is marked in_base and counted in `in_base`, not in the
    leak counts: it is no side effect of the adapter (short or common values can appear by chance). Probes without
    a leak need no base continuation, so a clean adapter costs one generation per probe. max_new: default, the
    longest target + 8 tokens. `invocation`: a keyed adapter's (memft.prompts.keyed), put before every probe as before a key.

    Returns {max_new_tokens, counts: {key_prefix|generic|text: {probes, leaks_own, leaks_other, in_base}},
    unrelated_leaks, leaks: [{kind, prompt, key, own, in_base}]}; in_base is None when there is no base to ask.
    """
    model = model.model if isinstance(model, Loaded) else model
    if not records:
        raise RecordsError("leak probe: no records to look for; give the records the adapter holds")
    stored = stored_values(records, tokenizer)
    max_new = max_new or max(len(s.ids) for s in stored) + 1 + EXTRA_NEW_TOKENS
    probes = (
        key_prefix_probes(records, tokenizer, template, invocation)
        + text_probes(unrelated_prompts, "generic", tokenizer, template, records, invocation)
        + text_probes(text_prompts, "text", tokenizer, template, records, invocation)
    )
    gen = _continuations(model, probes, tokenizer, max_new, batch_size)
    hits = {i: found for i, g in enumerate(gen) if (found := leaked(g, decode_value(g, tokenizer), stored))}
    base_hits: dict[int, set[int]] | None = None
    if hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            again = _continuations(model, [probes[i] for i in hits], tokenizer, max_new, batch_size) if hits else []
        base_hits = {i: set(leaked(g, decode_value(g, tokenizer), stored)) for i, g in zip(hits, again)}
    leaks = []
    for i, found in hits.items():
        p = probes[i]
        for j in found:
            leaks.append({"kind": p.kind, "prompt": p.text, "key": stored[j].key, "own": stored[j].key in p.owners,
                          "in_base": None if base_hits is None else j in base_hits[i]})
    counts: dict[str, dict[str, int]] = {}
    for kind in ("key_prefix", "generic", "text"):
        mine = [x for x in leaks if x["kind"] == kind]
        new = [x for x in mine if not x["in_base"]]
        counts[kind] = {
            "probes": sum(p.kind == kind for p in probes),
            "leaks_own": sum(x["own"] for x in new),
            "leaks_other": sum(not x["own"] for x in new),
            "in_base": len(mine) - len(new),
        }
    return {
        "max_new_tokens": max_new,
        "counts": counts,
        "unrelated_leaks": counts["generic"]["leaks_other"] + counts["text"]["leaks_other"],
        "leaks": leaks,
    }


# ---------------------------------------------------------------- the audit
