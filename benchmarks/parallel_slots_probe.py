"""Do llama.cpp's parallel slots (one request, many prompts: memft.runtime.certify.check_lora_gguf(parallel=K)) give the
verdicts and probabilities of one record at a time, and how much faster? On the keyed demo adapter written by
deploy_margin_probe.py (/tmp/dw/demo-m0.5), shipped Q4_1, one thread. Figures: results/deploy.json `parallel_slots`.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/parallel_slots_probe.py /tmp/dw/demo-m0.5
"""
import sys, json, tempfile, time
from pathlib import Path
from memft.store.meta import read
from memft.model.base import embedded_gguf_path, load_tokenizer
from memft.prompts.encoding import encode_all
from memft.research.bench.phonebook import phonebook
from memft.runtime.certify import check_lora_gguf, invocation_tokens
from memft.runtime.gguf_export import Shape, write_lora_gguf
folder = sys.argv[1]; n = int(sys.argv[2]) if len(sys.argv) > 2 else 40
meta = read(folder); tok = load_tokenizer("smollm2-135m")
recs = phonebook(n, seed=0)
items = encode_all(recs, tok, "raw", meta.key_prefix)
base = embedded_gguf_path()
with tempfile.TemporaryDirectory() as tmp:
    lora = Path(tmp) / "a.gguf"
    write_lora_gguf(folder, lora, Shape.from_gguf(base), invocation_tokens(folder))
    res = {}
    for par in [1, 4, 8]:
        c = check_lora_gguf(lora, items, tok, base, threads=1, parallel=par)
        res[par] = c
        print(par, c.exact, c.seconds, flush=True)
    for par in [4, 8]:
        d_p = max(abs(a.min_prob - b.min_prob) for a, b in zip(res[1].per_record, res[par].per_record))
        d_g = max(abs(a.min_gap - b.min_gap) for a, b in zip(res[1].per_record, res[par].per_record))
        same = all(a.exact == b.exact and a.first_difference == b.first_difference for a, b in zip(res[1].per_record, res[par].per_record))
        print("parallel", par, "same verdicts", same, "max dp", d_p, "max dgap", d_g, "speedup", res[1].seconds / res[par].seconds, flush=True)
