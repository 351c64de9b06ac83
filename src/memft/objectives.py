"""Training objectives: pure functions of per-token losses -> (loss, stats), picked by name.

Signature of every objective:  fn(tokens: Tokens, state: dict, **options) -> (loss | None, stats)
`tokens` covers every target token of the step's batch; `state` persists across steps (for objectives
that track anchors or curricula); a loss of None means "no update this step" (nothing to learn).
Losses are sums over tokens divided by the number (or total weight) of tokens, never averaged twice.

Notation: N target tokens in the step, L_t [N] their cross-entropy, p_t = exp(-L_t) the target probability.
Weighted objectives return L = sum_t w_t * L_t / (sum_t w_t + 1e-8), with w_t computed from the DETACHED losses
(no gradient flows through the weights). Every objective reports `trained_tokens` (tokens with w_t > 0) and, where
there are weights, `weight_sum`.

Objectives and their options (defaults):
- sft              mean of L_t. No options.
- memft-ot         only-threshold (the paper's OT): w_t = 1 while p_t <= threshold, else `floor`; with floor = 0
                   and no such token the step is skipped (None), or with fallback="sft" trained as plain SFT (the
                   reference code). Options: threshold=0.5, margin=None, hysteresis=False, floor=0.0,
                   fallback="skip". The defaults are exactly the paper's OT.
- memft-ot-margin  memft-ot with margin=0.7, hysteresis=True, floor=0.05 (threshold=0.5): a failing token
                   (p_t <= 0.5) is trained until p_t > 0.7, passed tokens keep a small weight.
- memft-sw         spatial window from each record's first argmax error, the reference code's rule (rule=
                   "reference"). Options: s=10, window=50, tau=20, floor=0.01, patience=3, grow=0.5,
                   max_window_factor=4, rule="reference", curriculum=False, seed=0, ratios=(0.2, 0.4, 0.6, 0.8, 1.0),
                   boundaries=None, stage_epochs=None. window=None turns the spatial part off (w_t = 1), which with
                   curriculum=True is the temporal curriculum alone (memft.curriculum).
- memft-sw-v01     memft-sw with rule="v01", memft 0.1's window (kept pending a measurement against the reference).
- memft-sw-curriculum  memft-sw with curriculum=True (same options).
- memft-sw-phonebook   the paper's PhoneBook MemFT-SW: curriculum over records x the paper's OT, no spatial window.
                   Options: threshold=0.5, fallback="skip", curriculum=True, seed, ratios, boundaries, stage_epochs.
- focal            focal loss (Lin et al. 2017): mean of (1 - p_t)^gamma * L_t, gradient through p_t. gamma=2.

`option_problems(name, options)` lists every unknown or invalid option at once (for validation up front); each
objective also raises ConfigError with that list when called with bad options.

Core layer: may import other core modules only; the memory store, checks, research tools, integrations and the CLI build on it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from memft.curriculum import RATIOS, stage_starts  # noqa: F401  (stage_starts: part of this module's interface)
from memft.curriculum import active as curriculum_active
from memft.curriculum import problems as curriculum_problems
from memft.curriculum import stage_records as _stage_records
from memft import window as sw
from memft.errors import ConfigError

EPS = 1e-8  # keeps the weighted mean finite when every weight is 0

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
    return _stage_records(state, opts["seed"], opts["ratios"], opts["boundaries"], opts["stage_epochs"])


def revision(name: str) -> int | None:
    """The definition revision of objective `name`, None for its first one. Results stored under a name whose
    definition changed must not be taken for the new one: sweeps put this in a point's run id."""
    return REVISIONS.get(name)


def _raise(problems: list[str]) -> None:
    if problems:
        raise ConfigError("; ".join(problems))


