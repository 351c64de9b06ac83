"""Law fit files (`memft law fit --json`): their entries as types, read and written here only.

A file is {"store", "stores", "eps", "huber", ["note",] "fits": [entry, ...]}. An entry is one setting's fit for one
(model, method) (`LawFitEntry`): its parameters and fit quality (a `LawFit`), 95 % intervals, the held-out error, the
bootstrap samples `memft plan` reads its uncertainty from and the training budget it holds for (`Budget`); or, for a
setting that could not be fitted, the row counts and the reason ("skipped"). Files written by any memft so far read
unchanged: keys a file lacks take the defaults below, and memft 0.1's "None" for a missing model or method reads None.

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memft.errors import ConfigError
from memft.research.law.fit import PARAMS, LawFit
from memft.research.law.saturating import FormFit
from memft.research.law.select import number

Interval = tuple["float | None", "float | None"]
NO_INTERVAL: Interval = (None, None)


@dataclass(frozen=True)
class Budget:
    """The training budget the runs of a fit used: ΔL is measured at a budget, so a fit holds for that budget only."""

    max_steps: int | None = None
    lr: float | None = None
    lr_schedule: str | None = None
    max_grad_norm: float | None = None
    batch_size: int | None = None
    stop_when_certified: bool | None = None

    # What tells two budgets apart (rows of several give a fit of none of them).
    IDENTITY = ("max_steps", "lr_schedule", "stop_when_certified")

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Budget:
        """The budget of a result row (its point's config keys included, see memft.research.results.read_rows)."""
        return cls(**{f.name: row.get(f.name) for f in dataclasses.fields(cls)})

    @classmethod
    def of_rows(cls, rows: Sequence[Mapping[str, Any]]) -> Budget | None:
        """The one budget of `rows` (None for no rows); ConfigError when they hold runs of several."""
        budgets = sorted({str(tuple(r.get(k) for k in cls.IDENTITY)) for r in rows})
        if len(budgets) > 1:
            raise ConfigError(f"the stores hold runs of {len(budgets)} training budgets ({'; '.join(budgets)} as (max_steps, lr_schedule, "
                              "stop_when_certified)); fit the stores of one budget together")
        return cls.from_row(rows[0]) if rows else None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Budget:
        return cls(**{f.name: d.get(f.name) for f in dataclasses.fields(cls)})

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """', at a budget of 150 steps (linear lr, batch 1)'; '' when the steps are not known.

        >>> Budget(max_steps=150, lr_schedule="linear", batch_size=1).describe()
        ', at a budget of 150 steps (linear lr, batch 1)'
        """
        if self.max_steps is None:
            return ""
        batch = f", batch {self.batch_size}" if self.batch_size is not None else ""
        return f", at a budget of {self.max_steps} steps ({self.lr_schedule or 'constant'} lr{batch})"


@dataclass(frozen=True)
class LawFitEntry:
    """One entry of a law fit file: a setting's fit for one (model, method), or why it could not be fitted.

    `fit` is None for a skipped setting (then `skipped` says why, `n` counts its usable rows and `n_excluded` the
    others); for a fit, `n` is the points fitted (`fit.n`). `ci`: 95 % percentile intervals per parameter (None
    ends without bootstrap); `samples`: the bootstrap parameter vectors (C, alpha, beta, b), `plan_rank`'s uncertainty.
    """

    setting: str
    model: str | None = None
    method: str | None = None
    fit: LawFit | None = None
    ci: Mapping[str, Interval] = field(default_factory=lambda: dict.fromkeys(PARAMS, NO_INTERVAL))
    n: int = 0
    n_excluded: int = 0
    n_saturated: int | None = None
    heldout_mape: float | None = None
    heldout_rmse: float | None = None
    heldout_reason: str | None = None
    loss_init_median: float | None = None
    eps: float | None = None
    n_boot: int = 0
    samples: tuple[tuple[float, ...], ...] = ()
    skipped: str | None = None
    budget: Budget | None = None
    # both forms fitted to every complete point (saturated ones included): the power law and the saturating law
    # (memft.research.law.saturating), with AIC, BIC and held-out length error; () when not computed
    forms: tuple[FormFit, ...] = ()
    lengths: tuple[float, float] | None = None  # the ℓ range of those points: the planner refuses outside it
    ranks: tuple[float, float] | None = None  # the rank range of those points

    @property
    def fitted(self) -> bool:
        return self.fit is not None and not self.skipped

    def form(self, name: str) -> FormFit | None:
        """The fit of one form ("power" or "saturating") on every point, when the entry has it."""
        return next((f for f in self.forms if f.form == name), None)

    def label(self) -> str:
        """"setting · method · model" (the parts that are known)."""
        return " · ".join(str(v) for v in (self.setting, self.method, self.model) if v)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> LawFitEntry:
        """An entry as a file holds it (see the module docstring); the inverse of `to_json`.

        >>> e = LawFitEntry.from_json({"setting": "r100", "C": 2.0, "alpha": 0.5, "beta": 0.5, "b": 0.0, "n": 9})
        >>> e.fit.C, math.isnan(e.fit.r2), e.ci["C"], e.to_json()["C_ci"], e.to_json()["r2"]
        (2.0, True, (None, None), [None, None], None)
        """
        def name(k: str) -> str | None:  # memft 0.1 wrote a missing model or method as the string "None"
            v = d.get(k)
            return None if v is None or v == "None" else str(v)

        def quality(k: str) -> float:  # R² and MAPE: nan when the file has none (as fit_law gives an undefined one)
            v = number(d.get(k))
            return math.nan if v is None else v

        params = [number(d.get(p)) for p in PARAMS]
        fit = None
        if not d.get("skipped") and None not in params:
            C, alpha, beta, b = params
            fit = LawFit(C, alpha, beta, b, r2=quality("r2"), mape=quality("mape"), n=int(d.get("n") or 0), huber=d.get("huber"))  # type: ignore[arg-type]
        ci = {}
        for p in PARAMS:
            got = d.get(f"{p}_ci")
            ci[p] = (number(got[0]), number(got[1])) if isinstance(got, (list, tuple)) and len(got) == 2 else NO_INTERVAL
        budget = d.get("budget")
        return cls(
            setting=str(d.get("setting") or ""), model=name("model"), method=name("method"), fit=fit, ci=ci, n=int(d.get("n") or 0),
            n_excluded=int(d.get("n_excluded") or 0), n_saturated=d.get("n_saturated"), heldout_mape=number(d.get("heldout_mape")),
            heldout_rmse=number(d.get("heldout_rmse")), heldout_reason=d.get("heldout_reason"),
            loss_init_median=number(d.get("loss_init_median")), eps=number(d.get("eps")), n_boot=int(d.get("n_boot") or 0),
            samples=tuple(tuple(float(x) for x in s) for s in d.get("samples") or ()), skipped=d.get("skipped") or None,
            budget=Budget.from_json(budget) if isinstance(budget, Mapping) else None,
            forms=tuple(FormFit.from_json(f) for f in d.get("forms") or ()),
            lengths=_span(d.get("lengths")), ranks=_span(d.get("ranks")),
        )

    def to_json(self) -> dict[str, Any]:
        """The entry as `memft law fit --json` writes it: strict JSON (no NaN), keys in the order of the files."""
        out: dict[str, Any] = {"model": self.model, "method": self.method, "setting": self.setting}
        f = self.fit
        if f is None or self.skipped:
            out |= {"n": self.n, "n_excluded": self.n_excluded, "skipped": self.skipped}
        else:
            out |= {p: float(v) for p, v in f.params().items()}
            out |= {f"{p}_ci": [number(lo), number(hi)] for p, (lo, hi) in ((p, self.ci.get(p, NO_INTERVAL)) for p in PARAMS)}
            out |= {
                "r2": number(f.r2), "mape": number(f.mape), "n": self.n, "n_excluded": self.n_excluded, "n_saturated": self.n_saturated,
                "heldout_mape": self.heldout_mape, "heldout_rmse": self.heldout_rmse, "heldout_reason": self.heldout_reason,
                "loss_init_median": self.loss_init_median, "eps": self.eps, "huber": f.huber, "n_boot": self.n_boot,
                "samples": [list(s) for s in self.samples], "skipped": None,
            }
        if self.budget is not None:
            out["budget"] = self.budget.to_json()
        if self.forms:
            out["forms"] = [f.to_json() for f in self.forms]
        if self.lengths is not None:
            out["lengths"] = list(self.lengths)
        if self.ranks is not None:
            out["ranks"] = list(self.ranks)
        return out


def _span(v: Any) -> tuple[float, float] | None:
    return (float(v[0]), float(v[1])) if isinstance(v, (list, tuple)) and len(v) == 2 else None


def as_entry(fit: LawFitEntry | Mapping[str, Any]) -> LawFitEntry:
    """An entry, or a mapping shaped like one (as a file holds it) read as one: what figures and reports accept."""
    return fit if isinstance(fit, LawFitEntry) else LawFitEntry.from_json(fit)


def read_fits(path: str | Path) -> list[LawFitEntry]:
    """The fits of a `memft law fit --json` file; ConfigError saying how to make one when it is missing or foreign."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such law fit; make one with `memft law fit STORE.db --json {path}`")
    try:
        fits = json.loads(path.read_text(encoding="utf-8"))["fits"]
        return [LawFitEntry.from_json(f) for f in fits]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError, ValueError):
        raise ConfigError(f"{path}: not a law fit file (expected {{\"fits\": [...]}} from `memft law fit --json`)") from None


def write_fits(path: str | Path, fits: Sequence[LawFitEntry], stores: Sequence[str | Path], eps: float, huber: float | None) -> None:
    """Write a law fit file: {"store" (the first), "stores", "eps", "huber", "fits"}."""
    doc = {"store": str(stores[0]), "stores": [str(s) for s in stores], "eps": eps, "huber": huber, "fits": [f.to_json() for f in fits]}
    Path(path).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def pick_fit(path: str | Path, setting: str, method: str | None = None) -> LawFitEntry:
    """The first usable (not skipped) fit of `setting` (and `method`, when given) in a law fit file."""
    fits = read_fits(path)
    ok = [f for f in fits if f.setting == setting and f.fitted and (method is None or f.method == method)]
    if not ok:
        have = sorted({f"{f.setting}/{f.method}" for f in fits if f.fitted})
        raise ConfigError(f"{path}: no usable fit for setting {setting!r}" + (f" method {method!r}" if method else "") + f"; it has {', '.join(have) or 'none'}")
    return ok[0]

