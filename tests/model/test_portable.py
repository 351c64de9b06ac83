"""Portable adapter folders: nothing in a folder names a path of the machine that wrote it, and a folder written
under one home directory verifies under another whose caches are empty."""

import json
from pathlib import Path

import pytest

from tests.cli.test_cli import memft
from tests.conftest import write_jsonl

RECS = [{"key": "Ann:", "value": " 555-0101"}, {"key": "Bob:", "value": " 555-0199"}]


def _home(monkeypatch, home: Path) -> None:
    """A fresh home directory: memft's and Hugging Face's caches live under it and start empty."""
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("MEMFT_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)


def _written_under(tmp_path, monkeypatch, model: str, extra: list) -> tuple[Path, Path, Path]:
    """Write RECS with `model` under home A -> (adapter folder, records file, home A)."""
    home_a = tmp_path / "home-a"
    _home(monkeypatch, home_a)
    recs = write_jsonl(tmp_path / "r.jsonl", [json.dumps(r) for r in RECS])
    out = tmp_path / "shipped"
    w = memft("write", recs, "--out", out, "--model", model, "--device", "cpu", "--quiet", *extra)
    assert w.returncode == 0, w.stderr
    return out, recs, home_a


def _names_no_path(out: Path, home: Path, name: str) -> None:
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == name
    assert f"base_model: {name}" in (out / "README.md").read_text()
    for f in out.iterdir():  # no file names the writer's home (its caches live there)
        assert str(home) not in f.read_bytes().decode("utf-8", "replace"), f.name


def test_tiny_folder_is_portable_and_verifies_under_another_home(tmp_path, monkeypatch):
    out, recs, home_a = _written_under(tmp_path, monkeypatch, "tiny-random",
                                       ["--preset", "all", "--lr", "0.02", "--max-steps", "300"])
    _names_no_path(out, home_a, "tiny-random")
    _home(monkeypatch, tmp_path / "home-b")
    v = memft("verify", out, recs, "--plain-peft", "--quiet", "--device", "cpu")  # plain PEFT: a fresh process under B
    assert v.returncode == 0, v.stderr
    assert (tmp_path / "home-b" / ".cache" / "memft" / "models" / "tiny-random-seed0" / "config.json").exists()  # B's own cache


def test_an_older_folder_naming_a_cache_path_loads_the_embedded_model():
    from memft.model.base import EMBEDDED, base_folder, portable_name, resolve_spec

    old = "/home/someone/.cache/memft/models/SmolLM2-135M-Instruct.Q4_1-0123456789abcdef"
    assert resolve_spec(old) == EMBEDDED and portable_name(old) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve_spec("/models/SmolLM2-135M-Instruct.Q4_1-notahexkey00000") != EMBEDDED
    assert base_folder("some/hub-id") == "some/hub-id"


def test_rewriting_an_older_folder_replaces_its_cache_path(tmp_path, monkeypatch):
    """An adapter saved by an older memft carries a cache path in adapter_config.json; the next save names the base."""
    out, recs, home_a = _written_under(tmp_path, monkeypatch, "tiny-random",
                                       ["--preset", "all", "--lr", "0.02", "--max-steps", "300"])
    cfg_path = out / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = str(home_a / ".cache" / "memft" / "models" / "tiny-random-seed0")
    cfg_path.write_text(json.dumps(cfg))
    meta = json.loads((out / "memft.json").read_text())
    del meta["files"]  # older folders carry no fingerprints of their files (memft.json `files`)
    (out / "memft.json").write_text(json.dumps(meta))
    more = write_jsonl(tmp_path / "m.jsonl", [json.dumps({"key": "Cy:", "value": " 555-0123"})])
    a = memft("append", out, more, "--device", "cpu", "--quiet")
    assert a.returncode == 0, a.stderr
    _names_no_path(out, home_a, "tiny-random")


@pytest.mark.slow
def test_embedded_folder_is_portable_and_verifies_under_another_home(tmp_path, monkeypatch):
    out, recs, home_a = _written_under(tmp_path, monkeypatch, "smollm2-135m", ["--rank", "4", "--lr", "0.01"])
    _names_no_path(out, home_a, "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert json.loads((out / "memft.json").read_text())["base"]["spec"] == "smollm2-135m"
    _home(monkeypatch, tmp_path / "home-b")
    v = memft("verify", out, recs, "--quiet", "--device", "cpu")
    assert v.returncode == 0, v.stderr
    assert any((tmp_path / "home-b" / ".cache" / "memft" / "models").iterdir())  # B dequantised its own copy
