"""load_adapter: an adapter folder opened as one consistent version (weights, memft.json, ledger), checked against
its fingerprints, on the base its memft.json names.

Core layer (store).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memft.model.base import Base, load_base
from memft.store import adapters
from memft.store.ledger import Ledger
from memft.store.meta import AdapterMeta


@dataclass
class Loaded:
    """An adapter on its base, ready to recall: the PEFT model, tokenizer, and memft.json."""

    model: Any  # the PEFT model: LoRA layers on base.model
    meta: AdapterMeta
    base: Base  # the base it sits on: tokenizer, spec, device, dtype
    folder: Path | None = None
    ledger: Ledger | None = None  # the ledger read with the same version as the weights (None: the folder has none)

    @property
    def tokenizer(self) -> Any:
        return self.base.tokenizer

    @property
    def dtype(self) -> str:
        return self.base.dtype

    @property
    def device(self) -> str:
        return self.base.device


def load_adapter(folder: str | Path, device: str = "auto", dtype: str | None = None, trainable: bool = False) -> Loaded:
    """Load an adapter folder on the base named in its memft.json (dtype: the certified one unless given).

    memft.json, ledger.json and the weights are read as one version (adapters.read_version) and cross-checked: a
    folder whose memft.json lists record digests but has no ledger.json is damaged (without the ledger, recall
    could not tell a held key from an invented one).
    trainable=True: its LoRA weights can be trained further (append, forget)."""
    from memft.store import ledger

    v = adapters.read_version(folder)
    book = ledger.of_version(v)
    base = load_base(v.meta.base.spec, device, dtype or v.meta.certification.dtype, seed=v.meta.seed)
    return Loaded(adapters.load(v, base.model, trainable), v.meta, base, v.folder, book)
