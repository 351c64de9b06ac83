"""How far do llama.cpp's probabilities on the shipped Q4_1 base fall below PyTorch's, for the default (keyed)
write of the demo's 40 phone-book records at margin 0.5 (memft's default) and 0.8 (--deploy llama.cpp's)? This sized
memft.runtime.deploy_write.DEPLOY_MARGIN. Per record: torch min p (certified dtype), llama.cpp min p and min gap.

    PYTHONPATH=src OMP_NUM_THREADS=2 python benchmarks/deploy_margin_probe.py 0.5 0.8   # -> /tmp/dw/probe.json

The figures are copied into results/deploy.json (`margin_probe`).
"""
import json
import shutil
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(2)
from memft import api  # noqa: E402
from memft.config import LoraSettings, TrainConfig  # noqa: E402
from memft.model.base import embedded_gguf_path, load_base  # noqa: E402
from memft.research.bench.phonebook import phonebook  # noqa: E402
from memft.runtime.certify import check_in_llamacpp  # noqa: E402

recs = phonebook(40, seed=0)
base = load_base("smollm2-135m", "cpu", "auto")
out = {}
Path("/tmp/dw").mkdir(exist_ok=True)
for m in [float(x) for x in sys.argv[1:]]:
    d = f"/tmp/dw/demo-m{m}"
    shutil.rmtree(d, ignore_errors=True)
    t = time.perf_counter()
    r = api.write(recs, d, lora=LoraSettings(activation="keyed"), train=TrainConfig(margin=m), base=base)
    ws = time.perf_counter() - t
    chk = check_in_llamacpp(d, recs, base.tokenizer, "raw", embedded_gguf_path(), threads=1)
    tp = {x.key: x.min_prob for x in r.reports}
    rows = [(v.key, round(tp[v.key], 3), round(v.min_prob, 3), round(v.min_gap, 3), v.exact) for v in chk.per_record]
    out[m] = {"write_s": ws, "steps": r.meta.train["steps"], "torch_cert": r.summary["certified"], "exact": chk.exact, "rows": rows, "check_s": chk.seconds}
    print(m, ws, r.meta.train["steps"], r.summary["certified"], chk.exact, chk.seconds, flush=True)
    for row in sorted(rows, key=lambda x: x[3])[:6]:
        print("  ", row, flush=True)
json.dump(out, open("/tmp/dw/probe.json", "w"))
