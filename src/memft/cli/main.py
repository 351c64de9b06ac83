"""`memft` CLI. Exit codes: 0 success, 1 the memory is not exact (some record not certified/recalled), 2 bad input.

torch and transformers are imported inside the commands, so `memft --help` answers fast.

CLI layer: parses options, calls the library, prints; may import any layer (torch only inside commands).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from memft import __version__
from memft.store import safejson
from memft.cli.options import (
    Activation, BaseGguf, Deploy, Device, Dtype, Invocation, JsonFile, Method, Model, Preserve, Preset, PreserveText, Quiet, Reveal,
    write_json,
)
from memft.cli.options import method_options as parse_method_options
from memft.errors import ConfigError, MemftError

app = typer.Typer(
    help="Exact parametric memory: write records into a LoRA adapter and prove greedy decoding gives them back verbatim.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"memft {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    pass


def _ints(text: Optional[str], option: str) -> Optional[tuple[int, ...]]:
    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"{option} {text!r}: give comma-separated integers like 18,19,20") from None


def _names(text: Optional[str]) -> Optional[tuple[str, ...]]:
    return None if text is None else tuple(x.strip() for x in text.split(",") if x.strip())




@app.command()
def write(
    records: Annotated[Path, typer.Argument(help="JSONL file: one {\"key\": ..., \"value\": ...} per line.")],
    out: Annotated[Path, typer.Option("--out", help="Adapter folder to create (or replace, if it holds a memft adapter).")],
    model: Model = "smollm2-135m",
    rank: Annotated[Optional[str], typer.Option(help="LoRA rank, or `auto`: the smallest rank that certifies every record (real training runs). Default: sized from the record count (memft.training.sizing).")] = None,
    max_rank: Annotated[int, typer.Option(help="With --rank auto: the largest rank to try.")] = 256,
    law: Annotated[Optional[Path], typer.Option(help="With --rank auto: law fit JSON (measured at this training budget) whose planner gives the first rank to try; without it the search starts at rank 1.")] = None,
    alpha: Annotated[Optional[float], typer.Option(help="LoRA alpha (default: = rank).")] = None,
    preset: Preset = None,
    layers: Annotated[Optional[str], typer.Option(help="Decoder layers to adapt, e.g. 20 or 18,19,20.")] = None,
    target_modules: Annotated[Optional[str], typer.Option(help="Module names to adapt, e.g. gate_proj,up_proj,down_proj.")] = None,
    method: Method = "sft",
    method_options: Annotated[Optional[str], typer.Option(help="JSON object of objective options, e.g. '{\"threshold\": 0.6}'.")] = None,
    lr: Annotated[Optional[float], typer.Option(help="AdamW learning rate. Default: sized from the record count (1e-2 up to 64 records, 3e-3 beyond).")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Most optimizer steps; training stops earlier once all records certify. Default: sized from the record count.")] = None,
    head_vocab: Annotated[Optional[str], typer.Option(help="full | restricted: the output tokens a training step scores (restricted: the records' targets plus the competitors full checks found; certification always uses the full head). Default: sized from the record count.")] = None,
    lora_init: Annotated[Optional[str], typer.Option(help="random (PEFT's) | centered (A from the centered, whitened inputs each adapted module sees at the records' target positions) | null | null-contrast (A in the directions general text's inputs barely use, for always-on locality; README, Locality). Default: sized from the record count.")] = None,
    lr_schedule: Annotated[Optional[str], typer.Option(help="constant | linear (decay to 0 over --max-steps) | progress (lr x max(0.1, 1 - certified share)). Default: sized from the record count.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Records per step (>= record count: full batch). Default: sized from the record count.")] = None,
    time_limit: Annotated[Optional[float], typer.Option(help="Stop training after this many seconds (then as at the end of --max-steps: saved, exit 1 unless certified).")] = None,
    shard_size: Annotated[Optional[int], typer.Option("--shard-size", help="More records than this make a store of shards, each a standard adapter of at most this many records, written one after the other and routed by key (README, Shards); 0: always one adapter. Default: 1000.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for adapter init and batch order.")] = 0,
    template: Annotated[str, typer.Option(help="raw (key then value tokens) | chat (the model's chat template).")] = "raw",
    margin: Annotated[float, typer.Option(help="Train until every target token is the argmax with probability above this (headroom against merging/precision shifts); 0: stop at bare certification.")] = 0.5,
    preserve: Preserve = None,
    preserve_text: PreserveText = None,
    activation: Activation = None,
    invocation: Invocation = None,
    deploy: Deploy = None,
    base_gguf: BaseGguf = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    json_out: JsonFile = None,
    reveal: Reveal = False,
    quiet: Quiet = False,
) -> None:
    """Write records into a LoRA adapter. Exit 0 if every record is certified, 1 if not (the adapter is still saved).

    Rank, batch size and step budget left out are sized from the record count (printed, and saved in memft.json)."""
    from memft import api
    from memft.cli import render
    from memft.config import LoraSettings, RuntimeConfig, TrainConfig, write_activation
    from memft.prompts.records import load_records
    from memft.cli import store
    from memft.cli.deploy import deploy_target, write_deploy
    from memft.store.shards import SHARD_SIZE
    from memft.training.sizing import size_for

    auto = rank == "auto"
    json_out = _absolute(json_out)  # now: `--out .` swaps the working directory itself for the new adapter
    if rank is not None and not auto and not rank.lstrip("-").isdigit():
        raise ConfigError(f"--rank {rank!r}: give a positive integer or auto")
    recs = load_records(records)
    target = deploy_target(deploy, base_gguf, model, auto)  # before any work: a bad --deploy is one line, nothing written
    placed = preset is not None or layers is not None or target_modules is not None
    layer_ids, module_names = _ints(layers, "--layers"), _names(target_modules)
    method_opts = parse_method_options(method_options)

    def plan(part: Any) -> tuple[Any, Any, Any]:
        """(Sizing, LoraSettings, TrainConfig) for these records: what was given, the rest sized from them."""
        size = size_for(len(part), preset=(preset or "probe") if placed else None,
                        rank=int(rank) if rank is not None and not auto else (1 if auto else None), batch_size=batch_size, max_steps=max_steps,
                        lr=lr, head_vocab=head_vocab, lora_init=lora_init, lr_schedule=lr_schedule,
                        value_tokens=None if rank is not None else _value_tokens(part, model))
        lora = LoraSettings(rank=size.rank, alpha=alpha, preset=size.preset, layers=layer_ids, target_modules=module_names,
                            activation=write_activation(activation, preserve), invocation=invocation)
        train = TrainConfig(method=method, lr=size.lr, max_steps=size.max_steps, batch_size=size.batch_size, seed=seed, template=template,
                            method_options=method_opts, margin=margin, max_seconds=time_limit,
                            head_vocab=size.head_vocab, lora_init=size.lora_init, lr_schedule=size.lr_schedule,
                            # the null inits keep A where they put it: trained, it gave most of the locality back (README)
                            a_lr_scale=0.0 if size.lora_init.startswith("null") else 1.0,
                            **memory.preserve_options(preserve, preserve_text))
        return size, lora, train

    if shard_size is not None and shard_size < 0:
        raise ConfigError(f"--shard-size {shard_size}: give a positive number of records per shard, or 0 for one adapter")
    if (auto or target is not None) and shard_size is None:
        shard_size = 0  # --rank auto and --deploy make one adapter (a runtime is proven on it whole), whatever the count
    shard_size = SHARD_SIZE if shard_size is None else shard_size
    if shard_size and len(recs) > shard_size:
        if auto or target is not None:
            raise ConfigError(f"{len(recs)} records make a store of shards (more than --shard-size {shard_size}); --rank auto and --deploy "
                              "write one adapter: leave --shard-size out (or give 0) for one adapter, or leave those options out")
        plan(recs[:1])  # every option checked before the model loads
        runtime = RuntimeConfig(device=device, dtype=dtype)
        res = store.write_store(recs, out, shard_size, plan, model, runtime, seed, time_limit, quiet)
        store.report(res, json_out, reveal, quiet)
    size, lora, train = plan(recs)
    runtime = RuntimeConfig(device=device, dtype=dtype)
    watch, outcome = None, None
    if auto:
        res = _write_auto(recs, out, model, lora, train, runtime, law, max_rank, quiet)
        if res is None:
            raise typer.Exit(1)
    else:
        with render.training_progress(size.max_steps, enabled=not quiet) as on_step:
            # the sizing line waits for the first step, so that an error found before training stays one line
            step_watch = render.forecast_watch(render.first_say(None if quiet else size.line(len(recs)), on_step), size.max_steps,
                                               margin, size.rank, say=None if not quiet else (lambda line: None), max_seconds=time_limit)
            if target is None:
                res = api.write(recs, out, model=model, lora=lora, train=train, runtime=runtime, on_step=step_watch,
                                extra={"sizing": size.to_json()}, shard_size=shard_size)
            else:
                res, outcome = write_deploy(recs, out, target, model, lora, train, runtime, step_watch, {"sizing": size.to_json()}, quiet)
            watch = step_watch.watch
    _report_write(res, out, size, watch, outcome, json_out, reveal, quiet)


def _absolute(path: Path | None) -> Path | None:
    """A --json FILE as an absolute path (None and `-`, standard output, as they are)."""
    return path if path is None or str(path) == "-" else Path(os.path.abspath(path))


def _report_write(res: Any, out: Path, size: Any, watch: Any, outcome: Any, json_out: Path | None, reveal: bool, quiet: bool) -> None:
    """The end of `memft write`: the JSON report, the tables, the exit-1 line, the forecast's advice and, with
    --deploy, the runtime's verdict; exits."""
    from memft.certify.metrics import within_allowance
    from memft.cli import render

    report = {**res.summary, "out": str(out), "steps": res.meta.train["steps"], "sizing": size.to_json(),
              "per_record": [r.to_json(reveal) for r in res.reports]}
    if outcome is not None:
        report["deploy"] = {**res.meta.extra.get("deploy", {}), "certified": outcome.certificate() is not None}
    f = watch.last if watch is not None else None
    if f is not None:
        report["forecast"] = {"steps_done": f.steps_done, "steps_needed": f.steps_needed, "budget_steps": f.budget_steps,
                              "epochs_done": f.epochs_done, "epochs_needed": f.epochs_needed, "on_track": f.on_track}
    allowance = res.meta.train.get("log_odds_allowance") or 0.0
    near = within_allowance(res.reports, allowance)
    report["within_allowance"] = len(near)
    if json_out:
        write_json(json_out, safejson.dumps(report))
    if not quiet:
        failed = [r for r in res.reports if not r.certified]
        if failed:
            render.console.print(render.records_table(failed))
        render.console.print(render.summary_table(res.summary, title=f"written to {out}"))
    if near and res.all_certified:  # exact, but the run ended before every record held the precision's allowance
        render.within_allowance_line(len(near), len(res.reports), res.meta.base.dtype, allowance)
    if not res.all_certified:  # exit 1 always comes with one line saying what is not exact, --quiet or not
        render.not_exact(res.reports, out)
    if not res.all_certified and f is not None and not quiet:
        render.console.print(watch.final_advice(res.meta.train["seconds"]), soft_wrap=True)
    if outcome is not None:  # --deploy: the runtime's verdict, one line, --quiet or not
        from memft.cli.deploy import deploy_line

        deploy_line(outcome)
    raise typer.Exit(0 if res.all_certified and (outcome is None or outcome.all_exact) else 1)


