"""Keyed activation (PEFT's activated LoRA): off-trigger logits are the base's bit for bit; memft's own forward
paths (frozen-prefix cache, greedy loop) compute what plain PEFT computes; a keyed write recalls through its prompt."""

import json

import pytest
import torch

from memft.store import meta
from memft.model import peft_lora
from memft import api
from memft.model.batching import collate
from memft.config import DEFAULT_INVOCATION, LoraSettings, RuntimeConfig, TrainConfig
from memft.certify.decode import greedy_recall
from memft.prompts.encoding import encode_all, prompt_ids
from memft.errors import ConfigError, RecordsError
from memft.model.forward import Runner
from memft.prompts.keyed import activated, invocation_ids, offsets
from memft.prompts.records import Record

RECS = [Record("Carol Whyte:", "555-0199"), Record("Bob Stone:", "x-7"), Record("Ann Lee:", "42")]
HELD_OUT = ["The quick brown fox jumps over the lazy dog.", "def f(x):\n    return x + 1", "Ann Lee: 42"]


def keyed_model(base, preset="upper", scale=0.5):
    """A keyed adapter with random non-zero B (a fresh one is the identity everywhere, which would prove nothing)."""
    tokens = invocation_ids(DEFAULT_INVOCATION, base.tokenizer)
    model, placed = peft_lora.attach(base.model, LoraSettings(rank=4, preset=preset, activation="keyed"), seed=0, invocation_tokens=tokens)
    model.lowest = min(placed["layers"])
    gen = torch.Generator().manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data = torch.randn(p.shape, generator=gen) * scale
    return model.eval(), tokens


def test_settings_validate_activation_up_front():
    assert LoraSettings(activation="keyed").invocation == DEFAULT_INVOCATION == " <mem>"
    assert LoraSettings().key_prefix == "" and LoraSettings(activation="keyed", invocation=" [m]").key_prefix == " [m]"
    with pytest.raises(ConfigError, match="--activation must be one of always, keyed"):
        LoraSettings(activation="sometimes")
    with pytest.raises(ConfigError, match="--invocation needs --activation keyed"):
        LoraSettings(invocation="<m>")
    with pytest.raises(ConfigError, match="--invocation must be a non-empty text"):
        LoraSettings(activation="keyed", invocation="  ")


class MergingTokenizer:
    """Characters as ids (their code points), except that a space followed by '<' is one token (id 1000), as BPE
    tokenizers merge them."""

    def __call__(self, text, add_special_tokens=False):
        ids, i = [], 0
        while i < len(text):
            if text[i:i + 2] == " <":
                ids.append(1000)
                i += 2
            else:
                ids.append(ord(text[i]))
                i += 1
        return {"input_ids": ids}


def test_an_invocation_that_tokenizes_differently_after_text_is_refused():
    tok = MergingTokenizer()
    assert invocation_ids(" <m>", tok) == (1000, ord("m"), ord(">"))  # the space always goes with '<'
    with pytest.raises(ConfigError, match=r"--invocation '<m>': its tokens \[60, 109, 62\] change after the text ' '"):
        invocation_ids("<m>", tok)


def test_offsets_count_back_from_the_end_of_the_padded_row_as_peft_does(tiny):
    from peft.tuners.lora.variants import calculate_alora_offsets

    model, tokens = keyed_model(tiny)
    n = len(tokens)
    ids = torch.tensor([[5, *tokens, 9, 0, 0], [0, 0, 5, 6, *tokens], [5, 6, *tokens[:-1], 7, 8, 9]])  # [3, n + 4]
    assert offsets(ids, tokens) == calculate_alora_offsets(model.peft_config, "default", ids) == [n + 3, n, None]


def test_off_trigger_logits_are_the_base_logits_exactly(tiny):
    tok = tiny.tokenizer
    base_logits = [tiny.model(input_ids=torch.tensor([tok(t)["input_ids"]])).logits for t in HELD_OUT]
    model, tokens = keyed_model(tiny)
    for t, want in zip(HELD_OUT, base_logits):
        ids = torch.tensor([tok(t)["input_ids"]])
        assert torch.equal(model(input_ids=ids).logits, want)  # bit for bit, not allclose
    # ... and after the invocation the adapter really acts (only there: the positions before it stay the base's)
    ids = torch.tensor([prompt_ids("Ann Lee:", tok, "raw", "Q " + DEFAULT_INVOCATION)])
    start = len(tok("Q")["input_ids"])
    with model.disable_adapter():
        ref = model(input_ids=ids).logits
    got = model(input_ids=ids).logits
    assert torch.equal(got[:, :start], ref[:, :start])
    assert (got[:, start:] - ref[:, start:]).abs().max().item() > 1e-2


