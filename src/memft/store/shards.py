"""A memory store of shards: one folder holding `store.json` and standard adapter folders `shard-000`, `shard-001`, …

What bounds one adapter is its capacity and that every rewrite recovers and re-checks every record it holds; a store
bounds both by the shard (README, "Beyond one adapter: shards"). This module holds the layout and the pure rules:
how a write splits records into shards, where an append puts new keys, which shard holds a key. The operations
across shards (write, append, forget, verify, recall) are in memft.memory.sharded and memft.api.

- **Split** (`split`): a write of N records makes ceil(N / shard_size) shards of near-equal size, records taken in
  the order of sha256(key): stable (the same records always give the same shards, whatever their file order) and
  blind to the keys' structure (neighbouring names do not crowd one shard).
- **Routing** is by the shards' ledgers, not by the hash: a key is held by the one shard whose ledger lists it
  (`route`). So an append can put new keys where they cost least (`place`: the shard with the most room, never
  past shard_size, then new shards) instead of rewriting every shard a hash would spread them over.
- Each shard is a complete memft folder (memft.json, ledger.json, its own digest salt): `memft verify`, `recall`,
  `export` and the runtimes read it as any adapter.

Core layer: may import other core modules only; the memory store, checks, research tools, integrations and the CLI build on it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from memft.errors import AdapterError, ConfigError

STORE = "store.json"
FORMAT = "memft-store"
VERSION = 1
SHARD_SIZE = 1000  # records per shard by default: see README, "Beyond one adapter: shards" (measured there)
_NAME = re.compile(r"shard-(\d{3,})")

T = TypeVar("T")


@dataclass(frozen=True)
class StoreMeta:
    """store.json: what makes a folder a store, and the rule its writes and appends follow."""

    shard_size: int  # most records a shard holds
    split: str = "sha256-order"  # how `write` cut the records (see split)
    version: int = VERSION

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": self.version, "shard_size": self.shard_size, "split": self.split}


def check_shard_size(n: int, where: str = "--shard-size") -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"{where} {n!r}: give a positive number of records per shard (or 0 for one adapter)")
    return n


def shard_name(i: int) -> str:
    """The folder name of shard i.

    >>> shard_name(7), shard_name(1234)
    ('shard-007', 'shard-1234')
    """
    return f"shard-{i:03d}"


def key_hash(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")


def split(items: Sequence[T], key_of: Any, shard_size: int) -> list[list[T]]:
    """Cut `items` into ceil(n / shard_size) shards of near-equal size (sizes differ by at most one), in the order of
    sha256(key): the same items give the same shards in any order.

    >>> [len(s) for s in split(list(range(2500)), str, 1000)]
    [834, 833, 833]
    >>> split(["b", "a"], str, 1) == split(["a", "b"], str, 1)
    True
    >>> split([], str, 10)
    []
    """
    check_shard_size(shard_size, "shard_size")
    order = sorted(items, key=lambda x: (key_hash(key_of(x)), key_of(x)))
    s = math.ceil(len(order) / shard_size)
    if s == 0:
        return []
    q, r = divmod(len(order), s)
    out, at = [], 0
    for i in range(s):
        n = q + (i < r)
        out.append(order[at:at + n])
        at += n
    return out


def place(new: Sequence[str], counts: Mapping[str, int], shard_size: int) -> dict[str, list[str]]:
    """Where an append puts keys no shard holds: {shard name: keys}. All into the shard with the most room (the
    fewest records; ties: the lower name) when they fit there whole; otherwise into new shards after the last one,
    of near-equal size. An existing shard costs a rewrite of everything it holds, a new one a fresh write of what it
    gets: so an append touches at most one existing shard, and never splits itself between one and new ones.

    >>> place(["a", "b", "c"], {"shard-000": 1000, "shard-001": 998}, 1000)
    {'shard-002': ['a', 'b', 'c']}
    >>> place(["a", "b"], {"shard-000": 10, "shard-001": 5}, 1000)
    {'shard-001': ['a', 'b']}
    >>> place(["a", "b", "c"], {}, 2)
    {'shard-000': ['a', 'b'], 'shard-001': ['c']}
    """
    check_shard_size(shard_size, "shard_size")
    if not new:
        return {}
    if counts:
        name, n = min(counts.items(), key=lambda kv: (kv[1], kv[0]))
        if n + len(new) <= shard_size:
            return {name: list(new)}
    nxt = 1 + max((index(n) for n in counts), default=-1)
    s = math.ceil(len(new) / shard_size)
    q, r = divmod(len(new), s)
    out, at = {}, 0
    for i in range(s):
        out[shard_name(nxt + i)] = list(new[at:at + q + (i < r)])
        at += q + (i < r)
    return out


def route(keys: Sequence[str], held: Mapping[str, Sequence[str]]) -> tuple[dict[str, list[str]], list[str]]:
    """({shard: the given keys it holds, in the given order}, keys no shard holds). `held`: {shard: its ledger's keys}.

    >>> route(["x", "a", "q"], {"shard-000": ["a", "b"], "shard-001": ["x"]})
    ({'shard-001': ['x'], 'shard-000': ['a']}, ['q'])
    """
    owner = {k: name for name, ks in held.items() for k in ks}
    out: dict[str, list[str]] = {}
    missing = []
    for k in keys:
        if k in owner:
            out.setdefault(owner[k], []).append(k)
        else:
            missing.append(k)
    return out, missing


def index(name: str) -> int:
    m = _NAME.fullmatch(name)
    assert m, name
    return int(m.group(1))


def own_name(name: str) -> bool:
    """A name a store writes itself (store.json, a shard folder and its lock): never carried over from the previous
    version, where a shard that an append or forget removed would come back.

    >>> own_name("store.json"), own_name("shard-012"), own_name(".shard-012.memft-lock"), own_name("notes.txt")
    (True, True, True, False)
    """
    return name == STORE or bool(_NAME.fullmatch(name)) or bool(re.fullmatch(r"\.shard-\d{3,}\..*", name))


def is_store(folder: str | Path) -> bool:
    """The folder is a store (it holds store.json)."""
    return (Path(folder) / STORE).is_file()


def store_at(folder: str | Path) -> Path | None:
    """The real path of `folder` when it is a store, else None; a store an interrupted swap left aside is put back
    first (memft.store.folders.recover_for_reading), so a reader never mistakes it for a missing adapter."""
    from memft.store import folders

    real = folders.resolve(folder)
    folders.recover_for_reading(real)
    return real if is_store(real) else None


def shard_dirs(folder: str | Path) -> list[Path]:
    """The store's shard folders, in order of their number."""
    folder = Path(folder)
    found = [p for p in folder.iterdir() if p.is_dir() and _NAME.fullmatch(p.name)]
    return sorted(found, key=lambda p: index(p.name))


def read_meta(folder: str | Path) -> StoreMeta:
    path = Path(folder) / STORE
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AdapterError(f"{path}: unreadable store file ({e}); restore the folder from a backup or write it again") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise AdapterError(f"{path}: not a memft store file (no \"format\": \"{FORMAT}\"); restore it or write the store again")
    if obj.get("version") != VERSION:
        raise AdapterError(f"{path}: store format version {obj.get('version')!r}, this memft reads {VERSION}; use the memft that wrote it")
    size = obj.get("shard_size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise AdapterError(f"{path}: shard_size {size!r} is not a positive integer; restore it or write the store again")
    return StoreMeta(shard_size=size, split=str(obj.get("split", "sha256-order")))


def write_meta(folder: Path, meta: StoreMeta) -> None:
    (Path(folder) / STORE).write_text(json.dumps(meta.to_json(), indent=2) + "\n", encoding="utf-8")


def store_error(folder: str | Path, command: str = "this command") -> AdapterError:
    """The one line for a command that takes one adapter folder and was given a store."""
    names = [p.name for p in shard_dirs(folder)]
    first = names[0] if names else shard_name(0)
    what = command if command == "this command" else f"`memft {command}`"
    return AdapterError(f"{folder}: a memory store of {len(names)} shards ({STORE}); {what} takes one adapter folder: "
                        f"give a shard, e.g. {Path(folder) / first} (`memft ledger {folder}` says which shard holds a key)")
