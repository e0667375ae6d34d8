"""Probe (issue [11]): what fusing GELU into the first MLP product's epilogue is worth at the sampler's shape.

DiT-S/2 sampling at batch 500 runs fc1 on (500 x 256) x 384 tokens -> 1536 and then GELU as a separate, memory-bound
kernel (3.1 ms of a 19.6 ms step over 12 blocks). cuBLASLt can apply bias + GELU in the product's epilogue
(`torch._addmm_activation(..., use_gelu=True)`). This times, on the GPU it runs on: the product and GELU as two
kernels (eager and compiled) against the fused call, and checks which GELU the epilogue computes.

    python notebooks/results/bench/probe_gelu_epilogue.py --out notebooks/results/bench/gelu_epilogue_h200.json
"""

import argparse
import json

import torch
import torch.nn.functional as F


def time_ms(fn, iters=50):
    for _ in range(5):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    g = torch.Generator(device="cuda").manual_seed(0)
    m, k, n = 500 * 256, 384, 1536
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16, generator=g)
    w = (torch.randn(n, k, device="cuda", generator=g) / k**0.5).bfloat16()
    b = (0.1 * torch.randn(n, device="cuda", generator=g)).bfloat16()

    def separate():
        return F.gelu(F.linear(x, w, b), approximate="tanh")

    def fused():
        return torch._addmm_activation(b, x, w.t(), use_gelu=True)

    compiled = torch.compile(separate)
    ref = F.linear(x.double(), w.double(), b.double())
    out = {
        "device_name": torch.cuda.get_device_name(),
        "torch_version": torch.__version__,
        "shape": {"tokens": m, "in": k, "out": n},
        "ms_separate_eager": time_ms(separate),
        "ms_separate_compiled": time_ms(compiled),
        "ms_fused_epilogue": time_ms(fused),
        "ms_product_alone": time_ms(lambda: F.linear(x, w, b)),
        "max_abs_err_vs_tanh_gelu_fp64": (fused().double() - F.gelu(ref, approximate="tanh")).abs().max().item(),
        "max_abs_err_vs_erf_gelu_fp64": (fused().double() - F.gelu(ref)).abs().max().item(),
        "max_abs_err_separate_vs_tanh_gelu_fp64": (separate().double() - F.gelu(ref, approximate="tanh"))
        .abs()
        .max()
        .item(),
    }
    out["fused_saves_ms_per_call_vs_compiled"] = out["ms_separate_compiled"] - out["ms_fused_epilogue"]
    out["fused_saves_ms_per_sampling_step_12_blocks"] = 12 * out["fused_saves_ms_per_call_vs_compiled"]
    print(json.dumps(out, indent=1))
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
