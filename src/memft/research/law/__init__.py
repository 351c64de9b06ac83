"""The Parametric Memory Law: how much loss a LoRA adapter of rank r removes from an answer of ℓ tokens.

    ΔL(r, ℓ) = C · r^α · ℓ^(−β) + b,        ΔL = L_init − L_final

with L the mean loss over target tokens (value tokens + the end token) before and after training, r the LoRA rank
and ℓ the value tokens of the whole record set (rows' `length`). Pure numpy/scipy; no model, no torch.

Which rows are fitted (`select`):
- a row needs finite rank > 0, length > 0, loss_init and ΔL (`delta_loss`, or loss_init − loss_final when
  delta_loss is missing); rows without them are dropped;
- a row is *saturated* when ΔL ≥ (1 − ε)·L_init, i.e. L_final ≤ ε·L_init: the adapter learned (almost) everything,
  so ΔL is capped by L_init and no longer measures capacity. Saturated rows are dropped (ε = 0.05 by default).

Fitting (`fit_law`) is variable projection: for fixed (α, β) the model is linear in (C, b) with the feature
x = r^α·ℓ^(−β), so (C, b) are solved exactly (least squares, or Huber by IRLS); the projected loss is searched on
an (α, β) grid and refined with L-BFGS-B inside the grid's bounds.

Settings (`fit_settings`) follow the paper's table: "r0" … "r100" per stress ratio ρ (in percent), "Combined" (all
stress rows), "PhoneBook", and any other benchmark under its own name; one set per (model, method). Each is a
`LawFitEntry` (a `LawFit` with its intervals, counts, held-out error and budget; the entry of a law fit file); a
setting that cannot be fitted is kept as an entry whose `skipped` says why, so a table keeps its rows in order.

The planner (`plan_rank`) inverts the law: the smallest rank whose predicted final loss L_init − ΔL(r, ℓ) is
below a target (ln 2 by default: a mean target probability above one half). It uses the saturating law (which has a
ceiling: the final loss stays positive) when the fit holds one, and refuses lengths and ranks outside the range the
fit was measured on.

Where it lives:
  select.py       which rows are fitted: number, delta_loss, saturated, select
  fit.py          the law and its fit: law, Grid, LawFit, fit_law, r_squared
  saturating.py   the saturating alternative L_init·(1 − exp(−k·r^a·ℓ^(−g))) and both forms compared on every point
  uncertainty.py  bootstrap intervals and the leave-one-length-out error (HeldOut)
  settings.py     setting names (ratio_fraction, ratio_setting, setting_names, in_setting); one fit per setting (fit_rows, fit_settings)
  files.py        law fit files: their entries (LawFitEntry, Budget) read and written in one place; read_fits, write_fits, pick_fit
  plan.py         the capacity planner: plan_rank (a RankPlan), length_for_records, tokens_per_record
This package re-exports their public names: `from memft.research.law import fit_settings, plan_rank` and the rest.

Research layer: may import the core and the other research modules; never the CLI.
"""

from memft.research.law.files import Budget, LawFitEntry, as_entry, pick_fit, read_fits, write_fits
from memft.research.law.fit import MIN_POINTS, PARAMS, Grid, LawFit, fit_law, law, r_squared
from memft.research.law.plan import RankPlan, length_for_records, plan_rank, tokens_per_record
from memft.research.law.saturating import FormFit, SatFit, compare_forms, fit_saturating, information, saturating
from memft.research.law.select import delta_loss, number, saturated, select
from memft.research.law.settings import (
    COMBINED, PHONEBOOK, fit_rows, fit_settings, in_setting, ratio_fraction, ratio_setting, setting_names, with_forms,
)
from memft.research.law.uncertainty import BOOT_GRID, HeldOut, bootstrap, bootstrap_samples, intervals, leave_one_length_out

__all__ = [
    "FormFit", "SatFit", "compare_forms", "fit_saturating", "information", "saturating", "with_forms",
    "BOOT_GRID", "COMBINED", "MIN_POINTS", "PARAMS", "PHONEBOOK", "Budget", "Grid", "HeldOut", "LawFit",
    "LawFitEntry", "RankPlan", "as_entry", "bootstrap", "bootstrap_samples", "delta_loss", "fit_law", "fit_rows",
    "fit_settings", "in_setting", "intervals", "law", "leave_one_length_out", "length_for_records", "number",
    "pick_fit", "plan_rank", "r_squared", "ratio_fraction", "ratio_setting", "read_fits", "saturated", "select",
    "setting_names", "tokens_per_record", "write_fits",
]