def _value_tokens(recs: Any, model: str) -> int | None:
    """The records' value tokens for the sizing rule; None when the tokenizer cannot load here (the model's own
    error, with how to fix it, comes when the model loads)."""
    from memft.model.base import load_tokenizer
    from memft.training.sizing import value_tokens

    try:
        return value_tokens(recs, load_tokenizer(model))
    except Exception:  # noqa: BLE001 - sizing falls back to the record count
        return None


def _write_auto(recs, out, model, lora, train, runtime, law, max_rank, quiet):  # noqa: ANN001, ANN202 - CLI glue
    from memft.cli import render
    from memft.research.law import pick_fit
    from memft.research.ranksearch import write_auto_rank

    fit = None
    if law is not None:  # a law is budget-specific: only a fit the user chose for this budget gives the first guess
        try:  # key -> value records are PhoneBook-like; a file without that setting falls back to Combined
            fit = pick_fit(law, "PhoneBook")
        except ConfigError:
            fit = pick_fit(law, "Combined")

    def on_try(t: dict) -> None:
        if not quiet:
            render.console.print(f"rank {t['rank']}: certified {100 * t['certified']:.1f}% after {t['steps']} steps ({t['seconds']:.1f} s)")

    res, tries = write_auto_rank(recs, out, model, lora, train, runtime, law_fit=fit, max_rank=max_rank, on_try=on_try)
    if res is None:  # printed with --quiet too: exit 1 says what is not exact
        render.console.print(f"memft: no rank up to {max_rank} certified every record (tried {[t['rank'] for t in tries]}); "
                             f"nothing was saved to {out}", soft_wrap=True, markup=False)
    elif not quiet:
        render.console.print(f"smallest certifying rank: {res.meta.lora.rank} (tried {[t['rank'] for t in tries]})")
    return res


