"""`run_sweep`: every point of a sweep not yet done, into a results store, under the store's lock, on a backend.

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memft.store import folders
from memft.errors import ConfigError
from memft.research.results import Store
from memft.research.sweep.backends import Progress, run_local, run_ray
from memft.research.sweep.config import SweepConfig, label


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
            run_local(todo, store, save, progress, summary, config.device, text, on_step)
        elif todo:
            run_ray(todo, store, save, progress, summary, config.device, text, address, gpus_per_run)
        progress(summary["skipped"] + summary["done"] + summary["failed"], len(points), None)
    finally:
        store.close()
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    return summary
