import os
import random
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "paper"

# Tests never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seed():
    import torch

    random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture
def tiny():
    """A fresh tiny random base (fast to build; attaching LoRA modifies it in place, so one per test)."""
    from memft.model.base import load_base

    return load_base("tiny-random", device="cpu", dtype="fp32")


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def shared_paper():
    if not SHARED.exists():
        pytest.skip("../shared/data/paper is absent (it ships with the developers' checkout only)")
    return SHARED
