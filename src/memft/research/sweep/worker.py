"""Running points in one process: `Worker` keeps the loaded base and the built datasets of the current model
between points; `build_dataset` is one point's data.

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from memft.prompts.records import Record
from memft.research import bench
from memft.research.sweep.config import TRAIN_KEYS


def build_dataset(
    benchmark: str, length: int, ratio: float | None, tokenizer: Any, seed: int, heldout: int, text: str | None = None,
    exclude: Collection[int] = (),
) -> tuple[list[Record], list[Record] | None]:
    """(records, held-out records or None) of one benchmark point (memft.research.bench.make); `text` is the stress
    source text (not a path); `exclude`: token ids the stress test must not draw (the model's unreachable tokens)."""
    return bench.make(benchmark, bench.DataSpec(length, ratio, heldout, text, exclude), tokenizer, seed)


# ---------------------------------------------------------------------------------------------- one point


class Worker:
    """Runs points in one process: keeps the loaded base and built datasets of the current model."""

    def __init__(self, device: str, text: str | None):
        self.device, self.text = device, text
        self.key: tuple[Any, ...] | None = None
        self.base: Any = None
        self.datasets: dict[tuple[Any, ...], Any] = {}

    def run(self, p: dict[str, Any], on_step: Callable[[dict[str, float]], None] | None = None) -> dict[str, Any]:
        """{"row", "positions", "curve"} of one point; exceptions propagate."""
        from memft.config import LoraSettings
        from memft.prompts.encoding import encode_all
        from memft.certify.evaluate import teacher_forced
        from memft.model.forward import Runner
        from memft.research.runs import research_train, run_benchmark_point

        base = self._base(p)
        records, held = self._dataset(p, base.tokenizer)
        lora = LoraSettings(rank=p["rank"], preset=p["preset"], layers=tuple(p["layers"]) if p.get("layers") else None,
                            target_modules=tuple(p["target_modules"]) if p.get("target_modules") else None)
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
        from memft.model.base import TINY, load_base

        # tiny-random's weights depend on the seed (as with `memft bench --seed`); a real model's do not.
        key = (p["model"], p["dtype"], p["seed"] if p["model"] == TINY else 0)
        if key != self.key:
            self.key = self.base = None  # free the previous model before loading the next
            self.datasets = {}
            self.base, self.key = load_base(p["model"], self.device, p["dtype"], seed=key[2]), key
        return self.base

    def _dataset(self, p: dict[str, Any], tokenizer: Any) -> tuple[list[Record], list[Record] | None]:
        from memft.model.base import unreachable_tokens

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


def error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"
