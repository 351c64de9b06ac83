"""MemFT inside the Hugging Face ecosystem: `transformers.Trainer` and TRL's `SFTTrainer`.

- `features` + `Collator`: memft's own token ids as Trainer rows (labels -100 on the prompt), so a Trainer trains on
  exactly the ids that memft recall feeds (prompt) and expects (value ids + eos).
- `MemFTLoss`: any memft objective as `Trainer(compute_loss_func=MemFTLoss("memft-ot"))`.
- `CertificationStop`: a `TrainerCallback` that stops training once every record is certified (with a margin).
- `sft_dataset` + `check_trl_parity`: the same ids for TRL's `SFTTrainer`, and a check of whether TRL's own
  prompt/completion tokenisation would give them.

Where they live: trainer.py (rows, the loss and the stopping callback, for transformers.Trainer) and trl.py (TRL's
SFTTrainer); this package re-exports their public names: `from memft.integrations import MemFTLoss` and the rest.

What the installed sources do, and this module relies on (transformers 5.24 `trainer.py`, TRL 1.16 `sft_trainer.py`):
- `Trainer.compute_loss` pops `labels`, runs `model(**inputs)` without them and calls
  `compute_loss_func(outputs, labels, num_items_in_batch=...)`: the logits [B, T, V] and labels [B, T] come unshifted,
  so the loss shifts them (logits at t predict labels[t + 1]).
- `Trainer._get_num_items_in_batch` counts `labels[..., 1:] != -100` over every micro-batch of one optimizer step,
  and `Trainer.training_step` does not divide the loss by `gradient_accumulation_steps` when `compute_loss_func` is
  set: the loss must already be normalised over the whole accumulated batch (see `MemFTLoss`).
- `Trainer.compute_loss_func` receives no `input_ids` and Trainer drops extra columns, so records are told apart by
  their labels (see `MemFTLoss`); every callback event gets `model=` (the model being trained).
- `SFTTrainer._prepare_dataset` treats a dataset with an `input_ids` column as pre-tokenized: it adds no eos and
  keeps a `labels` column as is. Without `labels` it builds them from `completion_mask` only when
  `SFTConfig.completion_only_loss` is True, and its default (None) means False for a dataset without
  `prompt`/`completion` columns, i.e. the prompt would be trained too; so `sft_dataset` ships the labels.
- A prompt/completion text dataset is tokenized by TRL as tokenizer(prompt) and tokenizer(prompt + completion + eos
  text) jointly, the completion starting where the two diverge; conversational rows go through the chat template,
  which renders the assistant turn with its own end-of-turn tokens. `check_trl_parity` runs that code and compares.

Defaults that differ from memft's own loop (memft.training.loop): Trainer clips gradients at max_grad_norm=1.0 (memft does
not; with max_grad_norm=0, a constant lr and full batches, Trainer + MemFTLoss certifies at the very step memft.training.loop
does, see the tests) and decays the lr linearly; TRL's SFTConfig turns on bf16 autocast and activation checkpointing
unless told otherwise (bf16=False, activation_checkpointing=False), and bf16 training logits are not the fp32 ones
that certification measures.

Integrations layer: may import the core only.
"""

from memft.integrations.trainer import IGNORE, CertificationStop, Collator, MemFTLoss, features, items_from_rows, target_tokens
from memft.integrations.trl import check_trl_parity, sft_dataset, trl_prepare

__all__ = ["IGNORE", "CertificationStop", "Collator", "MemFTLoss", "check_trl_parity", "features", "items_from_rows", "sft_dataset",
           "target_tokens", "trl_prepare"]
