"""`memft compare`, `memft bench` and `memft sweep`: parse the options, build the grid with the library
(memft.research.runs, memft.research.bench, memft.research.sweep), print tables and write the results (rows plus the
resolved settings).

CLI layer: parses options, calls the library, prints; may import any layer (torch only inside commands).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from memft.cli.options import CsvRows, Device, Dtype, JsonRows, LrSchedule, MaxGradNorm, Model, Quiet, Template
from memft.cli.options import comma_list as _list
from memft.cli.options import method_options as parse_method_options
from memft.errors import ConfigError



def _grid(points: list[dict[str, Any]], run: Any, quiet: bool) -> list[dict[str, Any]]:
    """Run every point with an overall progress bar and a bar for the current run."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from memft.cli.render import console

    rows = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, disable=quiet) as prog:
        overall = prog.add_task("runs", total=len(points))
        for p in points:
            cur = prog.add_task(f"  {p['label']}", total=p["train"].max_steps)
            rows.append(run(p, lambda row, cur=cur: prog.update(cur, completed=row["step"])))
            prog.remove_task(cur)
            prog.advance(overall)
    return rows


def _save(rows: list[dict[str, Any]], json_out: Optional[Path], csv_out: Optional[Path], command: str, config: dict[str, Any]) -> None:
    """--json: {"command", "config" (the resolved settings: model, runtime, LoRA and each method's TrainConfig),
    "rows"}; --csv: the rows."""
    from memft.research.runs import rows_to_csv

    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        out = {"command": command, "config": config, "rows": rows}
        json_out.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if csv_out:
        rows_to_csv(rows, csv_out)


def _config(base: Any, preset: str, trains: dict[str, Any], **more: Any) -> dict[str, Any]:
    """The resolved settings of a grid for its results file: model, precision, device, preset, each method's TrainConfig."""
    from memft.config import to_json

    return {"model": base.spec, "dtype": base.dtype, "device": base.device, "preset": preset, **more,
            "train": {m: to_json(t) for m, t in trains.items()}}


