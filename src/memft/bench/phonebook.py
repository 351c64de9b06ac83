"""PhoneBook: unique "First Last:" -> 10-digit phone number records, from a built-in list of names (no network)."""

from __future__ import annotations

import random

from memft.records import Record

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
        raise ValueError(f"phonebook: at most {len(FIRST) * len(LAST)} unique names, asked for {n}")
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
