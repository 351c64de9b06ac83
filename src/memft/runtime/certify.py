"""Recall certified in llama.cpp: every record decoded greedily in the runtime, judged from llama.cpp's own
log-probabilities, and the certificate an adapter folder keeps when its whole record set came back exactly.

A record is exact when greedy decoding in llama.cpp gives its target tokens (value, then end of sequence). Along
the greedy path the probabilities are the runtime's; after a first difference the remaining positions are
teacher-forced one at a time (llama.cpp reuses the cached prefix), so `min_prob` and `min_gap` cover every target
position of every record.

Runtime layer: may import the core only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from memft.errors import ConfigError
from memft.prompts.records import Record
from memft.runtime.llamacpp import PIN, LlamaCpp, Step

RUNTIME = "llama.cpp"
CERTIFICATE = "runtime"  # memft.json's top-level entry holding the RuntimeCertificate


@dataclass(frozen=True)
class RuntimeVerdict:
    """One record in the runtime. first_difference: the target position where greedy decoding first chose another
    token (None: exact). min_prob: the smallest p(target) over target positions (0.0 where the target was not among
    the top llamacpp.N_PROBS tokens). min_gap: the smallest p(target) - p(best other token), negative where it lost."""

    key: str
    exact: bool
    first_difference: int | None
    min_prob: float
    min_gap: float
    length: int  # target tokens, end of sequence included
    recalled: str | None = None  # the decoded value: a secret, left out of reports unless revealed
    scored: bool = True  # False: a target token ends inside a UTF-8 character, which llama.cpp's server reports no
    #                      probabilities for (it holds such tokens back): the record is not proven exact

    def to_json(self, reveal: bool = False) -> dict[str, Any]:
        d = asdict(self)
        d["recalled_chars"] = None if self.recalled is None else len(self.recalled)
        if not reveal:
            d["recalled"] = None
        return d


def judge(key: str, targets: Sequence[int], steps: Sequence[Step]) -> tuple[RuntimeVerdict, int | None]:
    """A record's verdict from the runtime's steps at each target position (greedy up to the first difference,
    teacher-forced after it) -> (verdict, first difference). Pure.

    >>> s = lambda tok, *top: Step(tok, dict(top)[tok], top)
    >>> v, _ = judge("k", [5, 2], [s(5, (5, 0.7), (6, 0.2)), s(2, (2, 0.9), (3, 0.05))]); v.exact, v.min_prob, round(v.min_gap, 3)
    (True, 0.7, 0.5)
    >>> v, d = judge("k", [5, 2], [s(6, (6, 0.5), (5, 0.4)), s(2, (2, 0.9))]); v.exact, d, v.min_prob, round(v.min_gap, 3)
    (False, 0, 0.4, -0.1)
    """
    probs, gaps, diff = [], [], None
    for pos, (t, st) in enumerate(zip(targets, steps)):
        p = st.prob_of(t)
        p = 0.0 if p is None else p
        best_other = max((q for tok, q in st.top if tok != t), default=0.0)
        probs.append(p)
        gaps.append(p - best_other)
        if diff is None and st.token != t:
            diff = pos
    if diff is None and len(steps) < len(targets):
        diff = len(steps)  # generation ended early (it cannot: the last target is the end of sequence)
    exact = diff is None
    return RuntimeVerdict(key, exact, diff, min(probs, default=0.0), min(gaps, default=0.0), len(targets)), diff


def split_characters(ids: Sequence[int], tokenizer: Any) -> list[int]:
    """Positions of `ids` whose token ends inside a multi-byte UTF-8 character (byte-level tokens of a rare
    character): decoding the ids up to there leaves an incomplete character.

    >>> from memft.model.base import tiny_tokenizer
    >>> t = tiny_tokenizer(); split_characters(t("aé")["input_ids"], t)  # é is two byte tokens here
    [1]
    """
    out = []
    for j in range(len(ids)):
        if tokenizer.decode(list(ids[: j + 1]), skip_special_tokens=False, clean_up_tokenization_spaces=False).endswith("\ufffd"):
            out.append(j)
    return out


def decode_record(rt: LlamaCpp, key: str, prompt: Sequence[int], targets: Sequence[int],
                  unscorable: bool = False, greedy: Sequence[Step] | None = None) -> tuple[RuntimeVerdict, list[int]]:
    """Greedy decoding of one record in llama.cpp, teacher-forced after a first difference -> (verdict, the ids
    greedy decoding gave). unscorable: a target token ends inside a character (split_characters), so llama.cpp
    reports no step for it: the record is decoded but left unproven. `greedy`: the greedy steps, when already decoded."""
    prompt, targets = list(prompt), list(targets)
    greedy = list(greedy) if greedy is not None else rt.greedy(prompt, len(targets))
    gen = [s.token for s in greedy]
    if unscorable:
        return RuntimeVerdict(key, False, None, 0.0, 0.0, len(targets), scored=False), gen
    steps = list(greedy)
    for pos, (t, s) in enumerate(zip(targets, greedy)):
        if s.token != t:  # the runtime leaves the record here: the rest of the targets, one teacher-forced step each
            steps = greedy[: pos + 1] + [rt.next_step(prompt + targets[:j]) for j in range(pos + 1, len(targets))]
            break
    verdict, _ = judge(key, targets, steps)
    return verdict, gen


@dataclass(frozen=True)
class RuntimeCheck:
    """Every record checked in llama.cpp on one base file."""

    runtime: str
    binding: str
    base_gguf: str  # the file name (a path of this machine is not kept)
    base_sha256: str
    records: int
    exact: int
    min_prob: float
    min_gap: float
    seconds: float
    per_record: list[RuntimeVerdict]

    @property
    def all_exact(self) -> bool:
        return self.exact == self.records

    def to_json(self, reveal: bool = False) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "per_record"}
        return {**d, "exact_fraction": self.exact / self.records, "unscored": self.unscored,
                "per_record": [v.to_json(reveal) for v in self.per_record]}

    @property
    def unscored(self) -> int:
        return sum(not v.scored for v in self.per_record)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_base_gguf(spec: str) -> Path:
    """The base GGUF an adapter's base spec names: the embedded model's shipped file, or the .gguf it was written on."""
    from memft.model.base import EMBEDDED, embedded_gguf_path, resolve_spec

    spec = resolve_spec(spec)
    if spec == EMBEDDED:
        return embedded_gguf_path()
    if spec.endswith(".gguf"):
        return Path(spec)
    raise ConfigError(f"the adapter's base {spec!r} is not a GGUF file; give --base-gguf FILE (the base as llama.cpp runs it)")


def check_in_llamacpp(folder: str | Path, records: Sequence[Record], tokenizer: Any, template: str, base_gguf: str | Path,
                      threads: int | None = None, on_record: Callable[[int, int, RuntimeVerdict], None] | None = None) -> RuntimeCheck:
    """Decode every record greedily in llama.cpp with the adapter in `folder` (exported to a temporary LoRA GGUF)."""
    from memft.prompts.encoding import encode_all
    from memft.store.meta import read
    from memft.runtime.gguf_export import Shape, write_lora_gguf

    items = encode_all(records, tokenizer, template, read(folder).key_prefix)  # a keyed adapter's prompts start with its invocation
    if not items:
        raise ConfigError("no records to check")
    with tempfile.TemporaryDirectory(prefix="memft-gguf-") as tmp:
        lora = Path(tmp) / "adapter.gguf"
        write_lora_gguf(folder, lora, Shape.from_gguf(base_gguf), invocation_tokens(folder))
        return check_lora_gguf(lora, items, tokenizer, base_gguf, threads, on_record)


PARALLEL = 1  # records decoded at once in llama.cpp's parallel slots (1: one at a time, as a single-user runtime decodes)


def check_lora_gguf(lora: str | Path, items: Sequence[Any], tokenizer: Any, base_gguf: str | Path, threads: int | None = None,
                    on_record: Callable[[int, int, RuntimeVerdict], None] | None = None, parallel: int | None = None) -> RuntimeCheck:
    """Decode every encoded record (memft.prompts.encoding.Encoded) greedily in llama.cpp with the LoRA GGUF `lora` on
    `base_gguf`; `parallel` records at a time in the server's slots (default PARALLEL)."""
    from memft.prompts.encoding import decode_value

    parallel = max(1, parallel or PARALLEL)
    t0 = time.perf_counter()
    n_ctx = max(len(e.prompt) + len(e.targets) for e in items) + 8
    rt = LlamaCpp(base_gguf, [lora], threads=threads, n_ctx=max(256, n_ctx), parallel=parallel)
    verdicts = []
    for lo in range(0, len(items), parallel):
        chunk = items[lo: lo + parallel]
        decoded = rt.greedy_many([list(e.prompt) for e in chunk], max(len(e.targets) for e in chunk)) if parallel > 1 else [None] * len(chunk)
        for k, (e, greedy) in enumerate(zip(chunk, decoded)):
            if greedy is not None:
                greedy = _until_end(greedy, e.targets)
            v, gen = decode_record(rt, e.key, e.prompt, e.targets, unscorable=bool(split_characters(e.targets[:-1], tokenizer)),
                                   greedy=greedy)
            v = RuntimeVerdict(**{**asdict(v), "recalled": decode_value(gen, tokenizer)})
            verdicts.append(v)
            if on_record is not None:
                on_record(lo + k + 1, len(items), v)
    del rt
    return RuntimeCheck(RUNTIME, PIN, Path(base_gguf).name, sha256_file(base_gguf), len(verdicts), sum(v.exact for v in verdicts),
                        min(v.min_prob for v in verdicts), min(v.min_gap for v in verdicts), round(time.perf_counter() - t0, 3), verdicts)


