"""`memft compare`, `memft bench` and `memft sweep`: parse the options, have the library build and run the grid
(memft.research.grids, memft.research.sweep), show progress, print tables and write the results (rows plus the
resolved settings).

CLI layer: parses options, calls the library, prints; may import any layer (torch only inside commands).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from memft.config import PRESETS, TrainConfig
from memft.cli.options import CsvRows, Device, Dtype, JsonRows, LrSchedule, MaxGradNorm, Methods, Model, Quiet, Template, write_json
from memft.cli.options import comma_list
from memft.cli.options import comma_list as _list
from memft.errors import ConfigError
from memft.cli.options import method_options as parse_method_options


def _run(grid: Any, quiet: bool) -> list[dict[str, Any]]:
    """Run every point of a memft.research.grids.PointGrid with an overall progress bar and a bar for the current run."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from memft.cli.render import console

    rows = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, disable=quiet) as prog:
        overall = prog.add_task("runs", total=len(grid.points))
        for p in grid.points:
            cur = prog.add_task(f"  {p.label}", total=p.train.max_steps)
            rows.append(grid.run(p, lambda row, cur=cur: prog.update(cur, completed=row["step"])))
            prog.remove_task(cur)
            prog.advance(overall)
    return rows


def _save(rows: list[dict[str, Any]], json_out: Optional[Path], csv_out: Optional[Path], command: str, config: dict[str, Any]) -> None:
    """--json: {"command", "config" (the resolved settings: model, runtime, LoRA and each method's TrainConfig),
    "rows"}; --csv: the rows."""
    from memft.research.runs import rows_to_csv

    if json_out:
        if str(json_out) != "-":
            json_out.parent.mkdir(parents=True, exist_ok=True)
        write_json(json_out, json.dumps({"command": command, "config": config, "rows": rows}, indent=2, ensure_ascii=False))
    if csv_out:
        rows_to_csv(rows, csv_out)


def compare(
    records: Annotated[Path, typer.Argument(help="JSONL records to write with every method.")],
    methods: Methods = "sft,memft-ot,memft-sw",
    ranks: Annotated[str, typer.Option(help="Comma-separated LoRA ranks.")] = "1,2,4",
    model: Model = "smollm2-135m",
    preset: Annotated[str, typer.Option("--preset", help=f"Where the LoRA layers go: {' | '.join(PRESETS)}.")] = "probe",
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = TrainConfig.lr,
    max_steps: Annotated[int, typer.Option(help="Step budget per run (equal for every method).")] = TrainConfig.max_steps,
    batch_size: Annotated[int, typer.Option(help="Records per step.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed: same adapter init and batch order for every method.")] = 0,
    method_options: Annotated[Optional[str], typer.Option(help="JSON object of objective options, for every method that has them.")] = None,
    fixed_budget: Annotated[bool, typer.Option(help="Train every run for --max-steps, even after certification.")] = False,
    lr_schedule: LrSchedule = "constant",
    max_grad_norm: MaxGradNorm = None,
    template: Template = "raw",
    device: Device = "auto",
    dtype: Dtype = "auto",
    json_out: JsonRows = None,
    csv_out: CsvRows = None,
    quiet: Quiet = False,
) -> None:
    """Train each method at each rank from the same seed and initial adapter; print the paper-style table."""
    import sys

    from memft.cli.render import console, method_table
    from memft.research.grids import compare_grid

    grid = compare_grid(records, _list(methods, str, "--methods"), _list(ranks, int, "--ranks"), model=model, preset=preset, lr=lr,
                        max_steps=max_steps, batch_size=batch_size, seed=seed, method_options=parse_method_options(method_options),
                        fixed_budget=fixed_budget, lr_schedule=lr_schedule, max_grad_norm=max_grad_norm, template=template,
                        device=device, dtype=dtype)
    rows = _run(grid, quiet)
    _save(rows, json_out, csv_out, " ".join(["memft", *sys.argv[1:]]), grid.settings)
    if not quiet:
        console.print(method_table(rows, title=f"{records.name}: {grid.n_records} records, {grid.base.spec}, {grid.base.dtype}"))


