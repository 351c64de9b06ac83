"""Benchmark data generators: pure functions of (config, tokenizer, seed) -> records, picked by name.

`BENCHMARKS` maps a name to a `Benchmark`: its generator (one signature for all: a `DataSpec`, the tokenizer and
the seed -> (records, held-out records or None)), its default lengths and what a length means for it. `memft
bench`, `memft compare` and `memft sweep` build their data through `make`; adding a benchmark is one entry here.

Research layer (data). May import: records, errors, encoding; no model code.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from memft.errors import ConfigError
from memft.prompts.records import Record

Data = tuple[list[Record], "list[Record] | None"]  # (records to train, held-out records or None)


@dataclass(frozen=True)
class DataSpec:
    """What one benchmark point's data depends on, besides the tokenizer and the seed."""

    length: int  # what it means depends on the benchmark (Benchmark.length_means)
    ratio: float | None = None  # stress: fraction of target tokens made random, in [0, 1]
    heldout: int = 0  # rule: held-out pairs
    text: str | None = None  # stress: the source text (not a path); None: the default text
    exclude: Collection[int] = ()  # token ids the stress test must not draw (the model's unreachable tokens)


@dataclass(frozen=True)
class Benchmark:
    make: Callable[[DataSpec, Any, int], Data]
    default_lengths: tuple[int, ...]
    length_means: str


def _phonebook(spec: DataSpec, tokenizer: Any, seed: int) -> Data:
    from memft.research.bench.phonebook import phonebook_by_length

    return phonebook_by_length(spec.length, tokenizer, seed=seed), None


def _stress(spec: DataSpec, tokenizer: Any, seed: int) -> Data:
    from memft.research.bench.stress import stress

    if spec.ratio is None:
        raise ConfigError("stress needs a ratio: the fraction of target tokens made random, in [0, 1]")
    return [stress(spec.length, spec.ratio, tokenizer, seed=seed, text=spec.text, exclude=spec.exclude)], None


def _rule(spec: DataSpec, tokenizer: Any, seed: int) -> Data:
    from memft.research.bench.rule import rule_split

    return rule_split(spec.length, spec.heldout, seed=seed)


BENCHMARKS: dict[str, Benchmark] = {
    "phonebook": Benchmark(_phonebook, (100, 200, 400), "answer tokens over all records"),
    "stress": Benchmark(_stress, (64, 128, 256), "tokens of the one target"),
    "rule": Benchmark(_rule, (50, 100), "training pairs"),
}


def get(name: str) -> Benchmark:
    """The benchmark called `name`; ConfigError listing the known ones otherwise."""
    if name not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark {name!r}: use one of {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def make(name: str, spec: DataSpec, tokenizer: Any, seed: int) -> Data:
    """(records, held-out records or None) of one point of benchmark `name`."""
    return get(name).make(spec, tokenizer, seed)