def compare(
    records: Annotated[Path, typer.Argument(help="JSONL records to write with every method.")],
    methods: Annotated[str, typer.Option(help="Comma-separated objectives.")] = "sft,memft-ot,memft-sw",
    ranks: Annotated[str, typer.Option(help="Comma-separated LoRA ranks.")] = "1,2,4",
    model: Model = "smollm2-135m",
    preset: Annotated[str, typer.Option(help="probe | all")] = "probe",
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-2,
    max_steps: Annotated[int, typer.Option(help="Step budget per run (equal for every method).")] = 300,
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
    from memft.config import LoraSettings, RuntimeConfig
    from memft.modeling import load_base
    from memft.records import load_records
    from memft.research.runs import options_by_method, research_train, run_benchmark_point

    ms, rs = _list(methods, str, "--methods"), _list(ranks, int, "--ranks")
    opts = options_by_method(ms, parse_method_options(method_options))
    loras = [LoraSettings(rank=r, preset=preset) for r in rs]
    # the paper's tables: steps to certification, every record in every epoch (memft.research.runs.research_train)
    trains = {m: research_train(m, lr=lr, max_steps=max_steps, batch_size=batch_size, seed=seed, method_options=opts[m],
                                stop_when_certified=not fixed_budget, lr_schedule=lr_schedule, max_grad_norm=max_grad_norm,
                                template=template) for m in ms}
    runtime = RuntimeConfig(device=device, dtype=dtype)
    recs = load_records(records)
    base = load_base(model, runtime.device, runtime.dtype, seed=seed)
    points = [{"label": f"{m} r={lo.rank}", "lora": lo, "train": trains[m]} for lo in loras for m in ms]
    rows = _grid(points, lambda p, cb: run_benchmark_point("compare", (recs, None), base, p["lora"], p["train"], on_step=cb), quiet)
    _save(rows, json_out, csv_out, " ".join(["memft", *sys.argv[1:]]), _config(base, preset, trains, records=str(records)))
    if not quiet:
        console.print(method_table(rows, title=f"{records.name}: {len(recs)} records, {base.spec}, {base.dtype}"))


def bench(
    benchmark: Annotated[str, typer.Argument(help="phonebook | stress | rule")],
    model: Model = "smollm2-135m",
    ranks: Annotated[str, typer.Option(help="Comma-separated LoRA ranks.")] = "1,2,4,8",
    lengths: Annotated[Optional[str], typer.Option(help="Answer tokens ℓ (phonebook: total over records; stress: the one target). Rule: training pairs.")] = None,
    ratios: Annotated[str, typer.Option(help="Stress only: fractions ρ of random tokens, e.g. 0,1 (or percent: 0,100).")] = "0,1",
    methods: Annotated[str, typer.Option(help="Comma-separated objectives.")] = "sft",
    preset: Annotated[str, typer.Option(help="probe | all")] = "probe",
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-2,
    max_steps: Annotated[int, typer.Option(help="Step budget per run.")] = 300,
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
    from memft.config import LoraSettings, RuntimeConfig
    from memft.modeling import load_base, unreachable_tokens
    from memft.research import bench as benchmarks
    from memft.research.runs import research_train, run_benchmark_point

    spec = benchmarks.get(benchmark)  # an unknown name: one line listing the known ones
    rs, ms = _list(ranks, int, "--ranks"), _list(methods, str, "--methods")
    ls = _list(lengths, int, "--lengths") if lengths else list(spec.default_lengths)
    rhos = [x / 100 if x > 1 else x for x in _list(ratios, float, "--ratios")] if benchmark == "stress" else [None]
    if any(not 0 <= r <= 1 for r in rhos if r is not None):
        raise ConfigError(f"--ratios {ratios}: fractions in [0, 1] (or percentages 0..100)")
    if any(x <= 0 for x in rs + ls):
        raise ConfigError("--ranks and --lengths must be positive")
    trains = {m: research_train(m, lr=lr, max_steps=max_steps, seed=seed, stop_when_certified=not fixed_budget, batch_size=batch_size,
                                lr_schedule=lr_schedule, max_grad_norm=max_grad_norm, template=template) for m in ms}
    loras = {r: LoraSettings(rank=r, preset=preset) for r in rs}
    runtime = RuntimeConfig(device=device, dtype=dtype)
    source = text.read_text(encoding="utf-8") if text else None
    base = load_base(model, runtime.device, runtime.dtype, seed=seed)
    tok = base.tokenizer

    exclude = unreachable_tokens(base.model)  # tokens greedy decoding can never produce with this model
    datasets = {(ln, rho): benchmarks.make(benchmark, benchmarks.DataSpec(ln, rho, heldout, source, exclude), tok, seed)
                for ln in ls for rho in rhos}  # built up front: bad sizes fail before training
    points = [
        {"label": f"{m} r={r} ℓ={ln}" + (f" ρ={rho:g}" if rho is not None else ""), "key": (ln, rho), "lora": loras[r], "train": trains[m], "ratio": rho}
        for (ln, rho) in datasets for r in rs for m in ms
    ]

    def run(p: dict[str, Any], cb: Any) -> dict[str, Any]:
        return run_benchmark_point(benchmark, datasets[p["key"]], base, p["lora"], p["train"], p["ratio"], on_step=cb)

    rows = _grid(points, run, quiet)
    _save(rows, json_out, csv_out, " ".join(["memft", *sys.argv[1:]]),
          _config(base, preset, trains, benchmark=benchmark, heldout=heldout if benchmark == "rule" else None, text=str(text) if text else None))
    if not quiet:
        for metric in ("exact_match", "token_accuracy", "delta_loss") + (("heldout_exact_match",) if benchmark == "rule" else ()):
            console.print(pivot_table(rows, metric, title=f"{benchmark} · {metric} · {base.spec}"))


def sweep(
    config: Annotated[Path, typer.Argument(help="Sweep config (YAML): models, benchmarks, ratios, lengths, ranks, methods, seeds, lr, max_steps …")],
    store: Annotated[Path, typer.Option("--store", help="SQLite results store (created if missing; a rerun resumes).")] = Path("memft-results.db"),
    backend: Annotated[str, typer.Option(help="local (in this process) | ray (one Ray task per run).")] = "local",
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address (default: a local Ray instance).")] = None,
    gpus_per_run: Annotated[float, typer.Option(help="Ray: GPUs per run (fractions share a GPU).")] = 0.0,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
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
