"""vLLM's static checks read adapter_config.json: rank against --max-lora-rank, modules, modules_to_save."""

import json

import pytest

from memft.checks.vllm import check_folder, vllm_checks
from tests.cli.test_cli import FAST, memft
from tests.conftest import write_jsonl


def test_rank_advice_names_the_smallest_allowed_max_rank():
    detail = {r: vllm_checks({"r": r, "target_modules": ["down_proj"]})[0] for r in (16, 17, 320, 513)}
    assert detail[16].ok and not detail[17].ok and "--max-lora-rank 32" in detail[17].detail
    assert "--max-lora-rank 320" in detail[320].detail and "largest" in detail[513].detail


def test_a_written_adapter_passes_and_an_edited_one_fails(tmp_path):
    f = write_jsonl(tmp_path / "r.jsonl", [json.dumps({"key": "Ann:", "value": " 1"})])
    w = memft("write", f, "--out", tmp_path / "ad", "--max-steps", "2", "--quiet", *FAST)
    assert w.returncode in (0, 1), w.stderr
    assert all(c.ok for c in check_folder(tmp_path / "ad"))
    cfg = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    cfg.update(r=64, modules_to_save=["lm_head"], use_dora=True)
    (tmp_path / "ad" / "adapter_config.json").write_text(json.dumps(cfg))
    assert [c.name for c in check_folder(tmp_path / "ad") if not c.ok] == ["rank", "modules_to_save", "dora"]


@pytest.mark.slow
def test_verify_deploy_reports_the_static_vllm_checks(tmp_path):
    f = write_jsonl(tmp_path / "r.jsonl", [json.dumps({"key": "Ann:", "value": " 1"})])
    memft("write", f, "--out", tmp_path / "ad", "--max-steps", "200", "--quiet", *FAST)
    v = memft("verify", tmp_path / "ad", f, "--deploy", "--device", "cpu", "--json", tmp_path / "v.json")
    rep = json.loads((tmp_path / "v.json").read_text())
    assert [c["name"] for c in rep["vllm_static"]] == ["rank", "target_modules", "modules_to_save", "dora", "bias"]
    assert all(c["static"] and c["ok"] for c in rep["vllm_static"]) and "vLLM (static, not run)" in v.stderr
