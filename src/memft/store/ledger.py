"""The ledger of an adapter folder: which records it holds, their hashes, when each was written, and how each was
certified at the last write; plus one history line per write (write, append, forget).

The ledger keeps keys and salted, slow digests (memft.store.digests), never values: an adapter that certifies its
records already holds the values, and greedy recall gives them back exactly (`recover_records`), checked against
the digests. So `append` replays the stored records without a plain-text copy of, say, credentials beside the
weights. A record that was
not certified at its last write cannot be recovered that way; the user gives it again (or forgets it).

Pure functions plan the changes (`plan_append`, `plan_forget`, `next_ledger`); only `read`/`recover_records` touch
files or models.

Memory-store layer: may import the core and the memory store (ledger, rewrite).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from memft.store.digests import DigestScheme
from memft.errors import AdapterError, RecordsError
from memft.store.meta import AdapterMeta
from memft.certify.metrics import RecordReport
from memft.prompts.records import Record

LEDGER = "ledger.json"


@dataclass
class Entry:
    key: str
    digest: str  # of the record, under the ledger's scheme (memft.store.digests)
    kind: str  # "text" (value) | "ids" (value_ids)
    written: str  # ISO time of the write that added it or last changed its value
    generation: int  # the write (1, 2, ...) that added it or last changed its value
    certified: bool  # at the last write
    min_prob: float  # at the last write
    min_gap: float | None  # p(target) - p(best other token), smallest over positions, at the last write


@dataclass
class Ledger:
    entries: list[Entry]
    history: list[dict[str, Any]] = field(default_factory=list)  # one line per write, oldest first
    # A copy of what recall and replay read from memft.json (see fingerprint), written in the same swap: an edit
    # of either file is caught on open. None in ledgers written before it existed.
    fingerprint: dict[str, Any] | None = None
    # How the entries' digests were made; the sha256 scheme (no salt) in ledgers written before salted digests.
    scheme: DigestScheme = field(default_factory=DigestScheme)

    @property
    def generation(self) -> int:
        return len(self.history)

    def by_key(self) -> dict[str, Entry]:
        return {e.key: e for e in self.entries}

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"entries": [asdict(e) for e in self.entries], "history": self.history}
        if self.fingerprint is not None:
            out["fingerprint"] = self.fingerprint
        if self.scheme != DigestScheme():  # an old ledger keeps its old form
            out["digest"] = self.scheme.to_json()
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], where: str = LEDGER) -> Ledger:
        return cls([Entry(**e) for e in obj["entries"]], list(obj.get("history", [])), obj.get("fingerprint"),
                   DigestScheme.from_json(obj.get("digest"), where))


def fingerprint(meta: AdapterMeta) -> dict[str, Any]:
    """The fields of memft.json that recall, verify and replay depend on (the ledger keeps a copy: its layout is
    part of the ledger format)."""
    rec = meta.records
    fp = {"count": rec.count, "hash": rec.hash, "max_target_tokens": rec.max_target_tokens, "template": meta.template,
          "base": meta.base.spec, "dtype": meta.certification.dtype, "rank": meta.lora.rank, "modules": list(meta.lora.modules)}
    if meta.activation == "keyed":  # only keyed adapters have it: the fingerprints of always-on ones stay as they were
        fp["invocation"] = meta.invocation
    return fp


def check_against(meta: AdapterMeta, book: Ledger, folder: str | Path) -> None:
    """Cross-check the ledger with memft.json: same records (count, digest scheme and salt, digests) and, where the
    ledger has one, the same fingerprint. A mismatch means one file was edited or damaged: AdapterError naming what
    differs."""
    problems = []
    keys = [e.key for e in book.entries]
    if len(set(keys)) != len(keys):
        problems.append("ledger.json lists a key twice")
    rec = meta.records
    if len(book.entries) != rec.count:
        problems.append(f"ledger.json lists {len(book.entries)} record(s) but memft.json says {rec.count}")
    elif DigestScheme.from_json(rec.digest, f"{folder}/memft.json") != book.scheme:
        problems.append("the digest scheme or salt of ledger.json and memft.json differ")
    elif rec.digests is not None and sorted(e.digest for e in book.entries) != sorted(rec.digests):
        problems.append("the record digests of ledger.json and memft.json differ")
    if book.fingerprint is not None:
        fp = fingerprint(meta)
        diff = [k for k in fp if fp[k] != book.fingerprint.get(k)]
        if diff:
            problems.append(f"memft.json no longer matches ledger.json in {', '.join(diff)}")
    if problems:
        raise AdapterError(f"{folder}: {'; '.join(problems)}; the adapter was edited or damaged: restore the folder from a "
                           "backup or write it again")


@dataclass
class Plan:
    """What a rewrite does: records to keep (replayed), to add, to change, and to train away."""

    keep: list[Record]
    add: list[Record]
    change: list[Record]  # new values for existing keys (--update)
    forget: list[Record]
    unchanged: list[str] = field(default_factory=list)  # new-file keys already held with the same value

    @property
    def records(self) -> list[Record]:
        """Every record the adapter must hold after the rewrite."""
        return self.keep + self.add + self.change

    @property
    def changed_keys(self) -> set[str]:
        return {r.key for r in self.add + self.change}


def plan_append(held: Sequence[Record], new: Sequence[Record], update: bool = False) -> Plan:
    """Merge new records into the held ones. A new value for a held key is an error unless `update`.

    >>> a, b = Record("a:", "1"), Record("b:", "2")
    >>> p = plan_append([a], [a, b]); [r.key for r in p.keep], [r.key for r in p.add], p.unchanged
    (['a:'], ['b:'], ['a:'])
    """
    by_key = {r.key: r for r in held}
    add, change, unchanged = [], [], []
    for r in new:
        old = by_key.get(r.key)
        if old is None:
            add.append(r)
        elif old.target == r.target:
            unchanged.append(r.key)
        else:
            change.append(r)
    if change and not update:
        shown = ", ".join(repr(r.key) for r in change[:10]) + (" ..." if len(change) > 10 else "")
        raise RecordsError(f"{len(change)} key(s) already hold another value: {shown}; pass --update to replace them, or drop them from the file")
    changed = {r.key for r in change}
    return Plan(keep=[r for r in held if r.key not in changed], add=add, change=change, forget=[], unchanged=unchanged)


def plan_forget(held: Sequence[Record], keys: Sequence[str], known: Sequence[str]) -> Plan:
    """Remove `keys`: they must be in the ledger (`known`); the held ones among them are trained away."""
    unknown = [k for k in keys if k not in set(known)]
    if unknown:
        shown = ", ".join(repr(k) for k in unknown[:10])
        raise RecordsError(f"key(s) not in this adapter: {shown}; `memft ledger DIR` lists the keys it holds")
    gone = set(keys)
    return Plan(keep=[r for r in held if r.key not in gone], add=[], change=[], forget=[r for r in held if r.key in gone])


def next_ledger(old: Ledger | None, records: Sequence[Record], reports: Mapping[str, RecordReport], changed: set[str],
                now: str, event: dict[str, Any], scheme: DigestScheme | None = None) -> Ledger:
    """The ledger after a write that left the adapter holding `records` (their reports by key), where the keys in
    `changed` were added or given a new value now. `event` becomes the new history line (generation added here).
    `scheme` digests the records (default: next_scheme(old))."""
    scheme = scheme or next_scheme(old)
    prev = old.by_key() if old else {}
    gen = (old.generation if old else 0) + 1
    entries = []
    for r in records:
        rep = reports[r.key]
        was = prev.get(r.key)
        fresh = was is None or r.key in changed
        entries.append(Entry(
            key=r.key,
            digest=scheme.digest(r),
            kind="text" if r.value is not None else "ids",
            written=now if fresh else was.written,
            generation=gen if fresh else was.generation,
            certified=rep.certified,
            min_prob=rep.min_prob,
            min_gap=rep.min_gap,
        ))
    history = (list(old.history) if old else []) + [{"generation": gen, "time": now, **event}]
    return Ledger(entries, history, scheme=scheme)


def next_scheme(old: Ledger | None) -> DigestScheme:
    """The digest scheme of the write after `old`: its salt when it has the current scheme (digests of records
    that stay do not change), a fresh salt for a new folder or one with unsalted digests."""
    return (old.scheme if old else DigestScheme()).upgraded()


def of_version(version: Any) -> Ledger | None:
    """The ledger of one version of a folder (memft.store.adapters.read_version), parsed and checked against its
    memft.json; None for a folder written without one. A folder whose memft.json lists record digests but has no
    ledger.json is damaged: without the ledger, recall could not tell a held key from an invented one."""
    from memft.store.adapters import DAMAGED

    if version.ledger is None:
        if version.meta.records.digests is not None:
            raise AdapterError(f"{version.folder}: {LEDGER} is missing but memft.json lists the records' digests; {DAMAGED}")
        return None
    book = parse(version.ledger, version.folder / LEDGER)
    check_against(version.meta, book, version.folder)
    return book


def read(folder: str | Path) -> Ledger:
    """The ledger of `folder`, read with memft.json as one version (memft.store.folders.read_consistent) and checked
    against it (check_against), after cleaning what an interrupted save left beside the folder."""
    from memft.store import folders
    from memft.store.meta import FILE, parse as parse_meta

    folder = folders.resolve(folder)
    folders.recover_for_reading(folder)
    if not folder.is_dir():
        raise AdapterError(f"{folder}: no such adapter folder; give the --out folder of `memft write`")
    raw = folders.read_consistent(folder, (FILE, LEDGER))
    if raw[FILE] is None:
        raise AdapterError(f"{folder}: not a memft adapter (no {FILE}); give the --out folder of `memft write`")
    meta = parse_meta(raw[FILE], folder / FILE)
    if raw[LEDGER] is None:
        if meta.records.digests is not None:
            raise AdapterError(f"{folder}: {LEDGER} is missing but {FILE} lists the records' digests; the adapter is damaged: "
                               "restore the folder from a backup or write it again")
        raise AdapterError(f"{folder}: no {LEDGER} (written by an older memft); write it again with `memft write` to append or forget")
    book = parse(raw[LEDGER], folder / LEDGER)
    check_against(meta, book, folder)
    return book


def parse(data: bytes, where: str | Path) -> Ledger:
    """ledger.json's bytes as a Ledger; `where` names the file in errors."""
    try:
        return Ledger.from_json(json.loads(data.decode("utf-8")), str(where))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
        raise AdapterError(f"{where}: unreadable ({type(e).__name__}); the adapter is damaged, write it again") from None


