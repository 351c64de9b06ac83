"""Recall in llama.cpp (xllamacpp): on an f32 base its target probabilities equal torch fp32's, records certified
in torch come back exactly, and `memft verify --runtime llama.cpp` reports per record without values."""

import json

import pytest

from memft.prompts.records import Record
from tests.cli.test_cli import memft
from tests.conftest import write_jsonl

pytest.importorskip("xllamacpp", reason="the llama.cpp binding (memft[llamacpp]) is not installed")

# llama.cpp on an f32 base differs from torch fp32 by its f16 KV cache and its own kernels' summation order.
# Measured on tiny-random: |Δp| <= 7e-4; the tolerance leaves room for other CPUs.
F32_TOLERANCE = 5e-3


def _torch_target_probs(base, folder, items):
    """p(target) at every target position from torch fp32, the adapter as PEFT LoRA layers."""
    import torch

    from memft.store.adapters import load, read_version

    model = load(read_version(folder), base.model)
    try:
        out = []
        with torch.no_grad():
            for e in items:
                ids = torch.tensor([list(e.prompt) + list(e.targets)])
                p = torch.softmax(model(ids).logits[0].float(), -1)
                out.append([float(p[len(e.prompt) - 1 + j, t]) for j, t in enumerate(e.targets)])
        return out
    finally:
        model.unload()


def _runtime_target_probs(folder, base_gguf, items, permute=True):
    from memft.runtime import gguf_export
    from memft.runtime.gguf_export import Shape, write_lora_gguf
    from memft.runtime.llamacpp import LlamaCpp

    lora = base_gguf.parent / f"lora-{permute}.gguf"
    saved = gguf_export.permute_rows
    if not permute:
        gguf_export.permute_rows = lambda w, n: w
    try:
        write_lora_gguf(folder, lora, Shape.from_gguf(base_gguf))
    finally:
        gguf_export.permute_rows = saved
    rt = LlamaCpp(base_gguf, [lora], threads=1)
    return [[rt.next_step(list(e.prompt) + list(e.targets[:j])).prob_of(t) or 0.0 for j, t in enumerate(e.targets)] for e in items]


def test_target_probabilities_equal_torch_fp32_on_an_f32_base(tiny_deploy):
    from memft.prompts.encoding import encode_all

    folder, recs, base_gguf, base = tiny_deploy
    items = encode_all(recs, base.tokenizer, "raw")
    want = _torch_target_probs(base, folder, items)
    got = _runtime_target_probs(folder, base_gguf, items)
    diffs = [abs(a - b) for w, g in zip(want, got) for a, b in zip(w, g)]
    assert len(diffs) == 30 and max(diffs) <= F32_TOLERANCE
    # The control: without the q/k permutation of B the runtime computes another function.
    wrong = _runtime_target_probs(folder, base_gguf, items, permute=False)
    assert max(abs(a - b) for w, g in zip(want, wrong) for a, b in zip(w, g)) > 10 * F32_TOLERANCE


def test_verdicts_in_llama_cpp(tiny_deploy):
    from memft.runtime.certify import check_in_llamacpp

    folder, recs, base_gguf, base = tiny_deploy
    wrong = Record("Ann:", " 555-0102")  # the last digit differs: position 8 of the value's byte tokens
    chk = check_in_llamacpp(folder, [*recs, wrong], base.tokenizer, "raw", base_gguf, threads=1)
    assert chk.records == 4 and chk.exact == 3 and chk.base_gguf == "tiny.gguf" and len(chk.base_sha256) == 64
    ok, bad = chk.per_record[0], chk.per_record[3]
    assert ok.exact and ok.first_difference is None and ok.recalled == " 555-0101" and ok.min_gap > 0 and ok.length == 10
    assert not bad.exact and bad.first_difference == 8 and bad.recalled == " 555-0101" and bad.min_gap < 0
    assert bad.min_prob < 0.5 and chk.min_gap == bad.min_gap


