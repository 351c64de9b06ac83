"""`memft append`, `memft forget`, `memft ledger`: change a written adapter without losing what it holds.

CLI layer: parses options, calls the library, prints; may import any layer (torch only inside commands).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from memft.errors import ConfigError
from memft.cli.options import BaseGguf, Deploy, Device, JsonFile, Preserve, PreserveText, Quiet, Reveal, write_json

Lr = Annotated[Optional[float], typer.Option(help="AdamW learning rate (default: the one the adapter was written with).")]
MaxSteps = Annotated[Optional[int], typer.Option(help="Most optimizer steps (default: the adapter's).")]
Margin = Annotated[Optional[float], typer.Option(help="Train until every target probability exceeds this (default: the adapter's).")]
Method = Annotated[Optional[str], typer.Option(help="Training objective (default: the adapter's).")]
JsonOut = JsonFile


def append(
    adapter: Annotated[Path, typer.Argument(help="Adapter folder written by `memft write`.")],
    records: Annotated[Path, typer.Argument(help="JSONL file of records to add.")],
    update: Annotated[bool, typer.Option("--update", help="Allow new values for keys the adapter already holds.")] = False,
    lr: Lr = None,
    max_steps: MaxSteps = None,
    margin: Margin = None,
    method: Method = None,
    preserve: Preserve = None,
    preserve_text: PreserveText = None,
    deploy: Deploy = None,
    base_gguf: BaseGguf = None,
    shard_size: Annotated[Optional[int], typer.Option("--shard-size", help="One adapter that would hold more records than this becomes a store of shards: the adapter as it is, the new records in new shards (README, Shards); 0: append into the adapter, replaying what it holds. Default: the --shard-size it was written with (1000).")] = None,
    device: Device = "auto",
    json_out: JsonOut = None,
    reveal: Reveal = False,
    quiet: Quiet = False,
) -> None:
    """Add records to an adapter, replaying the ones it holds. Exit 0 when saved, 1 when some record did not certify
    (the folder keeps the previous adapter)."""
    from memft import api
    from memft.cli import store
    from memft.config import RuntimeConfig
    from memft.prompts.records import load_records

    recs = load_records(records)
    over = _overrides(lr, max_steps, margin, method) | preserve_options(preserve, preserve_text)
    if store.is_store(adapter):
        _no_deploy(deploy, base_gguf, adapter)
    hook = for_runtime(adapter, deploy, base_gguf, quiet)
    # one adapter, in place or grown into a store (README, Shards), or a store
    res = api.append(adapter, recs, update, over, RuntimeConfig(device=device), shard_size, store.writer(quiet), store.around(max_steps, quiet),
                     store.on_shard(quiet), deploy=hook)
    _finish(res, json_out, quiet, reveal)


def forget(
    adapter: Annotated[Path, typer.Argument(help="Adapter folder written by `memft write`.")],
    keys: Annotated[list[str], typer.Argument(help="Keys to remove.")],
    lr: Lr = None,
    max_steps: MaxSteps = None,
    margin: Margin = None,
    method: Method = None,
    preserve: Preserve = None,
    preserve_text: PreserveText = None,
    deploy: Deploy = None,
    base_gguf: BaseGguf = None,
    device: Device = "auto",
    json_out: JsonOut = None,
    reveal: Reveal = False,
    quiet: Quiet = False,
) -> None:
    """Remove keys: train their values away, then check greedy recall no longer gives them back. Exit 0 when saved."""
    from memft import api
    from memft.cli import store
    from memft.config import RuntimeConfig

    over = _overrides(lr, max_steps, margin, method) | preserve_options(preserve, preserve_text)
    if store.is_store(adapter):
        _no_deploy(deploy, base_gguf, adapter)
    hook = for_runtime(adapter, deploy, base_gguf, quiet)
    res = api.forget(adapter, keys, over, RuntimeConfig(device=device), store.around(max_steps, quiet), store.on_shard(quiet), deploy=hook)
    _finish(res, json_out, quiet, reveal)


def ledger(
    adapter: Annotated[Path, typer.Argument(help="Adapter folder written by `memft write`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the ledger as JSON.")] = False,
) -> None:
    """List the records an adapter holds (keys, digests, when written, certification at the last write) and its history."""
    from memft.cli import render
    from memft.cli.store import is_store, ledger_store
    from memft.store.adapters import read_meta
    from memft.store.ledger import read

    if is_store(adapter):
        return ledger_store(adapter, as_json)
    book = read(adapter)
    act = activation_entry(read_meta(adapter))
    if as_json:
        typer.echo(json.dumps({**book.to_json(), "activation": act}, indent=2, ensure_ascii=False))
        return
    for t in ledger_tables(adapter, book, act):
        render.out.print(t)


def ledger_tables(adapter: Any, book: Any, act: dict[str, Any]) -> list[Any]:
    """The ledger's two tables: the records it holds and its history."""
    from rich.table import Table

    t = Table(title=f"{adapter}: {len(book.entries)} records, generation {book.generation}")
    t.caption = (f"keyed: prompts are the invocation {act['invocation']!r} (token ids {act['invocation_tokens']}) then the key; "
                 "without it the model is the base" if act["activation"] == "keyed" else "always-on: prompts are the key itself")
    for col in ("key", "digest", "written", "gen", "certified", "min p", "min gap"):
        t.add_column(col, overflow="fold")
    for e in book.entries:
        gap = "—" if e.min_gap is None else f"{e.min_gap:.3f}"
        t.add_row(e.key[:40], e.digest[:12], e.written, str(e.generation), "yes" if e.certified else "[red]no[/red]", f"{e.min_prob:.3f}", gap)
    h = Table(title="history")
    for col in ("gen", "time", "op", "added", "updated", "removed", "held", "steps", "certified"):
        h.add_column(col)
    for line in book.history:
        h.add_row(*(str(line.get(c, "—")) for c in ("generation", "time", "op", "added", "updated", "removed", "held", "steps")), f"{100 * line.get('certified', 0):.1f}%")
    return [t, h]


