"""Merges `reflex-train gpu bench`'s bench.json with bench_gpu_torch.py's JSON
lines into the markdown table of BENCHMARKS.md's GPU section.

    python3 scripts/gpu_report.py BENCH.json TORCH.jsonl > table.md

Columns: reflex's rate, PyTorch's per form, reflex over PyTorch's best form
(the issue's target is >= 2), and reflex's achieved matmul TFLOP/s as a share
of the fp32 matmul rate measured on the same GPU in the same run (candle's
own matmul case; PyTorch's fp32 and TF32 rates beside it).
"""
import json
import sys

reflex = {r["case"]: r for r in json.load(open(sys.argv[1]))}
torch_rows = [json.loads(line) for line in open(sys.argv[2]) if line.strip()]
torch = {}
errors = []
for r in torch_rows:
    if "error" in r:
        errors.append(f"{r['case']} {r.get('form', '')}: {r['error']}")
        continue
    torch.setdefault(r["case"], {})[r["form"]] = r

peak = reflex.get("matmul-4096", {}).get("tflops") or 0.0
tm = torch.get("matmul-4096", {})
device = next((r.get("device") for r in torch_rows if r.get("device")), "?")
print(f"GPU: {device}; torch {next((r.get('torch') for r in torch_rows if r.get('torch')), '?')}\n")
if peak:
    line = f"Matmul f32 4096^3: candle {peak:.3g} TFLOP/s"
    for form in ("fp32", "tf32"):
        if form in tm:
            line += f"; PyTorch {form} {tm[form]['tflops']:.3g} TFLOP/s"
    print(line + "\n")

forms = ["eager-host", "eager-device", "graph"]
footnotes = []
print("| case | unit | reflex | PyTorch eager, host replay | PyTorch eager, GPU replay "
      "| PyTorch CUDA graph | reflex / best PyTorch | reflex TFLOP/s (% of candle's matmul peak) |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for case, r in reflex.items():
    if case == "matmul-4096":
        continue
    t = torch.get(case, {})
    base = case.removesuffix("-pop16")
    if not t and base != case and base in torch:
        # No stacked PyTorch form (the LSTM: cuDNN's fused LSTM has no member
        # dimension): P seeds in PyTorch are P runs of its single learner, so
        # its member rate is the single learner's rate.
        t = torch[base]
        footnotes.append(f"{case}: PyTorch's columns are its single learner's ({base}), "
                         "the rate of P seeds trained one after another")
    cells = [f"{t[f]['rate']:,.0f}" if f in t else "—" for f in forms]
    best = max((t[f]["rate"] for f in forms if f in t), default=None)
    ratio = f"{r['rate'] / best:.2f}×" if best else "—"
    tf = r.get("tflops", 0.0)
    share = f"{tf:.3f} ({100 * tf / peak:.2f}%)" if peak and tf else "—"
    rate = f"{r['rate']:,.0f}"
    if r.get("updates_per_s"):
        rate += f" ({r['updates_per_s']:,.0f} updates/s)"
        cells = [c + (f" ({t[f]['updates_per_s']:,.0f} u/s)" if f in t and "updates_per_s" in t[f] else "")
                 for c, f in zip(cells, forms)]
    print(f"| {case} | {r['unit']} | {rate} | " + " | ".join(cells) + f" | {ratio} | {share} |")
for f in footnotes:
    print(f"\n{f}")
for e in errors:
    print(f"\nPyTorch error: {e}")
