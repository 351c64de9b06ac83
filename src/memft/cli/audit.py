"""`memft audit`: the side-effect audit of an adapter (divergence on held-out text, leak probe).

Parses, calls memft.checks.audit.audit, prints a table and writes JSON. torch is imported inside the command only.

CLI layer: parses options, calls the library, prints; may import any layer (torch only inside commands).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from memft.cli.options import Device, JsonFile, Quiet, write_json
from memft.errors import ConfigError

LEAKS_SHOWN = 20


def audit(
    adapter: Annotated[Path, typer.Argument(help="Adapter folder written by `memft write`.")],
    records: Annotated[Path | None, typer.Argument(help="JSONL of the records the adapter holds (default: recovered from the adapter).")] = None,
    text: Annotated[Path | None, typer.Option("--text", help="UTF-8 text file to take held-out windows from (default: this Python's pydoc_data.topics).")] = None,
    windows: Annotated[int, typer.Option("--windows", help="Held-out windows to measure divergence on.")] = 32,
    window_tokens: Annotated[int, typer.Option("--window-tokens", help="Tokens per held-out window.")] = 128,
    seed: Annotated[int, typer.Option(help="Seed of the choice of windows.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = 8,
    device: Device = "auto",
    json_out: JsonFile = None,
    quiet: Quiet = False,
) -> None:
    """What does the adapter do to everything else? KL and perplexity against the base on held-out text, and stored
    values leaking into other prompts. Exit 0 if no value leaks into an unrelated prompt, 1 otherwise."""
    from memft import api
    from memft.checks.audit import audit as run_audit
    from memft.cli import render
    from memft.prompts.records import load_records

    body = _read_text(text) if text is not None else None
    recs = load_records(records) if records is not None else None  # bad input fails before the model loads
    from memft.cli.store import audit_store, is_store

    def run(loaded: Any, mine: Any) -> Any:
        return run_audit(loaded, mine, text=body, n_windows=windows, window=window_tokens, seed=seed, batch_size=batch_size,
                         text_name=None if text is None else str(text))

    if is_store(adapter):
        audit_store(adapter, recs, run, json_out, quiet)
    loaded = api.load_adapter(adapter, device)
    if recs is None:  # no records file: take them from the adapter itself
        from memft.store.ledger import recover_records

        recs = recover_records(loaded)
    res = run(loaded, recs)
    if json_out:
        write_json(json_out, json.dumps(res.to_json(), indent=2, ensure_ascii=False))
    if not quiet:
        if res.leak_probe["leaks"]:
            render.console.print(leaks_table(res.leak_probe["leaks"]))
        render.console.print(summary_table(res.to_json(), title=f"audit {adapter} ({res.settings['dtype']})"))
        render.console.print(locality_table(res.divergence, res.unrelated_leaks))
        for note in res.notes:
            render.console.print(f"[yellow]note:[/yellow] {note}")
    raise typer.Exit(0 if res.unrelated_leaks == 0 else 1)


def _read_text(path: Path) -> str:
    """A UTF-8 text file's contents; ConfigError naming the file otherwise."""
    if not path.is_file():
        raise ConfigError(f"--text {path}: no such file; give a UTF-8 text file")
    data = path.read_bytes()
    try:
        return data.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(f"--text {path}:{line}: bytes that are not UTF-8 (offset {e.start}); save the file as UTF-8") from None


def summary_table(report: dict[str, Any], title: str = "audit") -> Any:
    """The audit's headline numbers (an AuditResult.to_json() dict) as a rich table."""
    from rich.table import Table

    s, d, c = report["settings"], report["divergence"], report["leak_probe"]["counts"]
    t = Table(title=title)
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row("held-out text", s["text"])
    t.add_row("windows", f"{s['windows_used']} × {s['window_tokens']} tokens, {s['windows_skipped']} skipped")
    t.add_row("KL mean / p95 / max (nats)", f"{d['kl_mean']:.4g} / {d['kl_p95']:.4g} / {d['kl_max']:.4g}")
    ident = report.get("off_trigger_identity")
    if ident is not None:  # a keyed adapter: text without its invocation must get the base's logits exactly
        shown = f"{ident['max_abs_logit_diff']:.3g}" + (" (identical)" if ident["identical"] else " [red](not identical)[/red]")
        t.add_row("off-trigger identity: max |logit diff| (expected exactly 0)", shown)
    labels = (("key_prefix", "keys cut short"), ("generic", "generic prompts"), ("text", "held-out text"))
    for kind, label in labels:
        k = c[kind]
        other = f"[red]{k['leaks_other']}[/red]" if k["leaks_other"] and kind != "key_prefix" else str(k["leaks_other"])
        t.add_row(f"leaks other / own: {label}", f"{other} / {k['leaks_own']} of {k['probes']} prompts")
    base = sum(x["in_base"] for x in c.values())
    if base:
        t.add_row("leaks the base gives too", str(base))
    return t


def locality_table(div: dict[str, float], unrelated_leaks: int) -> Any:
    """The goal's three figures (memft.checks.audit.locality) for the base (adapter disabled) and the adapted model."""
    from rich.table import Table

    from memft.checks.audit import locality

    loc = locality(div, unrelated_leaks)
    g, ok = loc["goal"], loc["meets"]
    t = Table(title="locality on held-out text: base vs adapted")
    for col, just in (("figure", "left"), ("base", "right"), ("adapted", "right"), ("goal", "right"), ("met", "left")):
        t.add_column(col, justify=just)
    mark = {True: "yes", False: "[red]no[/red]"}
    t.add_row("perplexity", f"{div['ppl_base']:.4g}", f"{div['ppl_adapted']:.4g} ({100 * loc['ppl_increase']:+.2f}%)",
              f"≤ {100 * g['ppl_increase']:+.0f}%", mark[ok["ppl_increase"]])
    t.add_row("same next-token argmax as the base", "100%", f"{100 * loc['argmax_agreement']:.1f}%", f"≥ {100 * g['argmax_agreement']:.0f}%",
              mark[ok["argmax_agreement"]])
    t.add_row("KL(base ‖ ·) mean, nats/token", "0", f"{loc['kl_mean']:.4g}", f"≤ {g['kl_mean']:g}", mark[ok["kl_mean"]])
    t.caption = "goal met" if loc["met"] else "goal not met" + (" (a value leaked into an unrelated prompt)" if unrelated_leaks else "")
    return t


def leaks_table(leaks: list[dict[str, Any]], limit: int = LEAKS_SHOWN) -> Any:
    """One line per leak: probe kind, the prompt, the key whose value came out (never the value), whether that key
    owns the prompt (the prompt is that key, or a prefix of it) and whether the base alone gives it too."""
    from rich.table import Table

    t = Table(title="leaks")
    for col in ("kind", "prompt", "key leaked", "own key", "base too"):
        t.add_column(col, overflow="fold")
    for x in leaks[:limit]:
        t.add_row(x["kind"], x["prompt"][:40].replace("\n", "⏎"), x["key"][:40], "yes" if x["own"] else "no",
                  "—" if x["in_base"] is None else ("yes" if x["in_base"] else "no"))
    if len(leaks) > limit:
        t.caption = f"{len(leaks) - limit} more leaks in the JSON report"
    return t