def dumps(ledger: Ledger) -> str:
    return json.dumps(ledger.to_json(), indent=2, ensure_ascii=False) + "\n"


def recover_records(loaded: Any, strict: bool = True, ledger: Ledger | None = None) -> list[Record]:
    """The records an adapter holds, recalled from its own weights (greedy) and checked against the ledger digests.

    `loaded` is an api.Loaded. With strict=True a record that does not come back exactly is an error naming it
    (it was not certified at its last write); strict=False leaves such records out.
    """
    records, lost = recover(loaded, ledger)
    if lost and strict:
        raise lost_error(lost, "this adapter")
    return records


def lost_error(keys: Sequence[str], where: str) -> RecordsError:
    """The error for records an adapter no longer gives back exactly (not certified at their last write)."""
    shown = ", ".join(repr(k) for k in keys[:10]) + (" ..." if len(keys) > 10 else "")
    return RecordsError(
        f"{len(keys)} record(s) of {where} do not come back exactly (not certified at the last write), so they cannot "
        f"be replayed: {shown}; give them again with their values in the records file, or `memft forget` them"
    )


RECOVER_BATCH = 256


def recover(loaded: Any, ledger: Ledger | None = None) -> tuple[list[Record], list[str]]:
    """(records recalled exactly, keys that were not) for every ledger entry of the adapter `loaded`."""
    records, lost, _ = recover_recalls(loaded, ledger)
    return records, lost


