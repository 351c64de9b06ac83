"""Deployment runtimes: memft adapters where they run (llama.cpp and Ollama, which wraps it).

  gguf_export.py  the LoRA adapter as llama.cpp's LoRA GGUF, the base GGUF in a chosen type, an Ollama Modelfile
  llamacpp.py     decoding records greedily in llama.cpp (the `xllamacpp` binding, extra `memft[llamacpp]`)
  certify.py      per-record verdicts from llama.cpp's own log-probabilities, and the runtime marker in memft.json

Runtime layer: may import the core and the memory store (torch, gguf and xllamacpp inside the functions that need them).
"""
