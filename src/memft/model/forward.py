"""Target-token logits, computed only where they are needed, with an optional frozen-prefix activation cache.

The base is frozen and the adapter sits in decoder layers >= k (k = the lowest adapted layer), so the hidden states
entering layer k are constant during training. `Runner` computes them once per record and then runs only layers
k.. and the LM head, the head at target positions only (a 49k vocabulary otherwise dominates a small model).

A keyed adapter (memft.prompts.keyed) acts only from its invocation on; the Runner gives its LoRA layers the offsets
PeftModel.forward would, so the split path computes what plain PEFT computes (the layers below `k` hold no LoRA,
so the cached states are the base's either way).

Llama-style decoders (Llama, Qwen2/3, Mistral, SmolLM ...; `model.model.layers`, `.norm`, `.rotary_emb`, all
full attention) get the split path. Other architectures run the full backbone, still with logits at targets only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from memft.model.batching import Batch, collate, length_groups
from memft.prompts.encoding import Encoded
from memft.prompts.keyed import activated
from memft.model.vocab import TrainVocab


def causal_lm(model: Any) -> nn.Module:
    """The transformers CausalLM under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_of(lm: nn.Module) -> nn.Module | None:
    """The Llama-style decoder stack, or None when the architecture is not one we can split."""
    dec = getattr(lm, "model", None)
    if dec is None or not all(hasattr(dec, a) for a in ("layers", "norm", "rotary_emb", "embed_tokens")):
        return None
    types = getattr(dec.config, "layer_types", None)
    if types is not None and any(t != "full_attention" for t in types):
        return None
    return dec


def _causal_mask(dec: nn.Module, h: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor) -> Any:
    from transformers.masking_utils import create_causal_mask

    return create_causal_mask(
        config=dec.config, inputs_embeds=h, attention_mask=attention_mask, cache=None, position_ids=position_ids
    )


def run_layers(dec: nn.Module, h: torch.Tensor, batch: Batch, start: int, stop: int) -> torch.Tensor:
    """Decoder layers [start, stop) on hidden states h [B, T, H] -> [B, T, H]."""
    mask = _causal_mask(dec, h, batch.attention_mask, batch.position_ids)
    pos = dec.rotary_emb(h, position_ids=batch.position_ids)
    for layer in dec.layers[start:stop]:
        h = layer(h, attention_mask=mask, position_ids=batch.position_ids, position_embeddings=pos)
        if isinstance(h, tuple):  # older layer implementations return (hidden, ...)
            h = h[0]
    return h


