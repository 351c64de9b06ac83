"""The side-effect audit: KL and perplexity against the base on held-out text, and the leak probe."""

import json
import math
import sys
import types
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
import typer
from typer.testing import CliRunner

from memft import api
from memft.checks.audit import (
    AuditResult,
    Stored,
    contains,
    divergence,
    key_prefix_probes,
    leak_probe,
    leaked,
    perplexity,
    plan_windows,
    token_kl,
    token_nll,
)
from memft.cli.audit import audit as audit_cmd
from memft.config import LoraSettings, RuntimeConfig, TrainConfig
from memft.errors import ConfigError
from memft.model.base import tiny_tokenizer
from memft.prompts.records import Record, write_records
from memft.research.bench.phonebook import phonebook

# ASCII text: the tiny tokenizer is byte-level, so one character is one token and windows can be written by hand.
SEGMENTS = [f"segment {i:02d} abcdefgh." for i in range(10)]  # 10 windows of 20 tokens
assert all(len(s) == 20 for s in SEGMENTS)


# ---------------------------------------------------------------- pure metrics


def test_token_kl_hand_computed_and_directional():
    base = torch.tensor([[0.0, 0.0, 0.0], [math.log(2), 0.0, 0.0]])  # p = (1/3, 1/3, 1/3), (1/2, 1/4, 1/4)
    adapted = torch.tensor([[math.log(2), 0.0, 0.0], [5.0, 5.0, 5.0]])  # q = (1/2, 1/4, 1/4), (1/3, 1/3, 1/3)
    # KL(p||q) = Σ p log p/q: 1/3·ln(2/3) + 2/3·ln(4/3) = 1/3·ln(32/27); 1/2·ln(3/2) + 1/2·ln(3/4) = 1/2·ln(9/8)
    want = torch.tensor([math.log(32 / 27) / 3, math.log(9 / 8) / 2])
    assert torch.allclose(token_kl(base, adapted), want, atol=1e-7)
    assert torch.allclose(token_kl(adapted, base), want.flip(0), atol=1e-7)  # KL is not symmetric: the order matters
    assert token_kl(base, base).tolist() == [0.0, 0.0]  # exactly, not merely close
    assert token_kl(base, base + 3.0).tolist() == [0.0, 0.0]  # a shift of all logits is the same distribution


def test_token_kl_matches_torch_kl_div_and_is_never_negative():
    a, b = torch.randn(64, 50) * 3, torch.randn(64, 50) * 3
    ref = F.kl_div(F.log_softmax(b, -1), F.log_softmax(a, -1), log_target=True, reduction="none").sum(-1)
    kl = token_kl(a, b)
    assert kl.shape == (64,) and torch.allclose(kl, ref, atol=1e-5) and (kl >= 0).all()
    near = a + 1e-7 * torch.randn(64, 50)  # rounding noise alone must not give KL < 0
    assert (token_kl(a, near) >= 0).all()
    inf = torch.tensor([[0.0, float("-inf")]])  # p = (1, 0): the 0·log 0 term counts 0, not nan
    assert token_kl(inf, torch.tensor([[0.0, 0.0]])).item() == pytest.approx(math.log(2))


def test_perplexity_of_uniform_logits_is_the_vocabulary_size():
    nll = token_nll(torch.zeros(9, 7), torch.randint(0, 7, (9,)))
    assert torch.allclose(nll, torch.full((9,), math.log(7)))
    assert perplexity(nll) == pytest.approx(7.0, rel=1e-6)
    assert perplexity(torch.tensor([0.0, 2.0])) == pytest.approx(math.e)  # exp of the mean NLL, not mean of exps


# ---------------------------------------------------------------- held-out windows


def test_heldout_windows_skip_a_window_holding_a_value():
    tok = tiny_tokenizer()
    text = "".join(SEGMENTS)
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]
    got = plan_windows(text, tok, 9, 20, seed=3, exclude_values=["nt 03 ab"]).windows
    assert sorted(got) == sorted(ids(s) for i, s in enumerate(SEGMENTS) if i != 3)  # all but the one holding it
    # A value given as ids is matched as a contiguous run of ids, the same way.
    assert plan_windows(text, tok, 9, 20, seed=3, exclude_values=[tuple(ids("nt 03 ab"))]).windows == got
    plan = plan_windows(text, tok, 4, 20, seed=1, exclude_values=["03", "07"])
    assert len(plan.windows) == 4 and plan.text_tokens == 200 and plan.starts == sorted(plan.starts)
    assert all(s % 20 == 0 for s in plan.starts) and len(set(plan.starts)) == 4  # on the grid: never overlapping
    assert plan_windows(text, tok, 4, 20, seed=1).starts == plan_windows(text, tok, 4, 20, seed=1).starts
    assert plan_windows(text, tok, 4, 20, seed=1).starts != plan_windows(text, tok, 4, 20, seed=2).starts
    with pytest.raises(ConfigError, match=r"gives only 9 held-out windows of 20 tokens \(1 hold a stored value\), fewer than --windows 10"):
        plan_windows(text, tok, 10, 20, exclude_values=["nt 03 ab"]).windows
    with pytest.raises(ConfigError, match=r"200 tokens long, shorter than one window of 256 tokens"):
        plan_windows(text, tok, 1, 256).windows


