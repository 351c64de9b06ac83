"""The paper's phase-transition claims: the two identities (p > 0.5 ⇒ argmax; argmax at every position ⇔ greedy
exact recall), which check the implementation, and the Spearman correlation of the earliest stubborn position with
the first free-run failure.

Spearman by the paper's definition (`record_pairs`): one pair per uncertified record at the end of training, i.e.
(first position with teacher-forced p ≤ 0.5, first position where greedy decoding goes wrong) of the final adapter.
The pooled variant (`step_pairs`: every uncertified training step of one-record runs, steps of one run being far
from independent) is reported beside it, labelled as such. Both go through `memft.research.stats.spearman`.

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from memft.certify.metrics import STUBBORN_P, first_false
from memft.research.rows import Row
from memft.research.stats import Spearman, pairs_to_tell, spearman
from memft.research.verdict import Claim

SPEARMAN_PAPER = 0.908
SPEARMAN_PAPER_N = 155
MIN_PAIRS = 100


def record_pairs(rows: Sequence[Row], benchmark: str | None = None) -> list[tuple[int, int]]:
    """(earliest stubborn, first failure) per record where both are known (an uncertified record of the final
    adapter), over the rows of `benchmark` (all when None).

    >>> record_pairs([{"benchmark": "x", "earliest_stubborn": [1, 2, None, 5], "first_failure": [3, 4, 1, 9]}])
    [(1, 3), (2, 4), (5, 9)]
    """
    out = []
    for r in rows:
        if benchmark is not None and r.get("benchmark") != benchmark:
            continue
        for s, f in zip(r.get("earliest_stubborn") or [], r.get("first_failure") or []):
            if s is not None and f is not None:
                out.append((int(s), int(f)))
    return out


def step_pairs(rows: Sequence[Row], benchmark: str = "stress") -> tuple[list[tuple[int, int]], int]:
    """(earliest stubborn, first failure) at every uncertified step of one-record runs' training curves, and how many
    runs gave pairs (the pooled variant; the first teacher-forced argmax error is the free run's first failure)."""
    pairs, runs = [], 0
    for r in rows:
        if r.get("benchmark") != benchmark:
            continue
        got = [(int(c["earliest_stubborn"]), int(c["first_error"])) for c in r.get("curve") or []
               if c.get("first_error") is not None and c.get("earliest_stubborn") is not None]
        pairs += got
        runs += bool(got)
    return pairs, runs


transition_pairs = step_pairs  # the name the first page used


def rho_of(pairs: Sequence[tuple[int, int]]) -> Spearman:
    return spearman([s for s, _ in pairs], [f for _, f in pairs])


def _fmt(s: Spearman) -> str:
    if math.isnan(s.rho):
        return f"undefined (n = {s.n})"
    ci = f" [{s.lo:.3f}, {s.hi:.3f}]" if s.lo is not None and s.hi is not None else ""
    return f"{s.rho:.3f}{ci} (n = {s.n})"


def spearman_claim(rows: Sequence[Row]) -> Claim:
    """The verdict on ρ(earliest stubborn, first failure) by the paper's definition, all benchmarks' records; the
    per-benchmark values and the pooled training-step variant beside it."""
    name = "earliest stubborn position predicts the first free-run failure (Spearman)"
    paper = f"ρ = {SPEARMAN_PAPER} (n = {SPEARMAN_PAPER_N} records)"
    pairs = record_pairs(rows)
    s = rho_of(pairs)
    parts = [f"one pair per uncertified record at the end of training, every benchmark: ρ = {_fmt(s)}"]
    for bench in sorted({str(r.get("benchmark")) for r in rows}):
        b = record_pairs(rows, bench)
        if b:
            parts.append(f"{bench} {_fmt(rho_of(b))}")
    steps, step_runs = step_pairs(rows)
    if steps:
        parts.append(f"pooled variant (every uncertified training step of {step_runs} one-record runs, steps of a run not "
                     f"independent; not the paper's definition): {_fmt(rho_of(steps))}")
    measured = "; ".join(parts)
    runs = sum(bool(record_pairs([r])) for r in rows)
    seeds = f"{s.n} records of {runs} runs (the records of one run share an adapter)"
    if s.n < 4 or math.isnan(s.rho) or s.lo is None or s.hi is None:
        return Claim(name, paper, measured, f"{s.n} records", "untested", "fewer than 4 uncertified records with both positions",
                     seeds=seeds)
    need = pairs_to_tell(s.rho, SPEARMAN_PAPER)
    effect = f"ρ {s.rho:.3f} [{s.lo:.3f}, {s.hi:.3f}] (95 %, Fisher z) vs the paper's {SPEARMAN_PAPER}"
    power = f"{need} records to tell ρ = {s.rho:.3f} from {SPEARMAN_PAPER} at 80 % power (have {s.n})" if need else "—"
    if s.lo > 0 and s.hi >= SPEARMAN_PAPER:
        verdict, why = "reproduced", f"positive, and the interval holds the paper's {SPEARMAN_PAPER}"
    elif s.hi < SPEARMAN_PAPER and need is not None and s.n >= need:
        verdict = "refuted"
        why = (f"the interval excludes the paper's {SPEARMAN_PAPER} with {s.n} ≥ {need} records"
               + ("; the correlation is positive, but weaker" if s.lo > 0 else ""))
    else:
        verdict, why = "inconclusive", "too few records to tell this ρ from the paper's" if s.hi < SPEARMAN_PAPER else "the interval holds no correlation"
    if s.n < MIN_PAIRS:
        why += f" (fewer than {MIN_PAIRS} records)"
    return Claim(name, paper, measured, f"{s.n} records", verdict, why, effect=effect, seeds=seeds,
                 budget="end of each run's budget (see the comparison cells)", power=power)


def transition_claims(rows: Sequence[Row]) -> list[Claim]:
    """The two identities, checked on every stored position: p > 0.5 ⇒ the argmax (a probability above one half is
    the largest), and free-run first failure = first teacher-forced argmax error (greedy decoding reproduces the
    target exactly as long as the target is the argmax)."""
    above = wrong_above = 0
    agree = total = 0
    by_dtype: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # dtype -> [agree, total]
    for r in rows:
        correct = r.get("correct")
        probs = r.get("probs")
        if correct is None:
            continue
        for rec, flags in enumerate(correct):
            ps = probs[rec] if probs else []
            for p, c in zip(ps, flags):
                if p > STUBBORN_P:
                    above += 1
                    wrong_above += not c
            ff = (r.get("first_failure") or [None] * len(correct))[rec]
            tf = first_false(flags)
            if tf is not None and ff is not None:  # uncertified and generated: the free run is compared
                total += 1
                agree += ff == tf
                tally = by_dtype[str(r.get("dtype"))]
                tally[0] += ff == tf
                tally[1] += 1
    ident = "true by construction; the count checks the implementation, it reproduces nothing"
    out = []
    name = "p > 0.5 is sufficient for greedy decoding"
    if above:
        ok = wrong_above == 0
        out.append(Claim(name, "sufficient (a probability above one half is the largest)",
                         f"{wrong_above} of {above} teacher-forced positions with p > 0.5 were not the argmax", f"{above} positions",
                         "identity" if ok else "inconclusive", ident if ok else "a position above the line lost the argmax: a bug to find",
                         seeds=f"{above} positions"))
    else:
        out.append(Claim(name, "sufficient", "—", "no positions", "untested", "no stored positions"))
    name = "target = argmax everywhere ⇔ greedy exact recall"
    if total:
        # In exact arithmetic the two are the same computation up to the first divergence; a base in bf16 rounds the
        # cached (generation) and full (teacher-forced) logits differently, so a near-tie can flip: counted per dtype.
        split = "; ".join(f"{d}: {a} of {t}" for d, (a, t) in sorted(by_dtype.items()))
        ok = agree == total
        out.append(Claim(name, "equivalent",
                         f"free-run first failure = first teacher-forced argmax error in {agree} of {total} uncertified records ({split})",
                         f"{total} records", "identity" if ok else "inconclusive",
                         ident if ok else "some free runs failed elsewhere (see the split by base dtype)", seeds=f"{total} records"))
    else:
        out.append(Claim(name, "equivalent", "—", "no records", "untested", "no uncertified records with a free run and stored positions"))
    return out
