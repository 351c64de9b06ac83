"""Key -> value records: the unit of memory, and the JSONL files that hold them.

A record is a key (the prompt) and a value that must come back verbatim. Values are text, or token ids for targets
that do not survive a decode -> encode round trip (random-token stress tests). Files are JSONL, one object a line,
with `key`/`value`; the paper's field names (`query`/`target`, `question`/`matching`) are accepted too.

Core layer: may import other core modules only; the memory store, checks, research tools, integrations and the CLI build on it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from memft.errors import RecordsError

# Largest key and value accepted, in characters: room for the paper's long-context stress records (~30k tokens,
# up to ~400k characters at 80 % noise), and far below what makes a tokenizer run out of memory (a 50 MB value took
# it past 8.8 GB; 1 M characters tokenize in well under 1 GB).
MAX_CHARS = 1_000_000

# (key field, value field) pairs, tried in order: ours first, then the paper's PhoneBook and long-context files.
FIELD_PAIRS = (("key", "value"), ("query", "target"), ("question", "matching"))


@dataclass(frozen=True)
class Record:
    """One memory: `key` is the prompt; exactly one of `value` (text) or `value_ids` (token ids) is set."""

    key: str
    value: str | None = None
    value_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if (self.value is None) == (self.value_ids is None):
            raise ValueError("a Record needs exactly one of `value` (text) or `value_ids` (token ids)")

    @property
    def target(self) -> str | tuple[int, ...]:
        return self.value if self.value is not None else self.value_ids  # type: ignore[return-value]


def _parse_line(obj: object, where: str) -> Record:
    if not isinstance(obj, dict):
        raise RecordsError(f"{where}: expected a JSON object like {{\"key\": \"...\", \"value\": \"...\"}}, got {type(obj).__name__}")
    for kf, vf in FIELD_PAIRS:  # noqa: B007 - the matching pair is used after the loop
        if kf in obj:
            break
    else:
        raise RecordsError(f"{where}: no `key` field (also accepted: `query`, `question`); add the prompt as \"key\"")
    key = obj[kf]
    if not isinstance(key, str) or not key:
        raise RecordsError(f"{where}: `{kf}` must be a non-empty string, got {json.dumps(key)}")
    _check_text(key, f"{where}: `{kf}`", kf)
    if "value_ids" in obj and vf in obj:
        raise RecordsError(f"{where}: key {key!r} has both `value_ids` and `{vf}`; keep one of them")
    if "value_ids" in obj:
        ids = obj["value_ids"]
        if not isinstance(ids, list) or not ids or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
            raise RecordsError(f"{where}: `value_ids` of key {key!r} must be a non-empty list of token ids (integers >= 0)")
        if len(ids) > MAX_CHARS:
            raise RecordsError(f"{where}: `value_ids` of key {key!r} holds more than the {MAX_CHARS} ids memft accepts; split the value")
        return Record(key=key, value_ids=tuple(ids))
    if vf not in obj:
        raise RecordsError(f"{where}: key {key!r} has no `{vf}` field; add the text to remember as \"{vf}\"")
    value = obj[vf]
    # Errors about a value name the file:line, the key and a position, never the value: messages reach logs.
    if isinstance(value, bool) or isinstance(value, (int, float)):
        raise RecordsError(
            f"{where}: `{vf}` of key {key!r} is a JSON number or boolean; quote it as a string "
            f"(\"{vf}\": \"...\"), since numbers lose leading zeros and formatting"
        )
    if not isinstance(value, str):
        raise RecordsError(f"{where}: `{vf}` of key {key!r} must be a string, got {type(value).__name__}")
    if value == "":
        raise RecordsError(f"{where}: `{vf}` of key {key!r} is empty; there is nothing to remember, remove the line")
    _check_text(value, f"{where}: `{vf}` of key {key!r}", vf)
    return Record(key=key, value=value)


def _check_text(text: str, what: str, field_name: str) -> None:
    """Text a tokenizer can take: valid Unicode (no lone surrogates, which JSON's \\ud800 escapes can make) and at
    most MAX_CHARS characters."""
    if len(text) > MAX_CHARS:
        raise RecordsError(f"{what} has more than the {MAX_CHARS} characters memft accepts; split it into several records")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise RecordsError(f"{what} is not valid Unicode (a lone surrogate at character {e.start}); "
                           f"fix the \\u escape in the `{field_name}` text") from None


class DuplicateField(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _unique_fields(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """json.loads' object hook that refuses an object giving one field twice (`{"value": "1", "value": "2"}`
    would otherwise keep the last silently)."""
    out: dict[str, object] = {}
    for k, v in pairs:
        if k in out:
            raise DuplicateField(k)
        out[k] = v
    return out


def parse_records(lines: Sequence[str], source: str = "<records>") -> list[Record]:
    """Parse JSONL text lines into records, checking every rule; `source` names the file in errors."""
    records: list[Record] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}:{n}"
        try:
            obj = json.loads(line, object_pairs_hook=_unique_fields)
        except DuplicateField as e:
            raise RecordsError(f"{where}: the field `{e.name}` appears twice in one object; keep one (JSON readers disagree "
                               "on which one counts)") from None
        except json.JSONDecodeError as e:
            raise RecordsError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); each line must be one JSON object") from None
        records.append(_parse_line(obj, where))
    if not records:
        raise RecordsError(f"{source}: no records; add JSON lines like {{\"key\": \"Alice:\", \"value\": \"555-0100\"}}")
    return dedupe(records, source)


def dedupe(records: Sequence[Record], source: str = "<records>") -> list[Record]:
    """Drop exact repeats; a key given two different values is an error listing every such key."""
    seen: dict[str, Record] = {}
    conflicts: list[str] = []
    for r in records:
        old = seen.get(r.key)
        if old is None:
            seen[r.key] = r
        elif old.target != r.target and r.key not in conflicts:
            conflicts.append(r.key)
    if conflicts:
        shown = ", ".join(repr(k) for k in conflicts[:10]) + (" ..." if len(conflicts) > 10 else "")
        raise RecordsError(f"{source}: {len(conflicts)} key(s) have conflicting values: {shown}; keep one value per key")
    return list(seen.values())


def load_records(path: str | Path) -> list[Record]:
    """Read and validate a JSONL records file (UTF-8). Raises RecordsError with file:line on any problem."""
    p = Path(path)
    if not p.exists():
        raise RecordsError(f"{p}: file not found; give the path of a JSONL file with one {{\"key\", \"value\"}} object per line")
    if p.is_dir():
        raise RecordsError(f"{p}: is a folder, not a JSONL records file")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise RecordsError(f"{p}:{line}: bytes that are not UTF-8 (offset {e.start}); save the file as UTF-8") from None
    # split on "\n" only: str.splitlines() would also cut at U+2028 etc., which JSON strings may hold raw.
    return parse_records(text.lstrip("\ufeff").split("\n"), str(p))


def write_records(records: Iterable[Record], path: str | Path) -> None:
    """Write records as JSONL (the inverse of load_records)."""
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            obj = {"key": r.key, "value": r.value} if r.value is not None else {"key": r.key, "value_ids": list(r.value_ids or ())}
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")


def check_key(key: object, where: str = "key") -> str:
    """A key the model can be asked: a non-empty string that is valid Unicode (UTF-8 encodable)."""
    if not isinstance(key, str) or not key:
        raise RecordsError(f"{where}: the key is empty; give the key to recall, e.g. 'Alice Smith:'")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as e:
        raise RecordsError(f"{where}: the key {key!r} is not valid Unicode (character {e.start} cannot be encoded as UTF-8); "
                           "give it as UTF-8 text") from None
    return key
