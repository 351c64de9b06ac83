"""Milliseconds per record of a forward-only pass and of a training pass (forward + backward), for two placements
and two batch sizes, and of the LM head alone (forward + backward at 11 target positions).

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/bench_pass.py 1

Its output on this machine (one thread, before the restricted head was wired into memft.training.loop; "train" here uses the
full head) is results/scale_levers/pass_times.txt.
"""
import time, torch, sys
from memft.model.base import load_base
from memft.research.bench.phonebook import phonebook
from memft.prompts.encoding import encode_all
from memft.config import LoraSettings
from memft.model.peft_lora import attach
from memft.model.forward import Runner
from memft.certify.evaluate import token_table
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv)>1 else 1)
b = load_base('smollm2-135m','cpu','fp32')
items = encode_all(phonebook(256, 7), b.tokenizer, 'raw')
for preset, layers in [("upper", None), ("probe", (26,27,28,29))]:
    lora = LoraSettings(rank=16, preset="upper" if layers is None else "probe", layers=layers)
    pm, place = attach(b.model, lora, seed=0)
    start = min(place["layers"]) if "layers" in place else 20
    print(place.get("layers"), start)
    r = Runner(pm, items, b.tokenizer.pad_token_id, start=start, cache=True)
    params=[p for p in pm.parameters() if p.requires_grad]
    for bs in (32, 8):
        idxs = [list(range(i, i+bs)) for i in range(0, 256, bs)]
        r.logits(list(range(256)))  # fill cache
        for mode in ("fwd_nograd", "train"):
            t0=time.perf_counter(); n=0
            for idx in idxs:
                if mode=="fwd_nograd":
                    with torch.no_grad(): lg,_=r.logits(idx)
                else:
                    lg,bt=r.logits(idx); tab=token_table(lg,bt); loss=tab["loss"].mean(); loss.backward()
                n+=len(idx)
            dt=time.perf_counter()-t0
            print(preset, layers, "bs",bs, mode, f"{dt/n*1000:.1f} ms/record")
        # head-only cost
        h = torch.randn(bs*11, 576)
        W = b.model.get_output_embeddings().weight
        t0=time.perf_counter()
        for _ in range(len(idxs)):
            hh=h.clone().requires_grad_(); lg=(hh@W.T); torch.nn.functional.cross_entropy(lg, torch.zeros(bs*11,dtype=torch.long)).backward()
        print("  head fwd+bwd", f"{(time.perf_counter()-t0)/256*1000:.1f} ms/record")
    pm.unload()