def test_the_cached_split_path_and_greedy_loop_match_plain_peft(tiny):
    """Runner (frozen-prefix cache: layers below the lowest adapted one run once) and memft.certify.decode's KV-cache loop give
    a keyed adapter its offsets as PeftModel.forward / .generate do; without them the adapter would never act."""
    from memft.certify.evaluate import generate

    model, _ = keyed_model(tiny, preset="top", scale=2.0)
    tok = tiny.tokenizer
    items = encode_all(RECS, tok, "raw", DEFAULT_INVOCATION)
    start = model.lowest
    assert start > 0
    runner = Runner(model, items, tok.pad_token_id, start=start, cache=True)
    for _ in range(2):  # the second call runs from the cache
        logits, batch = runner.logits(list(range(len(items))))
        full = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[batch.rows, batch.cols]
        torch.testing.assert_close(logits, full.float(), rtol=0, atol=1e-5)
    with model.disable_adapter():
        off = Runner(model, items, tok.pad_token_id).logits(list(range(len(items))))[0]
    assert (logits - off).abs().max().item() > 1e-2
    prompts = [e.prompt for e in items]
    loop = greedy_recall(model, prompts, tok.eos_token_id, tok.pad_token_id, max_new=6, start=start)
    ref = generate(model, prompts, tok, [6] * len(prompts), do_sample=False, num_beams=1)
    assert [r.ids for r in loop] == ref
    with model.disable_adapter():
        base_ref = generate(model, prompts, tok, [6] * len(prompts), do_sample=False, num_beams=1)
    assert base_ref != ref


def test_a_value_that_holds_the_invocation_is_refused(tiny):
    with pytest.raises(RecordsError, match="its value holds the invocation tokens"):
        api.check_items(encode_all([Record("k:", "a <mem> b")], tiny.tokenizer, "raw", DEFAULT_INVOCATION), tiny, "raw", DEFAULT_INVOCATION)


def test_preserve_is_refused_with_keyed(tiny):
    with pytest.raises(ConfigError, match="--preserve has nothing to do with --activation keyed"):
        api.fit(RECS, tiny, LoraSettings(activation="keyed"), TrainConfig(preserve=1.0))


@pytest.fixture(scope="module")
def keyed_ad(tmp_path_factory):
    out = tmp_path_factory.mktemp("keyed") / "ad"
    res = api.write(RECS, out, model="tiny-random", lora=LoraSettings(rank=8, preset="all", activation="keyed"),
                    train=TrainConfig(lr=2e-2, max_steps=300), runtime=RuntimeConfig(device="cpu", dtype="fp32"))
    assert res.all_certified
    return out


def test_a_keyed_write_records_its_invocation_and_recalls_through_it(keyed_ad):
    raw = json.loads((keyed_ad / "memft.json").read_text(encoding="utf-8"))
    cfg = json.loads((keyed_ad / "adapter_config.json").read_text(encoding="utf-8"))
    ld = api.load_adapter(keyed_ad, device="cpu")
    tokens = list(invocation_ids(DEFAULT_INVOCATION, ld.tokenizer))
    assert (raw["format"], raw["activation"], raw["invocation"], raw["invocation_tokens"]) == (meta.FORMAT, "keyed", DEFAULT_INVOCATION, tokens)
    assert cfg["alora_invocation_tokens"] == tokens and cfg["task_type"] == "CAUSAL_LM"
    assert [(r.value, r.certified) for r in api.recall_many(ld, [r.key for r in RECS])] == [(r.value, True) for r in RECS]
    assert api.verify(ld, RECS).summary["certified"] == 1.0
    # train/recall parity: the prompt recall feeds is the one training used, invocation first
    items = encode_all(RECS, ld.tokenizer, "raw", ld.meta.key_prefix)
    assert items[0].prompt[:len(tokens)] == tuple(tokens)
    # plain PEFT, without the invocation: the base's logits exactly, on the very keys the adapter holds
    for t in HELD_OUT + [r.key for r in RECS]:
        ids = torch.tensor([ld.tokenizer(t)["input_ids"]])
        with ld.model.disable_adapter():
            want = ld.model(input_ids=ids).logits
        assert torch.equal(ld.model(input_ids=ids).logits, want)
    with activated(ld.model, torch.tensor([[1]])) as offs:
        assert offs == [None]


def test_a_damaged_activation_entry_is_one_adapter_error(keyed_ad, tmp_path):
    import shutil

    from memft.errors import AdapterError

    ad = tmp_path / "ad"
    shutil.copytree(keyed_ad, ad)
    raw = json.loads((ad / "memft.json").read_text(encoding="utf-8"))
    raw["invocation_tokens"] = None
    (ad / "memft.json").write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(AdapterError, match="activation 'keyed' with invocation"):
        meta.read(ad)


