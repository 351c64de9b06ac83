"""Option types shared by the commands (one definition of each flag's name and help)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

Model = Annotated[str, typer.Option("--model", help="smollm2-135m (embedded), tiny-random, a local folder, a .gguf file, or a hub id.")]
Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | mps")]
Dtype = Annotated[str, typer.Option("--dtype", help="auto | fp32 | bf16 | fp16 (precision of the frozen base)")]
JsonRows = Annotated[Optional[Path], typer.Option("--json", help="Write {\"rows\": [...]} here.")]
CsvRows = Annotated[Optional[Path], typer.Option("--csv", help="Write the rows as CSV here.")]
Quiet = Annotated[bool, typer.Option(help="No progress bars or tables.")]
Reveal = Annotated[bool, typer.Option("--reveal", help="Put recalled values in the --json report (default: left out, since they are the stored secrets; `exact`, `first_failure` and `recalled_chars` say whether and where they differ).")]
