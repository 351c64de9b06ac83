"""Changing what an adapter holds, without losing what it holds.

  rewrite.py  append / update / forget: recover the held records from the weights (memft.store.ledger), train the
              same LoRA further, swap the folder only when all is certified

Memory layer: may import the core (and itself); never the facade (memft.api), the checks, research, integrations or
the CLI.
"""
