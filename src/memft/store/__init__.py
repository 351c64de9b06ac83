"""The adapter folder on disk: its files, its ledger, saving and loading it safely.

  folders.py   locking, crash-safe swaps, consistent reads, path resolution
  safejson.py  JSON written atomically, duplicate fields refused
  meta.py      memft.json: the typed record of how an adapter was written and certified
  digests.py   salted digests of values (the ledger holds no value)
  ledger.py    ledger.json: keys, digests, history; recovering records from the weights
  adapters.py  saving and opening the PEFT files with their fingerprints
  saving.py    save_fit: a trained Fit -> a complete folder (weights, memft.json, ledger, README)
  loading.py   load_adapter: a folder -> Loaded (base + adapter + metadata), checked on open

Core layer (store): may import errors, config and every other core package (prompts, model, certify, objectives,
training); never memory, checks, runtime, research, integrations, the facade (memft.api) or the CLI.
"""