def recover_recalls(loaded: Any, ledger: Ledger | None = None, start: int = 0) -> tuple[list[Record], list[str], dict[str, Any]]:
    """recover(), plus what the greedy recall of each recovered record computed ({key: memft.certify.decode.Recall}):
    its statistics and, with start > 0, the hidden states entering layer `start`, from which a rewrite trains
    (memft.memory.rewrite) instead of computing them again."""
    from memft.certify.decode import forced_greedy, greedy_recall
    from memft.prompts.encoding import decode_value, prompt_ids

    ledger = ledger or read(_folder(loaded))
    tok = loaded.tokenizer
    eos = tok.eos_token_id
    limit = loaded.meta.records.max_target_tokens
    prompts = [prompt_ids(e.key, tok, loaded.meta.template, loaded.meta.key_prefix) for e in ledger.entries]
    # Batches of RECOVER_BATCH prompts: recovering a 1000-record store is 1000 greedy recalls, and on a CPU larger
    # batches make the per-token matrix products larger (the KV cache of 256 short prompts is a few tens of MiB).
    recalls = greedy_recall(loaded.model, prompts, eos, tok.pad_token_id, limit, start=start, batch_size=RECOVER_BATCH) if prompts else []

    def held(e: Any, gen: list[int]) -> Record | None:
        rec = None
        if gen and gen[-1] == eos:
            rec = Record(e.key, value=decode_value(gen, tok)) if e.kind == "text" else Record(e.key, value_ids=tuple(gen[:-1]))
        return rec if rec is not None and ledger.scheme.digest(rec) == e.digest else None

    got = {e.key: held(e, rc.ids) for e, rc in zip(ledger.entries, recalls)}
    seen = {e.key: rc for e, rc in zip(ledger.entries, recalls) if got[e.key] is not None}
    # The KV cache's logits differ from the certifying teacher-forced pass by rounding (bf16): a record certified
    # at a near tie can come back otherwise. Those are decoded again with teacher-forced logits (decode.forced_greedy),
    # which is what certification vouched for; their statistics are computed afresh by training.
    miss = [i for i, e in enumerate(ledger.entries) if got[e.key] is None]
    if miss:
        again = forced_greedy(loaded.model, [prompts[i] for i in miss], [recalls[i].ids for i in miss], eos, tok.pad_token_id, limit)
        for i, gen in zip(miss, again):
            got[ledger.entries[i].key] = held(ledger.entries[i], gen)
    records = [got[e.key] for e in ledger.entries if got[e.key] is not None]
    lost = [e.key for e in ledger.entries if got[e.key] is None]
    return records, lost, seen


def _folder(loaded: Any) -> Path:
    folder = getattr(loaded, "folder", None)
    if folder is None:
        raise AdapterError("this loaded adapter does not know its folder; load it with memft.api.load_adapter")
    return Path(folder)