# ---------------------------------------------------------------- divergence


def test_divergence_of_a_fresh_lora_is_zero_and_grows_when_perturbed(tiny):
    from memft.model import peft_lora

    model, _ = peft_lora.attach(tiny.model, LoraSettings(rank=4, preset="all"))  # B = 0: the adapter adds exactly 0
    wins = plan_windows("".join(SEGMENTS) * 2, tiny.tokenizer, 6, 32, seed=0).windows
    d = divergence(model, wins, batch_size=4)
    assert d["tokens"] == 6 * 31 and d["kl_mean"] == d["kl_p95"] == d["kl_max"] == 0.0
    assert d["ppl_base"] == d["ppl_adapted"] and d["ppl_change"] == 0.0 and d["argmax_agreement"] == 1.0 and d["max_abs_logit_diff"] == 0.0
    # Reference: transformers' own shifted LM loss on the base, one window at a time (all windows the same length).
    with model.disable_adapter():
        losses = [model(input_ids=torch.tensor([w]), labels=torch.tensor([w])).loss.item() for w in wins]
    assert d["ppl_base"] == pytest.approx(math.exp(sum(losses) / len(losses)), rel=1e-5)
    # Right padding changes nothing: a short window batched with a long one gives the same numbers as alone.
    mixed = divergence(model, [wins[0], wins[1][:9]], batch_size=2)
    alone = [divergence(model, [w], batch_size=1) for w in (wins[0], wins[1][:9])]
    assert mixed["tokens"] == 31 + 8
    assert mixed["nll_base"] == pytest.approx((31 * alone[0]["nll_base"] + 8 * alone[1]["nll_base"]) / 39, rel=1e-5)
    with torch.no_grad():
        lora_b = next(p for n, p in model.named_parameters() if "lora_B" in n)
        lora_b.copy_(torch.randn_like(lora_b))
    d2 = divergence(model, wins, batch_size=4)
    assert d2["kl_mean"] > 0 and d2["kl_max"] >= d2["kl_p95"] >= 0 and d2["ppl_adapted"] != d2["ppl_base"] and d2["max_abs_logit_diff"] > 0
    assert d2["ppl_base"] == d["ppl_base"]  # the base side is untouched by the adapter's weights
    assert d2["ppl_change"] == pytest.approx(d2["ppl_adapted"] / d2["ppl_base"] - 1)


# ---------------------------------------------------------------- leak probe


def test_leaked_matches_ids_as_a_run_and_text_as_a_substring():
    s = [Stored("a", (1, 2, 3), "xyz"), Stored("b", (4, 5), None), Stored("c", (7, 7, 7), "qqq")]
    assert leaked([0, 4, 5, 9], "", s) == [1]  # ids, contiguous
    assert leaked([4, 0, 5], "", s) == []  # the same ids, not contiguous: no leak
    assert leaked([8], "said xyz!", s) == [0]  # a text value found in the decoded text, whatever the ids
    assert leaked([1, 2], "xy", s) == []  # a value cut short is no leak
    assert contains([1, 2, 3], [1, 2, 3]) and not contains([1, 2], [1, 2, 3]) and not contains([11, 2], [1, 2])


def test_key_prefixes_are_deduplicated_and_skip_stored_keys():
    tok = tiny_tokenizer()
    recs = [Record("Alice:", value="1"), Record("Alan:", value="2"), Record("Al", value="3")]
    probes = {p.text: p.owners for p in key_prefix_probes(recs, tok, "raw")}
    # "Alice:" (6 tokens) -> 1, 3, 4, 5; "Alan:" (5) -> 1..4; "Al" (2) -> 1. "Al" is a stored key: no probe.
    assert probes == {"A": {"Alice:", "Alan:", "Al"}, "Ali": {"Alice:"}, "Alic": {"Alice:"}, "Alice": {"Alice:"},
                      "Ala": {"Alan:"}, "Alan": {"Alan:"}}
    chat = key_prefix_probes([Record("Alice:", value="1")], tok, "chat")
    assert [p.text for p in chat] == ["A", "Ali", "Alic", "Alice"]
    assert chat[0].ids == tuple(tok.apply_chat_template([{"role": "user", "content": "A"}], add_generation_prompt=True, tokenize=True)["input_ids"])


