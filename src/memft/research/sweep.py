"""Resumable sweeps: a YAML grid of experiment points, each run once with `memft.research.runs.run_point` into a
`Store`.

A point is identified by the sha256 of its resolved config (`memft.research.results.run_id`), so running the same
sweep again skips every point already done, re-runs the ones a killed process left 'running' or that failed, and never
duplicates a row. The `device` is not part of a point (where a run ran does not change what it asked for); the
device and the dtype it resolved to are recorded in its row.

Backends: "local" runs the points one after another in this process, loading each model once; "ray" sends each
point to a Ray task (its own model load, on a GPU share when asked) and only this process writes to the store.

Example config (every key is optional; see SweepConfig for the defaults):

    models: [tiny-random]
    benchmarks: [stress, phonebook]
    lengths: {stress: [64, 128], phonebook: [100]}  # or one list for every benchmark
    ratios: [0.0, 0.5, 1.0]                         # stress only
    ranks: [1, 2, 4]
    methods: [sft, memft-ot]
    seeds: [0, 1]
    lr: 0.01
    max_steps: 300
    lr_schedule: linear                             # the reference code's setup: linear decay to 0,
    max_grad_norm: 1.0                              # clipping at 1.0,
    batch_size: 4                                   # 1 (stress) or 4-20 records (PhoneBook) per step,
    template: chat                                  # the chat template (defaults: constant, none, 64, raw)

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import os
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memft import folders
from memft.config import DEVICES, DTYPES, LR_SCHEDULES, PRESETS, TEMPLATES, TrainConfig
from memft.errors import ConfigError
from memft.records import Record
from memft.research import bench
from memft.research.results import Store, run_id

BENCHMARKS = tuple(bench.BENCHMARKS)
TRAIN_KEYS = ("lr_schedule", "max_grad_norm", "batch_size", "template")  # TrainConfig settings a sweep may set
# What a length ℓ means: memft.research.bench.BENCHMARKS[name].length_means.
DEFAULT_LENGTHS = {name: list(b.default_lengths) for name, b in bench.BENCHMARKS.items()}

Progress = Callable[[int, int, "str | None"], None]
Save = Callable[[dict[str, Any], "dict[str, Any] | None", "str | None"], None]  # (point, result, error)


@dataclass
class SweepConfig:
    """A grid of points: models × benchmarks × lengths × ratios (stress only) × ranks × methods × seeds."""

    models: list[str] = field(default_factory=lambda: ["smollm2-135m"])
    benchmarks: list[str] = field(default_factory=lambda: ["phonebook"])
    ratios: list[float] = field(default_factory=lambda: [0.0, 1.0])  # stress: fraction of tokens made random
    lengths: list[int] | dict[str, list[int]] | None = None  # None: DEFAULT_LENGTHS; a dict: per benchmark
    ranks: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    methods: list[str] = field(default_factory=lambda: ["sft"])
    seeds: list[int] = field(default_factory=lambda: [0])  # seed of the data and of training
    lr: float = 1e-2
    max_steps: int = 300
    stop_when_certified: bool = True  # False: a fixed budget for every run (what the law's ΔL is measured at)
    preset: str = "probe"
    dtype: str = "auto"
    device: str = "auto"
    heldout: int = 100  # rule: held-out pairs for generalization
    method_options: dict[str, Any] = field(default_factory=dict)  # each method takes the options it knows
    text: str | None = None  # stress: UTF-8 text file to build targets from (default: pydoc topics)
    # The reference code's setup (memft.config.TrainConfig): linear lr decay, clipping at 1.0, small batches, chat.
    # A point holds these only when they differ from TrainConfig's defaults, so older stores keep their run ids.
    lr_schedule: str = "constant"
    max_grad_norm: float | None = None
    batch_size: int = 64
    template: str = "raw"

    def __post_init__(self) -> None:
        problems: list[str] = []
        self.models = _strs(self.models, "models", problems)
        self.benchmarks = _strs(self.benchmarks, "benchmarks", problems)
        self.methods = _strs(self.methods, "methods", problems)
        self.ranks = _ints(self.ranks, "ranks", problems, low=1)
        self.seeds = _ints(self.seeds, "seeds", problems, low=0)
        self.ratios = [float(x) for x in _nums(self.ratios, "ratios", problems)]
        if any(not 0.0 <= r <= 1.0 for r in self.ratios):
            problems.append(f"ratios {self.ratios}: fractions in [0, 1], e.g. 0.5 for half the tokens random")
        for b in self.benchmarks:
            if b not in BENCHMARKS:
                problems.append(f"benchmarks: unknown {b!r}; use {', '.join(BENCHMARKS)}")
        self.lengths = self._lengths(problems)
        lr = _nums(self.lr, "lr", problems, scalar=True)
        self.lr = float(lr[0]) if lr else self.lr
        if lr and not self.lr > 0:
            problems.append(f"lr must be positive, got {self.lr}")
        for name, low in (("max_steps", 0), ("heldout", 0)):
            got = _ints(getattr(self, name), name, problems, low=low, scalar=True)
            if got:
                setattr(self, name, got[0])
        if not isinstance(self.stop_when_certified, bool):
            problems.append(f"stop_when_certified must be true or false, got {self.stop_when_certified!r}")
        for name, allowed in (("preset", PRESETS), ("dtype", DTYPES), ("device", DEVICES)):
            if getattr(self, name) not in allowed:
                problems.append(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        problems += self._train_problems()
        problems += _model_problems(self.models)
        problems += self._method_problems()
        if self.text is not None and not Path(self.text).is_file():
            problems.append(f"text {self.text}: no such file; give a UTF-8 text file or leave text out")
        if problems:
            raise ConfigError("; ".join(problems))

    def _lengths(self, problems: list[str]) -> dict[str, list[int]]:
        given = self.lengths
        if isinstance(given, dict):
            for b in sorted(set(given) - set(self.benchmarks)):
                problems.append(f"lengths: {b!r} is not one of the sweep's benchmarks ({', '.join(self.benchmarks)})")
            return {b: _ints(given[b], f"lengths.{b}", problems, low=1) if b in given else DEFAULT_LENGTHS.get(b, []) for b in self.benchmarks}
        if given is None:
            return {b: DEFAULT_LENGTHS.get(b, []) for b in self.benchmarks}
        ls = _ints(given, "lengths", problems, low=1)
        return {b: ls for b in self.benchmarks}

    def _train_problems(self) -> list[str]:
        out = []
        if self.lr_schedule not in LR_SCHEDULES:
            out.append(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        g = self.max_grad_norm
        if g is not None and not (isinstance(g, (int, float)) and not isinstance(g, bool) and 0 < g < float("inf")):
            out.append(f"max_grad_norm must be a number > 0 or null (no clipping), got {g!r}")
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            out.append(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if self.template not in TEMPLATES:
            out.append(f"template must be one of {', '.join(TEMPLATES)}, got {self.template!r}")
        return out

    def train_extras(self, method: str) -> dict[str, Any]:
        """The point keys that differ from TrainConfig's defaults (training setup and the objective's revision)."""
        from memft.objectives import revision

        default = TrainConfig()
        out = {k: getattr(self, k) for k in TRAIN_KEYS if getattr(self, k) != getattr(default, k)}
        if revision(method) is not None:
            out["objective_revision"] = revision(method)
        return out

    def _method_problems(self) -> list[str]:
        from memft.objectives import OBJECTIVES, option_problems
        from memft.research.runs import unused_options

        if not isinstance(self.method_options, dict):
            return [f"method_options must be a mapping like {{threshold: 0.6}}, got {self.method_options!r}"]
        out = [f"methods: unknown {m!r}; use {', '.join(OBJECTIVES)}" for m in self.methods if m not in OBJECTIVES]
        known = [m for m in self.methods if m in OBJECTIVES]
        for m in known:
            out += option_problems(m, self.options_for(m))
        unused = unused_options(known, self.method_options)
        if known and unused:
            out.append(f"method_options {', '.join(unused)}: not an option of any of {', '.join(known)}")
        return out

    def options_for(self, method: str) -> dict[str, Any]:
        """The method options that `method` takes (the others belong to other methods of the sweep)."""
        from memft.research.runs import options_for

        return options_for(method, self.method_options)

    @classmethod
    def from_yaml(cls, path: str | Path) -> SweepConfig:
        """Read and validate a sweep config; every error is one line that names the file."""
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the sweep config ({e.strerror})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text; save the sweep config as UTF-8") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            what = " ".join(str(getattr(e, "problem", None) or e).split())
            raise ConfigError(f"{where}: malformed YAML ({what})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the sweep config must be a mapping of keys like `models: [tiny-random]`, got {type(data).__name__}")
        keys = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in data if k not in keys]
        if unknown:
            hints = [f"{k!r}" + (f" (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(str(k), keys, 1)) else "") for k in unknown]
            raise ConfigError(f"{path}: unknown key{'s' * (len(unknown) > 1)} {', '.join(hints)}; known keys: {', '.join(keys)}")
        try:
            return cls(**data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def points(self) -> list[dict[str, Any]]:
        """Every point of the grid as a resolved config dict with its `run_id`, grouped by model, then by dataset."""
        text_sha = hashlib.sha256(Path(self.text).read_bytes()).hexdigest() if self.text else None
        out = []
        for model, bench in itertools.product(self.models, self.benchmarks):
            ratios = self.ratios if bench == "stress" else [None]
            for length, ratio, seed, rank, method in itertools.product(self.lengths[bench], ratios, self.seeds, self.ranks, self.methods):
                p = {
                    "model": model, "benchmark": bench, "length": length, "ratio": ratio, "rank": rank,
                    "method": method, "seed": seed, "lr": self.lr, "max_steps": self.max_steps, "preset": self.preset,
                    "stop_when_certified": self.stop_when_certified,
                    "dtype": self.dtype, "method_options": self.options_for(method),
                    "heldout": self.heldout if bench == "rule" else None,
                    "text_sha256": text_sha if bench == "stress" else None,
                    **self.train_extras(method),
                }
                out.append({**p, "run_id": run_id(p)})
        return list({p["run_id"]: p for p in out}.values())  # repeated list entries give the same point once


def label(point: dict[str, Any]) -> str:
    """Short human label of a point, e.g. "tiny-random stress ℓ=64 ρ=0.5 sft r=4 seed=0"."""
    rho = f" ρ={point['ratio']:g}" if point["ratio"] is not None else ""
    return f"{point['model']} {point['benchmark']} ℓ={point['length']}{rho} {point['method']} r={point['rank']} seed={point['seed']}"


def build_dataset(
    benchmark: str, length: int, ratio: float | None, tokenizer: Any, seed: int, heldout: int, text: str | None = None,
    exclude: Collection[int] = (),
) -> tuple[list[Record], list[Record] | None]:
    """(records, held-out records or None) of one benchmark point (memft.research.bench.make); `text` is the stress
    source text (not a path); `exclude`: token ids the stress test must not draw (the model's unreachable tokens)."""
    return bench.make(benchmark, bench.DataSpec(length, ratio, heldout, text, exclude), tokenizer, seed)


# ---------------------------------------------------------------------------------------------- one point


class _Worker:
    """Runs points in one process: keeps the loaded base and built datasets of the current model."""

    def __init__(self, device: str, text: str | None):
        self.device, self.text = device, text
        self.key: tuple[Any, ...] | None = None
        self.base: Any = None
        self.datasets: dict[tuple[Any, ...], Any] = {}

    def run(self, p: dict[str, Any], on_step: Callable[[dict[str, float]], None] | None = None) -> dict[str, Any]:
        """{"row", "positions", "curve"} of one point; exceptions propagate."""
        from memft.config import LoraSettings
        from memft.encoding import encode_all
        from memft.evaluate import teacher_forced
        from memft.forward import Runner
        from memft.research.runs import research_train, run_benchmark_point

        base = self._base(p)
        records, held = self._dataset(p, base.tokenizer)
        lora = LoraSettings(rank=p["rank"], preset=p["preset"])
        train = research_train(p["method"], lr=p["lr"], max_steps=p["max_steps"], seed=p["seed"], method_options=p["method_options"],
                               stop_when_certified=p["stop_when_certified"], **{k: p[k] for k in TRAIN_KEYS if k in p})
        got: dict[str, Any] = {}

        def on_fit(f: Any) -> None:
            # The per-position probabilities behind the probability grids: one more teacher-forced pass.
            items = encode_all(records, base.tokenizer, train.template)
            stats = teacher_forced(Runner(f.model, items, base.tokenizer.pad_token_id), train.batch_size)
            got["positions"] = [{"prob": stats[i].prob, "correct": stats[i].correct} for i in range(len(items))]
            got["curve"] = list(f.train.history)

        try:
            row = run_benchmark_point(p["benchmark"], (records, held), base, lora, train, p["ratio"], on_step=on_step, on_fit=on_fit)
        except BaseException:
            self.key = self.base = None  # a run that died mid-training may leave its adapter on the base: reload it
            raise
        return {"row": row, "positions": got.get("positions"), "curve": got.get("curve")}

    def _base(self, p: dict[str, Any]) -> Any:
        from memft.modeling import TINY, load_base

        # tiny-random's weights depend on the seed (as with `memft bench --seed`); a real model's do not.
        key = (p["model"], p["dtype"], p["seed"] if p["model"] == TINY else 0)
        if key != self.key:
            self.key = self.base = None  # free the previous model before loading the next
            self.datasets = {}
            self.base, self.key = load_base(p["model"], self.device, p["dtype"], seed=key[2]), key
        return self.base

    def _dataset(self, p: dict[str, Any], tokenizer: Any) -> tuple[list[Record], list[Record] | None]:
        from memft.modeling import unreachable_tokens

        key = (p["benchmark"], p["length"], p["ratio"], p["seed"], p["heldout"])
        if key not in self.datasets:
            try:
                self.datasets[key] = build_dataset(p["benchmark"], p["length"], p["ratio"], tokenizer, p["seed"], p["heldout"], self.text,
                                                   exclude=unreachable_tokens(self.base.model))
            except Exception as e:  # noqa: BLE001 - remembered: every point of this dataset fails the same way
                self.datasets[key] = e
        data = self.datasets[key]
        if isinstance(data, Exception):
            raise data
        return data


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


# ---------------------------------------------------------------------------------------------- sweeps


def run_sweep(
    config: SweepConfig,
    store_path: str | Path,
    on_progress: Progress | None = None,
    backend: str = "local",
    address: str | None = None,
    gpus_per_run: float = 0,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Run every point of `config` not yet done in the store at `store_path`; return a summary.

    on_progress(done, total, label): before each run (local; label = the run starting) or after each result
    (ray; label = the run that ended), and once at the end with label None. `done` counts points already done.
    on_step: each training step of the current run (local backend only), for a per-run progress bar.
    A point that raises is stored as failed with its error and the sweep goes on.
    backend "ray": each point is a Ray task on `address` (None: a local Ray instance) given `gpus_per_run` GPUs
    (fractions share one; 0 with device auto runs on the CPU); memft must be importable on every Ray node.
    Returns {"total", "skipped" (already done), "done", "failed" (by this call), "seconds", "store", "failures"}.
    """
    if backend not in ("local", "ray"):
        raise ConfigError(f"backend {backend!r}: use local or ray")
    if gpus_per_run < 0:
        raise ConfigError(f"gpus_per_run must be >= 0, got {gpus_per_run}")
    t0 = time.perf_counter()
    # One sweep per store at a time: a second one would re-claim the first one's running points (which look like
    # points a killed sweep left) and run every point twice. The lock is an OS lock, so a killed sweep frees it.
    with folders.locked(Path(store_path), wait=0):
        return _sweep(config, store_path, on_progress, backend, address, gpus_per_run, on_step, t0)


def _sweep(config: SweepConfig, store_path: str | Path, on_progress: Progress | None, backend: str, address: str | None,
           gpus_per_run: float, on_step: Callable[[dict[str, float]], None] | None, t0: float) -> dict[str, Any]:
    points = config.points()
    text = Path(config.text).read_text(encoding="utf-8") if config.text else None
    store = Store(store_path)
    try:
        done = store.done_ids()
        todo = [p for p in points if p["run_id"] not in done]
        summary = {"total": len(points), "skipped": len(points) - len(todo), "done": 0, "failed": 0, "store": str(store_path), "failures": []}

        def save(p: dict[str, Any], result: dict[str, Any] | None, error: str | None) -> None:
            if error is None:
                store.finish(p["run_id"], result["row"], result["positions"], result["curve"])
                summary["done"] += 1
            else:
                store.fail(p["run_id"], error)
                summary["failed"] += 1
                summary["failures"].append({"run_id": p["run_id"], "label": label(p), "error": error})

        progress = on_progress or (lambda *_: None)
        if backend == "local":
            _run_local(todo, store, save, progress, summary, config.device, text, on_step)
        elif todo:
            _run_ray(todo, store, save, progress, summary, config.device, text, address, gpus_per_run)
        progress(summary["skipped"] + summary["done"] + summary["failed"], len(points), None)
    finally:
        store.close()
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    return summary


def _config(p: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in p.items() if k != "run_id"}


def _run_local(
    todo: list[dict[str, Any]], store: Store, save: Save, progress: Progress, summary: dict[str, Any],
    device: str, text: str | None, on_step: Callable[[dict[str, float]], None] | None,
) -> None:
    worker = _Worker(device, text)
    for p in todo:
        progress(summary["skipped"] + summary["done"] + summary["failed"], summary["total"], label(p))
        if not store.claim(p["run_id"], _config(p)):
            continue  # finished meanwhile by another process on the same store
        try:
            result = worker.run(p, on_step)
        except Exception as e:  # noqa: BLE001 - any failure of one point is recorded; the sweep goes on
            save(p, None, _error(e))
        else:
            save(p, result, None)


_RAY_WORKER: _Worker | None = None  # one per Ray worker process: keeps its model between the tasks it runs


def _ray_point(point: dict[str, Any], device: str, text: str | None) -> dict[str, Any]:
    """The body of one Ray task: run the point in the worker; errors come back as data, not as task failures."""
    global _RAY_WORKER
    if _RAY_WORKER is None or (_RAY_WORKER.device, _RAY_WORKER.text) != (device, text):
        _RAY_WORKER = _Worker(device, text)
    try:
        return {"result": _RAY_WORKER.run(point), "error": None}
    except Exception as e:  # noqa: BLE001
        return {"result": None, "error": _error(e)}


def _run_ray(
    todo: list[dict[str, Any]], store: Store, save: Save, progress: Progress, summary: dict[str, Any],
    device: str, text: str | None, address: str | None, gpus_per_run: float,
) -> None:
    try:
        import ray
    except ImportError:
        raise ConfigError("backend ray needs Ray: run `pip install ray` (or use backend local)") from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports to Anyscale unless the user opts in
    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_gpus=gpus_per_run, max_retries=0)(_ray_point)
        if device == "auto" and not gpus_per_run:
            device = "cpu"  # a task given no GPU share must not take one that Ray handed to another task
        pending = {}
        for p in todo:
            if store.claim(p["run_id"], _config(p)):  # only this process touches the store
                pending[task.remote(p, device, text)] = p
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            p = pending.pop(ref)
            try:
                out = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - the worker itself died (e.g. out of memory)
                out = {"result": None, "error": _error(e)}
            save(p, out["result"], out["error"])
            progress(summary["skipped"] + summary["done"] + summary["failed"], summary["total"], label(p))
    finally:
        if started:
            ray.shutdown()


def _listify(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _strs(value: Any, name: str, problems: list[str]) -> list[str]:
    vs = _listify(value)
    if not vs or not all(isinstance(v, str) and v for v in vs):
        problems.append(f"{name} must be a non-empty list of names, got {value!r}")
        return []
    return list(dict.fromkeys(vs))


def _nums(value: Any, name: str, problems: list[str], scalar: bool = False) -> list[float | int]:
    """Numbers (YAML reads 1e-2 as a string: numeric strings are accepted)."""
    vs = [value] if scalar else _listify(value)
    out: list[float | int] = []
    for v in vs:
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                pass
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            problems.append(f"{name} must be {'a number' if scalar else 'a list of numbers'}, got {value!r}")
            return []
        out.append(v)
    if not out:
        problems.append(f"{name} is empty")
    return list(dict.fromkeys(out))


def _ints(value: Any, name: str, problems: list[str], low: int, scalar: bool = False) -> list[int]:
    vs = [value] if scalar else _listify(value)
    if not vs or not all(isinstance(v, int) and not isinstance(v, bool) and v >= low for v in vs):
        what = "an integer" if scalar else "a non-empty list of integers"
        problems.append(f"{name} must be {what} >= {low}, got {value!r}")
        return []
    return list(dict.fromkeys(vs))


def _model_problems(models: Sequence[str]) -> list[str]:
    """What `memft.modeling.load_base` would reject by name alone (weights are found only when a model loads)."""
    from memft.modeling import ALIASES

    def ok(m: str) -> bool:
        return m in ALIASES or Path(m).exists() or ("/" in m and not m.startswith((".", "/")) and not m.endswith(".gguf"))

    return [
        f"models: {m!r} is neither {' nor '.join(ALIASES)}, an existing folder or .gguf file, nor a hub id like Qwen/Qwen3-0.6B"
        for m in models if not ok(m)
    ]
