"""The side-effect audit: what does an adapter do to everything it was not written for?

Two measurements, each against the same base with the adapter switched off (PEFT's `disable_adapter()`):
- divergence on held-out text: per-token KL(p_base || p_adapted) and perplexity, base vs adapted, over seeded
  non-overlapping token windows of a natural text that contain none of the stored values;
- leak probe: greedy continuations of prompts that are not a stored key (keys cut short, generic prompts, windows
  of the held-out text), searched for any stored value.

Reports name the key whose value leaked, never the value itself: an audit file is safe to share like memft.json.

Checks layer: may import the core, the memory store and the other checks.
"""

from __future__ import annotations

import hashlib
import math
import platform
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from memft.store.loading import Loaded
from memft.model.batching import pad
from memft.errors import AdapterError, ConfigError, RecordsError
from memft.certify.evaluate import token_nll  # the per-token loss, defined once; still importable from here
from memft.model.forward import causal_lm
from memft.prompts.keyed import activated
from memft.prompts.encoding import text_ids
from memft.prompts.heldout import default_text
from memft.checks.leaks import (  # noqa: F401 - re-exported: the audit's public names
    DEFAULT_PROMPTS,
    Probe,
    Stored,
    contains,
    holds_value,
    key_prefix_probes,
    leak_probe,
    leaked,
    prefix_lengths,
    stored_values,
    text_probes,
)
from memft.prompts.records import Record

TEXT_PROMPTS = 4  # held-out windows reused as leak probes
TEXT_PROMPT_TOKENS = 32  # ... cut to this many tokens: a prompt, not a document
# Prompts per greedy-generation batch of the leak probe: a step keeps one position's logits per row, and on a CPU a
# wider batch makes each step's matrix products more efficient (benchmarks/bench_locality.py times the audit).
GEN_BATCH = 128


# ---------------------------------------------------------------- pure metrics


def token_kl(logits_base: torch.Tensor, logits_adapted: torch.Tensor) -> torch.Tensor:
    """KL(p_base || p_adapted) in nats at each position: logits [N, V], [N, V] -> [N].

    KL_n = Σ_v p_v · (log p_v − log q_v), with p = softmax(logits_base[n]) and q = softmax(logits_adapted[n]),
    both from log_softmax in float32. Terms with p_v = 0 count 0; rounding below 0 is clamped (KL >= 0).

    >>> round(token_kl(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, math.log(3)]])).item(), 6)  # ½·ln(½/¼) + ½·ln(½/¾)
    0.143841
    """
    assert logits_base.shape == logits_adapted.shape, (logits_base.shape, logits_adapted.shape)
    logp = F.log_softmax(logits_base.float(), dim=-1)  # [N, V]
    logq = F.log_softmax(logits_adapted.float(), dim=-1)  # [N, V]
    p = logp.exp()
    terms = torch.where(p > 0, p * (logp - logq), torch.zeros_like(p))  # 0 · log 0 = 0, not nan
    return terms.sum(-1).clamp_min(0.0)


def perplexity(nll: torch.Tensor) -> float:
    """exp of the mean per-token NLL [N] (nats): summed over tokens, divided once by their count.

    >>> round(perplexity(torch.full((4,), math.log(10.0))), 4)
    10.0
    """
    assert nll.numel() > 0, "perplexity of no tokens"
    return math.exp(nll.double().sum().item() / nll.numel())


@dataclass
class WindowPlan:
    """Held-out windows of a text: their token ids, where they start, and how many were passed over."""

    windows: list[list[int]]
    starts: list[int]  # token offset of each window in the tokenized text
    skipped: int  # windows looked at and left out because they hold a stored value
    text_tokens: int


