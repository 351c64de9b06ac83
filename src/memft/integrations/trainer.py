"""MemFT inside `transformers.Trainer`: memft's token ids as Trainer rows, any memft objective as the Trainer's loss,
and a callback that stops training once every record is certified.

- `features` + `Collator`: memft's own token ids as Trainer rows (labels -100 on the prompt), so a Trainer trains on
  exactly the ids that memft recall feeds (prompt) and expects (value ids + eos); `items_from_rows` reads them back.
- `MemFTLoss`: any memft objective as `Trainer(compute_loss_func=MemFTLoss("memft-ot"))`.
- `CertificationStop`: a `TrainerCallback` that stops training once every record is certified (with a margin).

What the installed Trainer does, and this module relies on, is in the package docstring (memft.integrations).

Integrations layer: may import the core only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import TrainerCallback

from memft import objectives
from memft.model.batching import pad
from memft.prompts.encoding import Encoded, encode_all
from memft.errors import ConfigError, RecordsError
from memft.certify.evaluate import teacher_forced, token_nll
from memft.model.base import compute_dtype
from memft.model.forward import Runner
from memft.certify.metrics import PRECISION_LOG_ODDS, meets_margin
from memft.prompts.records import Record

IGNORE = -100  # the label of a position without a target (transformers' and PyTorch's ignore_index)



# ---------------------------------------------------------------------------------------------------- rows


def features(records: Sequence[Record], tokenizer: Any, template: str = "raw", invocation: str = "") -> list[dict[str, list[int]]]:
    """One Trainer row per record, built with memft.prompts.encoding.encode (train/recall parity); `invocation`: a keyed
    adapter's (memft.prompts.keyed), put before every key as recall puts it. The model must be the PeftModel (its forward
    finds the invocation and switches the adapter on from there).

    Row: input_ids = prompt + value ids + eos, attention_mask = 1s, labels = -100 on the prompt, the ids elsewhere.

    >>> from memft.model.base import tiny_tokenizer
    >>> features([Record("A:", "12")], tiny_tokenizer())[0]["labels"][:2]
    [-100, -100]
    """
    rows = []
    for e in encode_all(records, tokenizer, template, invocation):
        n = len(e.ids)
        rows.append({"input_ids": list(e.ids), "attention_mask": [1] * n, "labels": [IGNORE] * len(e.prompt) + list(e.targets)})
    return rows


@dataclass
class Collator:
    """Right-pads rows of `features` into a batch of [B, T] tensors: input_ids with `pad_id`, attention_mask with 0,
    labels with -100. Other columns are dropped. Right padding keeps real tokens at positions 0..n-1, as memft does."""

    pad_id: int

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        ids, mask = pad([r["input_ids"] for r in rows], self.pad_id)  # [B, T] each
        labels, _ = pad([r["labels"] for r in rows], IGNORE)  # [B, T]
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def items_from_rows(rows: Sequence[Mapping[str, Any]], tokenizer: Any = None) -> list[Encoded]:
    """Rows of `features` (or `sft_dataset`) back to memft's Encoded records: prompt = the -100 prefix, targets = the
    labelled rest. Keys are the decoded prompts (with a tokenizer) or `row <i>`."""
    items = []
    for i, r in enumerate(rows):
        ids, labels = [int(x) for x in r["input_ids"]], [int(y) for y in r["labels"]]
        p = next((t for t, y in enumerate(labels) if y != IGNORE), len(labels))
        if not 0 < p < len(ids) or len(labels) != len(ids) or labels[p:] != ids[p:]:
            raise RecordsError(
                f"row {i}: labels must be -100 on a non-empty prompt and equal input_ids on every later token "
                "(as memft.integrations.features builds them)"
            )
        key = tokenizer.decode(ids[:p]) if tokenizer is not None else f"row {i}"
        items.append(Encoded(key=key, prompt=tuple(ids[:p]), targets=tuple(ids[p:])))
    return items


# ---------------------------------------------------------------------------------------------------- loss


def target_tokens(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-target-token statistics of a causal LM batch.

    logits [B, T, V] and labels [B, T], both unshifted (labels -100 where there is no target): the logits at position
    t predict labels[t + 1]. Returns, over the N labelled positions in row-major order:
    loss [N] (cross-entropy in float32, with grad), correct [N] (argmax == target), row [N] (batch row),
    offset [N] (index of the token among its row's labelled tokens, 0 = first value token).
    """
    target = labels[:, 1:]  # [B, T-1]
    mask = target != IGNORE  # [B, T-1]
    row, col = mask.nonzero(as_tuple=True)  # [N] each
    picked = logits[:, :-1][row, col].float()  # [N, V]
    tgt = target[row, col]  # [N]
    loss = token_nll(picked, tgt)  # [N], the loss memft's own training weights
    offset = (mask.cumsum(1) - 1)[row, col]  # [N]
    return loss, picked.argmax(-1) == tgt, row, offset


