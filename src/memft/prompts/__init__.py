"""Records in, prompts out: what a record is and how it becomes token ids.

  records.py   the Record type, reading and validating record files (keys, values, duplicates)
  encoding.py  a record as prompt + target token ids under a template; decoding values back
  keyed.py     the invocation sequence of keyed (activated) adapters and where it starts
  parity.py    train/recall parity: the prompt training sees is the prompt recall sends

Core layer (prompts): may import errors and config only.
"""
