"""MemFT with TRL's `SFTTrainer`: a pre-tokenized dataset that trains exactly memft's ids (`sft_dataset`), TRL's own
dataset preparation run without a trainer (`trl_prepare`), and a check of whether TRL's prompt/completion
tokenisation would give memft's ids (`check_trl_parity`).

Integrations layer: may import the core only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from memft.errors import RecordsError
from memft.integrations.trainer import IGNORE, features
from memft.prompts.records import Record


def sft_dataset(records: Sequence[Record], tokenizer: Any, template: str = "raw", invocation: str = "") -> Any:
    """A pre-tokenized datasets.Dataset for TRL's SFTTrainer that trains exactly memft's ids, completion only.

    Columns: input_ids (prompt + value ids + eos; TRL adds no eos to a pre-tokenized dataset), completion_mask
    (0 on the prompt, 1 on the targets) and labels (-100 on the prompt). TRL keeps a `labels` column as is, so the
    loss covers the targets only whatever SFTConfig.completion_only_loss says.
    """
    from datasets import Dataset

    rows = features(records, tokenizer, template, invocation)
    return Dataset.from_list(
        [{"input_ids": r["input_ids"], "completion_mask": [int(y != IGNORE) for y in r["labels"]], "labels": r["labels"]} for r in rows]
    )


def trl_prepare(dataset: Any, tokenizer: Any, completion_only_loss: bool = True) -> Any:
    """Run TRL's own SFTTrainer dataset preparation (tokenisation, eos, labels) without a model or a trainer.

    Calls SFTTrainer._prepare_dataset (TRL 1.16) with the few trainer attributes it reads, so what comes back is
    what an SFTTrainer with completion_only_loss would train on (no truncation, no shuffling, no packing).
    """
    from types import SimpleNamespace

    import datasets
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(output_dir="trl-parity", max_length=None, report_to=[], use_cpu=True, bf16=False, activation_checkpointing=False)
    trainer = SimpleNamespace(_tokenizer=tokenizer, completion_only_loss=completion_only_loss, chat_template=None)
    bars = not datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        return SFTTrainer._prepare_dataset(trainer, dataset, tokenizer, args, False, None, "parity")
    finally:
        if bars:
            datasets.enable_progress_bars()


def _show(ids: Sequence[int], tokenizer: Any, n: int = 6) -> str:
    toks = [tokenizer.decode([i]) for i in ids[:n]]
    return repr(toks)[:-1] + (", ...]" if len(ids) > n else "]")


def check_trl_parity(records: Sequence[Record], tokenizer: Any, template: str = "raw", invocation: str = "") -> None:
    """Raise RecordsError naming every record whose prompt/completion form, tokenized by TRL, would train other ids
    than memft recall feeds and expects; return None when TRL would train exactly memft's ids.

    The prompt/completion form is {"prompt": key, "completion": value} (template "raw") or the user/assistant
    conversation (template "chat"). Differences come from TRL tokenizing key + value (+ eos text) jointly, so
    tokens can merge across the boundary, and from chat templates that close the assistant turn with tokens memft
    does not train (memft's targets end at eos). Records with token-id values have no text form and are reported.
    The fix is always the same: train on sft_dataset(records, tokenizer, template), which carries memft's own ids.
    """
    from datasets import Dataset

    ours = features(records, tokenizer, template, invocation)
    problems: list[str] = []
    text = [(r, f) for r, f in zip(records, ours) if r.value is not None]
    problems += [f"record {r.key!r}: its value is token ids, which TRL's prompt/completion text path cannot express" for r in records if r.value is None]
    if text:
        if template == "chat":
            rows = [{"prompt": [{"role": "user", "content": invocation + r.key}], "completion": [{"role": "assistant", "content": r.value}]}
                    for r, _ in text]
        else:
            rows = [{"prompt": invocation + r.key, "completion": r.value} for r, _ in text]
        theirs = trl_prepare(Dataset.from_list(rows), tokenizer)
        for (r, f), t in zip(text, theirs):
            if list(t["input_ids"]) == f["input_ids"] and list(t["labels"]) == f["labels"]:
                continue
            mp = sum(y == IGNORE for y in f["labels"])
            tp = next((i for i, y in enumerate(t["labels"]) if y != IGNORE), len(t["labels"]))
            problems.append(
                f"record {r.key!r}: TRL trains {_show(t['input_ids'][tp:], tokenizer)} after {tp} prompt tokens, memft "
                f"trains {_show(f['input_ids'][mp:], tokenizer)} after {mp}"
            )
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise RecordsError(
            f"{len(problems)} record(s) would train differently with TRL's prompt/completion tokenisation: {shown}. "
            "Train on memft.integrations.sft_dataset(records, tokenizer), which carries memft's own token ids"
        )
