"""Recall through llama.cpp in a fresh process: no torch, no transformers.

The folder's memft.json and ledger say which keys it holds; the base's tokenizer.json (the `tokenizers` library,
the same fast tokenizer transformers wraps) gives the prompt ids of the raw template; the adapter is exported to a
temporary LoRA GGUF and decoded greedily in llama.cpp; the value is certified when its record digest is one the
adapter holds, as in memft.api.recall.

Runtime layer: may import the core and the memory store.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memft.errors import ConfigError
from memft.prompts.records import Record


@dataclass
class RuntimeRecall:
    """One key recalled in llama.cpp (the fields and JSON of memft.api.Recalled)."""

    key: str
    value: str
    certified: bool
    min_prob: float
    held: bool = True
    nearest: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "held": self.held, "value": self.value if self.held or self.value else None,
                "certified": self.certified, "min_prob": self.min_prob, "nearest": self.nearest}


def fast_tokenizer(spec: str, seed: int = 0) -> Any:
    """The base's `tokenizers.Tokenizer` from its tokenizer.json (the embedded model's cache folder; tiny-random's
    in-memory tokenizer). None when no tokenizer.json is at hand (then the caller uses transformers)."""
    from memft.model.base import EMBEDDED, TINY, base_folder, resolve_spec

    spec = resolve_spec(spec)
    if spec == TINY:
        from memft.model.base import tiny_tokenizer

        return tiny_tokenizer().backend_tokenizer
    if spec != EMBEDDED and not spec.endswith(".gguf") and not Path(spec).is_dir():
        return None
    path = Path(base_folder(spec, seed)) / "tokenizer.json"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def recall_in_llamacpp(folder: str | Path, keys: Sequence[str], base_gguf: str | Path | None = None, raw: bool = False,
                       threads: int | None = None) -> list[RuntimeRecall]:
    """Greedy-decode the value of each key in llama.cpp with the adapter in `folder` (one load of base and adapter)."""
    from memft.store import adapters, ledger
    from memft.runtime.certify import default_base_gguf
    from memft.runtime.gguf_header import cached_gguf_fields
    from memft.runtime.llamacpp import LlamaCpp

    version = adapters.read_version(folder)  # memft.json, the PEFT files and the ledger as one version, fingerprints checked
    meta = version.meta
    if meta.template != "raw":
        raise ConfigError(f"{folder}: recall through llama.cpp supports the raw template (this adapter uses {meta.template})")
    tok = fast_tokenizer(meta.base.spec, meta.seed)
    if tok is None:
        raise ConfigError(f"{folder}: no tokenizer.json for base {meta.base.spec!r}; recall with --runtime torch")
    book = ledger.of_version(version)
    held = None if book is None else [e.key for e in book.entries]
    known = None if held is None else set(held)
    base = Path(base_gguf) if base_gguf else default_base_gguf(meta.base.spec)
    eos = int(cached_gguf_fields(base)["tokenizer.ggml.eos_token_id"])  # where llama.cpp stops
    asked = [k for k in keys if raw or known is None or k in known]
    gens: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="memft-recall-") as tmp:
        if not asked:  # nothing to decode (and a server freed before it ever served waits for its loop forever)
            return [RuntimeRecall(k, "", False, 0.0, False, _nearest(k, held or [])) for k in keys]
        lora = lora_gguf(version, base, Path(tmp))
        rt = LlamaCpp(base, [lora], threads=threads, n_ctx=512 + meta.records.max_target_tokens)
        # the prompt memft.prompts.encoding.prompt_ids builds for the raw template: a keyed adapter's invocation, then the key
        gens = {k: rt.greedy(tok.encode(meta.key_prefix + k, add_special_tokens=True).ids, meta.records.max_target_tokens)
                for k in dict.fromkeys(asked)}
        del rt
    scheme, digests, failed = meta.records.scheme, set(meta.records.digests or ()), set(meta.certification.failed_keys)
    out = []
    for k in keys:
        steps = gens.get(k)
        is_held = known is None or k in known
        if steps is None:
            out.append(RuntimeRecall(k, "", False, 0.0, False, _nearest(k, held or [])))
            continue
        ids = [s.token for s in steps]
        value = tok.decode(ids[: ids.index(eos)] if eos in ids else ids, skip_special_tokens=False)
        ok = is_held and bool(ids) and ids[-1] == eos and k not in failed and scheme.digest(Record(k, value)) in digests
        out.append(RuntimeRecall(k, value, ok, min((s.prob for s in steps), default=0.0), is_held,
                                 [] if is_held else _nearest(k, held or [])))
    return out


def lora_gguf(version: Any, base: Path, tmp: Path) -> Path:
    """The adapter version (memft.store.adapters.read_version: its files already checked against memft.json's
    fingerprints) as llama.cpp's LoRA GGUF for `base`. Exported once per adapter version and base and kept in the
    user cache, keyed by those fingerprints (AdapterMeta.files) and the base file's version; an adapter without
    fingerprints, or a cache that cannot be written, is exported into `tmp` instead."""
    import hashlib
    import json
    import os

    from memft.model.base import cache_root
    from memft.runtime.certify import invocation_tokens
    from memft.runtime.gguf_header import file_key
    from memft.store import adapters

    meta, invocation = version.meta, invocation_tokens(version.folder)
    out = tmp / "adapter.gguf"
    key = hashlib.sha256(json.dumps([sorted((meta.files or {}).items()), file_key(base), invocation]).encode()).hexdigest()[:24]
    entry = cache_root() / "lora-gguf" / f"{key}.gguf"
    if meta.files and entry.is_file():
        return entry
    from memft.runtime.gguf_export import Shape, write_lora_gguf  # numpy and gguf: only when there is something to export

    copy = tmp / "adapter"  # the bytes of this version, not whatever the folder holds by now
    copy.mkdir()
    (copy / adapters.CONFIG).write_bytes(version.config)
    (copy / adapters.WEIGHTS).write_bytes(version.weights)
    write_lora_gguf(copy, out, Shape.from_gguf(base), invocation)
    if not meta.files:
        return out
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        staged = entry.with_suffix(f".{os.getpid()}.tmp")
        staged.write_bytes(out.read_bytes())
        os.replace(staged, entry)  # whole or absent: a reader never sees half a file
        return entry
    except OSError:
        return out


def _nearest(key: str, held: Sequence[str], n: int = 3) -> list[str]:
    import difflib

    return difflib.get_close_matches(key, list(held), n=n, cutoff=0.5)
