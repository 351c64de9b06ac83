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
                   and no such token the step is skipped (None). Options: threshold=0.5, margin=None,
                   hysteresis=False, floor=0.0. The defaults are exactly the paper's OT.
- memft-ot-margin  memft-ot with margin=0.7, hysteresis=True, floor=0.05 (threshold=0.5): a failing token
                   (p_t <= 0.5) is trained until p_t > 0.7, passed tokens keep a small weight.
- memft-sw         spatial window from each record's first argmax error. Options: s=10, window=50, tau=20,
                   floor=0.01, patience=3, grow=0.5, max_window_factor=4, curriculum=False, seed=0,
                   ratios=(0.2, 0.4, 0.6, 0.8, 1.0), boundaries=None. window=None turns the spatial part off
                   (w_t = 1), which with curriculum=True is the temporal curriculum alone.
- memft-sw-curriculum  memft-sw with curriculum=True (same options).
- focal            focal loss (Lin et al. 2017): mean of (1 - p_t)^gamma * L_t, gradient through p_t. gamma=2.

`option_problems(name, options)` lists every unknown or invalid option at once (for validation up front); each
objective also raises ConfigError with that list when called with bad options.
"""

from __future__ import annotations

import inspect
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from memft.errors import ConfigError

EPS = 1e-8  # keeps the weighted mean finite when every weight is 0
LN2 = math.log(2.0)  # loss of a token with p = 0.5
RATIOS = (0.2, 0.4, 0.6, 0.8, 1.0)

OBJECTIVES: dict[str, Callable[..., tuple[Any, dict[str, float]]]] = {}
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


def _ot_problems(threshold: Any, margin: Any, hysteresis: Any, floor: Any) -> list[str]:
    problems: list[str] = []
    _number(problems, "threshold", threshold, 0, 1, lo_open=True, hi_open=True)
    if margin is not None:
        _number(problems, "margin", margin, threshold if isinstance(threshold, (int, float)) else 0, 1, hi_open=True)
    _flag(problems, "hysteresis", hysteresis)
    _number(problems, "floor", floor, 0, 1)
    return problems


@register("memft-ot", check=_ot_problems)
def memft_ot(
    tokens: Tokens, state: dict, *, threshold: float = 0.5, margin: float | None = None, hysteresis: bool = False, floor: float = 0.0
) -> tuple[Any, dict[str, float]]:
    """Only-threshold: train the tokens that have not passed the probability line, nothing else.

    Paper form (the defaults): w_t = 1[p_t <= p*] with p* = `threshold`, i.e. 1[L_t >= -ln p*]; a token exactly at
    p* is trained, as metrics counts p <= 0.5 as stubborn. No token to train -> (None, stats): zero back-propagation.

    Stabilised form (exact OT lets passed tokens drift back below the line, so exact match oscillates):
    - margin m: the line a token must clear to stop being trained; without hysteresis w_t = 1[p_t <= m].
    - hysteresis: a Schmitt trigger per token, identified by (record, offset) in state["ot_trained"]. A token
      enters the trained set when p_t <= threshold and leaves it only when p_t > margin; so a token at p = 0.6
      (margin 0.7) is trained if it came from below the threshold, not if it never fell under it.
    - floor f: weight of every token outside the trained set (w_t = f instead of 0); f > 0 never skips a step.
    Stats: trained_tokens (w_t > 0), active_tokens (in the trained set, w_t = 1), weight_sum.
    """
    import torch

    _raise(_ot_problems(threshold, margin, hysteresis, floor))
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
    out, stats = _weighted(tokens.loss, w)
    stats["active_tokens"] = float(active.sum())
    return out, stats


register_variant(
    "memft-ot-margin", "memft-ot", "memft-ot with the hysteresis defaults: enter at p <= 0.5, train until p > 0.7, weight 0.05 elsewhere.",
    margin=0.7, hysteresis=True, floor=0.05,
)


# ---------------------------------------------------------------------------------------------------- spatial window


def stage_starts(n_stages: int, max_steps: int) -> list[int]:
    """Default curriculum boundaries: stage k starts at step round(k * max_steps / (2 * n_stages)) (Python round).

    The last stage (every record) starts before half the step budget. max_steps = 100, 5 stages: [0, 10, 20, 30, 40].
    """
    return [round(k * max_steps / (2 * n_stages)) for k in range(n_stages)]


def _sw_problems(
    s: Any, window: Any, tau: Any, floor: Any, patience: Any, grow: Any, max_window_factor: Any, curriculum: Any, seed: Any, ratios: Any, boundaries: Any
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
    _flag(problems, "curriculum", curriculum)
    if not isinstance(seed, int) or isinstance(seed, bool):
        problems.append(f"method option seed must be an integer, got {seed!r}")
    good = isinstance(ratios, Sequence) and len(ratios) > 0 and all(isinstance(r, (int, float)) and 0 < r <= 1 for r in ratios)
    if not good or list(ratios) != sorted(ratios) or ratios[-1] != 1:
        problems.append(f"method option ratios must be non-decreasing fractions in (0, 1] ending at 1, got {ratios!r}")
    if boundaries is not None:
        ints = isinstance(boundaries, Sequence) and all(isinstance(b, int) and not isinstance(b, bool) for b in boundaries)
        if not ints or len(boundaries) != len(ratios) or boundaries[0] != 0 or list(boundaries) != sorted(boundaries):
            problems.append(f"method option boundaries must be non-decreasing step numbers starting at 0, one per ratio, got {boundaries!r}")
    return problems


def _first_errors(tokens: Tokens) -> tuple[Any, Any, Any]:
    """records [R] (sorted, unique), inv [N] (index of each token's record in `records`), anchor [R]: the offset of
    the record's first argmax error, -1 when the record has none (certified)."""
    import torch

    records, inv = torch.unique(tokens.record, return_inverse=True)
    none = int(tokens.offset.max()) + 1
    wrong = torch.where(tokens.correct, none, tokens.offset)  # [N] offset of errors, `none` elsewhere
    anchor = torch.full((len(records),), none, dtype=wrong.dtype, device=wrong.device).scatter_reduce(0, inv, wrong, "amin")
    return records, inv, torch.where(anchor == none, -1, anchor)


def _curriculum(records: list[int], certified: list[bool], state: dict, seed: int, ratios: Sequence[float], boundaries: Sequence[int] | None) -> tuple[list[bool], dict[str, float]]:
    """Which of `records` are in the active prefix this step (updates state["curriculum"]).

    Records 0..n-1 are shuffled once with random.Random(seed); stage k trains the first ceil(ratios[k] * n) (at
    least 1) of that order. The stage is the later of the schedule's (the last k with boundaries[k] <= step) and the
    one reached before. Early advance: while every active record was certified when last seen (all its tokens
    correct; a record never seen counts as not certified), move to the next stage, within this same step.
    """
    n, step = state["n_records"], state["step"]
    cur = state.get("curriculum")
    if cur is None:
        order = list(range(n))
        random.Random(seed).shuffle(order)
        cur = state["curriculum"] = {"order": order, "rank": {r: i for i, r in enumerate(order)}, "stage": 0, "certified": {}}
    cur["certified"].update(zip(records, certified))
    starts = stage_starts(len(ratios), state["max_steps"]) if boundaries is None else boundaries
    stage = max(cur["stage"], max(k for k, b in enumerate(starts) if b <= step))

    def size(k: int) -> int:
        return max(1, math.ceil(ratios[k] * n - 1e-9))  # 1e-9: 0.6 * 10 must give 6, not 7

    while stage < len(ratios) - 1 and all(cur["certified"].get(r, False) for r in cur["order"][: size(stage)]):
        stage += 1
    cur["stage"] = stage
    m = size(stage)
    return [cur["rank"][r] < m for r in records], {"curriculum_stage": float(stage), "active_ratio": m / n}


def _windows(records: list[int], anchors: list[int], active: list[bool], state: dict, window: float, patience: int, grow: float, cap: float) -> list[float]:
    """Current window W_cur of each record (0 where unused); updates state["sw_windows"] {record: [anchor, streak, W_cur]}.

    An observation is a step in which the record is in the batch, active and has an error. Its anchor is
    "unchanged" when it equals the anchor of the record's previous observation; `streak` counts consecutive unchanged
    observations. When streak reaches `patience`, W_cur += grow * window (at most cap) in that same step and streak
    restarts at 0. So with patience 3 and the same anchor at steps 0, 1, 2, 3 the window grows at step 3 (then 6, 9..).
    A moved anchor, or a first observation, sets W_cur = window, streak = 0; a certified record drops its entry.
    """
    track: dict[int, list] = state.setdefault("sw_windows", {})
    out = []
    for r, a, on in zip(records, anchors, active):
        if not on:  # outside the curriculum: not trained, so its window does not age
            out.append(0.0)
            continue
        if a < 0:
            track.pop(r, None)
            out.append(0.0)
            continue
        t = track.get(r)
        if t is None or t[0] != a:
            t = track[r] = [a, 0, float(window)]
        else:
            t[1] += 1
            if t[1] == patience:
                t[1], t[2] = 0, min(t[2] + grow * window, cap)
        out.append(t[2])
    return out


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
    curriculum: bool = False,
    seed: int = 0,
    ratios: Sequence[float] = RATIOS,
    boundaries: Sequence[int] | None = None,
) -> tuple[Any, dict[str, float]]:
    """Spatial window (intra-record) with an optional temporal curriculum (inter-batch).

    Spatial, per record: anchor a = the first offset whose target is not the argmax. Base weights
    b_t = sigmoid(s * (L_t - ln 2)) [N] (0.5 at p = 0.5, -> 1 for failing tokens, -> 0 for confident ones).
    - record without error: w_t = b_t.
    - record with an error: w_t = b_t * exp(-(t - a) / tau) for a <= t <= a + W_cur (both ends included), and
      w_t = floor (a constant 0.01, not scaled by b_t) for t < a and t > a + W_cur.
    W_cur starts at `window` (W) and grows by grow * W (+25 by default) each time the anchor has stayed put for
    `patience` consecutive observations, up to max_window_factor * W (200); see _windows for the exact rule.
    window=None: no spatial weighting, w_t = 1.

    Temporal (curriculum=True): only tokens of records in the active prefix of a seeded order keep their weight,
    the others get 0; see _curriculum. Default boundaries: stage_starts(len(ratios), max_steps), so every record is
    trained from half the step budget on. Reads state["step"], state["max_steps"], state["n_records"].
    Stats: trained_tokens, weight_sum, anchored_records, max_window; with the curriculum active_ratio and
    curriculum_stage. All weights 0 (every active record outside the batch) -> (None, stats).
    """
    import torch

    _raise(_sw_problems(s, window, tau, floor, patience, grow, max_window_factor, curriculum, seed, ratios, boundaries))
    loss = tokens.loss.detach()  # [N]
    records, inv, anchor = _first_errors(tokens)  # [R], [N], [R]
    recs, anchors = records.tolist(), anchor.tolist()
    stats: dict[str, float] = {}
    active = [True] * len(recs)
    if curriculum:
        active, cstats = _curriculum(recs, [a < 0 for a in anchors], state, seed, ratios, boundaries)
        stats.update(cstats)
    if window is None:
        w = torch.ones_like(loss)
    else:
        wcur = _windows(recs, anchors, active, state, window, patience, grow, max_window_factor * window)
        base = torch.sigmoid(s * (loss - LN2))  # [N]
        a = anchor[inv]  # [N] anchor of each token's record, -1: none
        d = (tokens.offset - a).to(loss.dtype)  # [N] distance past the anchor
        inside = (d >= 0) & (d <= torch.tensor(wcur, dtype=loss.dtype, device=loss.device)[inv])
        w = torch.where(inside, base * torch.exp(-d / tau), torch.full_like(loss, float(floor)))
        w = torch.where(a < 0, base, w)
        stats["max_window"] = max(wcur, default=0.0)
    w = w * torch.tensor(active, dtype=loss.dtype, device=loss.device)[inv]
    out, wstats = _weighted(tokens.loss, w)
    stats.update(wstats, anchored_records=float(sum(x >= 0 and on for x, on in zip(anchors, active))))
    return out, stats


register_variant("memft-sw-curriculum", "memft-sw", "memft-sw with the temporal curriculum on (and the spatial window, W = 50).", curriculum=True)


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
