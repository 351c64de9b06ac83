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

Where it lives:
  config.py    SweepConfig (YAML, validation, points), label
  worker.py    Worker (one process: its base and datasets), build_dataset
  backends.py  run_local, run_ray
  run.py       run_sweep
This package re-exports the public names: `from memft.research.sweep import SweepConfig, run_sweep`.

Research layer: may import the core and the other research modules; never the CLI.
"""

from memft.research.sweep.config import BENCHMARKS, DEFAULT_LENGTHS, TRAIN_KEYS, SweepConfig, label
from memft.research.sweep.run import run_sweep
from memft.research.sweep.worker import Worker, build_dataset

__all__ = ["BENCHMARKS", "DEFAULT_LENGTHS", "TRAIN_KEYS", "SweepConfig", "Worker", "build_dataset", "label", "run_sweep"]
