"""A static, self-contained HTML report of result rows and law fits.

`build_report` writes `out_dir/index.html` (inline CSS, every figure embedded as a base64 PNG data URI, no
external references: it opens offline) and each figure as PNG + SVG under `out_dir/figures/`, linked from the page
by relative paths. All text from rows and fits is escaped.

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import math
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from memft.research.claims import BINDING, CELL_HEAD, CLAIM_HEAD, VERDICTS, Claim, MethodCell, cell_columns, claim_columns
from memft.research.verdict import RULE
from memft.research.law import LawFitEntry, as_entry, in_setting
from memft.research.law import number as _num
from memft.research.plots import ALL_FIGURES, Fit, save
from memft.research.rows import Row

# The fields of a fit that say which rows it was fitted on (besides its setting), as law.fit_settings gives them.
FIT_FILTERS = ("model", "method")

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0 1em; } th, td { border: 1px solid #ddd; padding: .25em .6em; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; } .muted { color: #777; } .ci { color: #777; font-size: .85em; }
"""


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _fmt(v: Any, digits: int = 3) -> str:
    f = _num(v)
    return "—" if f is None else f"{f:.{digits}g}"


def _pct(vals: Sequence[Any]) -> str:
    xs = [f for f in map(_num, vals) if f is not None]
    return "—" if not xs else f"{100 * statistics.fmean(xs):.1f}"


def _table(head: Sequence[str], body: Sequence[Sequence[str]], numeric_from: int = 1) -> str:
    """Cells in `body` are already-escaped HTML; headers are escaped here."""
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    trs = "".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if i >= numeric_from else f"<td>{c}</td>" for i, c in enumerate(r))
        + "</tr>" for r in body
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


# ---------------------------------------------------------------- sections

def _summary(rows: Sequence[Row]) -> str:
    counts = Counter((str(r.get("benchmark") or "—"), str(r.get("method") or "—")) for r in rows)
    methods = sorted({m for _, m in counts})
    benches = sorted({b for b, _ in counts})
    body = [[_e(b), *(str(counts.get((b, m), 0)) for m in methods), str(sum(counts.get((b, m), 0) for m in methods))]
            for b in benches]
    facts = []
    for key, label in (("model", "models"), ("rank", "ranks"), ("length", "lengths ℓ")):
        vals = list({r.get(key) for r in rows if r.get(key) is not None})
        vals.sort(key=lambda v: (0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)))
        if vals:
            facts.append(f"{_e(label)}: {_e(', '.join(map(str, vals)))}")
    out = f"<p>{len(rows)} runs. {'; '.join(facts)}</p>"
    return out + (_table(["benchmark", *methods, "total"], body) if rows else "")


def _with_ci(fit: LawFitEntry, key: str) -> str:
    assert fit.fit is not None
    lo, hi = fit.ci.get(key, (None, None))
    s = _e(_fmt(fit.fit.params()[key], 4))
    if lo is not None and hi is not None:
        s += f' <span class="ci">[{_e(_fmt(lo))}, {_e(_fmt(hi))}]</span>'
    return s


def _fits_table(fits: Sequence[LawFitEntry]) -> str:
    if not fits:
        return '<p class="muted">No law fits.</p>'
    who = [k for k in ("model", "method") if any(getattr(f, k) is not None for f in fits)]
    body = []
    for f in fits:
        lead = [_e(f.setting or "—"), *(_e(getattr(f, k) or "—") for k in who)]
        if f.fit is None or f.skipped:
            body.append([*lead, f'<span class="muted">skipped: {_e(f.skipped or "no parameters")}</span>', *[""] * 5, _e(f.n), ""])
            continue
        held = "—"
        if f.heldout_mape is not None:
            held = f'{_e(f"{100 * f.heldout_mape:.1f}%")} <span class="ci">MAPE</span>'
        elif f.heldout_rmse is not None:
            held = f'{_e(_fmt(f.heldout_rmse))} <span class="ci">RMSE</span>'
        elif f.heldout_reason:
            held = f'<span class="muted">— ({_e(f.heldout_reason)})</span>'
        mape = _num(f.fit.mape)
        body.append([*lead, *(_with_ci(f, k) for k in ("C", "alpha", "beta", "b")), _e(_fmt(f.fit.r2, 4)),
                     "—" if mape is None else f"{100 * mape:.1f}", _e(f.n), held])
    note = ('<p class="muted">ΔL = C·r<sup>α</sup>·ℓ<sup>−β</sup> + b; bracketed: 95 % interval, where the fit gives '
            "one; held-out: leave-one-length-out error, where the fit gives one.</p>")
    head = ["setting", *who, "C", "α", "β", "b", "R²", "MAPE %", "n", "held-out error"]
    return note + _table(head, body, numeric_from=1 + len(who)) + _forms_table(fits)


