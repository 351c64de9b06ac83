"""Is every record exact? Teacher-forced statistics, greedy decoding and the per-record verdict.

  metrics.py   pure functions of per-token statistics: certified (argmax and p > margin), stubborn, first failure
  evaluate.py  teacher-forced passes and generation over records; the evaluation of an adapter
  decode.py    batched greedy recall with a KV cache (recovering a folder's values from its weights)

Core layer (certify): may import errors, config, memft.prompts and memft.model.
"""
