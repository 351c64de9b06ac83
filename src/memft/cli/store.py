"""The CLI's side of a memory store of shards (memft.store.shards): `memft write` of more records than a shard holds,
the progress `append` and `forget` show for each shard (the hooks memft.api.append/forget take), a store's report,
`ledger` and `audit`. Each shard is sized, trained and shown as a write or rewrite of one adapter is;
memft.memory.sharded makes the whole change one swap of the store.

CLI layer: parses options, calls the library, prints; may import any layer (torch only inside commands).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import typer

from memft.cli.options import write_json
from memft.errors import ConfigError

Plan = Callable[[Sequence[Any]], tuple[Any, Any, Any]]  # records -> (Sizing, LoraSettings, TrainConfig)


def is_store(folder: Path) -> bool:
    """The folder (its real path) is a store of shards (memft.store.shards.store_at)."""
    from memft.store import shards

    return shards.store_at(folder) is not None


def on_shard(quiet: bool) -> Any:
    from memft.cli import render

    def say(name: str, i: int, n: int, k: int) -> None:
        if not quiet:
            render.console.print(f"[bold]{name}[/bold] ({i} of {n}): {k} records")
    return say


def _trained(part: Sequence[Any], path: Path, size: Any, lora: Any, train: Any, model: str, runtime: Any, base: Any, quiet: bool) -> Any:
    """One shard written as `memft write` writes one adapter: the sizing line, the progress bar, the forecast."""
    from memft import api
    from memft.cli import render

    with render.training_progress(train.max_steps, enabled=not quiet) as on_step:
        watch = render.forecast_watch(render.first_say(None if quiet else size.line(len(part)), on_step), train.max_steps,
                                      train.margin, lora.rank, say=None if not quiet else (lambda line: None), max_seconds=train.max_seconds)
        return api.shard_writer(part, path, size, lora, train, model, runtime, watch, base)


def write_store(recs: Sequence[Any], out: Path, shard_size: int, plan: Plan, model: str, runtime: Any, seed: int,
                time_limit: Optional[float], quiet: bool) -> Any:
    """`memft write` of more records than `shard_size`: a store, one shard after the other on one loaded base.
    --time-limit is for the whole store: each shard gets what is left of it."""
    from memft.memory import sharded
    from memft.model.base import load_base
    from memft.store import folders

    sharded.check_out(folders.check_location(out))  # before the model loads: a bad --out is one line
    base = load_base(model, runtime.device, runtime.dtype, seed=seed)
    t0 = time.perf_counter()

    def one(part: Sequence[Any], path: Path) -> Any:
        size, lora, train = plan(part)
        if time_limit is not None:
            train = dataclasses.replace(train, max_seconds=max(time_limit - (time.perf_counter() - t0), 1e-3))
        return _trained(part, path, size, lora, train, model, runtime, base, quiet)

    def check(part: Sequence[Any]) -> None:
        from memft.training.fit import prepare

        _, lora, train = plan(part)
        prepare(part, base, lora, train)

    return sharded.write(recs, out, shard_size, one, on_shard(quiet), check_shard=check)


def writer(quiet: bool) -> Any:
    """An api.ShardWriter that shows what a write shows: the sizing line, the progress bar, the forecast."""
    def write(part: Sequence[Any], path: Path, size: Any, lora: Any, train: Any, model: str, runtime: Any) -> Any:
        return _trained(part, path, size, lora, train, model, runtime, None, quiet)
    return write


def around(max_steps: Optional[int], quiet: bool) -> Any:
    """An api.Around that shows a rewrite's progress bar and forecast (memft.cli.memory._run)."""
    from memft.cli.memory import _run

    return lambda call, folder: _run(call, folder, max_steps, quiet)


def report(res: Any, json_out: Optional[Path], reveal: bool, quiet: bool) -> None:
    """The end of a store write, append or forget: JSON, the shards table, the summary; exits 0 when the store holds
    every record certified (a rewrite: and was saved), 1 otherwise."""
    from memft.certify.metrics import within_allowance
    from memft.cli import render
    from memft.cli.memory import json_and_failures

    json_and_failures(res, json_out, quiet, reveal)
    if not quiet:
        render.console.print(shards_table(res))
        if res.reports:
            render.console.print(render.summary_table(res.summary, title=f"records of {res.out} written or rewritten now"))
    near = [(r, s) for s in res.shards for r in within_allowance(s.reports, s.allowance)]
    ok = res.saved and res.all_certified
    if near and ok:
        s = near[0][1]
        render.within_allowance_line(len(near), len(res.reports), s.dtype, s.allowance)
    if res.op == "write" and not res.all_certified:
        render.not_exact(res.reports, res.out)
    elif not ok:
        why = f"still recalled: {res.still_recalled}" if res.still_recalled else "not every record certified"
        render.console.print(f"memft: not saved ({why}); {res.out} keeps the previous store. Try more --max-steps or a higher --lr",
                             soft_wrap=True, markup=False, highlight=False)
    elif not quiet:
        render.console.print(f"saved {res.out}: {res.held} records in {res.shard_count} shards")
    raise typer.Exit(0 if ok else 1)


