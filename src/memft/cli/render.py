"""Rich tables and the training progress bar (presentation only).

CLI layer: parses options, calls the library, prints; may import any layer (torch only inside commands).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console(stderr=True)  # tables and progress on stderr; stdout stays for values and JSON
out = Console()


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def records_table(reports: Sequence[Any], limit: int = 50) -> Table:
    t = Table(title="records", show_lines=False)
    for col in ("key", "ℓ", "certified", "exact", "min p", "first error", "stubborn"):
        t.add_column(col, overflow="fold")
    for r in reports[:limit]:
        exact = "—" if r.exact is None else ("yes" if r.exact else "no")
        ff = r.first_failure if r.first_failure is not None else r.first_error_tf
        t.add_row(
            r.key[:40], str(r.length), "yes" if r.certified else "[red]no[/red]", exact, f"{r.min_prob:.3f}",
            "—" if ff is None else str(ff), str(len(r.stubborn_positions)),
        )
    if len(reports) > limit:
        t.caption = f"{len(reports) - limit} more records not shown"
    return t


def summary_table(summary: dict[str, Any], title: str = "summary") -> Table:
    t = Table(title=title)
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k in ("records", "certified", "exact_match", "token_accuracy", "token_accuracy_tf", "p_above_half", "stubborn_tokens", "min_prob", "loss"):
        v = summary.get(k)
        if k in ("certified", "exact_match", "token_accuracy", "token_accuracy_tf", "p_above_half"):
            s = _pct(v)
        elif isinstance(v, float):
            s = f"{v:.4f}"
        else:
            s = str(v)
        t.add_row(k, s)
    return t


def not_exact(reports: Sequence[Any], where: Any) -> None:
    """The one stderr line that comes with exit 1 (also under --quiet): how many records are not certified, which."""
    failed = [r.key for r in reports if not r.certified]
    shown = ", ".join(repr(k) for k in failed[:5]) + (" ..." if len(failed) > 5 else "")
    console.print(f"memft: not exact: {len(failed)} of {len(reports)} record(s) not certified ({shown}); {where} was saved "
                  "anyway; recall does not vouch for them (more --max-steps, a larger --rank, or --rank auto)",
                  soft_wrap=True, markup=False, highlight=False)


def within_allowance_line(near: int, total: int, dtype: str, allowance: float) -> None:
    """The stderr line of a write that ended exact but with records inside the precision's allowance (exit 0)."""
    console.print(f"memft: warning: {near} of {total} record(s) are exact in this run but closer to another token than the "
                  f"{dtype} allowance ({allowance:g} nats): another batch shape may flip them; `memft verify` checks them "
                  "again, and a write with more --max-steps (or --dtype fp32) leaves none", soft_wrap=True, markup=False, highlight=False)


PLAIN_EVERY = 30.0  # seconds between progress lines when stderr is not a terminal (CI, nohup, a pipe)


@contextmanager
def training_progress(max_steps: int, enabled: bool = True, every: float = PLAIN_EVERY) -> Iterator[Any]:
    """Yields an on_step callback that shows training progress (step, loss, certified, stubborn, min p): a rich bar
    on a terminal; elsewhere a plain line every `every` seconds and at the end, with the elapsed time and an
    estimate of the time left. Nothing is shown before the first step, so an error before training stays one line."""
    if not enabled:
        yield None
        return
    if not console.is_terminal:
        yield plain_progress(max_steps, every)
        return
    prog = Progress(
        TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  certified {task.fields[cert]:.0%}  stubborn {task.fields[stub]}  min p {task.fields[minp]:.3f}"),
        TimeElapsedColumn(), console=console, transient=False,
    )
    task = None

    def on_step(row: dict[str, float]) -> None:
        nonlocal task
        if task is None:
            prog.start()
            task = prog.add_task("train", total=max_steps, loss=float("nan"), cert=0.0, stub=0, minp=0.0)
        prog.update(task, completed=row["step"], loss=row["loss"], cert=row["certified"], stub=int(row["stubborn"]), minp=row["min_prob"])

    try:
        yield on_step
    finally:
        if task is not None:
            prog.stop()


def plain_progress(max_steps: int, every: float, clock: Any = None, write: Any = None) -> Any:
    """An on_step callback printing `training step S/N  certified C%  loss L  elapsed E s  left ~R s` lines: at the
    first step, then at most once every `every` seconds, and at the end (the last step or certification)."""
    import sys
    import time

    clock = clock or time.monotonic
    write = write or (lambda line: (sys.stderr.write(line + "\n"), sys.stderr.flush()))
    t0, last = clock(), None

    def on_step(row: dict[str, float]) -> None:
        nonlocal last
        now = clock()
        step = int(row["step"])
        done = step >= max_steps or row["certified"] >= 1.0
        if last is not None and now - last < every and not done:
            return
        last = now
        elapsed = now - t0
        left = "" if done or step <= 0 else f"  left ~{elapsed / step * (max_steps - step):.0f} s (at most)"
        write(f"training step {step}/{max_steps}  certified {100 * row['certified']:.1f}%  loss {row['loss']:.4f}  "
              f"elapsed {elapsed:.0f} s{left}")

    return on_step


