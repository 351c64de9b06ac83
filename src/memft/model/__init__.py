"""The frozen base and the adapter's arithmetic: loading, batching, forward passes.

  base.py       load the base (the embedded GGUF, a local folder or a named hub model), dtype and device choice
  batching.py   padding and batches of encoded records
  forward.py    Runner: forward passes over records with the frozen-prefix cache below the adapter's first layer
  peft_lora.py  where the LoRA layers go (presets, target modules, the rank check) and attaching them through PEFT
  lora_init.py  the centered initialisation of a fresh adapter's A from the inputs its modules see
  vocab.py      the restricted training head: targets, their neighbours and the competitors checks have seen

Core layer (model): may import errors, config and memft.prompts.
"""