def shards_table(res: Any) -> Any:
    from rich.table import Table

    t = Table(title=f"{res.out}: {res.op}, {res.held} records in {res.shard_count} shards, {res.seconds:.1f} s")
    for col in ("shard", "op", "records", "certified", "steps", "seconds"):
        t.add_column(col)
    for s in res.shards:
        t.add_row(s.name, s.op, str(s.records), "yes" if s.certified else "[red]no[/red]", str(s.steps), f"{s.seconds:.1f}")
    return t


def ledger_store(store: Path, as_json: bool) -> None:
    """`memft ledger` on a store: every shard's ledger, with the shard that holds each key."""
    from memft.cli import render
    from memft.cli.memory import activation_entry, ledger_tables
    from memft.store import adapters, folders, ledger, shards

    store = folders.resolve(store)
    meta = shards.read_meta(store)
    dirs = shards.shard_dirs(store)
    books = [(d.name, ledger.read(d), adapters.read_meta(d)) for d in dirs]
    if as_json:
        typer.echo(json.dumps({**meta.to_json(), "records": sum(len(b.entries) for _, b, _ in books),
                               "shards": [{"shard": n, **b.to_json(), "activation": activation_entry(m)} for n, b, m in books]},
                              indent=2, ensure_ascii=False))
        return
    render.out.print(f"{store}: a store of {len(books)} shards, {sum(len(b.entries) for _, b, _ in books)} records "
                     f"(at most {meta.shard_size} a shard)")
    for name, book, m in books:
        for t in ledger_tables(f"{store}/{name}", book, activation_entry(m)):
            render.out.print(t)


def audit_store(store: Path, recs: Optional[Sequence[Any]], run: Callable[[Any, Sequence[Any]], Any], json_out: Optional[Path], quiet: bool) -> None:
    """`memft audit` on a store: every shard audited as one adapter (`run(loaded, records)`: memft.checks.audit.audit),
    one shard in memory at a time; the JSON holds each shard's audit and the worst figure of each kind. Exit 1 when a
    value leaks into an unrelated prompt in any shard."""
    import gc

    from memft import api
    from memft.cli import render
    from memft.cli.audit import summary_table
    from memft.memory import sharded
    from memft.store import folders, ledger, shards

    store = folders.resolve(store)
    held = sharded.held_keys(store)
    if not held:
        raise shards.store_error(store, "audit")
    if recs is not None:
        routed, missing = shards.route([r.key for r in recs], held)
        if missing:
            raise ConfigError(f"{len(missing)} record(s) whose key no shard of {store} holds (first: {missing[0]!r}); give the records the store holds")
        by_key = {r.key: r for r in recs}
    done: list[dict[str, Any]] = []
    leaks = 0
    for name in held:
        loaded = api.load_adapter(store / name)
        mine = [by_key[k] for k in routed.get(name, [])] if recs is not None else ledger.recover_records(loaded)
        if not mine:
            continue
        res = run(loaded, mine)
        leaks += res.unrelated_leaks
        done.append({"shard": name, **res.to_json()})
        if not quiet:
            render.console.print(summary_table(res.to_json(), title=f"audit {store / name} ({res.settings['dtype']})"))
        del loaded, res
        gc.collect()
    div = [d["divergence"] for d in done]
    worst = {k: max(d[k] for d in div) for k in ("kl_mean", "kl_max", "ppl_change", "max_abs_logit_diff") if all(k in d for d in div)}
    if all("argmax_agreement" in d for d in div):
        worst["argmax_agreement"] = min(d["argmax_agreement"] for d in div)
    report = {"store": str(store), "shards": done, "worst": worst, "unrelated_leaks": leaks}
    if json_out:
        write_json(json_out, json.dumps(report, indent=2, ensure_ascii=False))
    if not quiet:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in worst.items())
        render.console.print(f"{store}: {len(done)} shards audited; worst over shards: {shown}; unrelated leaks {leaks}")
    raise typer.Exit(0 if leaks == 0 else 1)
