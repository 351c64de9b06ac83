"""The grids of `memft compare` and `memft bench`: every point (method × rank, × length × ratio for a benchmark) with
its LoRA settings, TrainConfig and data, the base model they run on, and the resolved settings a results file carries.

`compare_grid` (one record file, every method at every rank from the same seed) and `bench_grid` (a benchmark's
generated data) validate everything, load the model and build every data set before any training, so a bad option
or size fails before the first run; `PointGrid.run` runs one point (`memft.research.runs.run_benchmark_point`).
The CLI parses the options, calls these, shows progress, prints and writes the rows.

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memft.config import LoraSettings, RuntimeConfig, TrainConfig
from memft.errors import ConfigError
from memft.model.base import Base
from memft.prompts.records import Record

Data = tuple[Sequence[Record], "Sequence[Record] | None"]  # (records, held-out records or None)


@dataclass(frozen=True)
class GridPoint:
    """One point: a label for progress ("sft r=4 ℓ=64 ρ=0.5"), its LoRA settings, its TrainConfig, its data."""

    label: str
    lora: LoraSettings
    train: TrainConfig
    data: Data
    ratio: float | None = None  # stress only


@dataclass
class PointGrid:
    """The points of one `memft compare` / `memft bench` call and the base model they share."""

    benchmark: str  # "compare" for a record file, else the benchmark's name (what the rows say)
    base: Base
    points: list[GridPoint]
    settings: dict[str, Any] = field(default_factory=dict)  # the resolved settings, for the results file
    n_records: int | None = None  # compare: the records of the file

    def run(self, point: GridPoint, on_step: Callable[[dict[str, float]], None] | None = None) -> dict[str, Any]:
        """Train and evaluate one point on the shared base (given back unchanged); its row (memft.research.runs)."""
        from memft.research.runs import run_benchmark_point

        return run_benchmark_point(self.benchmark, point.data, self.base, point.lora, point.train, point.ratio, on_step=on_step)


def _settings(base: Base, preset: str, trains: dict[str, TrainConfig], **more: Any) -> dict[str, Any]:
    """The resolved settings of a grid for its results file: model, precision, device, preset, each method's TrainConfig."""
    from memft.config import to_json

    return {"model": base.spec, "dtype": base.dtype, "device": base.device, "preset": preset, **more,
            "train": {m: to_json(t) for m, t in trains.items()}}


def compare_grid(
    records: str | Path, methods: Sequence[str], ranks: Sequence[int], model: str = "smollm2-135m", preset: str = "probe",
    lr: float = 1e-2, max_steps: int = 300, batch_size: int = 64, seed: int = 0, method_options: dict[str, Any] | None = None,
    fixed_budget: bool = False, lr_schedule: str = "constant", max_grad_norm: float | None = None, template: str = "raw",
    device: str = "auto", dtype: str = "auto",
) -> PointGrid:
    """Every method at every rank on the records of a JSONL file, from the same seed and initial adapter (the paper's
    tables: steps to certification, every record in every epoch; see memft.research.runs.research_train).
    `method_options` go to every method that has them (an option none of them has is a ConfigError)."""
    from memft.model.base import load_base
    from memft.prompts.records import load_records
    from memft.research.runs import options_by_method, research_train

    opts = options_by_method(methods, method_options or {})
    loras = [LoraSettings(rank=r, preset=preset) for r in ranks]
    trains = {m: research_train(m, lr=lr, max_steps=max_steps, batch_size=batch_size, seed=seed, method_options=opts[m],
                                stop_when_certified=not fixed_budget, lr_schedule=lr_schedule, max_grad_norm=max_grad_norm,
                                template=template) for m in methods}
    runtime = RuntimeConfig(device=device, dtype=dtype)
    recs = load_records(records)
    base = load_base(model, runtime.device, runtime.dtype, seed=seed)
    points = [GridPoint(f"{m} r={lo.rank}", lo, trains[m], (recs, None)) for lo in loras for m in methods]
    return PointGrid("compare", base, points, _settings(base, preset, trains, records=str(records)), n_records=len(recs))


def bench_grid(
    benchmark: str, ranks: Sequence[int], lengths: Sequence[int] | None = None, ratios: Sequence[float] = (0, 1),
    methods: Sequence[str] = ("sft",), model: str = "smollm2-135m", preset: str = "probe", lr: float = 1e-2, max_steps: int = 300,
    seed: int = 0, heldout: int = 100, fixed_budget: bool = False, batch_size: int = 64, lr_schedule: str = "constant",
    max_grad_norm: float | None = None, template: str = "raw", text: str | Path | None = None, device: str = "auto",
    dtype: str = "auto",
) -> PointGrid:
    """A benchmark grid: ranks × lengths (None: the benchmark's defaults) × ratios (stress only; fractions, or
    percentages above 1) × methods, on data generated from `seed`; `text`: the stress source text file. Every data
    set is built before any training, so a bad size fails first."""
    from memft.model.base import load_base, unreachable_tokens
    from memft.research import bench as benchmarks
    from memft.research.law import ratio_fraction
    from memft.research.runs import research_train

    spec = benchmarks.get(benchmark)  # an unknown name: one line listing the known ones
    ls = list(lengths) if lengths else list(spec.default_lengths)
    rhos: list[float | None] = [ratio_fraction(x) for x in ratios] if benchmark == "stress" else [None]
    if any(not 0 <= r <= 1 for r in rhos if r is not None):
        raise ConfigError(f"--ratios {','.join(f'{x:g}' for x in ratios)}: fractions in [0, 1] (or percentages 0..100)")
    if any(x <= 0 for x in [*ranks, *ls]):
        raise ConfigError("--ranks and --lengths must be positive")
    trains = {m: research_train(m, lr=lr, max_steps=max_steps, seed=seed, stop_when_certified=not fixed_budget, batch_size=batch_size,
                                lr_schedule=lr_schedule, max_grad_norm=max_grad_norm, template=template) for m in methods}
    loras = {r: LoraSettings(rank=r, preset=preset) for r in ranks}
    runtime = RuntimeConfig(device=device, dtype=dtype)
    source = Path(text).read_text(encoding="utf-8") if text else None
    base = load_base(model, runtime.device, runtime.dtype, seed=seed)
    exclude = unreachable_tokens(base.model)  # tokens greedy decoding can never produce with this model
    datasets = {(ln, rho): benchmarks.make(benchmark, benchmarks.DataSpec(ln, rho, heldout, source, exclude), base.tokenizer, seed)
                for ln in ls for rho in rhos}  # built up front: bad sizes fail before training
    points = [
        GridPoint(f"{m} r={r} ℓ={ln}" + (f" ρ={rho:g}" if rho is not None else ""), loras[r], trains[m], datasets[(ln, rho)], rho)
        for (ln, rho) in datasets for r in ranks for m in methods
    ]
    more = {"benchmark": benchmark, "heldout": heldout if benchmark == "rule" else None, "text": str(text) if text else None}
    return PointGrid(benchmark, base, points, _settings(base, preset, trains, **more))
