"""`memft export` (llama.cpp / Ollama files) and `memft verify --runtime llama.cpp` (recall certified in llama.cpp).

CLI layer: parses options, calls the library, prints; may import any layer (torch only inside commands).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from memft.cli.options import write_json
from memft.store import safejson
from memft.errors import ConfigError

RUNTIMES = ("llama.cpp",)
PROGRESS_EVERY = 10.0  # seconds between progress lines while records decode in the runtime


def export(
    adapter: Annotated[Path, typer.Argument(help="Adapter folder written by `memft write`.")],
    gguf: Annotated[Path, typer.Option("--gguf", help="Write the adapter here as llama.cpp's LoRA GGUF.")],
    base_gguf: Annotated[Optional[Path], typer.Option("--base-gguf", help="Also write the base model here as a GGUF (in --base-type), with an Ollama Modelfile beside it.")] = None,
    base_type: Annotated[str, typer.Option("--base-type", help="as-is (the shipped file copied) | q8_0 | bf16 | f16 | f32.")] = "as-is",
) -> None:
    """Export an adapter for llama.cpp and Ollama: the LoRA GGUF, and optionally the base GGUF and a Modelfile."""
    from memft.store.adapters import read_version
    from memft.runtime.certify import invocation_tokens
    from memft.runtime.gguf_export import BASE_TYPES, modelfile, write_base_gguf, write_lora_gguf

    if base_type not in BASE_TYPES:
        raise ConfigError(f"--base-type {base_type!r}: choose one of {', '.join(BASE_TYPES)}")
    meta = read_version(adapter).meta  # one consistent version, its files checked against their fingerprints
    src, shape = _base_source(meta)
    wrote = write_lora_gguf(adapter, gguf, shape, invocation_tokens(adapter))
    typer.echo(f"wrote {gguf}: LoRA GGUF, {wrote['tensors']} tensors, rank {wrote['rank']}, alpha {wrote['alpha']:g}", err=True)
    if base_gguf is None:
        return
    if src is not None:
        write_base_gguf(src, base_gguf, base_type)
    else:  # a Hugging Face Llama base: written from its weights
        from memft.model.base import load_base
        from memft.runtime.hf_gguf import write_hf_base_gguf

        b = load_base(meta.base.spec, "cpu", "fp32", seed=meta.seed)
        write_hf_base_gguf(b.model, b.tokenizer, base_gguf, "f32" if base_type in ("as-is", "f32") else base_type)
    mf = base_gguf.parent / "Modelfile"
    mf.write_text(modelfile(_rel(base_gguf, mf.parent), _rel(gguf, mf.parent)), encoding="utf-8")
    typer.echo(f"wrote {base_gguf} ({base_type}) and {mf} (ollama create NAME -f {mf})", err=True)


def _rel(p: Path, to: Path) -> str:
    import os

    return os.path.relpath(p.resolve(), to.resolve())


def _base_source(meta: Any) -> tuple[Path | None, Any]:
    """(the base GGUF file, or None for a Hugging Face base; the export's Shape)."""
    from memft.runtime.certify import default_base_gguf
    from memft.runtime.gguf_export import Shape

    try:
        src = default_base_gguf(meta.base.spec)
    except ConfigError:
        from transformers import AutoConfig

        from memft.model.base import TINY, base_folder

        cfg = AutoConfig.from_pretrained(base_folder(meta.base.spec, meta.seed), local_files_only=meta.base.spec != TINY)
        return None, Shape.from_hf_config(cfg)
    return src, Shape.from_gguf(src)


def verify_runtime(adapter: Path, records: Path, runtime: str, base_gguf: Optional[Path], json_out: Optional[Path], reveal: bool,
                   quiet: bool) -> bool:
    """`memft verify ... --runtime llama.cpp`: decode every record in the runtime, print, write JSON, keep the
    certificate when the adapter's whole record set came back exactly. -> all exact."""
    from memft.store.adapters import read_version
    from memft.cli import render
    from memft.model.base import load_tokenizer
    from memft.prompts.records import load_records
    from memft.runtime.certify import certify, check_in_llamacpp, default_base_gguf

    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    recs = load_records(records)
    meta = read_version(adapter).meta  # one consistent version, its files checked against their fingerprints
    base = base_gguf or default_base_gguf(meta.base.spec)
    tok = load_tokenizer(meta.base.spec, meta.seed)
    t0, last = time.perf_counter(), [time.perf_counter()]
    exact = [0]

    def progress(done: int, total: int, v: Any) -> None:
        exact[0] += v.exact
        now = time.perf_counter()
        if not quiet and (now - last[0] >= PROGRESS_EVERY or done == total):
            last[0] = now
            render.console.print(f"llama.cpp: {done}/{total} records decoded, {exact[0]} exact, {now - t0:.0f} s")

    chk = check_in_llamacpp(adapter, recs, tok, meta.template, base, on_record=progress)
    cert = certify(adapter, chk, recs)
    report = chk.to_json(reveal) | {"certificate": cert is not None}
    if json_out:
        write_json(json_out, safejson.dumps(report))
    if not quiet:
        render.console.print(runtime_table(chk, title=f"{adapter} in llama.cpp on {chk.base_gguf}"))
        if chk.unscored:
            render.console.print(f"[yellow]note:[/yellow] {chk.unscored} record(s) have a target token that ends inside a UTF-8 "
                                 "character; llama.cpp's server reports no probability for it, so they are not proven exact")
        if cert is not None:
            render.console.print(f"certified for llama.cpp on {chk.base_gguf} (sha256 {chk.base_sha256[:12]}…): kept in memft.json")
    return chk.all_exact


def runtime_table(chk: Any, title: str = "", limit: int = 50) -> Any:
    """The records that are not exact (or the summary only, when all are) as a rich table; values never shown."""
    from rich.table import Table

    t = Table(title=title)
    for col in ("key", "exact", "first difference", "min p", "min gap"):
        t.add_column(col, overflow="fold")
    bad = [v for v in chk.per_record if not v.exact]
    for v in bad[:limit]:
        t.add_row(v.key[:40], "[red]no[/red]" if v.scored else "unscored", "—" if v.first_difference is None else str(v.first_difference),
                  f"{v.min_prob:.3f}", f"{v.min_gap:+.3f}")
    t.caption = (f"{chk.exact}/{chk.records} exact; min p {chk.min_prob:.3f}, min gap {chk.min_gap:+.3f}; {chk.seconds:.1f} s"
                 + (f"; {len(bad) - limit} more not shown" if len(bad) > limit else ""))
    return t


def certified_for_llamacpp(adapter: Path) -> bool:
    """The folder holds a llama.cpp certificate that matches its weights, and the binding is installed."""
    import importlib.util

    from memft.store.meta import read
    from memft.runtime.certify import RUNTIME, RuntimeCertificate, default_base_gguf

    meta = read(adapter)
    cert = RuntimeCertificate.from_extra(meta.extra)
    if cert is None or cert.runtime != RUNTIME or importlib.util.find_spec("xllamacpp") is None:
        return False
    try:  # certified on the base recall would load by default (another base: --runtime llama.cpp --base-gguf FILE)
        same_base = default_base_gguf(meta.base.spec).name == cert.base_gguf
    except ConfigError:
        return False
    return same_base and cert.matches(adapter)


def recall_runtime(adapter: Path, keys: list[str], runtime: str, base_gguf: Optional[Path], raw: bool) -> Optional[list[Any]]:
    """`memft recall` through llama.cpp when asked (--runtime llama.cpp) or when the adapter is certified for it
    (auto); None: recall in torch."""
    if runtime not in ("auto", "torch", *RUNTIMES):
        raise ConfigError(f"--runtime {runtime!r}: choose auto, torch or {', '.join(RUNTIMES)}")
    if runtime == "torch" or runtime == "auto" and not certified_for_llamacpp(adapter):
        return None
    from memft.runtime.recall import recall_in_llamacpp

    return recall_in_llamacpp(adapter, keys, base_gguf, raw)


# ---------------------------------------------------------------- write/append/forget --deploy llama.cpp


def deploy_target(deploy: Optional[str], base_gguf: Optional[Path], model: str, auto_rank: bool = False) -> Any:
    """--deploy / --base-gguf checked before any work -> memft.runtime.deploy_write.Target, or None."""
    if deploy is None and base_gguf is None:
        return None
    from memft.runtime.deploy_write import target

    if auto_rank and deploy is not None:
        raise ConfigError("--deploy with --rank auto: give a rank (--rank N), or write with --rank auto first and then "
                          "`memft append DIR EMPTY --deploy llama.cpp`")
    return target(deploy, base_gguf, model)


def on_round(quiet: bool) -> Any:
    from memft.cli import render

    def say(r: Any) -> None:
        if not quiet and r.raised:
            render.console.print(f"llama.cpp: {r.exact}/{r.records} exact (min gap {r.min_gap:+.3f}, {r.check_seconds:.0f} s); "
                                 f"{r.raised} record(s) trained further with a higher margin ({r.steps} steps, {r.train_seconds:.0f} s)")

    return say


def write_deploy(recs: Any, out: Path, target: Any, model: str, lora: Any, train: Any, runtime: Any, on_step: Any,
                 extra: dict, quiet: bool) -> tuple[Any, Any]:
    """`memft write --deploy llama.cpp`: memft.runtime.deploy_write.write with progress lines."""
    from memft.runtime.deploy_write import write

    return write(recs, out, target, model=model, lora=lora, train=train, runtime=runtime, on_step=on_step, extra=extra,
                 on_round=on_round(quiet), on_record=progress_lines(quiet))


def progress_lines(quiet: bool) -> Any:
    """A per-record callback printing a progress line every PROGRESS_EVERY seconds while records decode in llama.cpp."""
    from memft.cli import render

    state = {"t0": time.perf_counter(), "last": time.perf_counter(), "exact": 0}

    def progress(done: int, total: int, v: Any) -> None:
        if done == 1:
            state.update(t0=time.perf_counter(), last=time.perf_counter(), exact=0)
        state["exact"] += v.exact
        now = time.perf_counter()
        if not quiet and now - state["last"] >= PROGRESS_EVERY:
            state["last"] = now
            render.console.print(f"llama.cpp: {done}/{total} records decoded, {state['exact']} exact, {now - state['t0']:.0f} s")

    return progress


def deploy_line(outcome: Any) -> None:
    from memft.cli import render
    from memft.runtime.deploy_write import summary_line

    render.console.print(summary_line(outcome), soft_wrap=True, markup=False, highlight=False)
