"""The memory store: what an adapter folder holds, and changing it.

  ledger.py   the ledger of an adapter folder (keys, salted digests, history); recovering its records from its weights
  rewrite.py  append / update / forget: train the same LoRA further, swap the folder only when all is certified

Memory-store layer: may import the core and the memory store (ledger, rewrite); never the checks, research,
integrations or the CLI. (The core's facade, memft.api, writes the ledger: the one import that runs the other way.)
"""