def _number(problems: list[str], name: str, value: Any, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (lo < value if lo_open else lo <= value) and (value < hi if hi_open else value <= hi)
    if not ok:
        span = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        problems.append(f"method option {name} must be a number in {span}, got {value!r}")


def _flag(problems: list[str], name: str, value: Any) -> None:
    if not isinstance(value, bool):
        problems.append(f"method option {name} must be true or false, got {value!r}")


def _weighted(loss: Any, w: Any) -> tuple[Any, dict[str, float]]:
    """sum_t w_t * L_t / (sum_t w_t + EPS) for loss [N] (with grad) and detached weights w [N]; None if all w_t = 0."""
    total = w.sum()
    stats = {"trained_tokens": float((w > 0).sum()), "weight_sum": float(total)}
    if stats["weight_sum"] == 0.0:
        return None, stats
    return (w * loss).sum() / (total + EPS), stats


@register("sft")
def sft(tokens: Tokens, state: dict, **_: Any) -> tuple[Any, dict[str, float]]:
    """Plain supervised fine-tuning: the mean cross-entropy over every target token."""
    return tokens.loss.mean(), {"trained_tokens": float(tokens.loss.numel())}


def unlikelihood(prob: Any, mask: Any) -> tuple[Any, dict[str, float]]:
    """The forgetting loss (Welleck et al. 2019's unlikelihood): mean over masked tokens of -log(1 - p_t).

    prob [N] target probabilities (with grad), mask [N] bool: tokens of records still to be forgotten. It pushes the
    stored value's tokens down until greedy decoding leaves the value; None when no token is masked.
    Stats: forget_tokens.
    """
    import torch

    n = int(mask.sum())
    if n == 0:
        return None, {"forget_tokens": 0.0}
    p = prob[mask].clamp(max=1 - 1e-6)  # p = 1 would give an infinite loss
    return -torch.log1p(-p).sum() / n, {"forget_tokens": float(n)}


# ---------------------------------------------------------------------------------------------------- only-threshold


FALLBACKS = ("skip", "sft")


def _ot_problems(threshold: Any, margin: Any, hysteresis: Any, floor: Any, fallback: Any) -> list[str]:
    problems: list[str] = []
    _number(problems, "threshold", threshold, 0, 1, lo_open=True, hi_open=True)
    if margin is not None:
        _number(problems, "margin", margin, threshold if isinstance(threshold, (int, float)) else 0, 1, hi_open=True)
    _flag(problems, "hysteresis", hysteresis)
    _number(problems, "floor", floor, 0, 1)
    if fallback not in FALLBACKS:
        problems.append(f"method option fallback must be one of {', '.join(FALLBACKS)}, got {fallback!r}")
    return problems


def _with_fallback(loss: Any, w: Any, mask: Any, fallback: str) -> tuple[Any, dict[str, float]]:
    """_weighted(loss, w); when every w_t is 0 and fallback is "sft", the mean loss over the tokens with mask_t > 0
    instead (stats then say fallback = 1). loss [N] with grad, w and mask [N] detached."""
    out, stats = _weighted(loss, w)
    if out is None and fallback == "sft":
        out, stats = _weighted(loss, mask)
        stats["fallback"] = 1.0
    return out, stats


@register("memft-ot", check=_ot_problems)
def memft_ot(
    tokens: Tokens, state: dict, *, threshold: float = 0.5, margin: float | None = None, hysteresis: bool = False, floor: float = 0.0,
    fallback: str = "skip",
) -> tuple[Any, dict[str, float]]:
    """Only-threshold: train the tokens that have not passed the probability line, nothing else.

    Paper form (the defaults): w_t = 1[p_t <= p*] with p* = `threshold`, i.e. 1[L_t >= -ln p*]; a token exactly at
    p* is trained, as metrics counts p <= 0.5 as stubborn. No token to train -> (None, stats): zero back-propagation.
    fallback="sft" instead back-props the plain mean loss of the step there (what the reference code does; stats
    fallback = 1). "skip" is the default: it is the paper's formula, and it is what makes skipping records at the
    bar exact (memft.train's active set) and lets a certified batch cost no update.

    Stabilised form (exact OT lets passed tokens drift back below the line, so exact match oscillates):
    - margin m: the line a token must clear to stop being trained; without hysteresis w_t = 1[p_t <= m].
    - hysteresis: a Schmitt trigger per token, identified by (record, offset) in state["ot_trained"]. A token
      enters the trained set when p_t <= threshold and leaves it only when p_t > margin; so a token at p = 0.6
      (margin 0.7) is trained if it came from below the threshold, not if it never fell under it.
    - floor f: weight of every token outside the trained set (w_t = f instead of 0); f > 0 never skips a step.
    Stats: trained_tokens (w_t > 0), active_tokens (in the trained set, w_t = 1), weight_sum.
    """
    import torch

    _raise(_ot_problems(threshold, margin, hysteresis, floor, fallback))
    loss = tokens.loss.detach()  # [N]
    enter = loss >= -math.log(threshold)  # [N] p_t <= threshold
    stay = loss >= -math.log(threshold if margin is None else margin)  # [N] p_t <= margin
    if hysteresis:
        held: set[tuple[int, int]] = state.setdefault("ot_trained", set())
        keys = list(zip(tokens.record.tolist(), tokens.offset.tolist()))
        was = torch.tensor([k in held for k in keys], dtype=torch.bool, device=loss.device)
        active = enter | (was & stay)
        for k, a in zip(keys, active.tolist()):
            if a:
                held.add(k)
            else:
                held.discard(k)
    else:
        active = stay
    w = torch.full_like(loss, float(floor)).masked_fill(active, 1.0)  # [N]
    out, stats = _with_fallback(tokens.loss, w, torch.ones_like(loss), fallback)
    stats["active_tokens"] = float(active.sum())
    return out, stats


register_variant(
    "memft-ot-margin", "memft-ot", "memft-ot with the hysteresis defaults: enter at p <= 0.5, train until p > 0.7, weight 0.05 elsewhere.",
    margin=0.7, hysteresis=True, floor=0.05,
)


# ---------------------------------------------------------------------------------------------------- spatial window

def _sw_problems(
    s: Any, window: Any, tau: Any, floor: Any, patience: Any, grow: Any, max_window_factor: Any, rule: Any, curriculum: Any, seed: Any,
    ratios: Any, boundaries: Any, stage_epochs: Any,
) -> list[str]:
    problems: list[str] = []
    inf = math.inf
    _number(problems, "s", s, 0, inf, lo_open=True)
    if window is not None:
        _number(problems, "window", window, 0, inf)
    _number(problems, "tau", tau, 0, inf, lo_open=True)
    _number(problems, "floor", floor, 0, 1)
    if not isinstance(patience, int) or isinstance(patience, bool) or patience < 1:
        problems.append(f"method option patience must be an integer >= 1, got {patience!r}")
    _number(problems, "grow", grow, 0, inf)
    _number(problems, "max_window_factor", max_window_factor, 1, inf)
    if rule not in sw.RULES:
        problems.append(f"method option rule must be one of {', '.join(sw.RULES)}, got {rule!r}")
    _flag(problems, "curriculum", curriculum)
    return problems + curriculum_problems(seed, ratios, boundaries, stage_epochs)


@register("memft-sw", check=_sw_problems)
def memft_sw(
    tokens: Tokens,
    state: dict,
    *,
    s: float = 10.0,
    window: float | None = 50,
    tau: float = 20.0,
    floor: float = 0.01,
    patience: int = 3,
    grow: float = 0.5,
    max_window_factor: float = 4.0,
    rule: str = "reference",
    curriculum: bool = False,
    seed: int = 0,
    ratios: Sequence[float] = RATIOS,
    boundaries: Sequence[int] | None = None,
    stage_epochs: int | None = None,
) -> tuple[Any, dict[str, float]]:
    """Spatial window (intra-record) with an optional temporal curriculum (inter-batch).

    Spatial, per record: anchor a = the first offset whose target is not the argmax; base weights b_t = sw_base(L, s)
    (memft.window).
    A record without error: w_t = b_t. A record with one, rule "reference" (the paper's code): window_weights, i.e.
    b_t before a, b_t * exp(-(t - a) / tau) on a .. a + W_cur - 1, b_t * floor after. Rule "v01" (memft 0.1, kept
    as memft-sw-v01): window_weights_v01. W_cur = factor * `window`; the factor follows grow_factor (reference:
    +grow at every observation once the anchor has stayed put `patience` times, back to 1 when it moves or the
    count is below patience) or grow_factor_v01 (+grow once per `patience` stuck observations), capped at
    max_window_factor; see memft.window.factors. window=None: no spatial weighting, w_t = 1.

    Temporal (curriculum=True): only tokens of records in the current stage keep their weight, the others get 0;
    see memft.curriculum (options seed, ratios, boundaries, stage_epochs). Stats: trained_tokens, weight_sum,
    anchored_records, max_window; with the curriculum active_ratio and curriculum_stage. All weights 0 -> (None, stats).
    """
    import torch

    _raise(_sw_problems(s, window, tau, floor, patience, grow, max_window_factor, rule, curriculum, seed, ratios, boundaries, stage_epochs))
    loss = tokens.loss.detach()  # [N]
    records, inv, anchor = _first_errors(tokens)  # [R], [N], [R]
    recs, anchors = records.tolist(), anchor.tolist()
    stats: dict[str, float] = {}
    active = [True] * len(recs)
    if curriculum:
        active, cstats = curriculum_active(recs, [a < 0 for a in anchors], state, seed, ratios, boundaries, stage_epochs)
        stats.update(cstats)
    if window is None:
        w = torch.ones_like(loss)
    else:
        factor = sw.factors(recs, anchors, active, state, rule, patience, grow, max_window_factor)
        base = sw.sw_base(loss, s)  # [N]
        a = anchor[inv]  # [N] anchor of each token's record, -1: none
        width = torch.tensor(factor, dtype=loss.dtype, device=loss.device)[inv] * window  # [N] W_cur
        rule_fn = sw.window_weights if rule == "reference" else sw.window_weights_v01
        w = torch.where(a < 0, base, rule_fn(base, tokens.offset - a, width, tau, floor))
        stats["max_window"] = max(factor, default=0.0) * window
    w = w * torch.tensor(active, dtype=loss.dtype, device=loss.device)[inv]
    out, wstats = _weighted(tokens.loss, w)
    stats.update(wstats, anchored_records=float(sum(x >= 0 and on for x, on in zip(anchors, active))))
    return out, stats


def _first_errors(tokens: Tokens) -> tuple[Any, Any, Any]:
    """records [R] (sorted, unique), inv [N] (index of each token's record in `records`), anchor [R]: the offset of
    the record's first argmax error, -1 when the record has none (certified)."""
    import torch

    records, inv = torch.unique(tokens.record, return_inverse=True)
    none = int(tokens.offset.max()) + 1
    wrong = torch.where(tokens.correct, none, tokens.offset)  # [N] offset of errors, `none` elsewhere
    anchor = torch.full((len(records),), none, dtype=wrong.dtype, device=wrong.device).scatter_reduce(0, inv, wrong, "amin")
    return records, inv, torch.where(anchor == none, -1, anchor)


register_variant(
    "memft-sw-v01", "memft-sw",
    "memft-sw as memft 0.1 defined it (rule v01: flat floor outside a .. a + W, growth once per 3 stuck steps). Kept "
    "under its own name, pending a measurement against the reference rule, so runs that used it keep their meaning.",
    rule="v01",
)
register_variant("memft-sw-curriculum", "memft-sw", "memft-sw with the temporal curriculum on (and the spatial window, W = 50).", curriculum=True)


# ---------------------------------------------------------------------------------------------------- phonebook (paper)


def _pb_problems(threshold: Any, fallback: Any, curriculum: Any, seed: Any, ratios: Any, boundaries: Any, stage_epochs: Any) -> list[str]:
    problems = _ot_problems(threshold, None, False, 0.0, fallback)
    _flag(problems, "curriculum", curriculum)
    return problems + curriculum_problems(seed, ratios, boundaries, stage_epochs)


@register("memft-sw-phonebook", check=_pb_problems)
def memft_sw_phonebook(
    tokens: Tokens,
    state: dict,
    *,
    threshold: float = 0.5,
    fallback: str = "skip",
    curriculum: bool = True,
    seed: int = 0,
    ratios: Sequence[float] = RATIOS,
    boundaries: Sequence[int] | None = None,
    stage_epochs: int | None = None,
) -> tuple[Any, dict[str, float]]:
    """The paper's MemFT-SW for PhoneBook: the temporal curriculum over records times the paper's OT, no spatial window.

    w_t = 1[p_t <= threshold] * 1[the token's record is in the current stage] (memft.curriculum). No such token:
    `fallback` "skip" -> (None, stats), zero back-propagation (the paper's formula); "sft" -> the mean loss over the
    stage's tokens (the reference code). The training loop draws mini-batches from the stage's records only
    (objectives.stage_records). Stages go by step (the last from half the budget) unless stage_epochs = E is given:
    then each stage lasts E passes over its records, the reference's unit (its per-stage epoch counts are not
    encoded here: set E for a reproduction). Stats: trained_tokens, weight_sum, active_tokens, active_ratio,
    curriculum_stage, and fallback = 1 when the fallback was used.
    """
    import torch

    _raise(_pb_problems(threshold, fallback, curriculum, seed, ratios, boundaries, stage_epochs))
    loss = tokens.loss.detach()  # [N]
    records, inv = torch.unique(tokens.record, return_inverse=True)  # [R], [N]
    stats: dict[str, float] = {}
    mask = torch.ones_like(loss)  # [N] 1: the token's record is in the stage
    if curriculum:
        correct = torch.ones(len(records), dtype=torch.bool, device=loss.device).scatter_reduce(0, inv, tokens.correct, "amin")  # [R]
        on, stats = curriculum_active(records.tolist(), correct.tolist(), state, seed, ratios, boundaries, stage_epochs)
        mask = torch.tensor(on, dtype=loss.dtype, device=loss.device)[inv]
    trained = loss >= -math.log(threshold)  # [N] p_t <= threshold
    out, wstats = _with_fallback(tokens.loss, trained.to(loss.dtype) * mask, mask, fallback)
    return out, {**stats, **wstats, "active_tokens": float((trained & (mask > 0)).sum())}


# ---------------------------------------------------------------------------------------------------- focal


def _focal_problems(gamma: Any) -> list[str]:
    problems: list[str] = []
    _number(problems, "gamma", gamma, 0, math.inf)
    return problems


@register("focal", check=_focal_problems)
def focal(tokens: Tokens, state: dict, *, gamma: float = 2.0) -> tuple[Any, dict[str, float]]:
    """Focal loss (Lin et al. 2017) over target tokens: mean_t (1 - p_t)^gamma * L_t, p_t = exp(-L_t) [N].

    As published, the gradient flows through the modulating factor too (it is not a detached weight).
    Stats: trained_tokens ((1 - p_t)^gamma > 0), weight_sum (sum of the factors).
    """
    import torch

    _raise(_focal_problems(gamma))
    p = torch.exp(-tokens.loss)  # [N], with grad
    factor = (1 - p).clamp_min(0) ** gamma  # clamp: a rounding p > 1 must not give NaN for fractional gamma
    f = factor.detach()
    return (factor * tokens.loss).mean(), {"trained_tokens": float((f > 0).sum()), "weight_sum": float(f.sum())}
