"""Writing for a runtime: `memft write/append/forget ... --deploy llama.cpp` gives an adapter that is exact in
llama.cpp on a chosen base GGUF, proven by llama.cpp before it is saved.

How (measured in benchmarks/bench_deploy.py; the README's "llama.cpp" section has the figures):
1. torch training with a margin (every target's p above DEPLOY_MARGIN, not memft's usual 0.5), because llama.cpp's
   arithmetic on a quantised base (8-bit activations, f16 KV cache) moves probabilities by more than 0.5 leaves;
2. the trained LoRA exported to a temporary LoRA GGUF and every record decoded greedily in llama.cpp (runtime_rounds);
3. records llama.cpp lost get a higher margin of their own (raised(): halfway to 1) and training continues, from the
   same weights at RETRAIN_LR x the rate, only as long as the step budget lasts; then 2 again, at most MAX_ROUNDS times.
The certificate (memft.runtime.certify.RuntimeCertificate) and the target (`deploy` in memft.json: runtime, base file
name and sha256, the rounds) are saved with the adapter, in the same atomic swap; the certificate only when every
record came back exactly from the weights being saved.

Runtime layer: may import the core and the memory store (torch and xllamacpp inside the functions).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memft.errors import ConfigError

RUNTIMES = ("llama.cpp",)  # what --deploy accepts
ENTRY = "deploy"  # memft.json's top-level entry naming the target runtime and base file (Target.to_json + rounds)
# The torch margin a deploy write trains to (p of every target above it; memft's default is 0.5). Sized from the
# demo in llama.cpp on the shipped Q4_1 base: targets certified at p ~0.8 in torch lost there (README, "llama.cpp").
DEPLOY_MARGIN = 0.8
MAX_ROUNDS = 4  # llama.cpp checks of the whole record set, the last one final
RETRAIN_LR = 0.3  # continuation rounds train at this multiple of the write's rate: a fresh AdamW on certified weights
#                   moves every coordinate by about the rate at its first steps


@dataclass(frozen=True)
class Target:
    """The runtime and base file an adapter is written for."""

    runtime: str
    base_gguf: Path
    base_sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "base_gguf": self.base_gguf.name, "base_sha256": self.base_sha256}


def target(deploy: str | None, base_gguf: Path | None, spec: str) -> Target | None:
    """--deploy / --base-gguf checked before any work (one-line ConfigError) -> the Target, or None without --deploy.
    Default base: the embedded model's shipped Q4_1 GGUF as is, or the .gguf file the base was given as."""
    if deploy is None:
        if base_gguf is not None:
            raise ConfigError("--base-gguf needs --deploy llama.cpp (the base file names the runtime's arithmetic to write for)")
        return None
    if deploy not in RUNTIMES:
        raise ConfigError(f"--deploy {deploy!r}: memft can write for {', '.join(RUNTIMES)} (vLLM gets static checks only: "
                          "`memft verify DIR RECORDS --deploy`)")
    from memft.runtime.certify import default_base_gguf, sha256_file
    from memft.runtime.gguf_export import Shape
    from memft.runtime.llamacpp import binding

    binding()  # the extra memft[llamacpp] installed, else a one-line error before any training
    path = Path(base_gguf) if base_gguf is not None else default_base_gguf(spec)
    if not path.is_file():
        raise ConfigError(f"--base-gguf {path}: no such file; give the base GGUF llama.cpp will run (memft export DIR --gguf A "
                          "--base-gguf B writes one)")
    Shape.from_gguf(path)  # a file that is not a GGUF is refused here (ConfigError), not after training
    return Target(RUNTIMES[0], path, sha256_file(path))


def raised(margin: float) -> float:
    """The next margin of a record llama.cpp lost: halfway from its margin to 1.

    >>> raised(0.8), raised(0.9)
    (0.9, 0.95)
    """
    return round((1.0 + margin) / 2, 6)


def deploy_config(cfg: Any) -> Any:
    """The TrainConfig of a deploy write: its margin at least DEPLOY_MARGIN."""
    return dataclasses.replace(cfg, margin=max(cfg.margin, DEPLOY_MARGIN))


