"""Every error a user can cause, in one place.

Each message says what was wrong, where (file:line, record key, option) and how to fix it. The CLI prints the
message as one line on stderr and exits with code 2; the Python API raises these exceptions unchanged.

Core layer: may import other core modules only; the memory store, checks, research tools, integrations and the CLI build on it.
"""


class MemftError(Exception):
    """Base class: a problem with the user's input, options or environment (exit code 2 on the CLI)."""


class RecordsError(MemftError):
    """A records file is missing, malformed or inconsistent."""


class ConfigError(MemftError, ValueError):
    """An option or combination of options is impossible."""


class ModelError(MemftError):
    """A base model cannot be found or loaded."""


class AdapterError(MemftError):
    """An adapter folder is missing, foreign or inconsistent with its base model."""


class TrainingError(MemftError):
    """Training diverged (non-finite loss or weights): nothing is saved, no adapter is replaced."""


def warn(message: str) -> None:
    """A one-line warning on stderr (the work goes on): `memft: warning: ...`."""
    import sys

    sys.stderr.write(f"memft: warning: {message}\n")
