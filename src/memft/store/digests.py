"""Record digests: how an adapter folder names a record it holds without storing its value.

`ledger.json` and `memft.json` keep one digest per record, so that a record recalled from the weights (or given
again by the user) can be checked to be the one written. A plain sha256 of a short value (a PIN, a phone number)
is reversed by trying every value, so the current scheme is salted and slow:

- "scrypt-v1": scrypt(canonical record, salt, n=2**10, r=8, p=1, dklen=32), hex. The salt is 16 random bytes per
  adapter folder, stored in clear next to the digests: it is not a secret, it makes every folder its own brute
  force (no precomputed tables, no reuse across folders). n, r, p are fixed by the scheme name; other parameters
  would be a new name. 3.6 ms and 1 MiB per digest on one core, 3.0 s for a 1000-record write
  (benchmarks/bench_digests.py).
- "sha256": sha256(canonical record), hex, no salt: folders of memft 0.1 and of earlier commits of this one.
  Read, recalled and verified as they are; the next write of such a folder (append, forget) moves it to
  scrypt-v1.

The canonical record is the compact JSON of [key, value] (or [key, value_ids]), UTF-8.

Core layer: may import other core modules only; the memory store, checks, research tools, integrations and the CLI build on it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from memft.errors import AdapterError
from memft.prompts.records import Record

CURRENT = "scrypt-v1"
LEGACY = "sha256"
# scrypt-v1's cost: 128 * n * r bytes of memory (1 MiB) and 3.6 ms per digest on one CPU core (bench_digests.py).
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_DKLEN = 2**10, 8, 1, 32
SALT_BYTES = 16
# Digests kept per process: more than any one command needs, so a write (ledger, memft.json, records hash) or an
# append (recovery, then the save) computes each record's digest once. Keyed by (scheme, salt, record).
CACHE_SIZE = 1 << 16


def canonical(record: Record) -> bytes:
    """The bytes a record's digest is taken of.

    >>> canonical(Record("Bob:", "555-0100"))
    b'["Bob:","555-0100"]'
    """
    return json.dumps([record.key, record.target], ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@functools.lru_cache(maxsize=CACHE_SIZE)
def _digest(scheme: str, salt: str, record: Record) -> str:
    if scheme == LEGACY:
        return hashlib.sha256(canonical(record)).hexdigest()
    return hashlib.scrypt(canonical(record), salt=bytes.fromhex(salt), n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                          dklen=SCRYPT_DKLEN).hex()


@dataclass(frozen=True)
class DigestScheme:
    """How one adapter folder digests its records: the scheme name and its salt (hex; "" for sha256)."""

    name: str = LEGACY
    salt: str = ""

    def __post_init__(self) -> None:
        if self.name == LEGACY and self.salt:
            raise ValueError("the sha256 digest scheme takes no salt")
        if self.name == CURRENT:
            try:
                ok = len(bytes.fromhex(self.salt)) == SALT_BYTES
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"the {CURRENT} digest scheme needs a salt of {SALT_BYTES} bytes in hex, got {self.salt!r}")
        elif self.name != LEGACY:
            raise ValueError(f"unknown digest scheme {self.name!r} (known: {CURRENT}, {LEGACY}); a newer memft wrote it")

    @classmethod
    def fresh(cls) -> DigestScheme:
        """The current scheme with a new random salt (a new folder, or an old one being upgraded)."""
        return cls(CURRENT, secrets.token_hex(SALT_BYTES))

    def upgraded(self) -> DigestScheme:
        """The scheme a rewrite of a folder with this scheme uses: this one when current (digests of records that
        stay are unchanged), else a fresh one."""
        return self if self.name == CURRENT else DigestScheme.fresh()

    def digest(self, record: Record) -> str:
        """The record's digest under this scheme (hex), computed once per process for a given record and salt."""
        return _digest(self.name, self.salt, record)

    def set_hash(self, records: Iterable[Record]) -> str:
        """Order-independent hash of a record set: sha256 over its sorted digests (salted when the digests are)."""
        h = hashlib.sha256()
        for d in sorted(self.digest(r) for r in records):
            h.update(d.encode())
        return h.hexdigest()

    def to_json(self) -> dict[str, str]:
        return {"scheme": self.name, "salt": self.salt}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> DigestScheme:
        """Read `to_json`'s object from the file `where`; None (a file written before salted digests) is the sha256
        scheme. Anything else is an AdapterError naming the file."""
        if obj is None:
            return cls()
        try:
            if not isinstance(obj, Mapping) or not isinstance(obj.get("scheme"), str) or not isinstance(obj.get("salt", ""), str):
                raise ValueError(f"expected {{\"scheme\": NAME, \"salt\": HEX}}, got {json.dumps(obj)[:80]}")
            return cls(obj["scheme"], obj.get("salt", ""))
        except ValueError as e:
            raise AdapterError(f"{where}: record digests: {e}; the adapter is damaged or was written by a newer memft") from None