@pytest.mark.slow  # plain PEFT re-check in a subprocess
def test_plain_peft_recalls_a_keyed_adapter_and_merging_is_left_out(keyed_ad):
    from memft.checks.deploy import Setting, recheck

    checks = recheck(keyed_ad, RECS, [Setting("fp32"), Setting("fp32", merged=True), Setting("fp32", plain=True)], "cpu")
    assert [c.setting for c in checks] == ["LoRA layers, fp32", "plain PeftModel, separate process, fp32"]
    assert [(c.certified, c.exact) for c in checks] == [(3, None), (3, 3)]  # plain generate gives every value through the invocation
    with pytest.raises(ConfigError, match="a keyed adapter cannot be merged"):
        recheck(keyed_ad, RECS, [Setting("fp32", merged=True)], "cpu")


def test_append_and_forget_keep_the_keyed_prompt(keyed_ad, tmp_path):
    import shutil

    from memft.memory.rewrite import append, forget

    ad = tmp_path / "ad"
    shutil.copytree(keyed_ad, ad)
    res = append(ad, [Record("Dee Ray:", "77")], runtime=RuntimeConfig(device="cpu"))
    assert res.saved and meta.read(ad).activation == "keyed" and meta.read(ad).invocation == DEFAULT_INVOCATION
    assert [r.value for r in api.recall_many(str(ad), ["Dee Ray:", "Ann Lee:"])] == ["77", "42"]
    res = forget(ad, ["Bob Stone:"], runtime=RuntimeConfig(device="cpu"))
    assert res.saved and res.still_recalled == []
    with pytest.raises(ConfigError, match="--preserve has nothing to do with a keyed adapter"):
        append(ad, [Record("Eve:", "1")], train={"preserve": 1.0})


def test_trainer_rows_and_the_certification_callback_see_the_keyed_prompt(keyed_ad):
    from memft.integrations.trainer import CertificationStop, features

    ld = api.load_adapter(keyed_ad, device="cpu")
    rows = features(RECS, ld.tokenizer, "raw", ld.meta.key_prefix)
    assert [r["input_ids"] for r in rows] == [list(e.ids) for e in encode_all(RECS, ld.tokenizer, "raw", ld.meta.key_prefix)]
    assert CertificationStop(RECS, ld.tokenizer, invocation=ld.meta.key_prefix).check(ld.model)["certified"] == 1.0
    assert CertificationStop(RECS, ld.tokenizer).check(ld.model)["certified"] == 0.0  # without the invocation: the base answers


def test_cli_write_keyed_then_ledger_shows_how_to_call_it(tmp_path):
    from tests.cli.test_cli import memft
    from tests.conftest import write_jsonl

    recs = write_jsonl(tmp_path / "r.jsonl", ['{"key": "Ann Lee:", "value": "42"}', '{"key": "Bob Stone:", "value": "x-7"}'])
    out = tmp_path / "ad"
    w = memft("write", recs, "--out", out, "--model", "tiny-random", "--invocation", "<<m>>",  # keyed: the write's default
              "--rank", "8", "--preset", "all", "--lr", "0.02", "--dtype", "fp32", "--device", "cpu", "--quiet")
    assert w.returncode == 0, w.stderr
    led = json.loads(memft("ledger", out, "--json").stdout)
    tok = api.load_adapter(out, device="cpu").tokenizer
    assert led["activation"] == {"activation": "keyed", "invocation": "<<m>>", "invocation_tokens": list(tok("<<m>>", add_special_tokens=False)["input_ids"])}
    r = memft("recall", out, "Ann Lee:", "--json")
    assert json.loads(r.stdout)["value"] == "42"
    bad = memft("write", recs, "--out", tmp_path / "x", "--model", "tiny-random", "--activation", "always", "--invocation", "<m>", "--quiet")
    assert bad.returncode == 2 and "--invocation needs --activation keyed" in bad.stderr and "Traceback" not in bad.stderr


def test_the_audit_reports_a_keyed_adapters_off_trigger_identity_and_probes_through_the_invocation(keyed_ad):
    from memft.checks.audit import audit
    from memft.checks.leaks import key_prefix_probes

    ld = api.load_adapter(keyed_ad, device="cpu")
    res = audit(ld, RECS, n_windows=4, window=64).to_json()
    assert res["off_trigger_identity"] == {"max_abs_logit_diff": 0.0, "expected": 0.0, "identical": True}
    assert (res["divergence"]["kl_max"], res["divergence"]["argmax_agreement"], res["settings"]["activation"]) == (0.0, 1.0, "keyed")
    tokens = invocation_ids(DEFAULT_INVOCATION, ld.tokenizer)
    probes = key_prefix_probes(RECS, ld.tokenizer, "raw", DEFAULT_INVOCATION)
    assert probes and all(p.ids[:len(tokens)] == tokens and len(p.ids) > len(tokens) for p in probes)
    assert res["leak_probe"]["counts"]["key_prefix"]["probes"] == len(probes)
