"""memft: exact parametric memory in LoRA adapters.

Write key -> value records into the weights of a LoRA adapter on a frozen LLM, and prove that greedy decoding gives
each value back verbatim. The public API is re-exported lazily so that `import memft` (and `memft --help`) stay fast:
torch is imported only when a function that needs it is first used.

The package is layered: the core grouped by stage (prompts/ -> model/ -> certify/ -> objectives/ -> training/ ->
store/, over errors.py and config.py), api.py the one facade above it, then memory/ (append, forget), checks/,
runtime/, research/, integrations/ and cli/.
README's Layout section lists each module; every package's opening docstring says what it may import, and
tests/test_layers.py checks the imports against the folders.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Record": "memft.prompts.records",
    "load_records": "memft.prompts.records",
    "load_base": "memft.model.base",
    "LoraSettings": "memft.config",
    "TrainConfig": "memft.config",
    "AdapterMeta": "memft.store.meta",
    "write": "memft.api",
    "recall": "memft.api",
    "verify": "memft.api",
    "load_adapter": "memft.api",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'memft' has no attribute {name!r}")
