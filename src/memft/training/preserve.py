"""The preservation term: keep the base model's next-token predictions on unrelated text while records are written.

An adapter is loaded for every request, so what it does away from its keys matters (issue 15, `memft audit`).
While training, each step adds weight · mean KL(p_base ‖ p_adapted) over a few windows of unrelated text to the
records' loss. The base is frozen, so its predictions on those windows are computed once (adapter disabled) and
kept; the adapted side runs through `forward.Runner`, which caches the hidden states below the lowest adapted
layer, so a step re-runs only the adapted layers and the LM head on the windows.

Two heads (TrainConfig.preserve_head):

- "support" (the default): each window scores only its support U, the union of its positions' top-k tokens under
  the base and the records' target tokens (what training pushes up, so what would leak); the KL is taken between
  the base's and the adapted model's distributions restricted to U and renormalized (`support_kl`), the exact KL
  when U is the whole vocabulary. The LM head then costs |U| rows (a few thousand) instead of the vocabulary
  (49k on SmolLM2), forward and backward, at every step: the head was about half of the term's cost
  (benchmarks/README.md, "Locality, fifth session"). What it does not see: mass moving from U to a token outside it.
- "full": the whole head; the base's distribution at each position is kept as its top-k log-probabilities plus
  one tail bucket (all other tokens), and the KL is taken over those k + 1 buckets (`bucket_kl`). By the
  data-processing inequality this is a lower bound of the full KL, equal to it when the adapted model keeps the
  base's shape inside the tail.

Either way the base's side is kept small: no [positions, vocabulary] base logits (0.8 GB for every 64 windows of
64 tokens on a 49k vocabulary).

Text: by default the docstrings of a fixed list of standard-library modules (`default_text`), a different source
from the audit's held-out windows (CPython's pydoc_data topics), so the audit measures text the term never saw
(checked in the tests: no shared 80-character passage). `--preserve-text FILE` gives any other text.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from memft.prompts.encoding import Encoded
from memft.config import PRESERVE_HEADS
from memft.errors import ConfigError
from memft.model.forward import Runner, head_logits

# Modules whose docstrings make the default text (~180k characters on Python 3.11); all pure standard library.
DOC_MODULES = (
    "argparse", "base64", "bisect", "calendar", "collections", "csv", "dataclasses", "datetime", "decimal", "difflib",
    "email.message", "fractions", "functools", "gettext", "heapq", "inspect", "ipaddress", "json", "logging", "pathlib",
    "pprint", "random", "shlex", "shutil", "statistics", "string", "tarfile", "tempfile", "textwrap", "threading",
    "typing", "unittest.case", "urllib.parse", "uuid", "zipfile",
)
WINDOW_TOKENS = 64  # tokens per preservation window (63 predicted positions)
# Windows whose base predictions are kept; a step uses WINDOWS_PER_STEP of them, in turn. More windows carry the
# term's locality to held-out text better at the same cost per step (256 against 64: benchmarks/README.md,
# "Locality, fifth session"); the price is their base targets, computed once.
POOL_WINDOWS = 256
WINDOWS_PER_STEP = 2
TOP_K = 64  # base log-probabilities kept per position (plus the tail bucket); "support": tokens per position in U


def default_text() -> str:
    """The docstrings of DOC_MODULES (each module's, then its public classes' and functions' in name order)."""
    parts = []
    with warnings.catch_warnings():  # typing.io / typing.re warn when their docstrings are read
        warnings.simplefilter("ignore", DeprecationWarning)
        for name in DOC_MODULES:
            parts += _docstrings(name)
    return "\n\n".join(p for p in parts if p)


def _docstrings(name: str) -> list[str]:
    """Module `name`'s docstring, then those of the public classes and functions it defines, in name order."""
    mod = importlib.import_module(name)
    own = [getattr(mod, a) for a in sorted(vars(mod)) if not a.startswith("_")]
    own = [o for o in own if (inspect.isclass(o) or inspect.isfunction(o)) and getattr(o, "__module__", None) == name]
    return [inspect.getdoc(mod) or ""] + [inspect.getdoc(o) or "" for o in own]


def read_text(path: str) -> str:
    """A UTF-8 text file for --preserve-text; ConfigError naming the file and line otherwise."""
    try:
        data = open(path, "rb").read()
    except OSError as e:
        raise ConfigError(f"--preserve-text {path}: cannot read it ({e.strerror}); give a UTF-8 text file") from None
    try:
        return data.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(f"--preserve-text {path}:{line}: bytes that are not UTF-8 (offset {e.start}); save the file as UTF-8") from None


def windows_of(ids: Sequence[int], window: int = WINDOW_TOKENS, n: int = POOL_WINDOWS, source: str = "the preservation text") -> list[list[int]]:
    """`n` windows of `window` consecutive tokens, evenly spread over the text (consecutive slots when it is short).

    >>> windows_of(list(range(10)), window=2, n=3)
    [[0, 1], [2, 3], [6, 7]]
    """
    slots = len(ids) // window
    if slots == 0:
        raise ConfigError(f"{source} is {len(ids)} tokens long, shorter than one preservation window of {window} tokens; give a longer --preserve-text")
    picks = sorted({s * slots // n for s in range(n)}) if slots > n else list(range(slots))
    return [list(ids[p * window : (p + 1) * window]) for p in picks]


# ---------------------------------------------------------------- pure math


@dataclass
class BaseTargets:
    """The base's next-token distribution at N positions, as top-k buckets plus one tail bucket.

    idx [N, k] token ids of the top-k; logp [N, k] their log-probabilities; log_tail [N] log of the remaining mass.
    """

    idx: torch.Tensor
    logp: torch.Tensor
    log_tail: torch.Tensor


def tail_logsumexp(logp: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """log Σ_{v not in idx} exp(logp_v): logp [N, V], idx [N, k] -> [N] (-inf when idx covers the vocabulary)."""
    return logp.scatter(1, idx, float("-inf")).logsumexp(-1)


def base_targets(logits: torch.Tensor, k: int = TOP_K) -> BaseTargets:
    """Top-k buckets of softmax(logits [N, V]) (k is capped at V)."""
    logp = F.log_softmax(logits.float(), dim=-1)  # [N, V]
    top, idx = logp.topk(min(k, logp.shape[-1]), dim=-1)  # [N, k]
    return BaseTargets(idx=idx, logp=top, log_tail=tail_logsumexp(logp, idx))


def bucket_kl(logits: torch.Tensor, t: BaseTargets) -> torch.Tensor:
    """KL(p_base ‖ q) over the k + 1 buckets of `t` at each position: logits [N, V] (the adapted model's) -> [N] nats.

    Σ_i p_i (log p_i − log q_i) over the top-k tokens, plus p_tail (log p_tail − log q_tail); an empty tail counts 0.
    With k = V this is the exact KL (audit.token_kl).
    """
    logq = F.log_softmax(logits.float(), dim=-1)  # [N, V]
    top = (t.logp.exp() * (t.logp - logq.gather(1, t.idx))).sum(-1)  # [N]
    p_tail = t.log_tail.exp()
    tail = torch.where(p_tail > 0, p_tail * (t.log_tail - tail_logsumexp(logq, t.idx)), torch.zeros_like(p_tail))
    return top + tail


@dataclass
class SupportTargets:
    """The base's next-token distribution at N positions restricted to the token ids `ids` [U] and renormalized
    there: logp [N, U]."""

    ids: torch.Tensor
    logp: torch.Tensor


def support_ids(logits: torch.Tensor, k: int = TOP_K, extra: torch.Tensor | None = None) -> torch.Tensor:
    """The support of logits [N, V]: the union of every position's top-k ids and `extra`, ascending [U].

    >>> support_ids(torch.tensor([[3.0, 0.0, 0.0, 1.0], [0.0, 0.0, 3.0, 1.0]]), k=1, extra=torch.tensor([3])).tolist()
    [0, 2, 3]
    """
    ids = logits.topk(min(k, logits.shape[-1]), dim=-1).indices.unique()  # [U], ascending
    if extra is not None and extra.numel():
        ids = torch.cat([ids, extra.to(ids.device)]).unique()
    return ids


def support_targets(logits: torch.Tensor, ids: torch.Tensor) -> SupportTargets:
    """The base's distribution restricted to the token ids `ids` [U] and renormalized there, from its logits on
    them [N, U] (computed as the adapted side's are, so that the same weights give a KL of exactly 0).

    >>> t = support_targets(torch.log(torch.tensor([[0.5, 0.2], [0.1, 0.7]])), torch.tensor([0, 2]))
    >>> [[round(x, 3) for x in r] for r in t.logp.exp().tolist()]
    [[0.714, 0.286], [0.125, 0.875]]
    """
    return SupportTargets(ids=ids, logp=F.log_softmax(logits.float(), dim=-1))


def support_kl(logits: torch.Tensor, t: SupportTargets) -> torch.Tensor:
    """KL(p_U ‖ q_U) at each position: logits [N, U] (the adapted model's, on t.ids) -> [N] nats, both distributions
    restricted to U and renormalized; the exact KL when U is the whole vocabulary."""
    logq = F.log_softmax(logits.float(), dim=-1)
    return (t.logp.exp() * (t.logp - logq)).sum(-1)


# ---------------------------------------------------------------- the term in training


class Preserver:
    """weight · KL(base ‖ adapted) on windows of unrelated text, for a PEFT `model` whose adapted layers start at `start`.

    The base's targets are computed on the first call (adapter disabled, so an adapter that already holds records,
    as in append, is still pulled towards the base itself). `loss(step)` uses windows `per_step` at a time, in turn.
    `head`: "support" (each window's top-k ids and `extra_ids`, support_kl) or "full" (bucket_kl); see the module.
    """

    def __init__(self, model: Any, windows: Sequence[Sequence[int]], pad_id: int, start: int, weight: float,
                 per_step: int = WINDOWS_PER_STEP, k: int = TOP_K, head: str = "support", extra_ids: Sequence[int] = ()):
        if not hasattr(model, "disable_adapter"):
            raise ConfigError(f"--preserve needs a PEFT model (one with disable_adapter()), got {type(model).__name__}")
        if not windows or any(len(w) < 2 for w in windows):
            raise ConfigError("--preserve: give at least one window of at least 2 tokens")
        if head not in PRESERVE_HEADS:
            raise ConfigError(f"preserve_head must be one of {', '.join(PRESERVE_HEADS)}, got {head!r}")
        # A window as a record: its first token is the prompt, the rest are the targets, so Runner gives the logits
        # of every position that predicts a next token.
        items = [Encoded(key=f"preserve-{i}", prompt=(w[0],), targets=tuple(w[1:])) for i, w in enumerate(windows)]
        self.model, self.weight, self.per_step, self.k = model, float(weight), max(1, min(per_step, len(items))), k
        self.head, self.extra = head, torch.tensor(sorted(set(extra_ids)), dtype=torch.long)
        self.runner = Runner(model, items, pad_id, start=start, cache=True)
        self.targets: dict[int, BaseTargets | SupportTargets] = {}

    @torch.no_grad()
    def _base(self) -> None:
        n = len(self.runner.items)
        with self.model.disable_adapter():
            for s in range(0, n, 8):
                idx = list(range(s, min(s + 8, n)))
                h, batch = self.runner.hidden(idx)  # [N, H]
                for i, hw in zip(idx, h.split(batch.lengths.tolist())):
                    logits = head_logits(self.runner.lm, hw)  # [n, V]
                    if self.head == "full":
                        self.targets[i] = base_targets(logits, self.k)
                    else:
                        ids = support_ids(logits, self.k, self.extra)
                        self.targets[i] = support_targets(head_logits(self.runner.lm, hw, ids), ids)

    def batch(self, step: int) -> list[int]:
        n = len(self.runner.items)
        return [(step * self.per_step + j) % n for j in range(self.per_step)]

    def loss(self, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """(weight · mean bucket KL over the positions of this step's windows, {"preserve_kl": that mean})."""
        if not self.targets:
            self._base()
        idx = self.batch(step)
        h, batch = self.runner.hidden(idx)  # [N, H], windows in idx order
        if self.head == "support":
            kl = torch.cat([support_kl(head_logits(self.runner.lm, hw, self.targets[i].ids), self.targets[i])  # type: ignore[arg-type]
                            for i, hw in zip(idx, h.split(batch.lengths.tolist()))])
        else:
            t = [self.targets[i] for i in idx]
            kl = bucket_kl(head_logits(self.runner.lm, h), BaseTargets(torch.cat([x.idx for x in t]), torch.cat([x.logp for x in t]),  # type: ignore[union-attr]
                                                                      torch.cat([x.log_tail for x in t])))  # type: ignore[union-attr]
        mean = kl.mean()  # every position counts once: summed, divided by the number of positions
        return self.weight * mean, {"preserve_kl": float(mean.detach())}


def target_ids(items: Sequence[Encoded]) -> list[int]:
    """Every target token id of the records `items`, ascending: what the support head always scores."""
    return sorted({t for e in items for t in e.targets})


def from_config(model: Any, tokenizer: Any, train: Any, start: int, items: Sequence[Encoded]) -> Preserver | None:
    """The preservation term a TrainConfig `train` asks for (None when train.preserve is 0), for a PEFT model whose
    adapted layers start at `start`, trained on the records `items` (their targets join every window's support)."""
    return build(model, tokenizer, train.preserve, train.preserve_text, start, train.preserve_head, target_ids(items), train.preserve_windows)


def build(model: Any, tokenizer: Any, weight: float, text_path: str | None, start: int, head: str = "support",
          extra_ids: Sequence[int] = (), windows: int = POOL_WINDOWS) -> Preserver | None:
    """The preservation term of TrainConfig.preserve / preserve_text / preserve_head / preserve_windows for a PEFT
    model (None when weight is 0); `extra_ids`: token ids every window's support holds (the records' targets)."""
    if not weight:
        return None
    from memft.prompts.encoding import text_ids

    source = f"--preserve-text {text_path}" if text_path else "the default preservation text"
    text = read_text(text_path) if text_path else default_text()
    return Preserver(model, windows_of(text_ids(text, tokenizer, source), n=windows, source=source), tokenizer.pad_token_id, start, weight,
                     head=head, extra_ids=extra_ids)
