"""The checks: is the memory safe to ship?

  deploy.py      the deployment re-check: merged weights, other precisions, plain PEFT (plaincheck.py, in a subprocess)
  plaincheck.py  `python -m memft.checks.plaincheck`: plain transformers + peft, nothing from memft
  sampling.py    exact recall odds under temperature / top-k / top-p, and sampled counts
  audit.py       the side-effect audit: KL / perplexity on held-out text, with leaks.py, the leak probe

Checks layer: may import the core, memft.memory and the other checks; never the facade (memft.api), research,
integrations or the CLI.
"""
