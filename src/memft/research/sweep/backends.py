"""Where a sweep's points run: `run_local` (one after another in this process) or `run_ray` (a Ray task each; only
this process writes to the store).

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from memft.errors import ConfigError
from memft.research.results import Store
from memft.research.sweep.config import label
from memft.research.sweep.worker import Worker, error_text

Progress = Callable[[int, int, "str | None"], None]
Save = Callable[[dict[str, Any], "dict[str, Any] | None", "str | None"], None]  # (point, result, error)


def _config(p: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in p.items() if k != "run_id"}


def run_local(
    todo: list[dict[str, Any]], store: Store, save: Save, progress: Progress, summary: dict[str, Any],
    device: str, text: str | None, on_step: Callable[[dict[str, float]], None] | None,
) -> None:
    worker = Worker(device, text)
    for p in todo:
        progress(summary["skipped"] + summary["done"] + summary["failed"], summary["total"], label(p))
        if not store.claim(p["run_id"], _config(p)):
            continue  # finished meanwhile by another process on the same store
        try:
            result = worker.run(p, on_step)
        except Exception as e:  # noqa: BLE001 - any failure of one point is recorded; the sweep goes on
            save(p, None, error_text(e))
        else:
            save(p, result, None)


_RAY_WORKER: Worker | None = None  # one per Ray worker process: keeps its model between the tasks it runs


def _ray_point(point: dict[str, Any], device: str, text: str | None) -> dict[str, Any]:
    """The body of one Ray task: run the point in the worker; errors come back as data, not as task failures."""
    global _RAY_WORKER
    if _RAY_WORKER is None or (_RAY_WORKER.device, _RAY_WORKER.text) != (device, text):
        _RAY_WORKER = Worker(device, text)
    try:
        return {"result": _RAY_WORKER.run(point), "error": None}
    except Exception as e:  # noqa: BLE001
        return {"result": None, "error": error_text(e)}


def run_ray(
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
                out = {"result": None, "error": error_text(e)}
            save(p, out["result"], out["error"])
            progress(summary["skipped"] + summary["done"] + summary["failed"], summary["total"], label(p))
    finally:
        if started:
            ray.shutdown()
