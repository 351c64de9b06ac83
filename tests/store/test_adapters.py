import hashlib
import json

import pytest
import torch

from memft.store import adapters
from memft.model import peft_lora
from memft.config import LoraSettings
from memft.errors import AdapterError, ConfigError


def _meta(v):
    from memft.store.meta import AdapterMeta, BaseInfo, CertificationInfo, LoraInfo, RecordsInfo

    return AdapterMeta(BaseInfo("tiny-random", "fp32"), LoraInfo(2, (2,), ("model.layers.2.mlp.up_proj",)), RecordsInfo(0),
                       CertificationInfo("fp32"), extra={"v": v})


def test_probe_default_is_two_thirds_depth():
    assert peft_lora.default_probe_layer(30) == 20
    assert peft_lora.resolve_layers(30, LoraSettings()) == (20,)
    assert peft_lora.resolve_layers(4, LoraSettings(preset="all")) == (0, 1, 2, 3)
    assert peft_lora.resolve_layers(4, LoraSettings(layers=(-1, 1))) == (1, 3)


def test_layer_out_of_range(tiny):
    with pytest.raises(ConfigError, match=r"--layers 7 out of range: the model has 4 decoder layers \(0..3\)"):
        peft_lora.attach(tiny.model, LoraSettings(layers=(7,)))


def test_presets_pick_modules(tiny):
    _, probe = peft_lora.target_names(tiny.model, LoraSettings())
    assert probe == [f"model.layers.2.mlp.{m}" for m in ("gate_proj", "up_proj", "down_proj")]
    _, every = peft_lora.target_names(tiny.model, LoraSettings(preset="all"))
    assert len(every) == 4 * 7
    _, some = peft_lora.target_names(tiny.model, LoraSettings(layers=(0,), target_modules=("q_proj",)))
    assert some == ["model.layers.0.self_attn.q_proj"]


def test_saved_adapter_loads_with_plain_peft(tiny, tmp_path):
    from peft import PeftModel

    from memft.model.base import load_base

    model, _ = peft_lora.attach(tiny.model, LoraSettings(rank=2), seed=0)
    for n, p in model.named_parameters():
        if "lora_B" in n:
            p.data.normal_()
    ids = torch.tensor([[5, 6, 7, 8]])
    want = model(input_ids=ids).logits
    saved = adapters.save(model, tmp_path / "ad", _meta(1))
    on_disk = json.loads((tmp_path / "ad" / "memft.json").read_text())
    assert on_disk == saved.to_json() == {**_meta(1).to_json(), "files": saved.files}  # written by memft.store.meta
    # the fingerprints are the sha256 of the files saved beside it
    assert saved.files == {n: "sha256:" + hashlib.sha256((tmp_path / "ad" / n).read_bytes()).hexdigest()
                           for n in ("adapter_model.safetensors", "adapter_config.json")}
    fresh = PeftModel.from_pretrained(load_base("tiny-random", device="cpu", dtype="fp32").model, str(tmp_path / "ad"))
    assert torch.allclose(fresh(input_ids=ids).logits, want, atol=1e-6)


def test_failed_write_keeps_previous_adapter(tmp_path):
    out = tmp_path / "ad"
    adapters.write_atomic(out, lambda d: (d / "memft.json").write_text("{\"v\": 1}"))

    def broken(d):
        (d / "memft.json").write_text("{\"v\": 2}")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        adapters.write_atomic(out, broken)
    assert (out / "memft.json").read_text() == "{\"v\": 1}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ad.memft-lock", "ad"]  # no temp folders left (the lock file stays)


def test_refuses_foreign_output_folder(tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(AdapterError, match="holds files that are not a memft adapter"):
        adapters.check_out_dir(tmp_path)
    with pytest.raises(AdapterError, match="is a file"):
        adapters.check_out_dir(tmp_path / "thesis.tex")
    adapters.check_out_dir(tmp_path / "new")  # a new folder is fine
    with pytest.raises(AdapterError, match="not a memft adapter"):
        adapters.read_meta(tmp_path)


def test_rank_above_every_layer_width_is_refused_before_allocating(tiny, capsys):
    with pytest.raises(ConfigError, match=r"--rank 1000000000000 is larger than every adapted layer's width \(at most 64\)"):
        peft_lora.attach(tiny.model, LoraSettings(rank=10**12, preset="all"))
    peft_lora.attach(tiny.model, LoraSettings(rank=40, preset="all"))  # > k/v width 32, <= 64: a warning only
    err = capsys.readouterr().err
    assert err.startswith("memft: warning: --rank 40 exceeds the width of ") and err.count("\n") == 1


def test_non_finite_weights_never_replace_an_adapter(tiny, tmp_path):
    from memft.errors import TrainingError

    model, _ = peft_lora.attach(tiny.model, LoraSettings(rank=2))
    adapters.save(model, tmp_path / "ad", _meta(1))
    before = (tmp_path / "ad" / "adapter_model.safetensors").read_bytes()
    next(p for p in model.parameters() if p.requires_grad).data[0, 0] = float("nan")
    with pytest.raises(TrainingError, match="hold NaN or infinity"):
        adapters.save(model, tmp_path / "ad", _meta(2))
    assert adapters.read_meta(tmp_path / "ad").extra == {"v": 1}
    assert (tmp_path / "ad" / "adapter_model.safetensors").read_bytes() == before
