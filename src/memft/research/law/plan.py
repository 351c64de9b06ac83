"""The capacity planner: the law inverted, the smallest rank whose predicted final loss L_init − ΔL(r, ℓ) is below a
target (ln 2 by default: a mean target probability above one half). It plans with the saturating law where the fit
holds one (a ceiling: the final loss stays positive), caps the power law's ΔL at L_init otherwise, and refuses
lengths and ranks outside the range the fit was measured on.

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from memft.errors import ConfigError
from memft.certify.metrics import L_CRIT
from memft.research.law.files import LawFitEntry
from memft.research.law.fit import PARAMS, law
from memft.research.law.saturating import FormFit
from memft.research.law.select import Row


def length_for_records(n_records: int, tokens_per_record: float) -> float:
    """ℓ for `--records N`: N × (mean value tokens per record), the unit rows' `length` is in."""
    if n_records < 1 or not tokens_per_record > 0:
        raise ConfigError(f"--records {n_records}: need ≥ 1 record and a positive mean tokens per record (got {tokens_per_record})")
    return float(n_records) * float(tokens_per_record)


def tokens_per_record(rows: Sequence[Row]) -> float:
    """Mean value tokens per record over rows that carry both `length` and `records` (Σ length / Σ records)."""
    ok = [r for r in rows if r.get("length") and r.get("records")]
    if not ok:
        raise ConfigError("tokens_per_record: no row has both 'length' and 'records'; give the tokens per record explicitly")
    return sum(float(r["length"]) for r in ok) / sum(float(r["records"]) for r in ok)


def _min_rank(p: np.ndarray, length: float, need: float, ranks: np.ndarray) -> np.ndarray:
    """Smallest entry of `ranks` with ΔL(r, ℓ) > need, per parameter row p [m, 4]; inf where none is."""
    dl = law(ranks[None, :], length, p[:, :1], p[:, 1:2], p[:, 2:3], p[:, 3:4])  # [m, R]
    hit = dl > need
    return np.where(hit.any(1), ranks[np.argmax(hit, 1)], np.inf)


def _rank_or_none(x: float) -> int | None:
    return int(x) if math.isfinite(x) else None


@dataclass(frozen=True)
class RankPlan:
    """What `plan_rank` answers (see there); `to_json` is what `memft plan --json` prints after ℓ and the fit."""

    length: float
    loss_init: float
    target: float
    max_rank: int
    rank: int | None = None
    rank_pow2: int | None = None
    loss_final_pred: float | None = None
    rank_optimistic: int | None = None
    rank_pessimistic: int | None = None
    p_reachable: float | None = None
    uncertainty: str | None = None
    reason: str | None = None
    law: str = "power"  # the form planned with: "saturating" (with a ceiling) or "power"
    heldout_mape: float | None = None  # that form's leave-one-length-out error (a fraction)
    refused: bool = False  # ℓ or the answer is outside the range the fit was measured on

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _refusal(fit: LawFitEntry, length: float, rank: float | None) -> str | None:
    """Why (ℓ, rank) lies outside what the fit measured, or None."""
    if fit.lengths is not None and not fit.lengths[0] <= length <= fit.lengths[1]:
        return (f"ℓ = {length:g} is outside the lengths the fit was measured on ({fit.lengths[0]:g}–{fit.lengths[1]:g}); "
                "the law is not extrapolated: measure that length (memft sweep) or use --rank auto")
    if rank is not None and fit.ranks is not None and rank > fit.ranks[1]:
        return (f"ℓ = {length:g} needs a rank above the largest the fit was measured on ({fit.ranks[1]:g}); "
                "the law is not extrapolated: measure larger ranks (memft sweep) or use --rank auto")
    return None


