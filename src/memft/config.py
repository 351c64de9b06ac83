"""Typed, validated settings. Every problem in a config is reported at once, before any work starts.

The resolved configs are saved next to every result (`memft.json`), so each number traces back to its settings.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from memft.errors import ConfigError

PRESETS = ("probe", "upper", "top", "all")
TEMPLATES = ("raw", "chat")
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "fp32", "bf16", "fp16")
LR_SCHEDULES = ("constant", "linear", "progress")
HEAD_VOCABS = ("full", "restricted")
PRESERVE_HEADS = ("support", "full")  # memft.training.preserve: what the preservation term's head scores
LORA_INITS = ("random", "centered", "null", "null-contrast")  # memft.model.lora_init; null*: memft.training.null_init.INITS
# always: the adapter acts on every token (a plain LoRA); keyed: only from the invocation sequence on (PEFT's
# activated LoRA, memft.prompts.keyed), so text without it gets the base's logits exactly.
ACTIVATIONS = ("always", "keyed")
# Put before every key of a keyed adapter. The leading space keeps its tokens the same after any text (without it,
# "<" merges with a preceding space on BPE tokenizers); memft.prompts.keyed.invocation_ids checks that for each tokenizer.
DEFAULT_INVOCATION = " <mem>"
# What `memft write` (and api.write without LoraSettings) uses when no activation is given; LoraSettings itself
# defaults to a plain always-on LoRA (research runs, the paper's setups). Chosen from benchmarks/bench_locality.py:
# see the README, "Keyed or always-on".
WRITE_ACTIVATION = "keyed"


def write_activation(activation: str | None, preserve: float | None = None) -> str:
    """The activation of a write: the one given, else "always" when a preservation weight is given (a remedy for
    always-on adapters only), else WRITE_ACTIVATION.

    >>> write_activation(None), write_activation(None, 3.0), write_activation("always")
    ('keyed', 'always', 'always')
    """
    if activation is not None:
        return activation
    return "always" if preserve else WRITE_ACTIVATION


def _check(problems: list[str]) -> None:
    if problems:
        raise ConfigError("; ".join(problems))


@dataclass
class LoraSettings:
    """Where and how big the adapter is.

    preset: `probe` = the MLP (gate/up/down) of one decoder layer, at about two thirds of the depth by default
    (the paper's probe); `upper` = the MLP of every layer from the probe's up to the top (ten times the parameters
    of `probe` on SmolLM2 at nearly the same cost per step: the backward pass runs through those layers anyway);
    `top` = the MLP of the top eighth of the layers (26-29 of SmolLM2's 30: a step runs 4 layers, not 10);
    `all` = every linear layer of every decoder block. `layers` and `target_modules` override.
    """

    rank: int = 8
    alpha: float | None = None  # None: alpha = rank (scale 1), so the learning rate means the same at every rank
    preset: str = "probe"
    layers: tuple[int, ...] | None = None
    target_modules: tuple[str, ...] | None = None
    # "always" | "keyed" (ACTIVATIONS); keyed adapters act only from `invocation` on (default DEFAULT_INVOCATION).
    activation: str = "always"
    invocation: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.activation not in ACTIVATIONS:
            problems.append(f"--activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        elif self.activation == "keyed" and self.invocation is None:
            self.invocation = DEFAULT_INVOCATION
        elif self.activation == "always" and self.invocation is not None:
            problems.append("--invocation needs --activation keyed (an always-on adapter has no invocation sequence)")
        if self.invocation is not None and (not isinstance(self.invocation, str) or not self.invocation.strip()):
            problems.append(f"--invocation must be a non-empty text such as {DEFAULT_INVOCATION!r}, got {self.invocation!r}")
        if not isinstance(self.rank, int) or self.rank <= 0:
            problems.append(f"--rank must be a positive integer, got {self.rank}")
        if self.alpha is not None and not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha) and self.alpha > 0):
            problems.append(f"--alpha must be a finite number > 0, got {self.alpha}")
        if self.preset not in PRESETS:
            problems.append(f"--preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.layers is not None:
            self.layers = tuple(self.layers)
            if not self.layers:
                problems.append("--layers is empty; give layer indices like 20 or 18,19,20")
        if self.target_modules is not None:
            self.target_modules = tuple(self.target_modules)
        _check(problems)

    @property
    def key_prefix(self) -> str:
        """The text put before every key: the invocation of a keyed adapter, nothing for an always-on one."""
        return self.invocation if self.activation == "keyed" and self.invocation else ""

    @property
    def scale_alpha(self) -> float:
        return float(self.alpha if self.alpha is not None else self.rank)


@dataclass
class TrainConfig:
    """How the adapter is trained. Defaults suit the embedded model on a CPU."""

    method: str = "sft"
    lr: float = 1e-2
    max_steps: int = 300
    batch_size: int = 64  # records per optimizer step; at least the record count means full batch
    seed: int = 0
    template: str = "raw"
    weight_decay: float = 0.0
    method_options: dict[str, Any] = field(default_factory=dict)
    # False: train the whole budget even after certification (law studies measure ΔL at a fixed budget).
    stop_when_certified: bool = True
    # Training goal: every target token is the argmax AND has p > margin. 0.5 is the paper's sufficient line and
    # leaves headroom against precision shifts (merging, bf16/fp16); 0 stops at bare certification (argmax only).
    margin: float = 0.5
    # ... and every target's log-odds over the best other token >= this (nats); None: the allowance of the precision
    # the run computes in (memft.certify.metrics.PRECISION_LOG_ODDS: 0 in fp32, 2.5 in bf16), so that a record
    # certified in one batch stays the argmax in any other batch shape. Research runs use 0 (the paper's argmax).
    precision_log_odds: float | None = None
    # True: update only records below metrics.exit_margin(margin) and re-check the rest with forward passes (see
    # memft.training.loop); what write/append/forget use. False: every record in every epoch, as the paper trains (research).
    active_set: bool = True
    # Wall-clock limit on training in seconds (None: none); the run then ends as at the end of max_steps.
    max_seconds: float | None = None
    # Learning rate over the budget: "constant", "linear" decay from lr at step 0 to 0 at max_steps (the reference
    # code's), or "progress": lr x max(0.1, 1 - certified share) (memft.training.step.lr_at). Constant by default: memft
    # stops at certification, so a decay tied to max_steps would only slow it; sizing picks "progress" for large sets.
    lr_schedule: str = "constant"
    # Clip the gradient's global L2 norm to this before each update (None: no clipping, memft's default; the
    # reference code clips at 1.0).
    max_grad_norm: float | None = None
    # Which output tokens a training step scores: "full" (the whole vocabulary) or "restricted" (the record set's
    # targets plus the competitors full checks have seen; memft.model.vocab). Certification always uses the full head.
    head_vocab: str = "full"
    # A of a fresh adapter: "random" (PEFT's) or "centered" (principal directions of each module's inputs at the
    # records' target positions, mean removed, unit variance; memft.model.lora_init) or "null" / "null-contrast" (the
    # directions general text's inputs barely use, for always-on locality; memft.training.null_init). B starts at zero either way.
    lora_init: str = "random"
    # LoRA A's learning rate as a multiple of lr (0: A frozen, only B trains, as in LoRA-FA).
    a_lr_scale: float = 1.0
    # Active set only: the share of each epoch drawn at random from the records resting at the bar (experience
    # replay), so that training the active ones also holds the others in place; 0: none (write), rewrites of large
    # adapters use 0.5 (memft.memory.rewrite).
    replay: float = 0.0
    # Weight of the preservation term (memft.training.preserve): KL(base || adapted) on unrelated text, added to the records'
    # loss at every step so the adapter leaves the base's predictions elsewhere alone; 0 turns it off.
    preserve: float = 0.0
    # UTF-8 text file to take the preservation windows from (None: memft.training.preserve.default_text(), Python docstrings,
    # a different source from the audit's pydoc topics).
    preserve_text: str | None = None
    # Which output tokens the preservation term scores (PRESERVE_HEADS): "support", each window's
    # likely tokens under the base plus the records' targets (cheaper), or "full", the whole vocabulary.
    preserve_head: str = "support"
    # How many windows of the preservation text the term keeps the base's predictions for (a step uses 2, in turn);
    # memft.training.preserve.POOL_WINDOWS.
    preserve_windows: int = 256

    def __post_init__(self) -> None:
        problems = []
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            problems.append(f"--lr must be a finite number > 0, got {self.lr}")
        if self.max_seconds is not None and not (isinstance(self.max_seconds, (int, float)) and math.isfinite(self.max_seconds) and self.max_seconds > 0):
            problems.append(f"--time-limit must be a positive number of seconds, got {self.max_seconds}")
        if not isinstance(self.max_steps, int) or self.max_steps < 0:
            problems.append(f"--max-steps must be an integer >= 0, got {self.max_steps}")
        if not isinstance(self.batch_size, int) or self.batch_size <= 0:
            problems.append(f"--batch-size must be a positive integer, got {self.batch_size}")
        if self.template not in TEMPLATES:
            problems.append(f"--template must be one of {', '.join(TEMPLATES)}, got {self.template!r}")
        if not (isinstance(self.weight_decay, (int, float)) and math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            problems.append(f"--weight-decay must be a finite number >= 0, got {self.weight_decay}")
        if self.lr_schedule not in LR_SCHEDULES:
            problems.append(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if not (isinstance(self.a_lr_scale, (int, float)) and not isinstance(self.a_lr_scale, bool) and math.isfinite(self.a_lr_scale) and self.a_lr_scale >= 0):
            problems.append(f"--a-lr-scale must be a finite number >= 0, got {self.a_lr_scale}")
        if not (isinstance(self.replay, (int, float)) and not isinstance(self.replay, bool) and 0 <= self.replay < 1):
            problems.append(f"--replay must be a share in [0, 1), got {self.replay}")
        if self.lora_init not in LORA_INITS:
            problems.append(f"--lora-init must be one of {', '.join(LORA_INITS)}, got {self.lora_init!r}")
        if self.head_vocab not in HEAD_VOCABS:
            problems.append(f"--head-vocab must be one of {', '.join(HEAD_VOCABS)}, got {self.head_vocab!r}")
        if self.max_grad_norm is not None and not (
            isinstance(self.max_grad_norm, (int, float)) and not isinstance(self.max_grad_norm, bool) and math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0
        ):
            problems.append(f"--max-grad-norm must be a finite number > 0 (or left out: no clipping), got {self.max_grad_norm}")
        if isinstance(self.preserve, bool) or not (isinstance(self.preserve, (int, float)) and math.isfinite(self.preserve) and self.preserve >= 0):
            problems.append(f"--preserve must be a finite number >= 0 (0: off), got {self.preserve}")
        if self.preserve_text is not None and not Path(self.preserve_text).is_file():
            problems.append(f"--preserve-text {self.preserve_text}: no such file; give a UTF-8 text file of unrelated text")
        if isinstance(self.preserve_windows, bool) or not isinstance(self.preserve_windows, int) or self.preserve_windows < 1:
            problems.append(f"preserve_windows must be a positive integer, got {self.preserve_windows!r}")
        if self.preserve_head not in PRESERVE_HEADS:
            problems.append(f"preserve_head must be one of {', '.join(PRESERVE_HEADS)}, got {self.preserve_head!r}")
        if not (isinstance(self.margin, (int, float)) and 0 <= self.margin < 1):
            problems.append(f"--margin must be a probability in [0, 1), got {self.margin}")
        lo = self.precision_log_odds
        if lo is not None and (isinstance(lo, bool) or not isinstance(lo, (int, float)) or not (math.isfinite(lo) and lo >= 0)):
            problems.append(f"precision_log_odds must be a finite number of nats >= 0 (or None: the precision's own), got {lo!r}")
        from memft.objectives import OBJECTIVES, option_problems

        if self.method not in OBJECTIVES:
            problems.append(f"--method must be one of {', '.join(OBJECTIVES)}, got {self.method!r}")
        else:
            problems += option_problems(self.method, self.method_options)
        _check(problems)


@dataclass
class RuntimeConfig:
    """Where the work runs. `auto` picks CUDA when present; dtype `auto` picks bf16 on CUDA with bf16, else fp32."""

    device: str = "auto"
    dtype: str = "auto"

    def __post_init__(self) -> None:
        problems = []
        if self.device not in DEVICES:
            problems.append(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.dtype not in DTYPES:
            problems.append(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        _check(problems)


def to_json(obj: Any) -> dict[str, Any]:
    """A dataclass config as plain JSON-able data (tuples become lists)."""
    return asdict(obj)
