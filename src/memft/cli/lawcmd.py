"""`memft law fit`, `memft plan` and `memft report`: reading a results store, fitting the law, planning ranks.

CLI layer: parses options, calls the library, prints; may import any layer (torch only inside commands).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from memft.errors import ConfigError
# memft.research.law.select.SATURATION_EPS, written out: importing the law package loads numpy and scipy, and
# `memft --help` must stay fast (tests/cli/test_cli_law.py checks the two agree).
SATURATION_EPS = 0.05

law_app = typer.Typer(help="The Parametric Memory Law: ΔL(r, ℓ) = C·r^α·ℓ^(−β) + b.", no_args_is_help=True)
DEFAULT_LAW = Path(__file__).resolve().parents[1] / "research" / "data" / "law_smollm2-135m.json"


def _fits_table(fits: list[Any]) -> Any:
    from rich.table import Table

    t = Table(title="Parametric Memory Law fits: ΔL = C·r^α·ℓ^(−β) + b")
    for col in ("setting", "method", "C", "α", "β", "b", "R²", "MAPE %", "held-out MAPE %", "n"):
        t.add_column(col, justify="left" if col in ("setting", "method") else "right")

    def f(v: Any, d: int = 3) -> str:
        return "—" if v is None else f"{v:.{d}f}"

    for x in fits:
        if not x.fitted:
            t.add_row(x.setting, x.method or "", *["—"] * 7, f"{x.n} (skipped: {(x.skipped or '')[:40]})")
            continue
        hm = x.heldout_mape
        t.add_row(x.setting, x.method or "", f(x.fit.C), f(x.fit.alpha), f(x.fit.beta), f(x.fit.b), f(x.fit.r2, 4),
                  f(100 * x.fit.mape, 1), "—" if hm is None else f"{100 * hm:.1f}", str(x.n))
    return t


def _forms_table(fits: list[Any]) -> Any:
    """Each fit's two forms on every point of its setting (saturated ones included): power vs saturating."""
    from rich.table import Table

    t = Table(title="On every point: power law vs saturating L_init·(1 − exp(−k·r^a·ℓ^(−g)))")
    for col in ("setting", "method", "form", "n", "R²", "AIC", "BIC", "held-out MAPE %"):
        t.add_column(col, justify="left" if col in ("setting", "method", "form") else "right")
    for x in fits:
        for f in x.forms:
            held = "—" if f.heldout_mape is None else f"{100 * f.heldout_mape:.1f}"
            t.add_row(x.setting, x.method or "", f.form, str(f.n), f"{f.r2:.4f}", f"{f.aic:.1f}", f"{f.bic:.1f}", held)
    return t


@law_app.command("fit")
def fit_cmd(
    stores: Annotated[list[Path], typer.Argument(help="Results stores written by `memft sweep` (one or more, read together; fit rows of one budget).")],
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write {\"fits\": [...]} here (usable by `memft plan --law`).")] = None,
    eps: Annotated[float, typer.Option(help="Saturation: runs with ΔL ≥ (1 − eps)·L_init are excluded.")] = SATURATION_EPS,
    huber: Annotated[Optional[float], typer.Option(help="Huber loss on residuals with this delta (in units of ΔL).")] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the 95 % intervals.")] = 200,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
) -> None:
    """Fit the law per setting (r0 … r100, Combined, PhoneBook) and print the table."""
    from memft.cli.render import console
    from memft.research.law import Budget, fit_settings, write_fits
    from memft.research.results import read_rows

    rows = [r for s in stores for r in read_rows(s, with_point=True)]
    # ΔL is measured at a budget: rows of several budgets give a fit of none of them; every entry says its budget
    # (`memft plan` repeats it with its answer)
    fits = fit_settings(rows, eps=eps, n_boot=n_boot, seed=seed, huber=huber, budget=Budget.of_rows(rows))
    if json_out:
        write_fits(json_out, fits, stores, eps, huber)
    console.print(_fits_table(fits))
    if any(f.forms for f in fits):
        console.print(_forms_table(fits))


