"""Records -> token ids, with the key (prompt) and the value (target) tokenized separately.

Layout of one sequence:  [prompt ids] [value ids] [eos]
A keyed adapter's prompt is built from its invocation text followed by the key (memft.prompts.keyed), everywhere.
The targets are the value ids plus the end-of-sequence token, so greedy recall stops exactly after the value.
Everything that is measured (loss, lengths, accuracies) covers targets only; `n_value` excludes the eos.

Core layer: may import other core modules only; the memory store, checks, research tools, integrations and the CLI build on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from memft.errors import ConfigError, RecordsError
from memft.prompts.records import Record


@dataclass(frozen=True)
class Encoded:
    """One record as token ids: `prompt` then `targets` (= value ids + eos)."""

    key: str
    prompt: tuple[int, ...]
    targets: tuple[int, ...]

    @property
    def n_value(self) -> int:
        """Answer length ℓ in tokens, without the trailing eos."""
        return len(self.targets) - 1

    @property
    def ids(self) -> tuple[int, ...]:
        return self.prompt + self.targets


def prompt_ids(key: str, tokenizer: Any, template: str, invocation: str = "") -> tuple[int, ...]:
    """The exact prefix that recall feeds the model for `key` (training uses the same function: train/recall parity).
    `invocation`: a keyed adapter's invocation text, put right before the key (inside the user turn for chat)."""
    key = invocation + key
    if template == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise RecordsError("--template chat: this model's tokenizer has no chat template; use --template raw")
        out = tokenizer.apply_chat_template([{"role": "user", "content": key}], add_generation_prompt=True, tokenize=True)
        ids = out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out
        return tuple(int(i) for i in ids)
    return tuple(tokenizer(key, add_special_tokens=True)["input_ids"])


def value_ids(record: Record, tokenizer: Any) -> tuple[int, ...]:
    """Token ids of the value; text values must survive tokenize -> decode unchanged (else recall could not match)."""
    if record.value_ids is not None:
        bad = [pos for pos, i in enumerate(record.value_ids) if i >= len(tokenizer)]
        if bad:  # positions, never the ids: they are the value
            raise RecordsError(f"record {record.key!r}: value_ids at position(s) {bad[:3]} are outside the vocabulary "
                               f"(size {len(tokenizer)}); give ids below {len(tokenizer)}")
        return record.value_ids
    ids = tuple(tokenizer(record.value, add_special_tokens=False)["input_ids"])
    back = tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)
    if back != record.value:
        # the key and a character offset only: error messages end up in logs, and the value is the secret
        at = next((i for i, (a, b) in enumerate(zip(record.value, back)) if a != b), min(len(record.value), len(back)))
        raise RecordsError(
            f"record {record.key!r}: its value does not survive tokenize -> decode with this tokenizer (it first changes "
            f"at character {at}); remove or replace the character there"
        )
    return ids


def encode(record: Record, tokenizer: Any, template: str = "raw", invocation: str = "") -> Encoded:
    ids = value_ids(record, tokenizer)
    prompt = prompt_ids(record.key, tokenizer, template, invocation)
    if not prompt:
        raise RecordsError(f"record {record.key!r}: the key encodes to no tokens; use a non-empty key")
    return Encoded(key=record.key, prompt=prompt, targets=ids + (int(tokenizer.eos_token_id),))


def encode_all(records: Sequence[Record], tokenizer: Any, template: str = "raw", invocation: str = "") -> list[Encoded]:
    return [encode(r, tokenizer, template, invocation) for r in records]


def decode_value(ids: Sequence[int], tokenizer: Any) -> str:
    """Generated ids -> the recalled text, cut at the first eos."""
    ids = list(ids)
    eos = tokenizer.eos_token_id
    if eos in ids:
        ids = ids[: ids.index(eos)]
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def target_conflicts(items: Sequence[Encoded]) -> tuple[str, str, int] | None:
    """Two records that greedy decoding can never both give back: after the very same token sequence they need
    different next tokens (e.g. "Bob:" -> " 1" and "Bob: " -> "2" with a byte tokenizer). -> (first key, second key,
    value position in the second) for the first such pair, or None.

    A trie over every record's ids: each node is a context; a target position stores the token it requires there.
    Prompt positions require nothing (they are given, not generated). Exact, and linear in the total ids.

    >>> E = lambda k, p, t: Encoded(k, p, t)
    >>> target_conflicts([E("a", (1, 2), (3, 0)), E("b", (1, 2, 7), (4, 0))]), target_conflicts([E("a", (1, 2), (3, 0)), E("b", (1,), (2, 5, 0))])
    (None, ('a', 'b', 1))
    """
    need = -1  # trie slot for the required token (token ids are >= 0)
    root: dict[int, Any] = {}
    for e in items:
        node = root
        for j, t in enumerate(e.ids):
            if j >= len(e.prompt):
                have = node.setdefault(need, (t, e.key))
                if have[0] != t:
                    return have[1], e.key, j - len(e.prompt)
            node = node.setdefault(t, {})
    return None


def text_ids(text: str, tokenizer: Any, source: str = "text") -> list[int]:
    """`text` tokenized as a value is (add_special_tokens=False); special tokens inside it are an error.

    A special token in a target (say a literal "<|im_end|>" that the tokenizer reads as eos) would end recall early.
    """
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    special = set(tokenizer.all_special_ids)
    bad = sorted({i for i in ids if i in special})
    if bad:
        names = ", ".join(repr(t) for t in tokenizer.convert_ids_to_tokens(bad))
        raise ConfigError(f"{source}: contains {names}, which this tokenizer reads as special tokens; remove them from the text")
    return ids