def cell(metric: str, v: Any) -> str:
    """A table cell: fractions as percentages with one decimal, other floats with three, None as a dash."""
    if v is None:
        return "—"
    if metric in ("exact_match", "token_accuracy", "token_accuracy_tf", "certified", "heldout_exact_match", "heldout_token_accuracy", "p_above_half"):
        return f"{100 * v:.1f}"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def method_table(rows: Sequence[dict[str, Any]], title: str = "") -> Table:
    """One line per (method, rank), the columns of the paper's method comparison."""
    t = Table(title=title)
    for col in ("method", "rank", "token acc %", "exact %", "certified %", "steps to certify", "seconds", "final loss"):
        t.add_column(col, justify="right" if col not in ("method",) else "left")
    for r in sorted(rows, key=lambda r: (r["method"], r["rank"])):
        t.add_row(
            r["method"], str(r["rank"]), cell("token_accuracy", r["token_accuracy"]), cell("exact_match", r["exact_match"]),
            cell("certified", r["certified"]), cell("", r["steps_to_certify"]), f"{r['seconds']:.1f}", f"{r['loss_final']:.4f}",
        )
    return t


def pivot_table(rows: Sequence[dict[str, Any]], metric: str, title: str = "") -> Table:
    """Paper layout: one line per (method, ρ, ℓ), one column per rank; cells are `metric` (percent for fractions)."""
    ranks = sorted({r["rank"] for r in rows})
    t = Table(title=title)
    t.add_column("method")
    t.add_column("ρ", justify="right")
    t.add_column("ℓ", justify="right")
    for rk in ranks:
        t.add_column(f"r={rk}", justify="right")
    lines: dict[tuple, dict[int, Any]] = {}
    for r in rows:
        lines.setdefault((r["method"], r.get("ratio"), r["length"]), {})[r["rank"]] = r.get(metric)
    for (m, rho, ln), cells in sorted(lines.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0, kv[0][2])):
        t.add_row(m, "—" if rho is None else f"{100 * rho:g}%", str(ln), *(cell(metric, cells.get(rk)) for rk in ranks))
    return t


def deploy_table(checks: Sequence[Any], title: str = "") -> Table:
    """One line per deployment setting (memft.checks.deploy.Check): certified records, smallest probability and gap."""
    t = Table(title=title)
    for col in ("setting", "certified", "exact (generate)", "min p", "min gap", "not certified"):
        t.add_column(col, overflow="fold")
    for c in checks:
        lost = ", ".join(k[:20] for k in c.lost[:4]) + (f" +{len(c.lost) - 4}" if len(c.lost) > 4 else "")
        cert = f"{c.certified}/{c.records}" if c.certified == c.records else f"[red]{c.certified}/{c.records}[/red]"
        gap = "—" if c.min_gap is None else f"{c.min_gap:.4f}"
        t.add_row(c.setting, cert, "—" if c.exact is None else f"{c.exact}/{c.records}", f"{c.min_prob:.4f}", gap, lost or "—")
    return t


def odds_table(rows: Sequence[dict[str, Any]], title: str = "", limit: int = 50) -> Table:
    """Per record: the exact odds that one sampled generation reproduces it, and sampled counts when drawn."""
    t = Table(title=title)
    for col in ("key", "odds", "weakest position", "its factor", "sampled exact"):
        t.add_column(col, overflow="fold")
    for r in rows[:limit]:
        drawn = "—" if r["samples"] is None else f"{r['sampled_exact']}/{r['samples']}"
        t.add_row(r["key"][:40], f"{r['odds']:.4g}", str(r["weakest_position"]), f"{r['weakest_factor']:.4f}", drawn)
    if len(rows) > limit:
        t.caption = f"{len(rows) - limit} more records not shown"
    return t


def forecast_watch(on_step: Any, max_steps: int, margin: float, rank: int, say: Any = None,
                   max_seconds: float | None = None) -> Any:
    """Wrap a training callback with the library's forecast (memft.training.forecast.Watch): every row is passed on, and the
    first advice line is said once. The wrapper's `.watch` is the Watch (its `.last`: the latest forecast)."""
    from memft.training.forecast import Watch

    say = say or (lambda line: console.print(f"[yellow]{line}[/yellow]", soft_wrap=True))  # one line, also in logs
    w = Watch(max_steps, margin, rank, max_seconds=max_seconds)

    def watch(row: dict[str, float]) -> None:
        if on_step is not None:
            on_step(row)
        line = w(row)
        if line:
            say(line)

    watch.watch = w
    return watch


def first_say(line: str | None, on_step: Any) -> Any:
    """Wrap a training callback: print `line` (if any) before the first step's row is passed on."""
    said = line is None

    def cb(row: dict[str, float]) -> None:
        nonlocal said
        if not said:
            said = True
            console.print(line, soft_wrap=True)
        if on_step is not None:
            on_step(row)

    return cb
