"""A sweep's grid: `SweepConfig` (read from YAML and validated up front, every problem at once) and its points,
each a resolved config dict with its run id.

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memft.config import DEVICES, DTYPES, LR_SCHEDULES, PRESETS, TEMPLATES, TrainConfig
from memft.errors import ConfigError
from memft.research import bench
from memft.research.results import run_id


BENCHMARKS = tuple(bench.BENCHMARKS)
TRAIN_KEYS = ("lr_schedule", "max_grad_norm", "batch_size", "template")  # TrainConfig settings a sweep may set
# What a length ℓ means: memft.research.bench.BENCHMARKS[name].length_means.
DEFAULT_LENGTHS = {name: list(b.default_lengths) for name, b in bench.BENCHMARKS.items()}


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
    layers: list[int] | None = None  # decoder layers to adapt (LoraSettings.layers); None: the preset's
    target_modules: list[str] | None = None  # linear modules to adapt, e.g. [down_proj]; None: the preset's
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
        if self.layers is not None:
            got = _ints(self.layers, "layers", problems, low=0)
            self.layers = sorted(got) if got else self.layers
        if self.target_modules is not None:
            self.target_modules = sorted(_strs(self.target_modules, "target_modules", problems))
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
                    # Only when given, so that the points (and run ids) of sweeps without it stay what they were.
                    **({"layers": list(self.layers)} if self.layers is not None else {}),
                    **({"target_modules": list(self.target_modules)} if self.target_modules is not None else {}),
                }
                out.append({**p, "run_id": run_id(p)})
        return list({p["run_id"]: p for p in out}.values())  # repeated list entries give the same point once


def label(point: dict[str, Any]) -> str:
    """Short human label of a point, e.g. "tiny-random stress ℓ=64 ρ=0.5 sft r=4 seed=0"."""
    rho = f" ρ={point['ratio']:g}" if point["ratio"] is not None else ""
    return f"{point['model']} {point['benchmark']} ℓ={point['length']}{rho} {point['method']} r={point['rank']} seed={point['seed']}"



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
    """What `memft.model.base.load_base` would reject by name alone (weights are found only when a model loads)."""
    from memft.model.base import ALIASES

    def ok(m: str) -> bool:
        return m in ALIASES or Path(m).exists() or ("/" in m and not m.startswith((".", "/")) and not m.endswith(".gguf"))

    return [
        f"models: {m!r} is neither {' nor '.join(ALIASES)}, an existing folder or .gguf file, nor a hub id like Qwen/Qwen3-0.6B"
        for m in models if not ok(m)
    ]