def bench(
    benchmark: Annotated[str, typer.Argument(help="phonebook | stress | rule")],
    model: Model = "smollm2-135m",
    ranks: Annotated[str, typer.Option(help="Comma-separated LoRA ranks.")] = "1,2,4,8",
    lengths: Annotated[Optional[str], typer.Option(help="Answer tokens ℓ (phonebook: total over records; stress: the one target). Rule: training pairs.")] = None,
    ratios: Annotated[str, typer.Option(help="Stress only: fractions ρ of random tokens in [0, 1], e.g. 0,0.5,1, or percentages with %, e.g. 0%,50%,100%.")] = "0,1",
    methods: Methods = "sft",
    preset: Annotated[str, typer.Option("--preset", help=f"Where the LoRA layers go: {' | '.join(PRESETS)}.")] = "probe",
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = TrainConfig.lr,
    max_steps: Annotated[int, typer.Option(help="Step budget per run.")] = TrainConfig.max_steps,
    seed: Annotated[int, typer.Option(help="Seed of the data and of training.")] = 0,
    heldout: Annotated[int, typer.Option(help="Rule only: held-out pairs for generalization.")] = 100,
    fixed_budget: Annotated[bool, typer.Option(help="Train every run for --max-steps, even after certification (for law fits).")] = False,
    batch_size: Annotated[int, typer.Option(help="Records per step (at least the record count: full batch; the reference code: 1 for stress, 4-20 for PhoneBook).")] = 64,
    lr_schedule: LrSchedule = "constant",
    max_grad_norm: MaxGradNorm = None,
    template: Template = "raw",
    text: Annotated[Optional[Path], typer.Option(help="Stress only: UTF-8 text file to build targets from (default: pydoc topics).")] = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    json_out: JsonRows = None,
    csv_out: CsvRows = None,
    quiet: Quiet = False,
) -> None:
    """Run a benchmark grid (ranks x lengths x ratios x methods) and print the paper-style table."""
    import sys

    from memft.cli.render import console, pivot_table
    from memft.research.grids import bench_grid

    grid = bench_grid(benchmark, _list(ranks, int, "--ranks"), _list(lengths, int, "--lengths") if lengths else None,
                      _fractions(ratios) if benchmark == "stress" else (), _list(methods, str, "--methods"),
                      model=model, preset=preset, lr=lr, max_steps=max_steps, seed=seed, heldout=heldout, fixed_budget=fixed_budget,
                      batch_size=batch_size, lr_schedule=lr_schedule, max_grad_norm=max_grad_norm, template=template, text=text,
                      device=device, dtype=dtype)
    rows = _run(grid, quiet)
    _save(rows, json_out, csv_out, " ".join(["memft", *sys.argv[1:]]), grid.settings)
    if not quiet:
        for metric in ("exact_match", "token_accuracy", "delta_loss") + (("heldout_exact_match",) if benchmark == "rule" else ()):
            console.print(pivot_table(rows, metric, title=f"{benchmark} · {metric} · {grid.base.spec}"))


def sweep(
    config: Annotated[Path, typer.Argument(help="Sweep config (YAML): models, benchmarks, ratios, lengths, ranks, methods, seeds, lr, max_steps …")],
    store: Annotated[Path, typer.Option("--store", help="SQLite results store (created if missing; a rerun resumes).")] = Path("memft-results.db"),
    backend: Annotated[str, typer.Option(help="local (in this process) | ray (one Ray task per run).")] = "local",
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address (default: a local Ray instance).")] = None,
    gpus_per_run: Annotated[float, typer.Option(help="Ray: GPUs per run (fractions share a GPU).")] = 0.0,
    quiet: Quiet = False,
) -> None:
    """Run every point of a sweep into a results store; killed and restarted, it skips finished runs. Exit 1 if any run failed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from memft.cli.render import console
    from memft.research.sweep import SweepConfig, run_sweep

    cfg = SweepConfig.from_yaml(config)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, disable=quiet) as prog:
        overall = prog.add_task("sweep", total=len(cfg.points()))
        current = prog.add_task("  run", total=cfg.max_steps)

        def on_progress(done: int, total: int, label: Optional[str]) -> None:
            prog.update(overall, completed=done, total=total)
            prog.update(current, completed=0, description=f"  {label or 'done'}")

        summary = run_sweep(cfg, store, on_progress=on_progress, backend=backend, address=address, gpus_per_run=gpus_per_run,
                            on_step=lambda row: prog.update(current, completed=row["step"]))
    typer.echo(json.dumps({k: v for k, v in summary.items()}, ensure_ascii=False))
    raise typer.Exit(1 if summary["failed"] else 0)


def _fractions(text: str) -> list[float]:
    """--ratios: fractions in [0, 1], or percentages written with %; a bare number above 1 is refused, so that no
    value means a fraction in one list and a percentage in another.

    >>> _fractions("0,0.5,1"), _fractions("0%,50%,100%")
    ([0.0, 0.5, 1.0], [0.0, 0.5, 1.0])
    """
    out = []
    for x in comma_list(text, str, "--ratios"):
        x = x.strip()
        try:
            v = float(x[:-1]) / 100 if x.endswith("%") else float(x)
        except ValueError:
            raise ConfigError(f"--ratios {text!r}: give fractions like 0,0.5,1 or percentages like 0%,50%,100%") from None
        if not 0 <= v <= 1:
            raise ConfigError(f"--ratios: {x} is not a fraction in [0, 1]; for a percentage write {x}% (e.g. 0%,50%,100%)")
        out.append(v)
    return out