def plan_windows(
    text: str,
    tokenizer: Any,
    n_windows: int,
    window: int,
    seed: int = 0,
    exclude_values: Sequence[str | Sequence[int]] = (),
    source: str = "the text",
) -> WindowPlan:
    """Cut the tokenized text into consecutive windows of `window` tokens, visit them in a seeded order and keep the
    first `n_windows` that hold no value of `exclude_values` (see holds_value); returned in text order."""
    if n_windows < 1:
        raise ConfigError(f"--windows must be at least 1, got {n_windows}")
    if window < 2:
        raise ConfigError(f"--window-tokens must be at least 2 (a token and the one it predicts), got {window}")
    ids = text_ids(text, tokenizer, source)
    n_slots = len(ids) // window
    if n_slots == 0:
        raise ConfigError(f"{source} is {len(ids)} tokens long, shorter than one window of {window} tokens; give a longer text or lower --window-tokens")
    order = list(range(n_slots))
    random.Random(seed).shuffle(order)
    picked: list[int] = []
    skipped = 0
    for slot in order:
        if len(picked) == n_windows:
            break
        w = ids[slot * window : (slot + 1) * window]
        decoded = tokenizer.decode(w, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if any(holds_value(w, decoded, v) for v in exclude_values):
            skipped += 1
        else:
            picked.append(slot)
    if len(picked) < n_windows:
        raise ConfigError(
            f"{source} gives only {len(picked)} held-out windows of {window} tokens ({skipped} hold a stored value), "
            f"fewer than --windows {n_windows}; give a longer text or ask for fewer or shorter windows"
        )
    picked.sort()
    return WindowPlan([ids[s * window : (s + 1) * window] for s in picked], [s * window for s in picked], skipped, len(ids))


# ---------------------------------------------------------------- divergence on held-out text


# Positions whose full-vocabulary logits exist at once: [CHUNK, V] floats for the base and the adapted model and a few
# of their softmax terms (about 50 MB each at a 49k vocabulary), whatever the window count and length.
CHUNK = 256


@torch.no_grad()
def divergence(peft_model: Any, windows: Sequence[Sequence[int]], batch_size: int = 8) -> dict[str, float]:
    """How far the adapter moves next-token predictions on `windows` (token id lists), against the same model with
    the adapter disabled. Every position but a window's last predicts the next token (standard LM perplexity).

    Returns tokens, KL(p_base || p_adapted) per token (kl_mean, kl_p95, kl_max; nats), nll_base/nll_adapted (mean
    nats per token), ppl_base/ppl_adapted, ppl_change = ppl_adapted / ppl_base - 1, argmax_agreement (the fraction
    of positions where both pick the same next token) and max_abs_logit_diff (max over positions and the vocabulary
    of |logit_adapted - logit_base|: exactly 0 for a keyed adapter on text without its invocation).

    Streams: windows go through the backbone `batch_size` at a time (hidden states [B, T, H]); the output layer runs
    on CHUNK positions at a time, and each chunk is reduced to per-position scalars at once.
    """
    if not hasattr(peft_model, "disable_adapter"):
        raise AdapterError(f"divergence needs a PEFT model (one with disable_adapter()), got {type(peft_model).__name__}; load it with memft.api.load_adapter")
    if not windows or any(len(w) < 2 for w in windows):
        raise ConfigError("divergence: give at least one window, each of at least 2 tokens")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    lm = causal_lm(peft_model)
    backbone, head = lm.get_decoder(), lm.get_output_embeddings()
    device = next(peft_model.parameters()).device
    kl, nll_b, nll_a = [], [], []
    agree, diff = 0, 0.0
    for s in range(0, len(windows), batch_size):
        ids, mask = pad(windows[s : s + batch_size], 0)  # right padding: real tokens keep positions 0..n-1
        ids, mask = ids.to(device), mask.to(device)
        keep = mask[:, 1:].bool()  # [B, T-1]: position t predicts real token t+1
        with activated(lm, ids):  # a keyed adapter switches on after its invocation, as PeftModel.forward has it
            h_a = backbone(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1][keep]  # [N, H]
        with peft_model.disable_adapter():
            h_b = backbone(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1][keep]  # [N, H]
        nxt = ids[:, 1:][keep]  # [N]
        for c in range(0, nxt.numel(), CHUNK):
            la, lb = head(h_a[c : c + CHUNK]).float(), head(h_b[c : c + CHUNK]).float()  # [n, V] each
            kl.append(token_kl(lb, la).cpu())
            nll_b.append(token_nll(lb, nxt[c : c + CHUNK]).cpu())
            nll_a.append(token_nll(la, nxt[c : c + CHUNK]).cpu())
            agree += int((la.argmax(-1) == lb.argmax(-1)).sum())
            diff = max(diff, (la - lb).abs().max().item())
    kl_all, nb, na = torch.cat(kl), torch.cat(nll_b), torch.cat(nll_a)  # [N] each
    ppl_b, ppl_a = perplexity(nb), perplexity(na)
    return {
        "windows": len(windows),
        "tokens": int(kl_all.numel()),
        "kl_mean": kl_all.double().mean().item(),
        "kl_p95": torch.quantile(kl_all.double(), 0.95).item(),
        "kl_max": kl_all.max().item(),
        "nll_base": nb.double().mean().item(),
        "nll_adapted": na.double().mean().item(),
        "ppl_base": ppl_b,
        "ppl_adapted": ppl_a,
        "ppl_change": ppl_a / ppl_b - 1.0,
        "argmax_agreement": agree / kl_all.numel(),
        "max_abs_logit_diff": diff,
    }


# Issue 15's goal for an adapter's side effects on held-out text, once every record is certified: one definition,
# used by the audit report and the locality benchmark.
LOCALITY_GOAL = {"ppl_increase": 0.02, "argmax_agreement": 0.98, "kl_mean": 0.02}


def locality(div: dict[str, float], unrelated_leaks: int) -> dict[str, Any]:
    """The goal's three figures from a `divergence` result, each with whether it meets LOCALITY_GOAL, and `met`:
    all three, and no value leaked into an unrelated prompt.

    >>> locality({"ppl_change": 0.01, "argmax_agreement": 0.99, "kl_mean": 0.03}, 0)["met"]
    False
    """
    figs = {"ppl_increase": div["ppl_change"], "argmax_agreement": div["argmax_agreement"], "kl_mean": div["kl_mean"]}
    ok = {"ppl_increase": figs["ppl_increase"] <= LOCALITY_GOAL["ppl_increase"],
          "argmax_agreement": figs["argmax_agreement"] >= LOCALITY_GOAL["argmax_agreement"],
          "kl_mean": figs["kl_mean"] <= LOCALITY_GOAL["kl_mean"]}
    return {**figs, "goal": dict(LOCALITY_GOAL), "meets": ok, "met": all(ok.values()) and unrelated_leaks == 0}


# ---------------------------------------------------------------- leak probe


@dataclass
class AuditResult:
    """Settings (what was measured, on which text), divergence on held-out text, and the leak probe."""

    settings: dict[str, Any]
    divergence: dict[str, float]
    leak_probe: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def unrelated_leaks(self) -> int:
        """Adapter-caused leaks into prompts that are no stored key or part of one (generic prompts, held-out text)."""
        return int(self.leak_probe["unrelated_leaks"])

    @property
    def identity(self) -> dict[str, Any] | None:
        """A keyed adapter's off-trigger identity: the held-out text holds no invocation, so the adapted logits must
        equal the base's exactly (max |difference| 0.0, not merely small). None for an always-on adapter."""
        if self.settings.get("activation") != "keyed":
            return None
        d = self.divergence["max_abs_logit_diff"]
        return {"max_abs_logit_diff": d, "expected": 0.0, "identical": d == 0.0}

    def to_json(self) -> dict[str, Any]:
        out = {"settings": self.settings, "divergence": self.divergence, "locality": locality(self.divergence, self.unrelated_leaks),
               "leak_probe": self.leak_probe, "notes": self.notes}
        return out | ({"off_trigger_identity": self.identity} if self.identity is not None else {})


def audit(
    loaded: Loaded,
    records: Sequence[Record],
    text: str | None = None,
    n_windows: int = 32,
    window: int = 128,
    seed: int = 0,
    batch_size: int = 8,
    text_name: str | None = None,
) -> AuditResult:
    """Divergence on held-out windows of `text` (default: memft.prompts.heldout.default_text()) and the leak probe, for an adapter
    loaded with api.load_adapter and the records it holds. `text_name` names a given text in the settings."""
    if not records:
        raise RecordsError("audit: no records; give the records the adapter holds (a JSONL file)")
    template = loaded.meta.template
    source = text_name or ("the given text" if text is not None else f"pydoc_data.topics (Python {platform.python_version()})")
    text = default_text() if text is None else text
    plan = plan_windows(text, loaded.tokenizer, n_windows, window, seed, [r.target for r in records], source)
    div = divergence(loaded.model, plan.windows, batch_size)
    prompts = [loaded.tokenizer.decode(w[:TEXT_PROMPT_TOKENS], skip_special_tokens=False, clean_up_tokenization_spaces=False)
               for w in plan.windows[:TEXT_PROMPTS]]
    # Generation keeps one position's logits per step, so it takes far more prompts per batch than a window pass.
    leaks = leak_probe(loaded.model, loaded.tokenizer, records, template, text_prompts=prompts, batch_size=max(batch_size, GEN_BATCH),
                       invocation=loaded.meta.key_prefix)
    notes = []
    stored_hash = loaded.meta.records.hash
    if stored_hash is not None and stored_hash != loaded.meta.records.scheme.set_hash(records):
        notes.append("the records given are not the set this adapter was written with (their hash differs): leaks are looked for among the records given")
    settings = {
        "base": loaded.meta.base.spec,
        "dtype": loaded.dtype,
        "device": loaded.device,
        "template": template,
        "activation": loaded.meta.activation,
        "invocation": loaded.meta.invocation,
        "records": len(records),
        "text": source,
        "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "text_tokens": plan.text_tokens,
        "window_tokens": window,
        "windows_requested": n_windows,
        "windows_used": len(plan.windows),
        "windows_skipped": plan.skipped,
        "window_starts": plan.starts,
        "seed": seed,
        "batch_size": batch_size,
    }
    return AuditResult(settings, div, leaks, notes)
