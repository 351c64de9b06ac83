"""One experiment point = train a fresh adapter in memory on a record set, evaluate it, return one flat row.

`memft compare`, `memft bench` and `memft sweep` are grids of such points: each builds its TrainConfig with
`research_train`, splits method options with `options_by_method` and runs a point with `run_benchmark_point`
(which records the resolved settings in the row). A row is made here as a plain JSON-able dict (ROW_FIELDS, then
the settings; memft.research.rows): fractions in [0, 1], losses as the mean over target tokens (value tokens + the
end token), positions from 0. The results store gives it back as a memft.research.rows.ResultRow.

Research layer. May import the core (api, config, encoding, evaluate, metrics, modeling, objectives, records).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from memft.config import LoraSettings, TrainConfig
from memft.errors import ConfigError
from memft.model.base import Base
from memft.prompts.records import Record
from memft.research.rows import ROW_FIELDS, SETTINGS_FIELDS

if TYPE_CHECKING:
    from memft.training.fit import Fit


def research_train(method: str, **settings: Any) -> TrainConfig:
    """The TrainConfig of a research point: the paper's training, every record in every epoch (active_set off),
    stopping at certification itself (margin 0) unless `stop_when_certified=False`; `settings` are other
    TrainConfig fields (lr, max_steps, seed, batch_size, method_options, lr_schedule, ...)."""
    return TrainConfig(method=method, **({"margin": 0.0, "precision_log_odds": 0.0, "active_set": False} | settings))


def options_for(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options of a grid that `method` takes (sorted by name): each method takes the options it knows."""
    from memft.objectives import option_defaults

    return {k: v for k, v in sorted(options.items()) if k in option_defaults(method)}


def unused_options(methods: Sequence[str], options: dict[str, Any]) -> list[str]:
    """The options that none of `methods` knows (sorted): an error, since no run would use them."""
    from memft.objectives import option_defaults

    return sorted(set(options) - {k for m in methods for k in option_defaults(m)})


def options_by_method(methods: Sequence[str], options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{method: options_for(method)}; an unknown method or an option no method knows is a ConfigError."""
    from memft.objectives import OBJECTIVES

    unknown = [m for m in methods if m not in OBJECTIVES]
    if unknown:
        raise ConfigError(f"--methods: unknown {unknown[0]!r}; use {', '.join(OBJECTIVES)}")
    unused = unused_options(methods, options)
    if unused:
        raise ConfigError(f"--method-options {', '.join(unused)}: not an option of any of {', '.join(methods)}")
    return {m: options_for(m, options) for m in methods}


def resolve_order(train: TrainConfig, records: Sequence[Record], tokenizer: Any) -> TrainConfig:
    """`train` with a curriculum order of "shortest" (the paper's easy-first: shorter records first) turned into the
    explicit order the objective takes: records by their token count, prompt + value (the value alone ties on
    PhoneBook, whose numbers all have 10 digits), ties by index. Any other order is left as it is."""
    import dataclasses

    from memft.objectives.curriculum import ORDER_SHORTEST, easy_first
    from memft.prompts.encoding import encode_all

    if train.method_options.get("order") != ORDER_SHORTEST:
        return train
    sizes = [len(e.prompt) + e.n_value for e in encode_all(records, tokenizer, train.template)]
    return dataclasses.replace(train, method_options={**train.method_options, "order": easy_first(sizes)})


def settings_of(base: Base, lora: LoraSettings, train: TrainConfig) -> dict[str, Any]:
    """The resolved settings a result row or file carries next to its numbers (SETTINGS_FIELDS, in that order)."""
    got = {"lr": train.lr, "max_steps": train.max_steps, "margin": train.margin, "batch_size": train.batch_size,
           "preset": lora.preset, "dtype": base.dtype, "device": base.device}
    assert tuple(got) == SETTINGS_FIELDS
    return got


def run_benchmark_point(
    benchmark: str,
    data: tuple[Sequence[Record], Sequence[Record] | None],
    base: Base,
    lora: LoraSettings,
    train: TrainConfig,
    ratio: float | None = None,
    on_step: Callable[[dict[str, float]], None] | None = None,
    on_fit: Callable[[Fit], None] | None = None,
) -> dict[str, Any]:
    """One point of a benchmark grid (bench, compare, sweep): `data` = (records, held-out records or None) -> its
    row, with the benchmark, the ratio and the resolved settings (settings_of)."""
    records, heldout = data
    extra = {"benchmark": benchmark, "ratio": ratio, **settings_of(base, lora, train)}
    return run_point(records, base, lora, train, heldout=heldout, extra=extra, on_step=on_step, on_fit=on_fit)


def run_point(
    records: Sequence[Record],
    base: Base,
    lora: LoraSettings,
    train: TrainConfig,
    heldout: Sequence[Record] | None = None,
    extra: dict[str, Any] | None = None,
    on_step: Callable[[dict[str, float]], None] | None = None,
    on_fit: Callable[[Fit], None] | None = None,
) -> dict[str, Any]:
    """Train + evaluate one point; the base is given back unchanged. `heldout` records are evaluated, not trained.

    on_fit: called with the trained adapter (memft.api.Fit) before it is unloaded, for extra measurements
    (memft.research.sweep stores per-position probabilities and the training curve this way); not timed in `seconds`.
    """
    from memft.training.fit import fit
    from memft.prompts.encoding import encode_all
    from memft.certify.evaluate import evaluate
    from memft.certify.metrics import summarize

    train = resolve_order(train, records, base.tokenizer)
    t0 = time.perf_counter()
    f = fit(records, base, lora, train, on_step=on_step)
    try:
        seconds = time.perf_counter() - t0
        if on_fit:
            on_fit(f)
        s = f.summary
        row: dict[str, Any] = {
            "model": base.spec,
            "method": train.method,
            "rank": lora.rank,
            "length": f.value_tokens,
            "records": len(records),
            "seed": train.seed,
            "loss_init": f.train.loss_init,
            "loss_final": s["loss"],
            "delta_loss": f.train.loss_init - s["loss"],
            "token_accuracy": s["token_accuracy"],
            "token_accuracy_tf": s["token_accuracy_tf"],
            "exact_match": s["exact_match"],
            "certified": s["certified"],
            "p_above_half": s["p_above_half"],
            "min_prob": s["min_prob"],
            "steps": f.train.steps,
            "steps_to_certify": f.train.certified_at,
            "seconds": round(seconds, 3),
            "first_failure": [r.first_failure for r in f.reports],
            "earliest_stubborn": [r.earliest_stubborn for r in f.reports],
            "stubborn_positions": [r.stubborn_positions for r in f.reports],
        }
        if heldout:
            items = encode_all(heldout, base.tokenizer, train.template)
            hs = summarize(evaluate(f.model, base.tokenizer, items, generate="uncertified", batch_size=train.batch_size))
            row["heldout_exact_match"] = hs["exact_match"]
            row["heldout_token_accuracy"] = hs["token_accuracy"]
    finally:
        f.model.unload()
    row.update(extra or {})
    return {k: row.get(k) for k in ROW_FIELDS} | {k: v for k, v in row.items() if k not in ROW_FIELDS}


def rows_to_csv(rows: Sequence[dict[str, Any]], path: Any) -> None:
    """Flat CSV of rows (list-valued fields are written as JSON)."""
    import csv
    import json

    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()})
