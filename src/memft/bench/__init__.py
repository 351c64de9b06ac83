"""Benchmark data generators: pure functions of (config, tokenizer, seed) -> records."""