def _until_end(steps: Sequence[Step], targets: Sequence[int]) -> list[Step]:
    """A batch decodes every prompt to the longest record's length: keep what greedy() would have given for this one
    (up to its own length; llama.cpp already stops at the end of sequence)."""
    return list(steps[: len(targets)])


def invocation_tokens(folder: str | Path) -> list[int] | None:
    """The keyed-activation tokens of an adapter that has them (memft.json: activation = keyed), else None."""
    from memft.store.meta import read

    meta = read(folder)
    if getattr(meta, "activation", "always") != "keyed":
        return None
    return list(getattr(meta, "invocation_tokens", None) or []) or None


# ---------------------------------------------------------------- the certificate kept in memft.json


@dataclass(frozen=True)
class RuntimeCertificate:
    """The adapter's whole record set came back exactly in this runtime on this base file (memft.json: `runtime`).
    adapter_sha256 ties it to the weights: a rewrite (append, forget) drops it, an edited file no longer matches."""

    runtime: str
    binding: str
    base_gguf: str
    base_sha256: str
    adapter_sha256: str
    records: int
    min_prob: float
    min_gap: float
    checked: str

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> RuntimeCertificate | None:
        obj = extra.get(CERTIFICATE)
        try:
            return cls(**obj) if isinstance(obj, dict) else None
        except TypeError:
            return None  # written by another memft: not trusted here

    def matches(self, folder: str | Path) -> bool:
        return sha256_file(Path(folder) / "adapter_model.safetensors") == self.adapter_sha256


def certify(folder: str | Path, check: RuntimeCheck, records: Sequence[Record]) -> RuntimeCertificate | None:
    """Keep `check` in memft.json as the adapter's RuntimeCertificate when its `records` are the adapter's whole
    record set and all came back exactly (-> the certificate); otherwise leave the folder alone (-> None)."""
    from memft.store import folders
    from memft.store import meta as meta_mod

    folder = Path(folder)
    with folders.locked(folder):
        meta = meta_mod.read(folder)
        if not check.all_exact or check.records != meta.records.count or meta.records.hash is None:
            return None
        if meta.records.scheme.set_hash(records) != meta.records.hash:
            return None
        cert = RuntimeCertificate(check.runtime, check.binding, check.base_gguf, check.base_sha256,
                                  sha256_file(folder / "adapter_model.safetensors"), check.records, check.min_prob, check.min_gap,
                                  dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
        meta_mod.write(folder, meta.with_extra(**{CERTIFICATE: asdict(cert)}))
    return cert
