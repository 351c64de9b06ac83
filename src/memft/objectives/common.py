"""What every objective shares: the weighted mean of token losses and the checks of option values.

Core layer: may import other core modules only.
"""

from __future__ import annotations

from typing import Any

from memft.errors import ConfigError

EPS = 1e-8  # keeps the weighted mean finite when every weight is 0


def raise_problems(problems: list[str]) -> None:
    if problems:
        raise ConfigError("; ".join(problems))


def check_number(problems: list[str], name: str, value: Any, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (lo < value if lo_open else lo <= value) and (value < hi if hi_open else value <= hi)
    if not ok:
        span = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        problems.append(f"method option {name} must be a number in {span}, got {value!r}")


def check_flag(problems: list[str], name: str, value: Any) -> None:
    if not isinstance(value, bool):
        problems.append(f"method option {name} must be true or false, got {value!r}")


def weighted(loss: Any, w: Any) -> tuple[Any, dict[str, float]]:
    """sum_t w_t * L_t / (sum_t w_t + EPS) for loss [N] (with grad) and detached weights w [N]; None if all w_t = 0."""
    total = w.sum()
    stats = {"trained_tokens": float((w > 0).sum()), "weight_sum": float(total)}
    if stats["weight_sum"] == 0.0:
        return None, stats
    return (w * loss).sum() / (total + EPS), stats