def _forms_table(fits: Sequence[LawFitEntry]) -> str:
    """Each fit's power law beside the saturating alternative, both on every point (saturated ones included)."""
    body = []
    for f in fits:
        for form in f.forms:
            body.append([_e(f.label()), _e(form.form), str(form.n), _e(_fmt(form.r2, 4)), _e(f"{form.aic:.1f}"), _e(f"{form.bic:.1f}"),
                         "—" if form.heldout_mape is None else _e(f"{100 * form.heldout_mape:.1f}")])
    if not body:
        return ""
    note = ('<p class="muted">Both forms on every point of the setting, saturated ones included: the power law '
            "C·r<sup>α</sup>·ℓ<sup>−β</sup> + b (4 parameters) and the saturating law "
            "L<sub>init</sub>·(1 − exp(−k·r<sup>a</sup>·ℓ<sup>−g</sup>)) (3 parameters, a ceiling at L<sub>init</sub>); "
            "lower AIC/BIC is better; held-out: leave-one-length-out MAPE of ΔL.</p>")
    return note + _table(["fit", "form", "n", "R²", "AIC", "BIC", "held-out MAPE %"], body, numeric_from=2)


def _method_table(rows: Sequence[Row]) -> str:
    groups: dict[tuple[str, str, int], list[Row]] = defaultdict(list)
    for r in rows:
        if r.get("method") is not None and _num(r.get("rank")) is not None:
            groups[str(r.get("benchmark") or "—"), str(r["method"]), int(r["rank"])].append(r)
    if not groups:
        return '<p class="muted">No rows with a method and rank.</p>'
    body = []
    for (b, m, rk), rs in sorted(groups.items()):
        steps = [s for s in (_num(r.get("steps_to_certify")) for r in rs) if s is not None]
        body.append([_e(b), _e(m), str(rk), str(len(rs)), _pct([r.get("exact_match") for r in rs]),
                     _pct([r.get("token_accuracy") for r in rs]), _pct([r.get("certified") for r in rs]),
                     f"{statistics.median(steps):g}" if steps else "—"])
    head = ["benchmark", "method", "rank", "runs", "exact match %", "token accuracy %", "certified %",
            "median steps to certify"]
    note = '<p class="muted">Means over runs (all lengths) per benchmark × method × rank; the median is over runs that certified.</p>'
    return note + _table(head, body, numeric_from=2)


def _in_setting(row: Row, setting: str) -> bool:
    """Whether a row belongs to a law setting: "r<N>" (stress rows at ratio N %), "Combined" (all stress rows),
    "PhoneBook", or a benchmark / method / "benchmark/method" name."""
    if in_setting(row, setting):  # the law's own names (memft.research.law.setting_names)
        return True
    bench, method = row.get("benchmark"), row.get("method")
    return setting in (str(bench), str(method), f"{bench}/{method}")


def rows_for_fit(rows: Sequence[Row], fit: Fit) -> list[Row]:
    """The rows a fit describes: those matching its model and method (each where any row matches) and its
    `setting` (see `_in_setting`); the model/method filter alone when no row is in the setting."""
    entry = as_entry(fit)
    sel = list(rows)
    for k in FIT_FILTERS:  # each narrows only where rows carry it (a store without `model` keeps its rows)
        want = getattr(entry, k)
        if want is not None:
            sel = [r for r in sel if str(r.get(k)) == str(want)] or sel
    in_setting = [r for r in sel if _in_setting(r, entry.setting)] if entry.setting else []
    return in_setting or sel


def _slug(s: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(s)).strip("_.") or "fit"


def _figures(rows: Sequence[Row], fits: Sequence[LawFitEntry], fig_dir: Path) -> str:
    """Render every registered figure (law figures once per fit, on that fit's rows), save, and embed."""
    jobs: list[tuple[str, str, Sequence[Row], LawFitEntry | None]] = []
    for name, spec in ALL_FIGURES.items():
        if spec.fit == "no" or not fits:
            jobs.append((name, name, rows, None))
            continue
        for i, f in enumerate(fits):
            if not f.fitted:
                continue
            who = f.label()
            jobs.append((f"{name}__{i}_{_slug(who)}", f"{name} — {who or i}", rows_for_fit(rows, f), f))
    parts = []
    for stem, label, rs, fit in jobs:
        spec = ALL_FIGURES[stem.split("__")[0]]
        png, svg = save(spec(rs, fit), fig_dir / stem)
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        links = " · ".join(f'<a href="{_e(fig_dir.name)}/{_e(p.name)}">{p.suffix[1:].upper()}</a>' for p in (png, svg))
        parts.append(f'<figure id="{_e(stem)}"><img src="data:image/png;base64,{data}" alt="{_e(label)}">'
                     f"<figcaption><b>{_e(label)}</b> — needs {_e(spec.needs)} · {links}</figcaption></figure>")
    return "\n".join(parts)