def plan_rank(fit: LawFitEntry, length: float, loss_init: float | None = None, target: float = L_CRIT,
              max_rank: int = 4096, law_form: str = "auto") -> RankPlan:
    """Smallest rank r ≥ 1 whose predicted final loss is below `target`.

    law_form "auto" plans with the saturating law when the fit holds one (`fit.form("saturating")`: final loss
    L_init·exp(−k·r^a·ℓ^(−g)), positive whatever the rank) and it fits every point at least as well as the power law
    (AIC), else with the power law, whose predicted ΔL is capped at L_init (no negative final loss). Either way the plan is refused (`refused`, `reason`) when ℓ, or the rank it
    needs, lies outside the range the fit was measured on (`fit.lengths`, `fit.ranks`, when the fit records them).
    `heldout_mape` is the form's leave-one-length-out error.

    Answers `rank` (smallest integer), `rank_pow2` (smallest power of two ≥ rank; the law is increasing in r),
    `loss_final_pred` (the predicted final loss at `rank`), and for the power law the rank under the fit's
    uncertainty: `rank_optimistic`/`rank_pessimistic` are the 2.5 %/97.5 % quantiles of the rank each bootstrap
    sample needs (samples that need more than max_rank count as infinitely large; None = beyond max_rank), with
    `p_reachable` the fraction of samples reaching the target within max_rank. A fit without samples uses the 16
    corners of its confidence box instead (min and max): wider, since C, α, β and b are strongly correlated.
    The uncertainty of L_init itself is not included. rank is None, with `reason`, when the fit's ΔL does not grow
    with rank (C·α ≤ 0, or a ≤ 0) or when max_rank does not reach the target.

    >>> fit = LawFitEntry.from_json({"setting": "r100", "C": 2.0, "alpha": 0.5, "beta": 0.5, "b": 0.0, "loss_init_median": 3.0})
    >>> p = plan_rank(fit, 1024)
    >>> p.rank, p.rank_pow2, p.law
    (1363, 2048, 'power')
    """
    if not length > 0 or max_rank < 1:
        raise ConfigError(f"plan_rank: need length > 0 and max_rank ≥ 1; got length={length}, max_rank={max_rank}")
    if law_form not in ("auto", "saturating", "power"):
        raise ConfigError(f"plan_rank: law_form {law_form!r}; use auto, saturating or power")
    if fit.fit is None or fit.skipped:
        raise ConfigError(f"plan_rank: the {fit.setting} entry has no fitted law ({fit.skipped or 'no parameters'}); pick a fitted setting")
    li = fit.loss_init_median if loss_init is None else loss_init
    if li is None:
        raise ConfigError("plan_rank: the fit has no loss_init_median; pass loss_init")
    out: dict[str, Any] = {"length": float(length), "loss_init": float(li), "target": target, "max_rank": max_rank}
    sat_form = fit.form("saturating") if law_form != "power" else None
    pw_form = fit.form("power")
    if law_form == "auto" and sat_form is not None and pw_form is not None and pw_form.aic < sat_form.aic:
        sat_form = None  # on every point the power law fits better (lower AIC): plan with it, its ΔL capped at L_init
    if law_form == "saturating" and sat_form is None:
        raise ConfigError(f"plan_rank: the {fit.setting} entry holds no saturating law; refit it with `memft law fit`")
    if (why := _refusal(fit, length, None)) is not None:
        return RankPlan(**out, reason=why, refused=True, law="saturating" if sat_form else "power")
    if sat_form is not None:
        return _plan_saturating(fit, sat_form, out, float(li))
    need = float(li) - target  # L_init − ΔL < target  ⇔  ΔL > L_init − target
    out["heldout_mape"] = fit.heldout_mape
    best = np.array([[fit.fit.params()[p] for p in PARAMS]], float)
    ranks = np.arange(1, max_rank + 1, dtype=float)
    if best[0, 0] * best[0, 1] <= 0:
        out["reason"] = f"ΔL does not grow with rank in this fit (C={best[0, 0]:.3g}, alpha={best[0, 1]:.3g}); no rank can be planned from it"
        return RankPlan(**out)
    r = float(_min_rank(best, length, need, ranks)[0])
    if not math.isfinite(r):
        pred = float(li - min(float(law(max_rank, length, *best[0])), float(li)))
        out["reason"] = f"even rank {max_rank} predicts a final loss of {pred:.3g} ≥ target {target:.3g} at ℓ={length:g}"
    else:
        if (why := _refusal(fit, length, r)) is not None:
            return RankPlan(**out, reason=why, refused=True)
        # the power law has no ceiling: its ΔL is capped at L_init, the most a run can remove
        out.update(rank=int(r), rank_pow2=2 ** math.ceil(math.log2(r)), loss_final_pred=float(li - min(float(law(r, length, *best[0])), float(li))))
    box = [fit.ci.get(p, (None, None)) for p in PARAMS]
    if fit.samples:
        need_r = _min_rank(np.asarray(fit.samples, float), length, need, ranks)
        lo, hi = np.percentile(need_r, 2.5, method="lower"), np.percentile(need_r, 97.5, method="higher")
        out.update(uncertainty="bootstrap samples, 2.5 %–97.5 %", p_reachable=float(np.isfinite(need_r).mean()),
                   rank_optimistic=_rank_or_none(float(lo)), rank_pessimistic=_rank_or_none(float(hi)))
    elif all(None not in ci for ci in box):
        corners = np.array(np.meshgrid(*box, indexing="ij")).reshape(4, -1).T  # [16, 4]
        need_r = _min_rank(corners, length, need, ranks)
        out.update(uncertainty="confidence-box corners, min–max", p_reachable=None,
                   rank_optimistic=_rank_or_none(float(need_r.min())), rank_pessimistic=_rank_or_none(float(need_r.max())))
    return RankPlan(**out)


def _plan_saturating(fit: LawFitEntry, form: FormFit, out: dict[str, Any], li: float) -> RankPlan:
    """The plan from the saturating law: r* = (ln(L_init/target)·ℓ^g/k)^(1/a), rounded up to an integer ≥ 1."""
    sat = form.sat()
    assert sat is not None
    out.update(law="saturating", heldout_mape=form.heldout_mape, uncertainty="leave-one-length-out error only (no bootstrap of this form)")
    r_real = sat.rank_for(out["length"], li, out["target"])
    if r_real is None:
        return RankPlan(**out, reason=f"the saturating fit does not grow with rank (k={sat.k:.3g}, a={sat.a:.3g}); no rank can be planned from it")
    r = max(1, math.ceil(r_real - 1e-9))
    if r > out["max_rank"]:
        return RankPlan(**out, reason=f"even rank {out['max_rank']} predicts a final loss above the target at ℓ={out['length']:g}")
    if (why := _refusal(fit, out["length"], r)) is not None:
        return RankPlan(**out, reason=why, refused=True)
    return RankPlan(**out, rank=r, rank_pow2=2 ** math.ceil(math.log2(r)), loss_final_pred=float(sat.final_loss(r, out["length"], li)))
