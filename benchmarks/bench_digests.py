"""What a record digest costs (memft.store.digests): the time of one scrypt-v1 digest, of the digests of a 1000-record
write, and what that makes a brute force of one folder's short values cost (memft 0.1's plain sha256 for scale).

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_digests.py [--out benchmarks/results/digests.json]

A few seconds on one CPU core. Brute-force figures are this machine's single-core time per guess times the number
of values; an attacker with many cores or GPUs divides them by the parallelism they bring.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from memft.store.digests import SCRYPT_N, SCRYPT_P, SCRYPT_R, DigestScheme
from memft.prompts.records import Record


def per_digest(scheme_of, n: int) -> list[float]:
    """Seconds per digest, each of a new record with a new salt (nothing cached)."""
    out = []
    for i in range(n):
        s, r = scheme_of(), Record(f"phone {i}:", f"{5550100000 + i}")
        t = time.perf_counter()
        s.digest(r)
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/digests.json"))
    ap.add_argument("--n", type=int, default=200, help="digests timed one by one")
    args = ap.parse_args()
    scrypt = per_digest(DigestScheme.fresh, args.n)
    sha = per_digest(DigestScheme, args.n)
    s = DigestScheme.fresh()
    recs = [Record(f"k{i}:", f"{i:010d}") for i in range(1000)]
    t = time.perf_counter()
    s.set_hash(recs)  # what a 1000-record write pays: every digest once (the ledger and memft.json reuse them)
    write_1000 = time.perf_counter() - t
    t = time.perf_counter()
    s.set_hash(recs)
    again = time.perf_counter() - t
    med, med_sha = statistics.median(scrypt), statistics.median(sha)
    out = {
        "scheme": "scrypt-v1", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "memory_mib": 128 * SCRYPT_N * SCRYPT_R / 2**20,
        "digest_ms_median": round(1e3 * med, 3), "digest_ms_p90": round(1e3 * sorted(scrypt)[int(0.9 * len(scrypt))], 3),
        # through memft's Python code (JSON, cache); dedicated sha256 crackers are far faster
        "sha256_us_median_via_memft": round(1e6 * med_sha, 3), "write_1000_records_s": round(write_1000, 3),
        "write_1000_records_again_s": round(again, 4),
        "brute_force_one_core": {"pin_4_digits_s": round(1e4 * med, 1), "number_10_digits_days": round(1e10 * med / 86400, 1)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
