"""The paper's settings and one fit per setting: "r0" … "r100" per stress ratio ρ (in percent), "Combined" (all
stress rows), "PhoneBook", and any other benchmark under its own name; one set per (model, method). A setting that
cannot be fitted is kept as an entry (memft.research.law.files.LawFitEntry) whose `skipped` says why, so a table
keeps its rows in order.

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from memft.errors import ConfigError
from memft.research.law.files import Budget, LawFitEntry
from memft.research.law.fit import PARAMS, fit_law
from memft.research.law.saturating import compare_forms
from memft.research.law.select import Row, arrays, check_options, complete, finite, number, select, SATURATION_EPS
from memft.research.law.uncertainty import bootstrap_samples, intervals, leave_one_length_out


def fit_rows(rows: Sequence[Row], setting: str, eps: float = SATURATION_EPS, n_boot: int = 200, seed: int = 0,
             huber: float | None = None) -> LawFitEntry:
    """One setting's fit (parameters, 95 % bootstrap intervals, fit quality, held-out error) as a law fit file entry.

    Its `samples` keep the bootstrap parameter vectors (C, alpha, beta, b) for `plan_rank`'s uncertainty.
    Raises ConfigError when the selected rows cannot be fitted.
    """
    used = select(rows, eps)
    n_incomplete = sum(not complete(r) for r in rows)
    r, l, y = arrays(used)
    try:
        f = fit_law(r, l, y, huber)
    except ValueError as e:
        raise ConfigError(f"{setting}: {len(used)} usable rows of {len(rows)} ({n_incomplete} incomplete, "
                          f"{len(rows) - len(used) - n_incomplete} saturated at eps={eps}): {e}") from None
    samples = bootstrap_samples(r, l, y, n_boot, seed, huber) if n_boot > 0 else np.empty((0, 4))
    ci = intervals(samples) if len(samples) else {p: (None, None) for p in PARAMS}
    held = leave_one_length_out(r, l, y, huber)
    return with_forms(LawFitEntry(
        setting=setting, fit=dataclasses.replace(f, residuals=None), ci={p: (number(ci[p][0]), number(ci[p][1])) for p in PARAMS},
        n=f.n, n_excluded=len(rows) - len(used), n_saturated=len(rows) - len(used) - n_incomplete,
        heldout_mape=held.mape, heldout_rmse=held.rmse, heldout_reason=held.reason,
        loss_init_median=float(np.median([float(x["loss_init"]) for x in used])), eps=eps, n_boot=len(samples),
        samples=tuple(tuple(float(v) for v in s) for s in samples),
    ), rows)


def with_forms(entry: LawFitEntry, rows: Sequence[Row]) -> LawFitEntry:
    """`entry` with both forms of the law fitted to every complete row of its setting (saturated ones included) and
    the ℓ and rank ranges of those rows; unchanged forms when they cannot be fitted."""
    full = [r for r in rows if complete(r)]
    if not full:
        return entry
    r, l, y = arrays(full)
    li = np.array([float(x["loss_init"]) for x in full])
    try:
        forms = compare_forms(r, l, li, y)
    except ValueError:
        forms = ()
    return dataclasses.replace(entry, forms=tuple(forms), lengths=(float(l.min()), float(l.max())), ranks=(float(r.min()), float(r.max())))


# Setting names (the paper's table), built here only; `in_setting` is their one reader.
COMBINED, PHONEBOOK = "Combined", "PhoneBook"


def ratio_fraction(x: float) -> float:
    """A stress ratio as a fraction: above 1 it is a percentage (`memft bench --ratios 0,100` = `--ratios 0,1`).

    >>> ratio_fraction(0.5), ratio_fraction(1), ratio_fraction(30)
    (0.5, 1, 0.3)
    """
    return x / 100 if x > 1 else x


def ratio_setting(ratio: float) -> str:
    """The setting name of stress rows at replacement ratio ρ: "r0" … "r100" (ρ read by `ratio_fraction`).

    >>> ratio_setting(0.5), ratio_setting(1.0), ratio_setting(30)
    ('r50', 'r100', 'r30')
    """
    return f"r{round(100 * ratio_fraction(ratio))}"


def setting_names(row: Row) -> list[str]:
    """Every setting a row is fitted in: its stress ratio's and Combined (stress), PhoneBook, or its benchmark."""
    bench = row.get("benchmark")
    if bench == "stress":
        ratio = row.get("ratio")
        return ([ratio_setting(float(ratio))] if finite(ratio) else []) + [COMBINED]
    return [PHONEBOOK] if bench == "phonebook" else [str(bench)]


def in_setting(row: Row, setting: str) -> bool:
    """Whether `fit_settings` fits `row` in the setting named `setting`."""
    return setting in setting_names(row)


def _settings(rows: Sequence[Row]) -> list[tuple[str, list[Row]]]:
    stress = [r for r in rows if r.get("benchmark") == "stress"]
    ratios = sorted({float(r["ratio"]) for r in stress if finite(r.get("ratio"))})
    names = dict.fromkeys(ratio_setting(rho) for rho in ratios)  # in ratio order, each name once
    out = [(name, [r for r in stress if in_setting(r, name)]) for name in names]
    if stress:
        out.append((COMBINED, stress))
    pb = [r for r in rows if r.get("benchmark") == "phonebook"]
    if pb:
        out.append((PHONEBOOK, pb))
    for name in sorted({str(r.get("benchmark")) for r in rows} - {"stress", "phonebook"}):
        out.append((name, [r for r in rows if in_setting(r, name)]))
    return out


def fit_settings(rows: Sequence[Row], eps: float = SATURATION_EPS, n_boot: int = 200, seed: int = 0,
                 huber: float | None = None, budget: Budget | None = None) -> list[LawFitEntry]:
    """One fit per setting and (model, method), in the paper's table order: r0 … r100, Combined, PhoneBook, others.

    Every entry has its setting, model and method; a setting that could not be fitted has `skipped` (the reason)
    and no `fit` (then `n` and `n_excluded` count the rows). `budget`: the training budget of the rows (see
    `Budget.of_rows`), written into every entry so that `memft plan` can say which budget a fit holds for.
    """
    check_options(eps, huber)  # before any fit: a bad option is an error, not a skipped setting
    groups: dict[tuple[Any, Any], list[Row]] = {}
    for r in rows:  # a row without a model or method is grouped (and reported) under None, never the string "None"
        groups.setdefault((r.get("model"), r.get("method")), []).append(r)
    out = []
    for (model, method), grows in sorted(groups.items(), key=lambda g: (str(g[0][0]), str(g[0][1]))):
        for name, srows in _settings(grows):
            try:
                entry = fit_rows(srows, name, eps, n_boot, seed, huber)
            except ValueError as e:
                used = len(select(srows, eps))
                entry = LawFitEntry(setting=name, n=used, n_excluded=len(srows) - used, skipped=str(e))
            out.append(dataclasses.replace(entry, model=model, method=method, budget=budget))
    return out
