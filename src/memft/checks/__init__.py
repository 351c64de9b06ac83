"""The checks: is the memory safe to ship?

  deploy.py      the deployment re-check: merged weights, other precisions, plain PEFT (plaincheck.py, in a subprocess)
  plaincheck.py  `python -m memft.checks.plaincheck`: plain transformers + peft, nothing from memft
  sampling.py    exact recall odds under temperature / top-k / top-p, and sampled counts
  audit.py       the side-effect audit: KL / perplexity on held-out text, with leaks.py, the leak probe

Checks layer: may import the core, the memory store and the other checks (and the stress benchmark's default text,
the audit's held-out text); never research, integrations or the CLI.
"""
