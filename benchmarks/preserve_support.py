"""The support head's kept size at the default 256 windows, on the embedded model with 1,000 phone-book records' targets (benchmarks/README.md, "Locality, fifth session").

    OMP_NUM_THREADS=2 python benchmarks/preserve_support.py
"""
import time
from memft.model.base import load_base
from memft.model import peft_lora
from memft.config import LoraSettings, TrainConfig
from memft.prompts.encoding import encode_all
from memft.research.bench.phonebook import phonebook
from memft.training.preserve import from_config
base = load_base("smollm2-135m", "cpu", "auto", seed=0)
items = encode_all(phonebook(1000, seed=0), base.tokenizer)
model, place = peft_lora.attach(base.model, LoraSettings(rank=16, preset="top"), seed=0)
p = from_config(model, base.tokenizer, TrainConfig(preserve=1.0), min(place["layers"]), items)
t0 = time.perf_counter(); p._base(); sec = time.perf_counter() - t0
sizes = [t.ids.numel() for t in p.targets.values()]
mb = sum(t.logp.numel() * t.logp.element_size() + t.ids.numel() * 8 for t in p.targets.values()) / 2**20
from pathlib import Path
cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), "?")
print(dict(cpu=cpu, dtype=base.dtype, windows=len(sizes), support_min=min(sizes), support_mean=round(sum(sizes)/len(sizes)), support_max=max(sizes), kept_mb=round(mb,1), base_pass_s=round(sec,1)))
