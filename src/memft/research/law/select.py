"""Which rows the law is fitted to: complete ones (finite rank > 0, length > 0, loss_init and ΔL) that are not
saturated (ΔL ≥ (1 − ε)·L_init: the adapter learned almost everything, so ΔL no longer measures capacity).

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from memft.errors import ConfigError
from memft.research.rows import Row

SATURATION_EPS = 0.05  # a run with ΔL >= (1 - eps) L_init is saturated (its loss is at the floor): excluded from fits


def delta_loss(row: Row) -> float | None:
    """A row's ΔL: `delta_loss`, or loss_init − loss_final when it is missing (None when neither is there)."""
    d = row.get("delta_loss")
    if d is None and row.get("loss_init") is not None and row.get("loss_final") is not None:
        d = row["loss_init"] - row["loss_final"]
    return d


def number(v: Any) -> float | None:
    """A finite float, or None for None / NaN / infinity / non-numbers (how rows and fits are read everywhere).

    >>> number("0.5"), number(None), number(float("nan")), number("x")
    (0.5, None, None, None)
    """
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def finite(v: Any) -> bool:
    return number(v) is not None


def complete(row: Row) -> bool:
    try:
        vals = (row.get("rank"), row.get("length"), row.get("loss_init"), delta_loss(row))
    except TypeError:  # a non-numeric loss
        return False
    return all(finite(v) for v in vals) and float(row["rank"]) > 0 and float(row["length"]) > 0


def saturated(row: Row, eps: float = SATURATION_EPS) -> bool:
    """ΔL ≥ (1 − ε)·L_init: the run learned (almost) everything, so ΔL no longer reflects capacity."""
    d, li = delta_loss(row), row.get("loss_init")
    if d is None or li is None:
        raise ConfigError(f"saturated: row needs loss_init and delta_loss (or loss_final); got {row!r}")
    return d >= (1.0 - eps) * li


def check_options(eps: float, huber: float | None = None) -> None:
    if not 0.0 <= eps < 1.0:
        raise ConfigError(f"eps: the saturation margin is a fraction in [0, 1); got {eps}")
    if huber is not None and not huber > 0:
        raise ConfigError(f"huber: the Huber threshold is a positive ΔL; got {huber}")


def select(rows: Iterable[Row], eps: float = SATURATION_EPS) -> list[Row]:
    """The rows the law is fitted to: complete (see module docstring) and not saturated."""
    check_options(eps)
    return [r for r in rows if complete(r) and not saturated(r, eps)]


def arrays(rows: Sequence[Row]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.array([float(r["rank"]) for r in rows]),
        np.array([float(r["length"]) for r in rows]),
        np.array([float(delta_loss(r)) for r in rows]),  # type: ignore[arg-type]
    )
