"""Held-out text: natural text no record set contains, for the stress benchmark's targets and the audit's windows.

Core layer (prompts).
"""

from __future__ import annotations


def default_text() -> str:
    """The documentation topics of this Python's `pydoc_data.topics`, joined in sorted key order (ships with every
    CPython, so the same text is on every machine with the same Python)."""
    from pydoc_data.topics import topics

    return "\n".join(topics[k] for k in sorted(topics))
