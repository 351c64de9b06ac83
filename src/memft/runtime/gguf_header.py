"""A GGUF file's scalar and string metadata, read from its header without numpy or the gguf package (recall through
llama.cpp needs a few fields and should not pay for those imports), and kept in the user cache per file version.

Runtime layer.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from memft.errors import ConfigError

# GGUF metadata value types (the file format's numbering) -> struct format of a scalar; 8 = string, 9 = array
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def gguf_fields(path: str | Path) -> dict[str, Any]:
    """The scalar and string metadata of a GGUF file (arrays skipped), read from its header alone: gguf's reader
    parses every array (a tokenizer's 49,152 tokens and merges) and takes seconds; this takes milliseconds.

    The header (GGUF v2/v3, little-endian): magic "GGUF", u32 version, u64 tensor count, u64 metadata count, then
    per entry a string key (u64 length + UTF-8), a u32 value type and the value; an array is a u32 element type, a
    u64 count and the elements."""
    import struct

    with open(path, "rb") as fh:
        data = fh.read(1 << 16)
        if data[:4] != b"GGUF":
            raise ConfigError(f"{path}: not a GGUF file")
        buf, pos = bytearray(data), 24
        (n_kv,) = struct.unpack_from("<Q", buf, 16)

        def need(n: int) -> None:
            while len(buf) < pos + n:
                more = fh.read(max(1 << 20, n))
                if not more:
                    raise ConfigError(f"{path}: the GGUF header is truncated")
                buf.extend(more)

        def take(fmt: str) -> Any:
            nonlocal pos
            size = struct.calcsize(fmt)
            need(size)
            v = struct.unpack_from(fmt, buf, pos)
            pos += size
            return v[0] if len(v) == 1 else v

        def string() -> str:
            nonlocal pos
            n = take("<Q")
            need(n)
            pos += n
            return bytes(buf[pos - n : pos]).decode("utf-8", "replace")

        def value(t: int) -> Any:
            nonlocal pos
            if t == 8:
                return string()
            if t == 9:
                et, n = take("<IQ")
                if et == 8:  # an array of strings (a tokenizer's tokens, merges): skip by their lengths only
                    unpack = struct.Struct("<Q").unpack_from
                    for _ in range(n):
                        need(8)
                        pos += 8 + unpack(buf, pos)[0]
                elif et in _SCALARS:
                    size = struct.calcsize("<" + _SCALARS[et]) * n
                    need(size)
                    pos += size
                else:
                    for _ in range(n):
                        value(et)
                return None
            return take("<" + _SCALARS[t])

        out: dict[str, Any] = {}
        for _ in range(n_kv):
            key = string()
            v = value(take("<I"))
            if v is not None:
                out[key] = v
        return out


def file_key(path: str | Path) -> str:
    """A key for one version of a file: its resolved path, size and modification time (a changed file gets a new key)."""
    p = Path(path).resolve()
    st = p.stat()
    return hashlib.sha256(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:24]


def cached_gguf_fields(path: str | Path) -> dict[str, Any]:
    """gguf_fields, kept as JSON under the user cache (memft.model.base.cache_root) per file version: walking a
    tokenizer's 100k array entries in Python is most of a fresh recall's reading. A cache that cannot be written
    (a read-only home) is skipped."""
    from memft.model.base import cache_root

    entry = cache_root() / "gguf-fields" / f"{file_key(path)}.json"
    try:
        return json.loads(entry.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    fields = gguf_fields(path)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(fields), encoding="utf-8")
        os.replace(tmp, entry)
    except OSError:
        pass
    return fields