def _row_key(labels: list[int]) -> tuple[int, tuple[int, ...]]:
    """What tells training rows apart when only labels are seen: (position of the first label, the labelled ids)."""
    pos = [t for t, y in enumerate(labels) if y != IGNORE]
    return (pos[0] if pos else -1, tuple(labels[t] for t in pos))


class MemFTLoss:
    """A memft objective as `Trainer(compute_loss_func=MemFTLoss(method, **options))`.

    Called as loss(outputs, labels, num_items_in_batch=None) with the model outputs (logits [B, T, V]) and the
    unshifted labels [B, T]. Options are the objective's (objectives.option_defaults(method)), checked up front.

    Records: Trainer passes labels only, so a row is known by (position of its first label, its labelled ids), which
    is stable across batches under right padding (memft's Collator and TRL's collator both pad right); two rows with
    the same value and the same prompt length count as one record. `rows` (the training rows, e.g. `features(...)`)
    numbers the records 0..n-1 in that order, as memft's own loop does, and sets n_records; without it ids are given
    in order of first sight.
    `state` (the objective's memory, e.g. hysteresis sets and curricula) persists across calls. Schedules read
    state step/max_steps: CertificationStop(loss=this) sets them at every optimizer step, or call `schedule`.
    n_records: the number of training rows; required by curricula (they order records 0..n-1; `rows` sets it),
    otherwise the number of distinct rows seen so far stands in.

    Gradient accumulation. With num_items_in_batch = N (target tokens of the whole optimizer step, as Trainer
    counts them) and a micro-batch of n tokens, the loss returned is ell * n / N, where ell is the objective's value
    on the micro-batch. Written as a token sum it is sum_t w_t L_t / N with w_t = n * d ell / d L_t, the objective's
    own per-token weights rescaled to mean 1 over the micro-batch (w_t = 1 for sft). So:
    - sft and focal (token means): the gradient accumulated over any split into micro-batches equals the full-batch
      gradient exactly.
    - weighted objectives (memft-ot*, memft-sw*: ell = sum w L / (W + eps) with W = sum w): a single micro-batch per
      step gives exactly the objective's loss; with several, each micro-batch's weighted mean counts in proportion to
      its tokens, so a token gets w_t n / (W_mb N) instead of the full batch's w_t / W. The two agree when every
      micro-batch has the same share W_mb / n of trained weight (e.g. all tokens still failing) and differ otherwise:
      a micro-batch with few trained tokens gives them more weight than a full batch would (a step is never diluted
      by passed tokens, the point of normalising by W). The weights w_t themselves are those of a full batch for
      memft-ot (each token's own loss and hysteresis state) and memft-sw (per record, and a row is one record);
      the curriculum may advance a stage between two micro-batches of one step.
    Without num_items_in_batch the objective's value is returned as is. A step with nothing to train (the objective
    returns None) gives 0 * logits.sum(): zero, with a grad_fn, so Trainer's backward works and changes nothing.
    `stats` holds the last call's objective stats plus `tokens` and `mean_loss`.
    `preserve`: a memft.training.preserve.Preserver on the model being trained (`memft.training.preserve.build(peft_model, tokenizer,
    weight, None, lowest_adapted_layer, extra_ids=memft.training.preserve.target_ids(encoded_records))`: the records'
    target tokens join every window's support); its term is added to the objective's value and scaled with it, so an
    accumulated step adds it once in all. Its windows rotate with the step that CertificationStop(loss=this) sets.
    """

    def __init__(self, method: str = "memft-ot", n_records: int | None = None, rows: Sequence[Mapping[str, Any]] | None = None,
                 preserve: Any = None, **options: Any):
        if rows is not None:
            n_records = len(rows) if n_records is None else n_records
        if method not in objectives.OBJECTIVES:
            raise ConfigError(f"method {method!r} is not a memft objective; known: {', '.join(objectives.OBJECTIVES)}")
        problems = objectives.option_problems(method, options)
        if n_records is not None and (not isinstance(n_records, int) or isinstance(n_records, bool) or n_records < 1):
            problems.append(f"n_records must be a positive integer (the number of training rows), got {n_records!r}")
        self.uses_schedule = bool({**objectives.option_defaults(method), **options}.get("curriculum"))
        if self.uses_schedule and n_records is None:
            problems.append(f"method {method} with a curriculum orders the records 0..n-1: pass rows=train_rows or n_records=len(train_rows)")
        if problems:
            raise ConfigError("; ".join(problems))
        self.method = method
        self.options = options
        self.n_records = n_records
        self.objective = objectives.get(method)
        self.state: dict[str, Any] = {"step": 0, "max_steps": None}
        self.record_ids: dict[tuple[int, tuple[int, ...]], int] = {}
        for row in rows or ():
            self.record_ids.setdefault(_row_key(list(row["labels"])), len(self.record_ids))
        self.stats: dict[str, float] = {}
        self.preserve = preserve  # a memft.training.preserve.Preserver built on the model being trained, or None

    def schedule(self, step: int, max_steps: int | None) -> None:
        """Tell schedules (curricula) the current optimizer step and the step budget."""
        self.state.update(step=step, max_steps=max_steps)

    def _records(self, labels: torch.Tensor) -> list[int]:
        out = []
        for row in labels.tolist():
            out.append(self.record_ids.setdefault(_row_key(row), len(self.record_ids)))
        if self.n_records is not None and len(self.record_ids) > self.n_records:
            raise ConfigError(
                f"MemFTLoss saw {len(self.record_ids)} distinct training rows but n_records={self.n_records}; "
                "pass n_records=len(train_dataset), and use a fresh MemFTLoss for each training set"
            )
        return out

    def __call__(self, outputs: Any, labels: torch.Tensor | None, num_items_in_batch: Any = None) -> torch.Tensor:
        if labels is None:
            raise ConfigError("MemFTLoss needs labels: train on rows with a `labels` column (memft.integrations.features)")
        logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs.logits  # [B, T, V]
        loss, correct, row, offset = target_tokens(logits, labels)
        n = loss.numel()
        if self.uses_schedule and self.state["max_steps"] is None:
            raise ConfigError(
                f"method {self.method} reads the step budget: pass loss= to CertificationStop (it sets step and "
                "max_steps at every step) or call loss.schedule(step, max_steps) before each step"
            )
        rec = torch.tensor(self._records(labels), dtype=torch.long, device=row.device)  # [B]
        self.state["n_records"] = self.n_records or len(self.record_ids)
        out, stats = (None, {}) if n == 0 else self.objective(objectives.Tokens(loss, correct, rec[row], offset), self.state, **self.options)
        self.stats = {**stats, "tokens": float(n), "mean_loss": float(loss.detach().mean()) if n else 0.0}
        if out is None:  # nothing to learn: a zero that backward can still run through
            return logits.sum() * 0.0
        if self.preserve is not None:  # the same step's windows in every micro-batch; scaled below like the rest
            kept, pstats = self.preserve.loss(int(self.state["step"]))
            out = out + kept
            self.stats.update(pstats)
        if num_items_in_batch is not None:
            out = out * (n / num_items_in_batch)  # see the class doc: exact full-batch gradient for token means
        return out


