"""PhoneBook: unique "First Last:" -> 10-digit phone number records, from a built-in list of names (no network).

`phonebook(n, seed)` sizes a book by records; `phonebook_by_length(ℓ, tokenizer, seed)` by answer tokens, as the
paper does (its PB1000 holds 1000 value tokens).

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from memft.prompts.encoding import value_ids
from memft.errors import ConfigError
from memft.prompts.records import Record

FIRST = (
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara Richard Susan Joseph "
    "Jessica Thomas Sarah Charles Karen Christopher Lisa Daniel Nancy Matthew Betty Anthony Sandra Mark Margaret "
    "Donald Ashley Steven Kimberly Andrew Emily Paul Donna Joshua Michelle Kenneth Carol Kevin Amanda Brian Melissa "
    "George Deborah Timothy Stephanie Ronald Rebecca Jason Sharon Edward Laura Jeffrey Cynthia Ryan Dorothy Jacob "
    "Amy Gary Kathleen Nicholas Angela Eric Shirley Jonathan Emma Stephen Brenda Larry Pamela Justin Nicole Scott "
    "Anna Brandon Samantha Benjamin Katherine Samuel Christine Gregory Debra Alexander Rachel Patrick Carolyn Frank "
    "Janet Raymond Maria Jack Olivia Dennis Heather Jerry Helen Tyler Catherine Aaron Diane Jose Julie Adam Victoria"
).split()
LAST = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez Wilson "
    "Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark Ramirez Lewis Robinson "
    "Walker Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera Campbell "
    "Mitchell Carter Roberts Gomez Phillips Evans Turner Diaz Parker Cruz Edwards Collins Reyes Stewart Morris Morales "
    "Murphy Cook Rogers Gutierrez Ortiz Morgan Cooper Peterson Bailey Reed Kelly Howard Ramos Kim Cox Ward Richardson "
    "Watson Brooks Chavez Wood James Bennett Gray Mendoza Ruiz Hughes Price Alvarez Castillo Sanders Patel Myers Long"
).split()


def phonebook(n: int, seed: int = 0) -> list[Record]:
    """n records "First Last:" -> "dddddddddd" with unique names and unique numbers, deterministic in `seed`."""
    if n > len(FIRST) * len(LAST):
        raise ConfigError(f"phonebook: at most {len(FIRST) * len(LAST)} unique names, asked for {n}")
    rng = random.Random(seed)
    names = rng.sample([(f, last) for f in FIRST for last in LAST], n)
    numbers: set[str] = set()
    out = []
    for f, last in names:
        num = "".join(rng.choice("0123456789") for _ in range(10))
        while num in numbers:
            num = "".join(rng.choice("0123456789") for _ in range(10))
        numbers.add(num)
        out.append(Record(key=f"{f} {last}:", value=num))
    return out


def value_tokens(records: Sequence[Record], tokenizer: Any) -> int:
    """Total answer tokens ℓ of `records`: the sum of their value ids (eos excluded), as training counts them."""
    return sum(len(value_ids(r, tokenizer)) for r in records)


def phonebook_by_length(length: int, tokenizer: Any, seed: int = 0) -> list[Record]:
    """The PhoneBook of `length` answer tokens ℓ (the paper's size accounting: PB1000 is 100 numbers for Qwen).

    Rule: walk the seeded ordering of every name (`phonebook(len(FIRST) * len(LAST), seed)`) and keep the longest
    prefix whose value-token total stays <= ℓ. The total therefore falls short of ℓ by less than one record
    (`value_tokens` reports it exactly), and for one seed a smaller book is a prefix of a larger one. For the same
    seed this is not `phonebook(n, seed)`, whose draws depend on n.

    >>> from memft.model.base import tiny_tokenizer
    >>> tok = tiny_tokenizer()  # byte-level: a 10-digit number is 10 tokens
    >>> book = phonebook_by_length(105, tok)
    >>> len(book), value_tokens(book, tok)
    (10, 100)
    """
    if length <= 0:
        raise ConfigError(f"phonebook_by_length: ℓ must be a positive number of answer tokens, got {length}")
    out: list[Record] = []
    total = 0
    everyone = phonebook(len(FIRST) * len(LAST), seed)
    for r in everyone:
        n = len(value_ids(r, tokenizer))
        if total + n > length:
            break
        out.append(r)
        total += n
    if not out:
        raise ConfigError(
            f"phonebook_by_length: ℓ={length} is smaller than one record ({r.key!r} has {n} value tokens); "
            f"ask for at least {n}"
        )
    if len(out) == len(everyone) and total < length:
        raise ConfigError(
            f"phonebook_by_length: ℓ={length} exceeds the {total} value tokens of all {len(everyone)} names "
            f"({len(FIRST)} first x {len(LAST)} last); ask for at most {total}"
        )
    return out