def plan(
    length: Annotated[Optional[float], typer.Option(help="Answer tokens ℓ to store.")] = None,
    records: Annotated[Optional[int], typer.Option(help="Or: number of records (ℓ = records × --tokens-per-record).")] = None,
    tokens_per_record: Annotated[float, typer.Option(help="Value tokens per record, with --records.")] = 10.0,
    law: Annotated[Optional[Path], typer.Option(help="Law fit JSON from `memft law fit --json` (default: the fits shipped for smollm2-135m: stress r100/Combined at 150 steps of linear decay, batch 1, from benchmarks/paper; PhoneBook at 30 steps, from benchmarks/law; each fit says its budget).")] = None,
    setting: Annotated[str, typer.Option(help="Which fit of the file to use (e.g. Combined, r100, PhoneBook; r100@down_proj28 is the law at convergence for LoRA on layer 28's down projection).")] = "Combined",
    method: Annotated[Optional[str], typer.Option(help="Which method's fit, when the file holds several.")] = None,
    loss_init: Annotated[Optional[float], typer.Option(help="Mean loss before training (default: the fit's median).")] = None,
    form: Annotated[str, typer.Option("--form", help="Which form of the law: auto (the saturating law when the fit holds one, else the power law), saturating or power.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Predict the smallest LoRA rank whose predicted final loss is below ln 2 for ℓ answer tokens.

    A law fit holds for the training budget its sweep used; plan with a fit made at the budget you will train with.
    Plans outside the lengths and ranks the fit was measured on are refused (exit 2), not extrapolated.
    """
    from memft.research.law import length_for_records, pick_fit, plan_rank

    if (length is None) == (records is None):
        raise ConfigError("give exactly one of --length ℓ or --records N")
    ell = length if length is not None else length_for_records(records, tokens_per_record)
    fit = pick_fit(law or DEFAULT_LAW, setting, method)
    p = plan_rank(fit, ell, loss_init=loss_init, law_form=form)
    if as_json:
        typer.echo(json.dumps({"length": ell, "setting": fit.setting, "method": fit.method, **p.to_json()}))
        if p.refused:
            raise typer.Exit(2)
        return
    if p.refused:
        raise ConfigError(f"memft plan: {p.reason} [fit {fit.setting}]")
    budget = fit.budget.describe() if fit.budget else ""
    held = "—" if p.heldout_mape is None else f"{100 * p.heldout_mape:.1f} %"
    where = f"[fit {fit.setting}, {fit.method}, {p.law} law{budget}; held-out length error (leave-one-length-out MAPE of ΔL) {held}]"
    if p.rank is None:
        typer.echo(f"ℓ = {ell:g}: no rank reaches the line ({p.reason}) {where}")
        return
    spread = f"; 95 % range {p.rank_optimistic}–{p.rank_pessimistic}" if p.rank_optimistic is not None else ""
    typer.echo(f"ℓ = {ell:g}: rank {p.rank} (power of two: {p.rank_pow2}), predicted final loss {p.loss_final_pred:.3f}{spread} {where}")


def report(
    stores: Annotated[list[Path], typer.Argument(help="Results stores written by `memft sweep` (one or more; their rows are read together).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for index.html, claims.json, claims.md and figures/.")] = Path("memft-report"),
    eps: Annotated[float, typer.Option(help="Saturation threshold of the law fits.")] = SATURATION_EPS,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 200,
) -> None:
    """Build a self-contained static HTML report (figures embedded, fit and method tables, the paper's claims with a
    verdict each; the verdicts also go to claims.json and, as Markdown tables, claims.md)."""
    from memft.research.claims import claims_document, claims_markdown, method_cells, paper_claims
    from memft.research.law import fit_settings
    from memft.research.report import build_report
    from memft.research.results import read_rows

    rows = [r for s in stores for r in read_rows(s, full=True)]
    fits = fit_settings(rows, eps=eps, n_boot=n_boot)
    claims, cells = paper_claims(rows), method_cells(rows)
    name = stores[0].name if len(stores) == 1 else f"{len(stores)} stores"
    index = build_report(rows, fits, out, title=f"memft report: {name}", claims=claims, cells=cells)
    doc = claims_document([str(s) for s in stores], claims, cells)
    (out / "claims.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "claims.md").write_text(claims_markdown(claims, cells, rule=True), encoding="utf-8")
    typer.echo(str(index))