def _spearman(rows: Sequence[Row]) -> str:
    from memft.research.transitions import record_pairs, rho_of

    s = rho_of(record_pairs(rows))
    val = "undefined" if math.isnan(s.rho) else f"{s.rho:.3f}"
    ci = f" [{s.lo:.3f}, {s.hi:.3f}] (95 %, Fisher z)" if s.lo is not None and s.hi is not None and not math.isnan(s.rho) else ""
    return (f"<p>Spearman ρ between each uncertified record's earliest stubborn position (teacher-forced p ≤ 0.5) and its "
            f"free-run first failure, at the end of training: <b>{_e(val)}</b>{_e(ci)} (n = {s.n} records with both).</p>")


def _claims(claims: Sequence[Claim], cells: Sequence[MethodCell]) -> str:
    """The paper's claims with memft's measurement and a verdict, then every comparison cell (mean ± sd over seeds)."""
    if not claims:
        return "<p class=\"muted\">No claims evaluated.</p>"
    counts = Counter(c.verdict for c in claims)
    head = "<p>" + ", ".join(f"{_e(v)}: <b>{counts[v]}</b>" for v in VERDICTS if counts[v]) + ".</p>"
    head += "<p>" + _e(RULE) + "</p>"
    body = []
    for c in claims:
        cols = [_e(x) for x in claim_columns(c)]
        cols[CLAIM_HEAD.index("verdict")] = f"<b>{cols[CLAIM_HEAD.index('verdict')]}</b>"
        body.append(cols)
    out = head + _table(list(CLAIM_HEAD), body, numeric_from=99)
    if cells:
        out += ("<p>End-of-budget scores per comparison cell, mean ± sd over seeds, side by side (exact match, free-run "
                "prefix accuracy, teacher-forced token accuracy, ΔL); Δ is the paired difference to SFT on the same seeds "
                "of the verdict's score with its 95 % paired t interval; a cell binds when SFT's mean held share (exact "
                "match, or the one stress record's teacher-forced token accuracy) is in "
                f"{BINDING[0]:.0%}–{BINDING[1]:.0%}.</p>")
        out += _table(list(CELL_HEAD), [[_e(x) for x in cell_columns(c)] for c in cells], numeric_from=3)
    return out


# ---------------------------------------------------------------- entry point

def build_report(rows: Sequence[Row], fits: Sequence[Fit] | Mapping[str, Fit], out_dir: str | Path,
                 title: str = "memft report", claims: Sequence[Claim] | None = None, cells: Sequence[MethodCell] | None = None) -> Path:
    """Write `out_dir/index.html` and `out_dir/figures/*.{png,svg}`; returns the index path.

    `fits`: law fit entries (memft.research.law.LawFitEntry, or mappings shaped like a file's entries), or a mapping
    setting -> fit. Builds on any rows, including none.
    `claims` / `cells` (memft.research.claims): the paper-claims section; None computes them from `rows`.
    """
    from memft.research.claims import method_cells, paper_claims

    out = Path(out_dir)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(fits, Mapping):
        fit_list = [dataclasses.replace(e, setting=e.setting or k) for k, e in ((k, as_entry(f)) for k, f in fits.items())]
    else:
        fit_list = [as_entry(f) for f in fits or []]
    rows = list(rows)
    claims = paper_claims(rows) if claims is None else claims
    cells = method_cells(rows) if cells is None else cells
    sections = [
        ("Summary", _summary(rows)),
        ("Paper claims", _claims(claims, cells)),
        ("Law fits", _fits_table(fit_list)),
        ("Method comparison", _method_table(rows)),
        ("Stubborn tokens and free-run failures", _spearman(rows)),
        ("Figures", _figures(rows, fit_list, fig_dir)),
    ]
    body = "\n".join(f'<section><h2>{_e(h)}</h2>\n{s}\n</section>' for h, s in sections)
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{_e(title)}</title>\n'
            f"<style>{CSS}</style>\n</head>\n<body>\n<h1>{_e(title)}</h1>\n{body}\n</body>\n</html>\n")
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
