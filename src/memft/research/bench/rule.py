"""Linear rule: "f(x, y) =" -> " 3x+5y+7", with held-out pairs to tell a learned rule from memorized answers.

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

import random

from memft.errors import ConfigError
from memft.prompts.records import Record


def rule_record(x: int, y: int, a: int = 3, b: int = 5, c: int = 7) -> Record:
    """Key "f(x, y) =" and value " {a·x + b·y + c}" (leading space: values are tokenized apart from keys)."""
    return Record(key=f"f({x}, {y}) =", value=f" {a * x + b * y + c}")


def rule_split(
    n_train: int,
    n_test: int,
    seed: int = 0,
    low: int = 0,
    high: int = 99,
    a: int = 3,
    b: int = 5,
    c: int = 7,
) -> tuple[list[Record], list[Record]]:
    """(train, test): n_train + n_test distinct (x, y) pairs from [low, high]², seeded; the two sets are disjoint.

    >>> train, test = rule_split(2, 1, seed=0)
    >>> len(train), len(test), train[0].key.startswith("f(")
    (2, 1, True)
    """
    if n_train < 0 or n_test < 0:
        raise ConfigError(f"rule_split: n_train and n_test must be >= 0, got {n_train} and {n_test}")
    if high < low:
        raise ConfigError(f"rule_split: high ({high}) must be >= low ({low})")
    side = high - low + 1
    if n_train + n_test > side * side:
        raise ConfigError(
            f"rule_split: {n_train} + {n_test} records need more than the {side * side} distinct pairs in "
            f"[{low}, {high}]²; widen the range or ask for fewer"
        )
    rng = random.Random(seed)
    picks = rng.sample(range(side * side), n_train + n_test)  # pair index i <-> (low + i // side, low + i % side)
    out = [rule_record(low + i // side, low + i % side, a, b, c) for i in picks]
    return out[:n_train], out[n_train:]
