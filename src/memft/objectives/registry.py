"""The objectives' registry: objectives by name, their options and defaults, option checks, definition revisions.

Signature of every objective:  fn(tokens: Tokens, state: dict, **options) -> (loss | None, stats); see the package
docstring (memft.objectives) for the objectives and their options.

Core layer: may import other core modules only.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from memft.objectives.curriculum import stage_records as curriculum_stage_records

OBJECTIVES: dict[str, Callable[..., tuple[Any, dict[str, float]]]] = {}
# Names whose definition changed after results were stored under them: name -> revision (see `revision`).
# 2: memft-sw (and its curriculum variant) became the reference code's rule; the old one is memft-sw-v01.
REVISIONS: dict[str, int] = {"memft-sw": 2, "memft-sw-curriculum": 2}
CHECKS: dict[str, Callable[..., list[str]]] = {}  # objective name -> fn(**options) -> problems


@dataclass
class Tokens:
    """All target tokens of one step, [N] each: loss (with grad), correct (argmax == target), record index, offset."""

    loss: Any  # torch.Tensor [N]
    correct: Any  # torch.Tensor [N] bool
    record: Any  # torch.Tensor [N] long
    offset: Any  # torch.Tensor [N] long


def register(name: str, check: Callable[..., list[str]] | None = None) -> Callable:
    def deco(fn: Callable) -> Callable:
        OBJECTIVES[name] = fn
        if check is not None:
            CHECKS[name] = check
        return fn

    return deco


def register_variant(name: str, base: str, doc: str, **defaults: Any) -> None:
    """Register `name` as objective `base` with other option defaults (same options, same checks)."""
    fn = OBJECTIVES[base]
    sig = inspect.signature(fn)
    sig = sig.replace(parameters=[p.replace(default=defaults[p.name]) if p.name in defaults else p for p in sig.parameters.values()])

    def variant(tokens: Tokens, state: dict, **options: Any) -> tuple[Any, dict[str, float]]:
        return fn(tokens, state, **{**defaults, **options})

    variant.__signature__ = sig  # type: ignore[attr-defined]  # option_problems reads the defaults from here
    variant.__doc__ = doc
    variant.__name__ = name.replace("-", "_")
    OBJECTIVES[name] = variant
    if base in CHECKS:
        CHECKS[name] = CHECKS[base]


def get(name: str) -> Callable[..., tuple[Any, dict[str, float]]]:
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise KeyError(f"unknown objective {name!r}; known: {', '.join(OBJECTIVES)}") from None


def option_defaults(name: str) -> dict[str, Any]:
    """The options of objective `name` (its keyword-only parameters) with their defaults."""
    return {k: p.default for k, p in inspect.signature(get(name)).parameters.items() if p.kind is p.KEYWORD_ONLY}


def option_problems(name: str, options: dict[str, Any]) -> list[str]:
    """Every unknown or invalid option of objective `name`, as messages (empty: the options are fine)."""
    params = option_defaults(name)
    unknown = sorted(set(options) - set(params))
    if unknown:
        known = ", ".join(params) or "none"
        return [f"method option {k!r} is not an option of {name} (its options: {known})" for k in unknown]
    check = CHECKS.get(name)
    return check(**{**params, **options}) if check else []


def stage_records(name: str, state: dict, options: dict[str, Any]) -> list[int] | None:
    """The records the current curriculum stage of objective `name` trains (None: no curriculum, every record).

    For the training loop, at the start of each epoch: it draws mini-batches from these records only, since the
    objective gives every other record weight 0. Reads state["n_records"], state["step"], state["max_steps"].
    """
    opts = {**option_defaults(name), **options}
    if not opts.get("curriculum"):
        return None
    return curriculum_stage_records(state, opts["seed"], opts["ratios"], opts["boundaries"], opts["stage_epochs"], opts.get("order", "shuffle"))


def revision(name: str) -> int | None:
    """The definition revision of objective `name`, None for its first one. Results stored under a name whose
    definition changed must not be taken for the new one: sweeps put this in a point's run id."""
    return REVISIONS.get(name)