def head_logits(lm: nn.Module, h: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
    """The LM head of `lm` on final hidden states h [N, H] -> float32 logits [N, V], or [N, len(ids)] on the
    token ids `ids` alone (only those rows of the head are computed)."""
    head = lm.get_output_embeddings()
    if ids is None:
        return head(h).float()
    ids = ids.to(h.device)
    bias = head.bias.index_select(0, ids) if getattr(head, "bias", None) is not None else None
    return F.linear(h, head.weight.index_select(0, ids), bias).float()  # [N, len(ids)]


class Runner:
    """Computes target logits [N, V] for micro-batches of records, caching frozen prefixes when asked.

    `start` is the first layer that must be re-run (the lowest adapted layer); with `cache=True` the hidden states
    entering it are kept per record (on the model's device, in the base dtype) after the first call.
    """

    def __init__(self, model: Any, items: Sequence[Encoded], pad_id: int, start: int = 0, cache: bool = False):
        self.model = model
        self.lm = causal_lm(model)
        self.dec = decoder_of(self.lm)
        self.items = items
        self.pad_id = pad_id
        self.start = start if self.dec is not None else 0
        self.cache = cache and self.dec is not None and self.start > 0
        self._prefix: dict[int, torch.Tensor] = {}  # record index -> hidden states [n_i, H] entering layer `start`
        self.device = next(self.lm.parameters()).device
        self.current: Batch | None = None

    def adopt(self, prefix: dict[int, torch.Tensor]) -> int:
        """Fill the cache with hidden states computed elsewhere ({record index: [n, H]} entering layer `start`,
        n <= len(ids): a missing last position is never fed to predict a target, so it may be left out, and the
        causal mask keeps it from every earlier one; memft.certify.decode.greedy_recall gives them). Returns how many
        were taken (none without a cache)."""
        if not self.cache:
            return 0
        for i, h in prefix.items():
            n = len(self.items[i].ids)
            if not n - 1 <= h.shape[0] <= n:
                raise ValueError(f"record {i}: a prefix of {h.shape[0]} positions for a sequence of {n} tokens")
            self._prefix[i] = h.to(self.device)
        return len(prefix)

    def batch(self, idx: Sequence[int]) -> Batch:
        return collate([self.items[i] for i in idx], self.pad_id).to(self.device)

    def logits(self, idx: Sequence[int], batch: Batch | None = None, vocab: TrainVocab | None = None) -> tuple[torch.Tensor, Batch]:
        """Logits [N, V] (float32) at the target positions of records `idx`, and the batch they belong to.

        With `vocab`, only the head rows of its ids are scored: logits [N, V'] and a batch whose `targets` are
        indices into `vocab.ids` (the cross-entropy of the softmax restricted to those tokens; see memft.model.vocab).
        Records of very different lengths run as groups of similar length (batching.length_groups), each padded
        to its own longest: the same logits (and gradients) as one padded batch, without computing the padding.
        """
        h, batch = self.hidden(idx, batch)
        if vocab is None:
            return head_logits(self.lm, h), batch
        return head_logits(self.lm, h, vocab.ids), replace(batch, targets=vocab.local(batch.targets))

    def hidden(self, idx: Sequence[int], batch: Batch | None = None) -> tuple[torch.Tensor, Batch]:
        """Final hidden states [N, H] (after the final norm, what the LM head reads) at the target positions of
        records `idx`, record by record, and their batch; see `logits`."""
        batch = batch if batch is not None else self.batch(idx)
        groups = length_groups([len(self.items[i].ids) for i in idx]) if len(idx) > 1 else [list(range(len(idx)))]
        if len(groups) == 1:
            return self._hidden(idx, batch), batch
        pieces: list[torch.Tensor] = [batch.input_ids.new_empty(0)] * len(idx)
        for g in groups:
            sub = [idx[b] for b in g]
            sb = self.batch(sub)
            for b, piece in zip(g, self._hidden(sub, sb).split(sb.lengths.tolist())):
                pieces[b] = piece
        return torch.cat(pieces), batch  # record by record in idx order, as collate lays out the targets

    def _hidden(self, idx: Sequence[int], batch: Batch) -> torch.Tensor:
        """Final hidden states [N, H] at the positions of `batch` that predict targets (records `idx`)."""
        self.current = batch  # what the layers are running now (memft.model.lora_init's hooks read its target positions)
        with activated(self.lm, batch.input_ids):
            if self.dec is None:
                out = self.lm.get_decoder()(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
                h = out.last_hidden_state
            else:
                h = self._entering(idx, batch)
                h = run_layers(self.dec, h, batch, self.start, len(self.dec.layers))
                h = self.dec.norm(h)
        return h[batch.rows, batch.cols]  # [N, H]: only the positions that predict targets

    def _entering(self, idx: Sequence[int], batch: Batch) -> torch.Tensor:
        """Hidden states [B, T, H] entering layer `start`: from the cache, or computed (frozen, no grad)."""
        if not self.cache:
            h = self.dec.embed_tokens(batch.input_ids)
            if self.start > 0:
                with torch.no_grad():
                    h = run_layers(self.dec, h, batch, 0, self.start)
            return h
        missing = [i for i in idx if i not in self._prefix]
        if missing:
            mb = self.batch(missing)
            with torch.no_grad():
                hm = run_layers(self.dec, self.dec.embed_tokens(mb.input_ids), mb, 0, self.start)
            for j, i in enumerate(missing):
                self._prefix[i] = hm[j, : len(self.items[i].ids)].detach()
        B, T = batch.input_ids.shape
        first = self._prefix[idx[0]]
        h = first.new_zeros((B, T, first.shape[-1]))
        for b, i in enumerate(idx):
            h[b, : self._prefix[i].shape[0]] = self._prefix[i]
        return h
