"""Strict JSON for reports: NaN and infinities (which `json.dumps` writes as bare `NaN`/`Infinity`, not JSON)
become null, so every report parses with any JSON reader.

Core layer: may import other core modules only; the memory store, checks, research tools, integrations and the CLI build on it.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_none(x: float | None) -> float | None:
    """
    >>> finite_or_none(0.5), finite_or_none(float("nan")), finite_or_none(float("-inf"))
    (0.5, None, None)
    """
    return x if x is None or math.isfinite(x) else None


def clean(obj: Any) -> Any:
    """`obj` with every non-finite float (in dicts, lists, tuples) replaced by None."""
    if isinstance(obj, float):
        return finite_or_none(obj)
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    return obj


def dumps(obj: Any, indent: int | None = 2) -> str:
    """
    >>> dumps({"min_prob": float("nan"), "p": [1.0, float("inf")]}, indent=None)
    '{"min_prob": null, "p": [1.0, null]}'
    """
    return json.dumps(clean(obj), indent=indent, ensure_ascii=False, allow_nan=False)
