"""Law fit files (`memft law fit --json`): reading them, and picking the fit `memft plan` uses.

Research layer: may import the core and the other research modules; never the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from memft.errors import ConfigError


def fit_from_json(entry: dict[str, Any]) -> dict[str, Any]:
    """A fit entry read from a file: fits written before memft 0.2 stored a missing model or method as the string
    "None"; it reads as None, as fit_settings gives it now."""
    return {**entry, **{k: None for k in ("model", "method") if entry.get(k) == "None"}}


def read_fits(path: str | Path) -> list[dict[str, Any]]:
    """The fits of a `memft law fit --json` file; ConfigError saying how to make one when it is missing or foreign."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such law fit; make one with `memft law fit STORE.db --json {path}`")
    try:
        fits = json.loads(path.read_text(encoding="utf-8"))["fits"]
        return [fit_from_json(f) for f in fits]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        raise ConfigError(f"{path}: not a law fit file (expected {{\"fits\": [...]}} from `memft law fit --json`)") from None


def pick_fit(path: str | Path, setting: str, method: str | None = None) -> dict[str, Any]:
    """The first usable (not skipped) fit of `setting` (and `method`, when given) in a law fit file."""
    fits = read_fits(path)
    ok = [f for f in fits if f.get("setting") == setting and not f.get("skipped") and (method is None or f.get("method") == method)]
    if not ok:
        have = sorted({f"{f.get('setting')}/{f.get('method')}" for f in fits if not f.get("skipped")})
        raise ConfigError(f"{path}: no usable fit for setting {setting!r}" + (f" method {method!r}" if method else "") + f"; it has {', '.join(have) or 'none'}")
    return ok[0]
