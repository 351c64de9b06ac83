"""Greedy decoding in llama.cpp through the `xllamacpp` binding (the extra `memft[llamacpp]`, a prebuilt wheel).

xllamacpp runs llama.cpp's own server in-process: `Server(CommonParams)` loads the base GGUF and LoRA GGUFs, and
`handle_completions(request)` answers an OpenAI-style completion request, with `prompt` given as token ids, greedy
at temperature 0, and `n_probs` top log-probabilities per generated token computed by llama.cpp from its own
logits (softmax over the full vocabulary). Nothing here touches torch.

Runtime layer: may import the core only (xllamacpp inside the functions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memft.errors import ConfigError, ModelError

PIN = "xllamacpp==2026.10.11549"  # the extra memft[llamacpp] installs this
N_PROBS = 20  # top log-probabilities asked per position: enough to find a target that lost by a little


@dataclass(frozen=True)
class Step:
    """One decoded position: the token llama.cpp chose, its probability, and the best `N_PROBS` (id, probability)."""

    token: int
    prob: float
    top: tuple[tuple[int, float], ...]

    def prob_of(self, token: int) -> float | None:
        """p(token) at this position; None when it is not among the top N_PROBS (then it is below top[-1])."""
        return next((p for t, p in self.top if t == token), None)


def binding() -> Any:
    try:
        import xllamacpp
    except ImportError:
        raise ConfigError(f"--runtime/--deploy llama.cpp needs the binding xllamacpp: pip install 'memft[llamacpp]' (or {PIN})") from None
    return xllamacpp


class LlamaCpp:
    """A base GGUF with LoRA GGUFs loaded in llama.cpp (CPU, `threads` threads), decoding one prompt at a time.
    Create one only to use it: xllamacpp's server, freed before it answered a request, can wait forever for its
    main loop."""

    def __init__(self, base_gguf: str | Path, loras: list[str | Path] = (), threads: int | None = None, n_ctx: int = 1024,
                 parallel: int = 1):
        x = binding()
        for p in [base_gguf, *loras]:
            if not Path(p).is_file():
                raise ModelError(f"{p}: no such GGUF file; give an existing file (memft export writes them)")
        params = x.CommonParams()
        params.model.path = str(base_gguf)
        params.n_ctx = n_ctx * parallel  # the server splits its context between its slots
        params.n_parallel = parallel
        params.warmup = False
        params.verbosity = -1  # llama.cpp's log lines stay off the user's terminal
        # One thread by default: a 135M model's matrix products are small, and llama.cpp's threads wait for each
        # other by spinning, which costs far more than it gives on a busy machine.
        params.cpuparams.n_threads = params.cpuparams_batch.n_threads = threads or 1
        adapters = []
        for path in loras:
            info = x.CommonAdapterLoraInfo()
            info.path, info.scale = str(path), 1.0
            adapters.append(info)
        params.lora_adapters = adapters
        try:
            self.server = x.Server(params)
        except Exception as e:  # noqa: BLE001 - llama.cpp refuses a file in many ways; the user needs one line
            raise ModelError(f"llama.cpp cannot load {base_gguf} with {[str(p) for p in loras]}: {str(e).splitlines()[0] if str(e) else type(e).__name__}; "
                             "export the adapter for this base (memft export DIR --gguf OUT)") from None

    def _complete(self, prompt: list[int], n_predict: int) -> dict[str, Any]:
        req = {"prompt": [int(t) for t in prompt], "n_predict": n_predict, "temperature": 0.0, "top_k": 1,
               "n_probs": N_PROBS, "cache_prompt": True, "stream": False}
        res = self.server.handle_completions(req)
        if not isinstance(res, dict) or "choices" not in res:
            msg = res.get("error", {}).get("message") if isinstance(res, dict) else res
            raise ModelError(f"llama.cpp refused a completion request: {msg}")
        return res

    def greedy(self, prompt: list[int], max_new: int) -> list[Step]:
        """Greedy decoding from `prompt` (token ids) up to `max_new` tokens or the end-of-sequence token (included)."""
        content = self._complete(prompt, max_new)["choices"][0]["logprobs"]["content"]
        return [_step(c) for c in content]

    def greedy_many(self, prompts: list[list[int]], max_new: int) -> list[list[Step]]:
        """greedy() for several prompts in one request: the server decodes them in its parallel slots, batched."""
        req = {"prompt": [[int(t) for t in p] for p in prompts], "n_predict": max_new, "temperature": 0.0, "top_k": 1,
               "n_probs": N_PROBS, "cache_prompt": False, "stream": False}
        res = self.server.handle_completions(req)
        if not isinstance(res, dict) or "choices" not in res:
            msg = res.get("error", {}).get("message") if isinstance(res, dict) else res
            raise ModelError(f"llama.cpp refused a completion request: {msg}")
        by_index = {c["index"]: c for c in res["choices"]}
        return [[_step(c) for c in by_index[i]["logprobs"]["content"]] for i in range(len(prompts))]

    def next_step(self, prompt: list[int]) -> Step:
        """The distribution after `prompt` (one token decoded): teacher forcing, one position at a time (llama.cpp
        reuses the cached prefix, so each call evaluates one new token)."""
        return _step(self._complete(prompt, 1)["choices"][0]["logprobs"]["content"][0])


def _step(c: dict[str, Any]) -> Step:
    top = tuple((int(t["id"]), math.exp(t["logprob"])) for t in c.get("top_logprobs", ()))
    return Step(int(c["id"]), math.exp(c["logprob"]), top)
