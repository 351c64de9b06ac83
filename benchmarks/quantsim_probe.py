"""Does simulating llama.cpp's q8 activation rounding in PyTorch (memft.runtime.quantsim) predict which demo records
llama.cpp on the shipped Q4_1 base loses? Per record: the smallest gap p(target) - p(best other) in torch fp32 on the
dequantised Q4_1 weights, with and without the simulation. Expects /tmp/deploy-demo (memft demo) and
/tmp/dep/demo_rt.json (the llama.cpp rows, as bench_deploy.py measures them); figures are in results/deploy.json.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/quantsim_probe.py
"""
import json, torch
torch.set_num_threads(1)
from memft import api
from memft.prompts.records import load_records
from memft.prompts.encoding import encode_all
from memft.runtime.quantsim import simulate_q8_activations
recs = load_records("/tmp/deploy-demo/demo-records.jsonl")
ld = api.load_adapter("/tmp/deploy-demo", "cpu", "fp32")
items = encode_all(recs, ld.tokenizer, "raw")
def probs(sim):
    out = {}
    with torch.no_grad():
        for e in items:
            ids = torch.tensor([list(e.prompt) + list(e.targets)])
            if sim:
                with simulate_q8_activations(ld.model) as n:
                    lg = ld.model(ids).logits[0].float()
            else:
                lg = ld.model(ids).logits[0].float()
            p = torch.softmax(lg, -1)
            rows = p[len(e.prompt) - 1: len(e.prompt) - 1 + len(e.targets)]
            tp = [float(rows[j, t]) for j, t in enumerate(e.targets)]
            top = rows.clone(); 
            for j, t in enumerate(e.targets): top[j, t] = -1
            gap = [tp[j] - float(top[j].max()) for j in range(len(tp))]
            out[e.key] = {"min_p": min(tp), "min_gap": min(gap), "argmax_ok": all(g > 0 for g in gap)}
    return out
a, b = probs(False), probs(True)
rt = json.load(open("/tmp/dep/demo_rt.json"))
lost = {x[0] for x in rt["q4_1"]["lost"]}
print("fp32 argmax ok", sum(v["argmax_ok"] for v in a.values()), "sim ok", sum(v["argmax_ok"] for v in b.values()))
print("sim predicts lost:", sorted(k for k, v in b.items() if not v["argmax_ok"]), "llama.cpp lost:", sorted(lost))
for k in sorted(lost | {k for k, v in b.items() if not v["argmax_ok"]}):
    print(k, "fp32", round(a[k]["min_gap"], 3), "sim", round(b[k]["min_gap"], 3))
json.dump({"fp32": a, "sim": b}, open("/tmp/dep/qsim.json", "w"))