def test_verify_runtime_cli_redacts_values_and_keeps_the_certificate(tiny_deploy, tmp_path):
    folder, recs, base_gguf, _ = tiny_deploy
    f = write_jsonl(tmp_path / "r.jsonl", [json.dumps({"key": r.key, "value": r.value}) for r in recs])
    v = memft("verify", folder, f, "--runtime", "llama.cpp", "--base-gguf", base_gguf, "--json", tmp_path / "v.json")
    assert v.returncode == 0, v.stderr
    rep = json.loads((tmp_path / "v.json").read_text())
    assert rep["exact"] == 3 and rep["exact_fraction"] == 1.0 and rep["certificate"] is True
    assert all(r["recalled"] is None and r["recalled_chars"] == 9 for r in rep["per_record"])
    assert "555" not in v.stderr + v.stdout + (tmp_path / "v.json").read_text()
    assert "3/3 records decoded, 3 exact" in v.stderr  # progress
    cert = json.loads((folder / "memft.json").read_text())["runtime"]
    assert cert["runtime"] == "llama.cpp" and cert["base_gguf"] == "tiny.gguf" and cert["records"] == 3
    t = memft("verify", folder, f, "--json", tmp_path / "t.json", "--quiet", "--device", "cpu")
    assert t.returncode == 0 and any("certified in llama.cpp" in n for n in json.loads((tmp_path / "t.json").read_text())["notes"])
    bad = write_jsonl(tmp_path / "b.jsonl", [json.dumps({"key": "Ann:", "value": " 555-0102"})])
    b = memft("verify", folder, bad, "--runtime", "llama.cpp", "--base-gguf", base_gguf, "--json", tmp_path / "b.json", "--reveal")
    assert b.returncode == 1
    assert json.loads((tmp_path / "b.json").read_text())["per_record"][0]["recalled"] == " 555-0101"  # --reveal shows it


def test_export_writes_the_lora_base_and_modelfile(tiny_deploy, tmp_path):
    folder, _, _, _ = tiny_deploy
    e = memft("export", folder, "--gguf", tmp_path / "memft.gguf", "--base-gguf", tmp_path / "base.gguf", "--base-type", "f16")
    assert e.returncode == 0, e.stderr
    assert (tmp_path / "Modelfile").read_text() == "FROM ./base.gguf\nADAPTER ./memft.gguf\nPARAMETER temperature 0\n"
    from memft.runtime.llamacpp import LlamaCpp

    from memft.model.base import tiny_tokenizer

    rt = LlamaCpp(tmp_path / "base.gguf", [tmp_path / "memft.gguf"], threads=1)  # llama.cpp loads the pair
    steps = rt.greedy(tiny_tokenizer()("Bob:")["input_ids"], 10)  # an f16 base: the record still comes back
    assert [s.token for s in steps] == list(tiny_tokenizer()(" 555-0199")["input_ids"]) + [tiny_tokenizer().eos_token_id]
    assert memft("export", folder, "--gguf", tmp_path / "x.gguf", "--base-type", "q2").returncode == 2


def test_recall_through_llama_cpp_gives_the_values_and_refuses_keys_not_held(tiny_deploy):
    folder, recs, base_gguf, _ = tiny_deploy
    for r in recs:
        got = memft("recall", folder, r.key, "--runtime", "llama.cpp", "--base-gguf", base_gguf)
        assert got.returncode == 0 and got.stdout == r.value + "\n", got.stderr
    j = json.loads(memft("recall", folder, "Bob:", "--runtime", "llama.cpp", "--base-gguf", base_gguf, "--json").stdout)
    assert j["value"] == " 555-0199" and j["certified"] is True and 0.5 < j["min_prob"] <= 1.0
    miss = memft("recall", folder, "Bobby:", "--runtime", "llama.cpp", "--base-gguf", base_gguf)
    assert miss.returncode == 1 and "not held" in miss.stderr and "'Bob:'" in miss.stderr
    assert memft("recall", folder, "Bob:", "--runtime", "vllm").returncode == 2


