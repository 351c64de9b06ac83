"""Option types shared by the commands (one definition of each flag's name and help), and the parsers of option
values that several commands take. CLI layer: imports typer and memft.errors only (no torch, so --help is fast)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from memft.config import PRESETS
from memft.errors import ConfigError
from memft.objectives import OBJECTIVES

Model = Annotated[str, typer.Option("--model", help="smollm2-135m (embedded), tiny-random, a local folder, a .gguf file, or a hub id.")]
Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | mps")]
Dtype = Annotated[str, typer.Option("--dtype", help="auto | fp32 | bf16 | fp16 (precision of the frozen base)")]
# --json: on a command that produces a report (write, verify, append, forget, audit, compare, bench, law fit) it takes
# the FILE to write it to, `-` for standard output; on a command whose output is data (recall, ledger, plan) it is a
# flag that prints that data as JSON instead of tables. (One spelling for both would break existing scripts, and typer
# cannot give an option an optional value.)
JsonFile = Annotated[Optional[Path], typer.Option("--json", help="Write the report as JSON to this file (`-`: standard output).")]
JsonRows = Annotated[Optional[Path], typer.Option("--json", help="Write {\"rows\": [...]} to this file (`-`: standard output).")]
CsvRows = Annotated[Optional[Path], typer.Option("--csv", help="Write the rows as CSV here.")]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bars or tables (an exit 1 still prints its one line).")]
Preset = Annotated[Optional[str], typer.Option("--preset", help=f"Where the LoRA layers go: {' | '.join(PRESETS)} (probe: MLP of one layer at ~2/3 depth; upper: MLP of every layer from there up; top: MLP of the top layers; all: every linear layer).")]
Method = Annotated[str, typer.Option("--method", help=f"Training objective: {', '.join(sorted(OBJECTIVES))}.")]
Methods = Annotated[str, typer.Option("--methods", help=f"Comma-separated objectives, from: {', '.join(sorted(OBJECTIVES))}.")]
Reveal = Annotated[bool, typer.Option("--reveal", help="Put recalled values, their lengths and where a given value first differs (`recalled`, `recalled_chars`, `first_failure`, token accuracies, stubborn positions) in the --json report (default: left out, since they give the stored secrets, or part of them, away; `certified` and `exact` say whether they differ).")]
# The reference code's training setup, for the research commands (compare, bench; sweep configs have the same keys).
LrSchedule = Annotated[str, typer.Option("--lr-schedule", help="constant | linear (decay to 0 over --max-steps, the reference code's).")]
MaxGradNorm = Annotated[Optional[float], typer.Option("--max-grad-norm", help="Clip the gradient's global norm to this (the reference code: 1.0; default: no clipping).")]
Template = Annotated[str, typer.Option("--template", help="raw (key then value tokens) | chat (the model's chat template, as the reference code trains).")]
Preserve = Annotated[Optional[float], typer.Option("--preserve", help="Weight of the preservation term: KL(base || adapted) on unrelated text added to the training loss, so the adapter leaves the base's predictions elsewhere alone (memft.training.preserve); 0 = off. Default: memft's (TrainConfig.preserve).")]
Activation = Annotated[Optional[str], typer.Option("--activation", help="keyed (PEFT's activated LoRA: acts only from the invocation sequence on, so any text without it gets the base's predictions exactly; runs in PEFT and llama.cpp, cannot be merged) | always (a plain LoRA: acts on every prompt; can be merged, runs everywhere). Default: keyed, or always with --preserve (memft.config.write_activation).")]
Invocation = Annotated[Optional[str], typer.Option("--invocation", help="With --activation keyed: the text put before every key (default ' <mem>'); its tokens must come out the same after any text.")]
PreserveText = Annotated[Optional[Path], typer.Option("--preserve-text", help="UTF-8 text file to preserve the base's predictions on (default: Python standard-library docstrings, a different source from the audit's pydoc topics).")]


def method_options(text: Optional[str]) -> dict[str, Any]:
    """--method-options: a JSON object (None or empty: no options)."""
    if not text:
        return {}
    try:
        opts = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--method-options is not JSON ({e.msg}); give e.g. '{{\"threshold\": 0.6}}'") from None
    if not isinstance(opts, dict):
        raise ConfigError("--method-options must be a JSON object, e.g. '{\"threshold\": 0.6}'")
    return opts


def comma_list(text: str, cast: Any, option: str) -> list[Any]:
    """A comma-separated option value (e.g. --ranks 1,2,4) cast element by element."""
    try:
        out = [cast(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{option} {text!r}: give a comma-separated list like 1,2,4") from None
    if not out:
        raise ConfigError(f"{option} is empty")
    return out


def write_json(path: Path, text: str) -> None:
    """A --json FILE: `text` (one JSON document) written to `path`, or printed when the path is `-`."""
    if str(path) == "-":
        typer.echo(text)
        return
    path.write_text(text + "\n", encoding="utf-8")
# Writing for a runtime (memft.runtime.deploy_write): write, append and forget take the same two flags.
Deploy = Annotated[Optional[str], typer.Option("--deploy", help="llama.cpp: make the adapter exact in llama.cpp on --base-gguf, proven there before it is saved (trains with a wider margin, decodes every record in llama.cpp, retrains what it lost; needs memft[llamacpp]). The certificate and the base file's sha256 go into memft.json.")]
BaseGguf = Annotated[Optional[Path], typer.Option("--base-gguf", help="With --deploy: the base GGUF llama.cpp will run (default: the embedded model's shipped Q4_1 file as is, or the .gguf the adapter is written on).")]
