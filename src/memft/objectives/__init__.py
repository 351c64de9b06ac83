"""Training objectives: pure functions of per-token losses -> (loss, stats), picked by name.

Signature of every objective:  fn(tokens: Tokens, state: dict, **options) -> (loss | None, stats)
`tokens` covers every target token of the step's batch; `state` persists across steps (for objectives
that track anchors or curricula); a loss of None means "no update this step" (nothing to learn).
Losses are sums over tokens divided by the number (or total weight) of tokens, never averaged twice.

Notation: N target tokens in the step, L_t [N] their cross-entropy, p_t = exp(-L_t) the target probability.
Weighted objectives return L = sum_t w_t * L_t / (sum_t w_t + 1e-8), with w_t computed from the DETACHED losses
(no gradient flows through the weights). Every objective reports `trained_tokens` (tokens with w_t > 0) and, where
there are weights, `weight_sum`.

Objectives and their options (defaults):
- sft              mean of L_t. No options.
- memft-ot         only-threshold (the paper's OT): w_t = 1 while p_t <= threshold, else `floor`; with floor = 0
                   and no such token the step is skipped (None), or with fallback="sft" trained as plain SFT (the
                   reference code). Options: threshold=0.5, margin=None, hysteresis=False, floor=0.0,
                   fallback="skip". The defaults are exactly the paper's OT.
- memft-ot-margin  memft-ot with margin=0.7, hysteresis=True, floor=0.05 (threshold=0.5): a failing token
                   (p_t <= 0.5) is trained until p_t > 0.7, passed tokens keep a small weight.
- memft-sw         spatial window from each record's first argmax error, the reference code's rule (rule=
                   "reference"). Options: s=10, window=50, tau=20, floor=0.01, patience=3, grow=0.5,
                   max_window_factor=4, rule="reference", curriculum=False, seed=0, ratios=(0.2, 0.4, 0.6, 0.8, 1.0),
                   boundaries=None, stage_epochs=None. window=None turns the spatial part off (w_t = 1), which with
                   curriculum=True is the temporal curriculum alone (memft.objectives.curriculum).
- memft-sw-v01     memft-sw with rule="v01", memft 0.1's window (kept pending a measurement against the reference).
- memft-sw-curriculum  memft-sw with curriculum=True (same options).
- memft-sw-phonebook   the paper's PhoneBook MemFT-SW: curriculum over records x the paper's OT, no spatial window.
                   Options: threshold=0.5, fallback="skip", curriculum=True, seed, ratios, boundaries, stage_epochs.
- focal            focal loss (Lin et al. 2017): mean of (1 - p_t)^gamma * L_t, gradient through p_t. gamma=2.

`option_problems(name, options)` lists every unknown or invalid option at once (for validation up front); each
objective also raises ConfigError with that list when called with bad options.

Where they live (one module per objective, the registry apart):
- registry.py   OBJECTIVES by name, register / register_variant, option defaults and problems, revisions, stages
- common.py     the weighted mean (EPS) and the option-value checks every objective uses
- sft.py        sft; unlikelihood, the forgetting loss
- ot.py         memft-ot, memft-ot-margin
- sw.py         memft-sw, memft-sw-v01, memft-sw-curriculum
- phonebook.py  memft-sw-phonebook
- focal.py      focal
This package re-exports their public names: `from memft.objectives import get, OBJECTIVES, Tokens` and the rest.

Core layer: may import other core modules only; the memory store, checks, research tools, integrations and the CLI build on it.
"""

from memft.objectives.curriculum import RATIOS, stage_starts  # noqa: F401  (stage_starts: part of this package's interface)
from memft.objectives.common import EPS
from memft.objectives.registry import (
    CHECKS, OBJECTIVES, REVISIONS, Tokens, get, option_defaults, option_problems, register, register_variant, revision, stage_records,
)

# Imported in this order so that OBJECTIVES lists the objectives as before (sft, memft-ot, ..., focal): each module
# registers its objectives when it is imported.
from memft.objectives.sft import sft, unlikelihood  # noqa: E402
from memft.objectives.ot import FALLBACKS, memft_ot  # noqa: E402
from memft.objectives.sw import memft_sw  # noqa: E402
from memft.objectives.phonebook import memft_sw_phonebook  # noqa: E402
from memft.objectives.focal import focal  # noqa: E402

__all__ = [
    "CHECKS", "EPS", "FALLBACKS", "OBJECTIVES", "RATIOS", "REVISIONS", "Tokens", "focal", "get", "memft_ot", "memft_sw",
    "memft_sw_phonebook", "option_defaults", "option_problems", "register", "register_variant", "revision", "sft", "stage_records",
    "stage_starts", "unlikelihood",
]