# ---------------------------------------------------------------------------------------------------- stopping


class CertificationStop(TrainerCallback):
    """Stops a Trainer once every record is certified: under teacher forcing the target is the argmax at every
    target position and, with a margin M, also has p > M there (and, for a model computing in bf16, the precision's
    log-odds allowance over the runner-up: memft.certify.metrics.PRECISION_LOG_ODDS).

    Every `every` optimizer steps (after the update) it runs a no-grad teacher-forced pass over the records with the
    model being trained (memft.certify.evaluate.teacher_forced, in eval mode) and sets control.should_training_stop when all
    pass; the final parameters are checked too. Trainer only stops after a step, so `certified_at` >= 1 even for
    records certified before training. `features_or_records`: rows of `features`/`sft_dataset`, or Records (then `tokenizer` is needed).
    With `loss=` (a MemFTLoss) it also sets the loss's step/max_steps at every step, so curricula work.
    Results: `certified_at` (global step of the first passing check, None: never), `min_prob` and `certified`
    (fraction of records passing) of the last check, `history` (one row per check).
    """

    def __init__(
        self,
        features_or_records: Sequence[Any],
        tokenizer: Any = None,
        margin: float | None = 0.5,
        every: int = 1,
        batch_size: int = 16,
        loss: MemFTLoss | None = None,
        template: str = "raw",
        invocation: str = "",
    ):
        problems = []
        if margin is not None and (not isinstance(margin, (int, float)) or isinstance(margin, bool) or not 0 <= margin < 1):
            problems.append(f"margin must be None or a probability in [0, 1), got {margin!r}")
        for name, v in (("every", every), ("batch_size", batch_size)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                problems.append(f"{name} must be a positive integer, got {v!r}")
        rows = list(features_or_records)
        if not rows:
            problems.append("CertificationStop needs the training records (or their rows); got none")
        elif isinstance(rows[0], Record) and tokenizer is None:
            problems.append("CertificationStop got Records: pass tokenizer= to encode them")
        if problems:
            raise ConfigError("; ".join(problems))
        self.items = encode_all(rows, tokenizer, template, invocation) if isinstance(rows[0], Record) else items_from_rows(rows, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer is not None and tokenizer.pad_token_id is not None else 0
        self.margin = margin
        self.every = every
        self.batch_size = batch_size
        self.loss = loss
        self.certified_at: int | None = None
        self.min_prob: float | None = None
        self.certified: float | None = None
        self.history: list[dict[str, float]] = []

    @torch.no_grad()
    def check(self, model: Any) -> dict[str, float]:
        """{certified: fraction of records passing, min_prob: lowest target probability} for `model` as it is."""
        was_training = model.training
        model.eval()  # no dropout: the check must see the model that recall will use
        try:
            stats = teacher_forced(Runner(model, self.items, self.pad_id), self.batch_size)
        finally:
            model.train(was_training)
        # in bf16 the goal also needs the precision's log-odds allowance, as a write's does (memft.certify.metrics)
        lo = PRECISION_LOG_ODDS[compute_dtype(model)] if self.margin is not None else 0.0
        ok = [meets_margin(s.correct, s.prob, self.margin or 0.0, s.gap, lo) for s in stats.values()]
        return {"certified": sum(ok) / len(ok), "min_prob": min(min(s.prob) for s in stats.values())}

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.loss is not None:
            self.loss.schedule(state.global_step, state.max_steps)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> Any:
        if state.global_step % self.every == 0:
            self._record(model, state.global_step, control)
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if not self.history or self.history[-1]["step"] != state.global_step:  # the final parameters, when unchecked
            self._record(model, state.global_step, control)

    def _record(self, model: Any, step: int, control: Any) -> None:
        row = self.check(model)
        self.history.append({"step": float(step), **row})
        self.certified, self.min_prob = row["certified"], row["min_prob"]
        if row["certified"] == 1.0:
            if self.certified_at is None:
                self.certified_at = step
            control.should_training_stop = True