def activation_entry(meta: Any) -> dict[str, Any]:
    """How to call the model: the activation and, for a keyed adapter, the invocation text and ids to put before a key."""
    return {"activation": meta.activation, "invocation": meta.invocation, "invocation_tokens": meta.invocation_tokens}


def for_runtime(adapter: Path, deploy: Optional[str], base_gguf: Optional[Path], quiet: bool) -> Any:
    """--deploy / --base-gguf of a rewrite, checked before any work -> memft.runtime.deploy_write.ForRuntime, or None."""
    if deploy is None and base_gguf is None:
        return None
    from memft.store.adapters import read_meta
    from memft.cli.deploy import deploy_target, on_round, progress_lines
    from memft.memory.rewrite import existing
    from memft.runtime.deploy_write import ForRuntime

    target = deploy_target(deploy, base_gguf, read_meta(existing(adapter)).base.spec)
    return ForRuntime(target, on_round(quiet), progress_lines(quiet))


def _no_deploy(deploy: Optional[str], base_gguf: Optional[Path], adapter: Path) -> None:
    if deploy is not None or base_gguf is not None:
        raise ConfigError(f"{adapter}: --deploy and --base-gguf change one adapter; a store's shards are written for PyTorch. "
                          "Leave them out, or give one shard folder (`memft ledger STORE` says which shard holds a key)")


def _overrides(lr: Optional[float], max_steps: Optional[int], margin: Optional[float], method: Optional[str]) -> dict[str, Any]:
    return {"lr": lr, "max_steps": max_steps, "margin": margin, "method": method}


def preserve_options(weight: Optional[float], text: Optional[Path]) -> dict[str, Any]:
    """--preserve / --preserve-text as TrainConfig fields; options left out are not given (the defaults apply)."""
    return ({"preserve": weight} if weight is not None else {}) | ({"preserve_text": str(text)} if text is not None else {})


def _run(call: Any, adapter: Path, max_steps: Optional[int], quiet: bool) -> Any:
    from memft.store.adapters import read_meta
    from memft.cli import render

    meta = read_meta(adapter)
    cfg = meta.train_config()
    total = max_steps if max_steps is not None else cfg.max_steps  # the adapter's budget
    with render.training_progress(total, enabled=not quiet) as on_step:
        # the same forecast as `memft write` (memft.training.forecast), on the rewrite's own training
        return call(render.forecast_watch(on_step, total, cfg.margin, meta.lora.rank, say=(lambda line: None) if quiet else None))


def json_and_failures(res: Any, json_out: Optional[Path], quiet: bool, reveal: bool) -> None:
    """The start of a rewrite's report (one adapter or a store): the --json file, then the records not certified."""
    from memft.store import safejson
    from memft.cli import render

    if json_out:
        write_json(json_out, safejson.dumps(res.to_json(reveal)))
    failed = [r for r in res.reports if not r.certified]
    if failed and not quiet:
        render.console.print(render.records_table(failed))


def _finish(res: Any, json_out: Optional[Path], quiet: bool, reveal: bool) -> None:
    from memft.cli import render
    from memft.cli.store import report
    from memft.memory.sharded import StoreResult

    if isinstance(res, StoreResult):  # a store's rewrite: its shards table and summary
        report(res, json_out, reveal, quiet)

    json_and_failures(res, json_out, quiet, reveal)
    if not quiet:
        p = res.plan
        render.console.print(
            f"kept {len(p['kept'])}, added {len(p['added'])}, changed {len(p['changed'])}, forgotten {len(p['forgotten'])}, "
            f"already held {len(p['unchanged'])}; loaded in {res.load_seconds or 0:.1f} s, recovered the held records in "
            f"{res.recover_seconds or 0:.1f} s, {res.steps} steps of training in {res.seconds:.1f} s"
        )
        render.console.print(render.summary_table(res.summary, title=f"records held by {res.out}"))
    if res.deploy is not None:
        from memft.cli.deploy import deploy_line

        deploy_line(res.deploy)
    if res.saved:
        render.console.print(f"saved {res.out}")
    else:
        why = f"still recalled: {res.still_recalled}" if res.still_recalled else "not every record certified"
        render.console.print(f"[red]not saved[/red] ({why}); {res.out} keeps the previous adapter. Try more --max-steps or a higher --lr")
    raise typer.Exit(0 if res.saved else 1)