def test_a_keyed_adapter_is_exact_in_llama_cpp_through_its_invocation(tiny_deploy, tmp_path):
    # The default write is keyed (PEFT's activated LoRA; llama.cpp reads adapter.alora.invocation_tokens): the
    # runtime's prompts must start with the invocation, as memft's do, and the values come back exactly.
    from memft import api
    from memft.config import LoraSettings, TrainConfig
    from memft.runtime.certify import check_in_llamacpp

    _, recs, base_gguf, base = tiny_deploy
    res = api.write(recs, tmp_path / "keyed", lora=LoraSettings(rank=4, preset="all", activation="keyed"),
                    train=TrainConfig(lr=0.02, max_steps=300), base=base)
    assert res.all_certified
    chk = check_in_llamacpp(tmp_path / "keyed", recs, base.tokenizer, "raw", base_gguf, threads=1)
    assert chk.exact == 3 and chk.min_prob > 0.5
    for r in recs:
        got = memft("recall", tmp_path / "keyed", r.key, "--runtime", "llama.cpp", "--base-gguf", base_gguf)
        assert got.returncode == 0 and got.stdout == r.value + "\n", got.stderr
    # Off the trigger llama.cpp computes the base alone: the same top-20 log-probabilities as without the adapter,
    # bit for bit (adapter.alora.invocation_tokens); after the invocation the adapter acts.
    from memft.model.base import tiny_tokenizer
    from memft.runtime.certify import invocation_tokens
    from memft.runtime.gguf_export import Shape, write_lora_gguf
    from memft.runtime.llamacpp import LlamaCpp

    write_lora_gguf(tmp_path / "keyed", tmp_path / "k.gguf", Shape.from_gguf(base_gguf), invocation_tokens(tmp_path / "keyed"))
    adapted, plain = LlamaCpp(base_gguf, [tmp_path / "k.gguf"], threads=1), LlamaCpp(base_gguf, [], threads=1)
    tok = tiny_tokenizer()
    for text in ("Ann:", "The weather is", "Bob: 555"):
        assert adapted.next_step(tok(text)["input_ids"]).top == plain.next_step(tok(text)["input_ids"]).top
    on = tok(" <mem>Ann:")["input_ids"]
    assert adapted.next_step(on).top != plain.next_step(on).top


def test_recall_exports_an_adapter_version_once_and_refuses_a_damaged_folder(tiny_deploy, tmp_path, monkeypatch):
    """The LoRA GGUF of one adapter version is kept in the user cache (a second fresh recall does not export it
    again), keyed by memft.json's fingerprints: edited weights are refused (exit 2), never answered from the cache."""
    import shutil

    from memft.runtime import gguf_export

    folder, recs, base_gguf, _ = tiny_deploy
    monkeypatch.setenv("MEMFT_CACHE", str(tmp_path / "cache"))
    exports = []

    original = gguf_export.write_lora_gguf
    monkeypatch.setattr(gguf_export, "write_lora_gguf", lambda *a, **k: exports.append(1) or original(*a, **k))
    for _ in range(2):
        got = memft("recall", folder, recs[0].key, "--runtime", "llama.cpp", "--base-gguf", base_gguf)
        assert got.returncode == 0 and got.stdout == recs[0].value + "\n", got.stderr
    assert len(exports) == 1 and len(list((tmp_path / "cache" / "lora-gguf").glob("*.gguf"))) == 1
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    w = bad / "adapter_model.safetensors"
    data = bytearray(w.read_bytes())
    data[-5] ^= 0xFF  # one flipped bit pattern in a weight
    w.write_bytes(bytes(data))
    r = memft("recall", bad, recs[0].key, "--runtime", "llama.cpp", "--base-gguf", base_gguf)
    assert r.returncode == 2 and "differ from the fingerprint" in r.stderr and r.stdout == ""