@app.command()
def recall(
    adapter: Annotated[Path, typer.Argument(help="Adapter folder written by `memft write`.")],
    key: Annotated[Optional[str], typer.Argument(help="The key to recall (or give --keys).")] = None,
    keys: Annotated[Optional[Path], typer.Option("--keys", help="Recall every key in this file (one a line, or JSON lines with \"key\"; - = stdin) with one model load; prints JSON lines.")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Generate even for keys the adapter does not hold (the output is then invented, not recalled).")] = False,
    device: Device = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON with key, held, value, certified, min_prob, nearest.")] = False,
    runtime: Annotated[str, typer.Option("--runtime", help="auto (llama.cpp when the adapter holds a llama.cpp certificate and memft[llamacpp] is installed, else torch) | torch | llama.cpp.")] = "auto",
    base_gguf: Annotated[Optional[Path], typer.Option("--base-gguf", help="With llama.cpp: the base GGUF (default: the one the certificate names, or the embedded model's).")] = None,
) -> None:
    """Print exactly the value stored under KEY, then a newline. A key the adapter does not hold is answered on
    stderr with the nearest held keys, exit 1 (nothing is invented unless --raw)."""
    from memft.prompts.records import check_key

    if (key is None) == (keys is None):
        raise ConfigError("give one KEY or --keys FILE (not both, not neither)")
    asked = [check_key(key)] if key is not None else _read_keys(keys)
    from memft.cli.deploy import recall_runtime
    from memft.cli.store import is_store

    # a store is recalled in PyTorch, each key from the shard that holds it (api.recall_many); llama.cpp takes a shard
    torch_store = is_store(adapter) and runtime in ("auto", "torch") and base_gguf is None
    rs = None if torch_store else recall_runtime(adapter, asked, runtime, base_gguf, raw)
    if rs is None:  # torch: a store, an adapter not certified for llama.cpp, or --runtime torch
        from memft import api

        rs = api.recall_many(adapter, asked, raw=raw, device=device)
    for r in rs:
        if not r.held:
            near = ", ".join(repr(k) for k in r.nearest) or "none close"
            how = "raw generation follows (invented, not recalled)" if raw else "`memft ledger DIR` lists every held key; --raw generates anyway"
            typer.echo(f"memft: not held: {r.key!r} (nearest held keys: {near}); {how}", err=True)
        elif not r.certified:
            typer.echo(f"memft: warning: {r.key!r} is held but its recall is not certified (it was not certified when written, "
                       "or what came back does not match the record's digest): the value printed may be wrong; write it again", err=True)
    for r in rs:
        if keys is not None or as_json:
            typer.echo(safejson.dumps(r.to_json(), indent=None))
        elif r.held or raw:
            sys.stdout.write(r.value + "\n")
    # 0 only when every value printed is vouched for (held and certified); --raw accepts invented values for keys
    # the adapter does not hold, not uncertified ones for keys it holds
    vouched = all(r.certified for r in rs if r.held) and (raw or all(r.held for r in rs))
    raise typer.Exit(0 if vouched else 1)


def _read_keys(path: Path) -> list[str]:
    """Keys for `recall --keys`: one per line (a trailing CR dropped), or JSON objects with a "key" field."""
    from memft.errors import RecordsError
    from memft.prompts.records import check_key

    where = "stdin" if str(path) == "-" else str(path)
    try:
        data = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
        text = data.decode("utf-8")
    except OSError as e:
        raise RecordsError(f"--keys {where}: cannot read it ({e.strerror}); give a text file with one key per line") from None
    except UnicodeDecodeError as e:
        raise RecordsError(f"--keys {where}: bytes that are not UTF-8 (offset {e.start}); save the file as UTF-8") from None
    out = []
    for n, line in enumerate(text.lstrip("\ufeff").split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                line = json.loads(line)["key"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise RecordsError(f"{where}:{n}: a line starting with {{ must be a JSON object with a \"key\" field") from None
        out.append(check_key(line, f"{where}:{n}"))
    if not out:
        raise RecordsError(f"--keys {where}: no keys; give one key per line")
    return out


@app.command()
def verify(
    adapter: Annotated[Path, typer.Argument(help="Adapter folder written by `memft write`.")],
    records: Annotated[Path, typer.Argument(help="JSONL records to check.")],
    json_out: JsonFile = None,
    generate: Annotated[bool, typer.Option("--generate", help="Also run greedy generation for certified records (a cross-check).")] = False,
    device: Device = "auto",
    dtype: Annotated[Optional[str], typer.Option(help="Precision to verify in: fp32 | bf16 | fp16 (default: the one it was certified in).")] = None,
    merged: Annotated[bool, typer.Option("--merged", help="Check the adapter merged into the base weights (as many deployments ship it).")] = False,
    plain_peft: Annotated[bool, typer.Option("--plain-peft", help="Also re-check in a separate process with plain transformers + peft.PeftModel.")] = False,
    deploy: Annotated[bool, typer.Option("--deploy", help="Check every deployment setting: LoRA and merged in fp32/bf16/fp16, and plain PeftModel.")] = False,
    temperature: Annotated[Optional[float], typer.Option(help="Also report each record's exact odds of coming back under sampling at this temperature.")] = None,
    top_p: Annotated[float, typer.Option(help="With --temperature: nucleus (top-p) sampling; 1 = off.")] = 1.0,
    top_k: Annotated[int, typer.Option(help="With --temperature: top-k sampling; 0 = off.")] = 0,
    samples: Annotated[int, typer.Option(help="With --temperature: also draw this many samples per record and count exact ones.")] = 0,
    runtime: Annotated[Optional[str], typer.Option("--runtime", help="llama.cpp: decode every record greedily in llama.cpp (needs memft[llamacpp]); the adapter's whole record set exact there is kept as a certificate in memft.json.")] = None,
    base_gguf: Annotated[Optional[Path], typer.Option("--base-gguf", help="With --runtime: the base GGUF llama.cpp runs (default: the embedded model's shipped Q4_1 file, or the .gguf the adapter was written on).")] = None,
    reveal: Reveal = False,
    quiet: Quiet = False,
) -> None:
    """Check that every record comes back exactly. Exit 0 if all do (in every setting checked), 1 otherwise."""
    if runtime is not None:
        from memft.cli.deploy import verify_runtime

        raise typer.Exit(0 if verify_runtime(adapter, records, runtime, base_gguf, json_out, reveal, quiet) else 1)
    from memft import api
    from memft.cli import render
    from memft.config import RuntimeConfig
    from memft.prompts.records import load_records

    RuntimeConfig(device=device, dtype=dtype or "auto")
    if dtype == "auto":
        raise ConfigError("--dtype auto: give fp32, bf16 or fp16, or leave it out to verify in the certified precision")
    if temperature is not None:
        from memft.checks.sampling import check_sampling

        check_sampling(temperature, top_p, top_k)
    if samples < 0 or (samples and temperature is None):
        raise ConfigError("--samples needs --temperature and a count >= 0")
    recs = load_records(records)
    report: dict = {}
    ok = True
    loaded = None  # loaded once for the plain verification and the sampling odds
    if deploy or merged or plain_peft:
        from memft.store.adapters import read_meta
        from memft.checks.deploy import recheck, settings_for

        cert = read_meta(adapter).certification.dtype
        checks = recheck(adapter, recs, settings_for(cert, merged, dtype, plain_peft, deploy), device)
        report["deploy"] = [c.to_json() for c in checks]
        ok = all(c.certified == c.records for c in checks)
        if not quiet:
            render.console.print(render.deploy_table(checks, title=f"deployment re-check of {adapter} (certified in {cert})"))
        if deploy:
            from memft.checks.vllm import check_folder

            static = check_folder(adapter)
            report["vllm_static"] = [c.to_json() for c in static]
            if not quiet:
                for c in static:
                    render.console.print(f"vLLM (static, not run): {c.name}: {'ok' if c.ok else '[red]no[/red]'}, {c.detail}")
    else:
        from memft.cli.store import is_store

        # a store: each record by its shard, one shard loaded at a time (api.verify); sampling odds take one adapter
        loaded = adapter if is_store(adapter) and temperature is None else api.load_adapter(adapter, device, dtype)
        res = api.verify(loaded, recs, generate="always" if generate else "uncertified", device=device, dtype=dtype)
        report.update(res.to_json(reveal))
        ok = res.summary["exact_match"] == 1.0
        if not quiet:
            render.console.print(render.records_table(res.reports))
            render.console.print(render.summary_table(res.summary, title=f"verify {adapter} ({res.dtype})"))
            for note in res.notes:
                render.console.print(f"[yellow]note:[/yellow] {note}", soft_wrap=True)  # one line, whatever the width
    if temperature is not None:
        odds = api.sampling_odds(loaded or adapter, recs, temperature, top_p, top_k, samples, device=device, dtype=dtype)
        report["sampling"] = {"temperature": temperature, "top_p": top_p, "top_k": top_k, "records": odds}
        if not quiet:
            render.console.print(render.odds_table(odds, title=f"recall odds under sampling (T={temperature}, top-p={top_p}, top-k={top_k})"))
    if json_out:
        write_json(json_out, safejson.dumps(report))
    raise typer.Exit(0 if ok else 1)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Adapter folder to write.")] = Path("memft-demo"),
    records: Annotated[int, typer.Option(help="Phone-book records to write.")] = 40,
    model: Model = "smollm2-135m",
    rank: Annotated[Optional[int], typer.Option(help="LoRA rank (default: sized from the record count, 8 up to 64 records).")] = None,
    lr: Annotated[Optional[float], typer.Option(help="AdamW learning rate (default: sized, 1e-2 up to 64 records).")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Most optimizer steps (default: sized, 300 up to 64 records).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the phone book and of training.")] = 0,
    device: Device = "auto",
) -> None:
    """The main job: write a seeded synthetic phone book into an adapter, verify it, print the table."""
    import time

    from memft import api
    from memft.store import folders
    from memft.cli import render
    from memft.config import LoraSettings, RuntimeConfig, TrainConfig
    from memft.prompts.records import write_records
    from memft.research.bench.phonebook import phonebook
    from memft.training.sizing import size_for

    if records <= 0:
        raise ConfigError(f"--records must be positive, got {records}")
    t0 = time.perf_counter()
    recs = phonebook(records, seed=seed)
    size = size_for(records, rank=rank, lr=lr, max_steps=max_steps)  # the sizing rule of `memft write`
    lora = LoraSettings(rank=size.rank, preset=size.preset)  # always-on: the demo shows plain LoRA recall
    train = TrainConfig(lr=size.lr, max_steps=size.max_steps, batch_size=size.batch_size, head_vocab=size.head_vocab,
                        lora_init=size.lora_init, lr_schedule=size.lr_schedule, seed=seed)
    render.console.print(f"memft demo: writing {len(recs)} phone-book records into {out} (model {model}, rank {size.rank}, {size.preset} preset)")
    with render.training_progress(size.max_steps) as on_step:
        res = api.write(recs, out, model=model, lora=lora, train=train, runtime=RuntimeConfig(device=device), on_step=on_step)
    write_records(recs, folders.resolve(out) / "demo-records.jsonl")  # after the adapter, so `memft verify` can be rerun on it
    ver = api.verify(out, recs, generate="always", device=device)
    render.console.print(render.records_table(ver.reports, limit=records))
    render.console.print(render.summary_table(ver.summary, title=f"verified by greedy generation ({ver.dtype})"))
    render.console.print(
        f"steps {res.meta.train['steps']} (certified at step {res.meta.train['certified_at']}), "
        f"training {res.meta.train['seconds']:.1f} s, total {time.perf_counter() - t0:.1f} s, "
        f"peak memory {peak_memory_mib():.0f} MiB.  Try: memft recall {out} {recs[0].key!r}"
    )
    raise typer.Exit(0 if ver.summary["exact_match"] == 1.0 else 1)


from memft.cli import audit as auditcmd  # noqa: E402 - registered below; imports no torch
from memft.cli import deploy as deploycmd  # noqa: E402 - registered below; imports no torch
from memft.cli import experiments, lawcmd, memory  # noqa: E402

app.command()(experiments.compare)
app.command()(experiments.bench)
app.command()(experiments.sweep)
app.add_typer(lawcmd.law_app, name="law")
app.command()(lawcmd.plan)
app.command()(lawcmd.report)
app.command()(memory.append)
app.command()(memory.forget)
app.command()(memory.ledger)
app.command()(auditcmd.audit)
app.command()(deploycmd.export)


def peak_memory_mib() -> float:
    """Peak resident memory of this process (Linux/macOS), plus the CUDA allocator's peak when on a GPU."""
    import resource

    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    mib = rss / 1024 if sys.platform != "darwin" else rss / 2**20
    if torch.cuda.is_available():
        mib += torch.cuda.max_memory_allocated() / 2**20
    return mib


def main(argv: list[str] | None = None) -> None:
    """The `memft` console script; `argv` (default: sys.argv[1:]) lets tests run a command in-process. Exits."""
    # typer >= 0.29 vendors click; older ones use click itself: the usage error class is BadParameter's base either way
    usage_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
    click_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    try:
        code = app(args=argv, standalone_mode=False)  # click's usage errors come here, to be said in one line
    except usage_error as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # `memft` or `memft CMD` alone: the help, as before
            typer.echo(e.ctx.get_help() if e.ctx else "")
            sys.exit(2)
        # a bad option value, an unknown option or command, a missing argument: one line, exit 2
        cmd = e.ctx.command_path.split(" ", 1)[1] if e.ctx and " " in e.ctx.command_path else ""
        said = " ".join(e.format_message().split()).rstrip(".")
        typer.echo(f"memft: error: {said}; see `memft {cmd + ' ' if cmd else ''}--help`", err=True)
        sys.exit(2)
    except click_error as e:  # any other error click raises itself: one line too
        typer.echo(f"memft: error: {' '.join(e.format_message().split())}", err=True)
        sys.exit(2)
    except typer.Abort:
        _interrupted()
    except MemftError as e:
        typer.echo(f"memft: error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        _interrupted()
    except SystemExit as e:
        if e.code == INTERRUPTED:  # typer turns Ctrl-C into exit 130 itself, before this function sees it
            _interrupted()
        raise
    if code == INTERRUPTED:  # typer turns Ctrl-C into Exit(130), returned as 130 without standalone mode
        _interrupted()
    sys.exit(code if isinstance(code, int) else 0)  # typer.Exit(N) is returned as N without standalone mode


INTERRUPTED = 130  # the shell's exit status for a process ended by Ctrl-C (128 + SIGINT)


def _interrupted() -> None:
    typer.echo("memft: interrupted; the adapter folder is unchanged", err=True)
    sys.exit(INTERRUPTED)


if __name__ == "__main__":
    main()