@dataclass
class Round:
    """One llama.cpp check of the whole record set, and the training it led to."""

    exact: int
    records: int
    min_gap: float
    check_seconds: float
    raised: int = 0  # records whose margin was raised after this check
    steps: int = 0  # training steps that followed
    train_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Outcome:
    """What the rounds ended with: the last check (None: the weights were never exact in torch, so never checked),
    the sha256 of the safetensors that check exported (the weights a certificate vouches for), and the rounds."""

    check: Any  # memft.runtime.certify.RuntimeCheck | None
    adapter_sha256: str | None
    rounds: list[Round]
    margins: dict[int, float]
    target: Target

    @property
    def all_exact(self) -> bool:
        return self.check is not None and self.check.all_exact

    def entry(self, t: Target, margin: float) -> dict[str, Any]:
        """memft.json's `deploy` entry."""
        return {**t.to_json(), "margin": margin, "raised_margins": len(self.margins), "rounds": [r.to_json() for r in self.rounds],
                "exact": None if self.check is None else self.check.exact, "records": None if self.check is None else self.check.records}

    def certificate(self) -> dict[str, Any] | None:
        """The RuntimeCertificate as memft.json keeps it, when every record came back exactly; else None."""
        from memft.runtime.certify import RuntimeCertificate

        c = self.check
        if c is None or not c.all_exact or self.adapter_sha256 is None:
            return None
        cert = RuntimeCertificate(c.runtime, c.binding, c.base_gguf, c.base_sha256, self.adapter_sha256, c.records, c.min_prob, c.min_gap,
                                  dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
        return dataclasses.asdict(cert)


def check_model(model: Any, items: Sequence[Any], tokenizer: Any, t: Target, invocation: list[int] | None,
                on_record: Callable[[int, int, Any], None] | None = None) -> tuple[Any, str]:
    """The PEFT model's adapter, saved as PEFT saves it and exported to a temporary LoRA GGUF, decoded for every
    record in llama.cpp -> (RuntimeCheck, sha256 of the adapter_model.safetensors exported)."""
    from memft.runtime.certify import check_lora_gguf, sha256_file
    from memft.runtime.gguf_export import Shape, write_lora_gguf

    with tempfile.TemporaryDirectory(prefix="memft-deploy-") as tmp:
        peft_dir = Path(tmp) / "peft"
        model.save_pretrained(peft_dir, save_embedding_layers=False)
        lora = Path(tmp) / "adapter.gguf"
        write_lora_gguf(peft_dir, lora, Shape.from_gguf(t.base_gguf), invocation)
        sha = sha256_file(peft_dir / "adapter_model.safetensors")
        return check_lora_gguf(lora, items, tokenizer, t.base_gguf, on_record=on_record), sha


def lost(check: Any, min_gap: float = 0.0) -> list[int]:
    """Indices of the records llama.cpp did not give back with a top-2 gap above `min_gap` (0: exact greedy decoding);
    records it cannot score (a target inside a UTF-8 character) are left out: more training cannot prove them."""
    return [i for i, v in enumerate(check.per_record) if v.scored and (not v.exact or v.min_gap <= min_gap)]


def runtime_rounds(model: Any, items: Sequence[Any], tokenizer: Any, t: Target, invocation: list[int] | None, margin: float,
                   retrain: Callable[[dict[int, float]], tuple[int, float, bool] | None], min_gap: float = 0.0,
                   max_rounds: int = MAX_ROUNDS, on_round: Callable[[Round], None] | None = None,
                   on_record: Callable[[int, int, Any], None] | None = None) -> Outcome:
    """Check in llama.cpp; raise the margins of the records it lost; `retrain(margins)` trains further (-> (steps,
    seconds, every record still certified in torch), or None: no budget left, nothing trained); repeat. The last check
    is always of the final weights. `items`: the records to hold, in the order training indexes them. A record counts
    as lost unless exact with a gap above `min_gap`."""
    margins: dict[int, float] = {}
    rounds: list[Round] = []
    certified = True
    while True:
        chk, sha = check_model(model, items, tokenizer, t, invocation, on_record)
        bad = lost(chk, min_gap)
        r = Round(chk.exact, chk.records, chk.min_gap, chk.seconds)
        rounds.append(r)
        if not bad or len(rounds) >= max_rounds or not certified:
            break
        wanted = margins | {i: raised(margins.get(i, margin)) for i in bad}
        done = retrain(dict(wanted))
        if done is None:  # nothing trained: the margins stay as they were
            break
        margins = wanted
        r.raised, r.steps, r.train_seconds, certified = len(bad), done[0], round(done[1], 3), done[2]
        if on_round is not None:
            on_round(r)
    if on_round is not None:
        on_round(rounds[-1])
    return Outcome(chk, sha, rounds, margins, t)


def continued(cfg: Any, used_steps: int, used_seconds: float) -> Any | None:
    """The TrainConfig of a continuation round: the rest of the step and time budget at RETRAIN_LR x the rate; None
    when nothing is left."""
    steps = cfg.max_steps - used_steps
    secs = None if cfg.max_seconds is None else cfg.max_seconds - used_seconds
    if steps <= 0 or (secs is not None and secs <= 0):
        return None
    return dataclasses.replace(cfg, max_steps=steps, max_seconds=secs, lr=cfg.lr * RETRAIN_LR)


def merged(first: Any, later: Sequence[Any]) -> Any:
    """One TrainResult for a write trained in rounds: counts and seconds summed, certified_at and history over the
    whole run, the last round's final statistics."""
    if not later:
        return first
    steps, history, certified_at = first.steps, list(first.history), None
    for res in later:
        history += [{**row, "step": row["step"] + steps} for row in res.history]
        if res.certified_at is not None:
            certified_at = steps + res.certified_at
        steps += res.steps
    every = [first, *later]
    return dataclasses.replace(later[-1], steps=steps, certified_at=certified_at, loss_init=first.loss_init, history=history,
                               seconds=sum(r.seconds for r in every), trained=sum(r.trained for r in every),
                               checked=sum(r.checked for r in every), tokens=sum(r.tokens for r in every))


# ---------------------------------------------------------------- memft write --deploy


def write(records: Sequence[Any], out: str | Path, t: Target, model: str = "smollm2-135m", lora: Any = None, train: Any = None,
          runtime: Any = None, base: Any = None, on_step: Callable[[dict[str, float]], None] | None = None,
          extra: dict[str, Any] | None = None, min_gap: float = 0.0, on_round: Callable[[Round], None] | None = None,
          on_record: Callable[[int, int, Any], None] | None = None) -> tuple[Any, Outcome]:
    """api.write for a runtime target: train with DEPLOY_MARGIN, prove every record in llama.cpp, retrain what it
    lost, save (with the certificate when all came back exactly) -> (api.WriteResult, Outcome). As api.write, the
    adapter is saved in either case; `result.all_certified and outcome.all_exact` says whether it is exact where it runs."""
    from memft.store import adapters, folders
    from memft.store.saving import save_fit
    from memft.training.fit import fit, prepare, stop_on_divergence
    from memft.training import preserve
    from memft.config import LoraSettings, RuntimeConfig, TrainConfig, write_activation
    from memft.certify.evaluate import evaluate
    from memft.prompts.keyed import invocation_ids
    from memft.certify.metrics import summarize
    from memft.model.base import load_base
    from memft.training.loop import train as train_loop

    train, runtime = deploy_config(train or TrainConfig()), runtime or RuntimeConfig()
    lora = lora or LoraSettings(activation=write_activation(None, train.preserve))
    out = folders.check_location(out)
    adapters.check_out_dir(out)
    own_base = base is None
    base = base or load_base(model, runtime.device, runtime.dtype, seed=train.seed)
    items = prepare(records, base, lora, train)
    invocation = list(invocation_ids(lora.key_prefix, base.tokenizer)) if lora.key_prefix else None
    with folders.locked(out):
        adapters.check_out_dir(out)
        f = fit(records, base, lora, train, stop_on_divergence(on_step), generate="divergence", items=items)
        try:
            first, later = f.train, []
            start = min(f.placement["layers"])
            keep = preserve.from_config(f.model, base.tokenizer, train, start, items)

            def retrain(margins: dict[int, float]) -> tuple[int, float, bool] | None:
                nonlocal f
                done = merged(first, later)
                cfg = continued(train, done.steps, done.seconds)
                if cfg is None:
                    return None
                res = train_loop(f.model, items, base.tokenizer.pad_token_id, cfg, start, stop_on_divergence(on_step),
                                 preserve=keep, margins=margins)
                later.append(res)
                reports = evaluate(f.model, base.tokenizer, items, generate="divergence", batch_size=train.batch_size, stats=res.final)
                f = dataclasses.replace(f, reports=reports, summary=summarize(reports), train=merged(first, later))
                return res.steps, res.seconds, f.summary["certified"] == 1.0

            if f.summary["certified"] == 1.0:
                outcome = runtime_rounds(f.model, items, base.tokenizer, t, invocation, train.margin, retrain, min_gap,
                                         on_round=on_round, on_record=on_record)
            else:  # not exact in torch: llama.cpp has nothing to confirm
                outcome = Outcome(None, None, [], {}, t)
            entry = deploy_extra(outcome, t, train.margin, f.summary["certified"] == 1.0)
            result = save_fit(f, records, base, lora, train, out, extra={**(extra or {}), **entry})
            _check_saved(out, outcome)
        finally:
            if not own_base:
                f.model.unload()
    return result, outcome


def _check_saved(folder: Path, outcome: Outcome) -> None:
    """The saved weights are the ones llama.cpp checked (PEFT saves the same tensors the same way)."""
    from memft.errors import AdapterError
    from memft.runtime.certify import sha256_file

    if outcome.adapter_sha256 is not None and sha256_file(Path(folder) / "adapter_model.safetensors") != outcome.adapter_sha256:
        raise AdapterError(f"{folder}: the saved weights differ from those llama.cpp checked; run `memft verify {folder} RECORDS "
                           "--runtime llama.cpp` before shipping it")


def summary_line(outcome: Outcome) -> str:
    """One line: how the adapter did in the runtime."""
    t = outcome.target
    if outcome.check is None:
        return f"llama.cpp: not checked (the records are not all certified in PyTorch); no certificate for {t.base_gguf.name}"
    c, n = outcome.check, len(outcome.rounds)
    if c.all_exact:
        return (f"llama.cpp: {c.exact}/{c.records} records exact on {t.base_gguf.name} (min gap {c.min_gap:+.3f}) after {n} "
                f"check{'s' if n > 1 else ''}; certificate kept in memft.json")
    return (f"llama.cpp: only {c.exact}/{c.records} records exact on {t.base_gguf.name} after {n} check{'s' if n > 1 else ''} "
            "and the training budget; no certificate (give more --max-steps or --time-limit)")


# ---------------------------------------------------------------- memft append/forget --deploy


@dataclass
class ForRuntime:
    """What memft.memory.rewrite (append, forget) calls to write for a runtime; the memory store does not import
    this layer, so the caller hands it over."""

    target: Target
    on_round: Callable[[Round], None] | None = None
    on_record: Callable[[int, int, Any], None] | None = None

    def config(self, cfg: Any) -> Any:
        return deploy_config(cfg)

    def extra(self, outcome: Outcome, margin: float) -> dict[str, Any]:
        return deploy_extra(outcome, self.target, margin)

    def rewrite_rounds(self, model: Any, items: Sequence[Any], gone: Sequence[Any], tokenizer: Any, cfg: Any, start: int, keep: Any,
                       first: Any, invocation: list[int] | None,
                       on_step: Callable[[dict[str, float]], None] | None = None) -> tuple[Outcome, Any, list[Any] | None, list[str]]:
        return rewrite_rounds(model, items, gone, tokenizer, cfg, start, keep, first, self.target, invocation, on_step,
                              self.on_round, self.on_record)


def deploy_extra(outcome: Outcome, t: Target, margin: float, exact_in_torch: bool = True) -> dict[str, Any]:
    """memft.json's entries for an adapter written for `t`: `deploy`, and `runtime` (the certificate) when earned:
    every record exact in llama.cpp, and certified in torch."""
    from memft.runtime.certify import CERTIFICATE

    extra = {ENTRY: outcome.entry(t, margin)}
    cert = outcome.certificate() if exact_in_torch else None
    if cert is not None:
        extra[CERTIFICATE] = cert
    return extra


def rewrite_rounds(model: Any, items: Sequence[Any], gone: Sequence[Any], tokenizer: Any, cfg: Any, start: int, keep: Any,
                   first: Any, t: Target, invocation: list[int] | None, on_step: Callable[[dict[str, float]], None] | None = None,
                   on_round: Callable[[Round], None] | None = None,
                   on_record: Callable[[int, int, Any], None] | None = None) -> tuple[Outcome, Any, list[Any] | None, list[str]]:
    """runtime_rounds for a rewrite (memft.memory.rewrite): `items` to hold, `gone` to keep forgotten, `first` the
    rewrite's TrainResult -> (outcome, the merged TrainResult, reports of `items` after more training (None: none),
    forgotten keys greedy recall gives back)."""
    from memft.training.fit import stop_on_divergence
    from memft.certify.evaluate import evaluate, greedy
    from memft.certify.metrics import free_run_compare, summarize
    from memft.training.loop import train as train_loop

    later: list[Any] = []
    state: dict[str, Any] = {"reports": None, "still": []}

    def retrain(margins: dict[int, float]) -> tuple[int, float, bool] | None:
        done = merged(first, later)
        c = continued(cfg, done.steps, done.seconds)
        if c is None:
            return None
        res = train_loop(model, list(items) + list(gone), tokenizer.pad_token_id, c, start, stop_on_divergence(on_step),
                         forget=range(len(items), len(items) + len(gone)), preserve=keep, margins=margins)
        later.append(res)
        final = {i: st for i, st in res.final.items() if i < len(items)}
        state["reports"] = evaluate(model, tokenizer, items, generate="divergence", batch_size=cfg.batch_size, stats=final)
        gens = greedy(model, gone, tokenizer) if gone else []
        state["still"] = [e.key for e, g in zip(gone, gens) if free_run_compare(g, e.targets)[0]]
        return res.steps, res.seconds, summarize(state["reports"])["certified"] == 1.0 and not state["still"]

    outcome = runtime_rounds(model, items, tokenizer, t, invocation, cfg.margin, retrain, on_round=on_round, on_record=on_record)
    return outcome, merged(first, later), state["reports"], state["still"]