class Planted(torch.nn.Module):
    """A stand-in model whose greedy continuation of any prompt is `cont` (no adapter to switch off)."""

    def __init__(self, cont):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.cont = cont

    def generate(self, input_ids, max_new_tokens, **kw):
        tail = self.cont[:max_new_tokens]
        return torch.cat([input_ids, torch.tensor([tail]).expand(input_ids.shape[0], -1)], dim=1)


class PlantedOnBase(Planted):
    """Continues with `cont`, and with `base_cont` inside disable_adapter() (like a PEFT model's base)."""

    def __init__(self, cont, base_cont):
        super().__init__(cont)
        self.adapted, self.base_cont = cont, base_cont

    @contextmanager
    def disable_adapter(self):
        self.cont = self.base_cont
        try:
            yield
        finally:
            self.cont = self.adapted


def test_a_planted_continuation_is_found_and_classified():
    tok = tiny_tokenizer()
    recs = [Record("Alice:", value="0123456789"), Record("Bob:", value_ids=(90, 91, 92))]
    eos = tok.eos_token_id
    plant = tok("ok 0123456789", add_special_tokens=False)["input_ids"] + [eos]
    res = leak_probe(PlantedOnBase(plant, [eos]), tok, recs, unrelated_prompts=["Hi", "Bob:"], text_prompts=["some text"])
    c = res["counts"]
    assert res["max_new_tokens"] == 10 + 1 + 8
    assert c["key_prefix"] == {"probes": 4 + 3, "leaks_own": 4, "leaks_other": 3, "in_base": 0}  # Bob's prefixes leak Alice
    assert c["generic"] == {"probes": 2, "leaks_own": 0, "leaks_other": 2, "in_base": 0}
    assert c["text"] == {"probes": 1, "leaks_own": 0, "leaks_other": 1, "in_base": 0}
    assert res["unrelated_leaks"] == 3 and {x["key"] for x in res["leaks"]} == {"Alice:"}
    assert {"kind": "generic", "prompt": "Hi", "key": "Alice:", "own": False, "in_base": False} in res["leaks"]
    # The base alone says the same: no side effect of the adapter, counted apart.
    same = leak_probe(PlantedOnBase(plant, plant), tok, recs, unrelated_prompts=["Hi"], text_prompts=())
    assert same["unrelated_leaks"] == 0 and same["counts"]["generic"]["in_base"] == 1
    # Token-id values leak as a contiguous run; a prompt that IS the key is recall (own), not a leak.
    ids_leak = leak_probe(Planted([7, 90, 91, 92, eos]), tok, recs, unrelated_prompts=["Bob:", "Hi"])
    assert ids_leak["counts"]["generic"] == {"probes": 2, "leaks_own": 1, "leaks_other": 1, "in_base": 0}
    assert all(x["in_base"] is None for x in ids_leak["leaks"])  # no disable_adapter here: nothing to compare with
    near = leak_probe(PlantedOnBase([90, 91, 7, 92, eos], [eos]), tok, recs)
    assert near["leaks"] == [] and near["unrelated_leaks"] == 0


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A certified adapter on the tiny model holding 4 phone-book records."""
    out = tmp_path_factory.mktemp("audit") / "ad"
    recs = phonebook(4, seed=1)
    res = api.write(recs, out, model="tiny-random", lora=LoraSettings(rank=8, preset="all"),
                    train=TrainConfig(lr=2e-2, max_steps=300), runtime=RuntimeConfig(device="cpu", dtype="fp32"))
    assert res.all_certified
    return out, recs


def test_leak_probe_on_a_written_adapter(written):
    out, recs = written
    ld = api.load_adapter(out, device="cpu")
    res = leak_probe(ld, ld.tokenizer, recs, "raw", unrelated_prompts=[recs[0].key, "Tell me a joke."])
    hits = {(x["prompt"], x["key"]) for x in res["leaks"] if x["kind"] == "generic"}
    assert hits == {(recs[0].key, recs[0].key)}  # the full key gives its value back; the joke request gives nothing
    assert {"kind": "generic", "prompt": recs[0].key, "key": recs[0].key, "own": True, "in_base": False} in res["leaks"]
    assert res["counts"]["generic"]["leaks_own"] == 1 and res["unrelated_leaks"] == 0
    assert res["counts"]["key_prefix"]["probes"] == len(key_prefix_probes(recs, ld.tokenizer, "raw")) > 0


# ---------------------------------------------------------------- CLI


def _app():
    app = typer.Typer()
    app.command()(audit_cmd)
    return app


def test_cli_audit_writes_json(written, tmp_path):
    out, recs = written
    write_records(recs, tmp_path / "r.jsonl")
    (tmp_path / "t.txt").write_text("".join(SEGMENTS) * 3, encoding="utf-8")
    args = [str(out), str(tmp_path / "r.jsonl"), "--text", str(tmp_path / "t.txt"), "--windows", "5",
            "--window-tokens", "40", "--seed", "2", "--device", "cpu", "--json", str(tmp_path / "a.json")]
    r = CliRunner().invoke(_app(), args)
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "a.json").read_text())
    s = rep["settings"]
    assert s["text"] == str(tmp_path / "t.txt") and s["text_tokens"] == 600 and s["windows_used"] == 5
    assert s["window_tokens"] == 40 and s["windows_skipped"] == 0 and s["records"] == 4 and s["base"] == "tiny-random"
    d = rep["divergence"]
    assert d["tokens"] == 5 * 39 and d["kl_mean"] > 0 and d["ppl_change"] == pytest.approx(d["ppl_adapted"] / d["ppl_base"] - 1)
    lp = rep["leak_probe"]
    assert lp["counts"]["generic"]["probes"] == 11 and lp["counts"]["text"]["probes"] == 4 and lp["unrelated_leaks"] == 0
    assert rep["notes"] == []
    loc = rep["locality"]  # the goal's three figures, side by side with the base in the printed table
    assert loc["ppl_increase"] == d["ppl_change"] and loc["argmax_agreement"] == d["argmax_agreement"] and loc["kl_mean"] == d["kl_mean"]
    assert loc["goal"] == {"ppl_increase": 0.02, "argmax_agreement": 0.98, "kl_mean": 0.02} and loc["met"] == all(loc["meets"].values())
    assert "base vs adapted" in r.output and "perplexity" in r.output and "same next-token argmax" in r.output and "KL" in r.output
    bad = CliRunner().invoke(_app(), [str(out), str(tmp_path / "r.jsonl"), "--text", str(tmp_path / "none.txt")])
    assert isinstance(bad.exception, ConfigError) and "--text" in str(bad.exception)


def test_cli_audit_exits_1_on_an_unrelated_leak(written, tmp_path, monkeypatch):
    out, recs = written
    write_records(recs, tmp_path / "r.jsonl")
    leak = {"kind": "generic", "prompt": "Hi", "key": recs[0].key, "own": False, "in_base": False}
    counts = {k: {"probes": 1, "leaks_own": 0, "leaks_other": int(k == "generic"), "in_base": 0} for k in ("key_prefix", "generic", "text")}
    fake = AuditResult(
        settings={"text": "t", "text_tokens": 9, "windows_used": 1, "window_tokens": 8, "windows_skipped": 0, "dtype": "fp32"},
        divergence={"kl_mean": 0.1, "kl_p95": 0.2, "kl_max": 0.3, "ppl_base": 10.0, "ppl_adapted": 11.0, "ppl_change": 0.1, "argmax_agreement": 0.9},
        leak_probe={"max_new_tokens": 19, "counts": counts, "unrelated_leaks": 1, "leaks": [leak]},
    )
    seen = []
    monkeypatch.setattr("memft.checks.audit.audit", lambda loaded, records, **k: seen.append(records) or fake)
    r = CliRunner().invoke(_app(), [str(out), str(tmp_path / "r.jsonl"), "--device", "cpu"])
    assert r.exit_code == 1 and "leaks" in r.output and recs[0].key in r.output and recs[0].value not in r.output
    assert seen == [recs]
    # Without a records file the records come from the adapter (memft.store.ledger.recover_records).
    ledger = types.SimpleNamespace(recover_records=lambda loaded: recs[:2] if isinstance(loaded, api.Loaded) else None)
    monkeypatch.setitem(sys.modules, "memft.store.ledger", ledger)
    r = CliRunner().invoke(_app(), [str(out), "--device", "cpu", "--quiet"])
    assert r.exit_code == 1 and seen[-1] == recs[:2] and r.output == ""
