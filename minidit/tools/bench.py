"""Time minidit's training step against the official DiT recipe, and sampling, in one run.

    python -m minidit.tools.bench                                   # DiT-S/2, batch 256: baseline vs fast + sampling
    python -m minidit.tools.bench --variants all --no-sample        # the ladder: what each change buys
    python -m minidit.tools.bench --variants fast --no-sample --profile   # where the fast step's time goes
    python -m minidit.tools.bench --model DiT-T/2 --batch 8 --steps 3 --warmup 1 --sample-batch 2 --ddpm-steps 5 \
        --ddim-steps 5 --out /tmp/bench.json                   # a CPU smoke test

Training variants (same model, same GPU-resident data, same diffusion loss):
    baseline               the official train.py step: fp32 (+TF32), AdamW(foreach=False), a per-parameter
                           EMA loop, no compile, loss.item() every step, labels dropped inside the model
    baseline-bf16          + bf16 autocast
    baseline-bf16-compile  + torch.compile(model)           (the official model's best)
    fast-eager             minidit's step without compile: bf16, fused AdamW, foreach EMA, no host sync
    fast                   fast-eager + torch.compile of model and loss together
    fast-model             fast-eager + torch.compile of the model only
    fast-autotune          fast with compile mode max-autotune-no-cudagraphs
    fast-recompute         fast + the MLP's GELU recomputed in the backward (minidit.blocks.Mlp)
    fast-autotune-recompute  both
    fast-cudagraphs        fast with compile mode reduce-overhead: forward and backward replayed as CUDA graphs
                           (for small models, whose many short kernels leave the GPU waiting for launches)
    fast-recompute-cudagraphs  both

`default_variant(model)` names the one that `python -m minidit.train --model MODEL` runs with its default flags
(`--variants default` times it for each model); the targets are checked on it.

Each variant: warm-up steps (compilation happens there), then `--steps` timed steps, each between
two CUDA events; the median step time gives img/s; peak memory is over the warm-up and the timed steps
(bench_h200.json and earlier files took it over the timed steps only, which misses CUDA graphs' memory). MFU =
img/s x FLOPs per training image / peak: FLOPs = 3 (forward + backward) x 2 x forward MACs
(`minidit.flops.dit_macs`; 6.05 GMAC for DiT-S/2 -> 36.3 GFLOP). The peak is the device's dense
bf16 peak (H100 SXM: 989 TFLOP/s), used for every variant, fp32 ones included, and saved in the JSON.

Sampling through `minidit.sample.sample`, exactly as `python -m minidit.sample` calls it (bf16, compiled
on CUDA): DDPM-250 without and with classifier-free guidance, DDIM-50; the first call's time (compile
included), then the steady-state images/s and the extrapolated time for 10,000 images. The levers, DDPM
only: `--sample-batch`, `--sample-modes` (compile modes), `--sample-weights` (fp32 under autocast or a bf16
copy of the model).

`--profile` says where the time goes: GPU time by kind of kernel (matrix products, attention, the kernels
torch.compile generated, eager ATen kernels, the optimiser) and the share of the kernels' span the GPU sat
idle, for 5 training steps and for 10 steps of each sampling setting.

The JSON (device, torch version, date, command) is rewritten after every measurement, so a run
that is cut short keeps what it measured. A variant that runs out of memory or fails is recorded
with its error and the run goes on.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import pathlib
import re
import statistics
import subprocess
import sys
import time
import traceback

import torch

from minidit import diffusion as _diffusion
from minidit import ema as _ema
from minidit import sample as _sample
from minidit.blocks import set_recompute_gelu
from minidit.checkpoint import atomic_write_json, writable_target
from minidit.cli import ArgumentParser
from minidit.data import FashionMNIST, sample_batch
from minidit.device import autocast, get_device
from minidit.flops import dit_macs
from minidit.model import DiT_models, create_model
from minidit.sample import COMPILE_MODES as SAMPLE_COMPILE_MODES
from minidit.sample import DEFAULT_BATCH_SIZE
from minidit.step import FastStep, draw_batch, make_optimizer, resolve_compile_mode
from minidit.train import TrainConfig

TRAIN_VARIANTS = (
    "baseline",
    "baseline-bf16",
    "baseline-bf16-compile",
    "fast-eager",
    "fast",
    "fast-model",
    "fast-autotune",
    "fast-recompute",
    "fast-autotune-recompute",
    "fast-cudagraphs",
    "fast-recompute-cudagraphs",
)
_SAMPLE_WEIGHTS = {"default": None, "fp32": False, "bf16": True}  # --sample-weights -> sample(bf16_weights=)
_MODE_OF = {"default": "", "max-autotune-no-cudagraphs": "autotune", "reduce-overhead": "cudagraphs"}


def default_variant(model: str = "DiT-S/2", batch: int = 256) -> str:
    """The training variant that `python -m minidit.train --model MODEL` runs on one GPU with its default TrainConfig
    (compile mode "auto" picks CUDA graphs for small steps: `minidit.step.resolve_compile_mode`)."""
    cfg = TrainConfig()
    mode = _MODE_OF[resolve_compile_mode(cfg.compile_mode, model, batch, 1, torch.device("cuda"))]
    if mode == "autotune":
        return "fast-autotune-recompute" if cfg.recompute_gelu else "fast-autotune"
    name = "fast-recompute" if cfg.recompute_gelu else "fast"
    return f"{name}-{mode}" if mode else name


DEFAULT_VARIANTS = ("baseline", "default")  # "default": default_variant() of each model
# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from the vendors' data sheets; first match wins.
PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),
    ("H200", 989.4),
    ("GH200", 989.4),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("4090", 165.2),
    ("A10G", 70.0),
)
# issue [11]'s targets on one H200 (DiT-S/2; sampling: 10,000 images, the time a user waits)
TARGETS = {
    "train_img_per_s": 9000,
    "train_img_per_s_goal": 10_000,
    "train_peak_mem_gib": 12.0,
    "small_model_speedup_S4_over_S2": 3.0,
    "ddpm250_10k_images_s": 60.0,
    "ddpm250_cfg_10k_images_s": 120.0,
    "ddim50_10k_images_s": 15.0,
}


# ----------------------------------------------------------------------------- the two paths


def baseline_losses(model, diffusion, x, y, t, noise=None, drop=None):
    """The official loss call: diffusion.training_losses(model, x, t, dict(y=y)) -> (N,) loss.

    drop: (N,) forced label dropout (tests use it to feed both paths the same batch); None lets the
    model drop labels itself (training mode), as the official code does.
    """
    kwargs = {"y": y} if drop is None else {"y": y, "force_drop_ids": drop}
    return diffusion.training_losses(model, x, t, model_kwargs=kwargs, noise=noise)["loss"]


class BaselineStep:
    """One step of the official DiT train.py (its data loading aside): fp32 unless autocast is given."""

    def __init__(self, model, ema, diffusion, data, batch_size: int, amp_dtype=None, compile: bool = False):
        self.raw, self.ema, self.diffusion, self.data = model, ema, diffusion, data
        self.model = torch.compile(model) if compile else model
        self.batch_size, self.amp_dtype = batch_size, amp_dtype
        self.device = next(model.parameters()).device
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0, foreach=False, fused=False)
        self.running_loss = 0.0

    def __call__(self) -> None:
        x, y = sample_batch(self.data, self.batch_size, flip=True)
        t = torch.randint(0, self.diffusion.num_timesteps, (x.shape[0],), device=self.device)
        with autocast(self.device.type, self.amp_dtype):
            loss = baseline_losses(self.model, self.diffusion, x, y, t).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        _ema.update_ema_loop(self.ema, self.raw, 0.9999)
        self.running_loss += loss.item()  # the official loop logs this way: a host sync every step


# ----------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def time_steps(step, device: torch.device, warmup: int, steps: int) -> dict:
    """Run step() warmup times, then time `steps` calls one by one -> median / mean ms, peak memory (over the
    warm-up and the timed steps).

    first_step_s: the first warm-up step alone, which includes compilation when there is any.
    """
    if device.type == "cuda":  # before the warm-up: CUDA graphs allocate their memory while they are captured
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for i in range(warmup):
        step()
        if i == 0:
            _sync(device)
            first = time.perf_counter() - start
    _sync(device)
    window_start = time.time()  # wall clock: concurrent processes' timed windows can be checked for overlap
    if device.type == "cuda":
        events = [torch.cuda.Event(enable_timing=True) for _ in range(steps + 1)]
        events[0].record()
        for i in range(steps):
            step()
            events[i + 1].record()
        torch.cuda.synchronize(device)
        times = [events[i].elapsed_time(events[i + 1]) for i in range(steps)]
        peak = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            step()
            _sync(device)
            times.append(1000 * (time.perf_counter() - start))
        peak = None
    return {
        "step_ms_median": statistics.median(times),
        "step_ms_mean": statistics.fmean(times),
        "step_ms_min": min(times),
        "peak_mem_gib": peak,
        "timed_steps": steps,
        "warmup_steps": warmup,
        "first_step_s": first if warmup else None,
        "timed_window": [window_start, time.time()],
    }


def profile_steps(step, device: torch.device, steps: int = 5, rows: int = 25) -> str:
    """torch.profiler over `steps` calls -> the table of the ops/kernels that take the most time."""
    from torch.profiler import ProfilerActivity, profile  # only --profile needs the profiler

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        _sync(device)
    sort_by = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort_by, row_limit=rows)


# Kernel names -> what they do (first match wins): cuBLAS/CUTLASS/Triton-template matmuls, attention, the kernels
# torch.compile generated (norms, modulate, GELU, gates, residuals fused), the optimiser, and the rest (eager ATen
# kernels: the diffusion maths between the sampler's model calls, copies, casts).
KERNEL_KINDS = (
    ("matmul", re.compile(r"^triton_tem")),  # max-autotune's Triton matmul templates (epilogues fused in)
    ("compiled elementwise/norm (Triton)", re.compile(r"^triton_")),
    ("attention", re.compile(r"fmha|flash|sdpa|attention", re.I)),
    ("matmul", re.compile(r"gemm|nvjet|cutlass|xmma|cublas|splitk", re.I)),
    ("optimizer", re.compile(r"multi_tensor|adam", re.I)),
    ("eager elementwise/other (ATen)", re.compile(r".")),
)


def kernel_kind(name: str) -> str:
    """Which of KERNEL_KINDS a GPU kernel's name belongs to."""
    return next(kind for kind, pattern in KERNEL_KINDS if pattern.search(name))


def kernel_breakdown(kernels, wall_ms: float, top: int = 12) -> dict:
    """kernels: [(name, start_us, end_us)] on the GPU over a window of wall_ms -> where the time went.

    busy_ms: the union of the kernels' intervals; span_ms: first kernel's start to last kernel's end; idle_share:
    the part of the span with no kernel running -- time the GPU waited for the CPU (launches, host syncs). The
    span, not wall_ms, so the profiler's own start and stop do not count as idle.
    kinds: {kind: {"ms", "share" of busy time, "kernels"}}; top: the most expensive kernel names.
    """
    by_kind: dict[str, list[float]] = {}
    by_name: dict[str, list[float]] = {}
    intervals = sorted((s, e) for _, s, e in kernels)
    span = intervals[-1][1] - intervals[0][0] if intervals else 0.0
    busy, end = 0.0, -math.inf
    for s, e in intervals:
        if e > end:
            busy += e - max(s, end)
            end = e
    for name, s, e in kernels:
        by_kind.setdefault(kernel_kind(name), [0.0, 0])
        by_kind[kernel_kind(name)][0] += (e - s) / 1000
        by_kind[kernel_kind(name)][1] += 1
        by_name.setdefault(name, [0.0, 0])
        by_name[name][0] += (e - s) / 1000
        by_name[name][1] += 1
    total = sum(v[0] for v in by_kind.values()) or 1.0
    return {
        "wall_ms": wall_ms,
        "busy_ms": busy / 1000,
        "span_ms": span / 1000,
        "idle_share": max(0.0, 1 - busy / span) if span > 0 else None,
        "kernels": len(kernels),
        "kinds": {
            k: {"ms": v[0], "share": v[0] / total, "kernels": v[1]}
            for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1][0])
        },
        "top": [
            {"name": n[:120], "kind": kernel_kind(n), "ms": v[0], "calls": v[1]}
            for n, v in sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]
        ],
    }


def profile_calls(fn, device: torch.device, calls: int = 5) -> dict:
    """torch.profiler over `calls` calls of fn -> `kernel_breakdown` of the GPU kernels (CUDA only; elsewhere
    the profiler sees no kernels and the breakdown is empty)."""
    from torch.profiler import ProfilerActivity, profile  # only profiling needs the profiler

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    _sync(device)
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        _sync(device)
        wall_ms = 1000 * (time.perf_counter() - start)
    kernels = [
        (e.name, e.time_range.start, e.time_range.end)
        for e in prof.events()
        if e.device_type == torch.autograd.DeviceType.CUDA and e.time_range.end > e.time_range.start
    ]
    return kernel_breakdown(kernels, wall_ms)


def print_breakdown(title: str, breakdown: dict) -> None:
    idle = breakdown["idle_share"]
    print(
        f"  [{title}] {breakdown['wall_ms']:.1f} ms wall, kernels span {breakdown['span_ms']:.1f} ms, "
        f"GPU busy {breakdown['busy_ms']:.1f} ms"
        + ("" if idle is None else f" (idle {100 * idle:.0f}%)")
        + f", {breakdown['kernels']} kernels"
    )
    for kind, v in breakdown["kinds"].items():
        print(f"      {kind:<38} {v['ms']:9.2f} ms {100 * v['share']:5.1f}%  ({v['kernels']} kernels)")
    for row in breakdown["top"][:6]:
        print(f"      top: {row['ms']:8.2f} ms x{row['calls']:<5} {row['name'][:90]}")


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    torch._dynamo.reset()


def synthetic_data(device="cpu", n: int = 4096, size: int = 32, seed: int = 0) -> FashionMNIST:
    """n random uint8 images (n, 1, size, size) and labels in 0..9, shaped like padded Fashion-MNIST.

    For timing (speed does not depend on pixel values) and for tests that need no data files.
    """
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=g)
    return FashionMNIST(images, torch.randint(0, 10, (n,), generator=g), "synthetic").to(device)


def _new_model(name: str, device, block: str = "adaLN-Zero"):
    return create_model(name, input_size=32, in_channels=1, num_classes=10, block=block).to(device).train()


def bench_training(
    name: str, variant: str, batch: int, device, data, warmup: int, steps: int, block: str, profile: bool = False
) -> dict:
    """Time one training variant of one model (and, with profile, say where its time goes)."""
    torch.manual_seed(0)
    model = _new_model(name, device, block)
    ema = _new_model(name, device, block).requires_grad_(False)
    _ema.update_ema(ema, model, 0.0)
    diffusion = _diffusion.create_diffusion(device=device)
    cuda = device.type == "cuda"
    bf16 = torch.bfloat16 if cuda else None  # as minidit.train: CPU/MPS run fp32
    info = {"model": name, "block": block, "variant": variant, "batch": batch}
    if variant.startswith("baseline"):
        step = BaselineStep(
            model,
            ema,
            diffusion,
            data,
            batch,
            amp_dtype=bf16 if "bf16" in variant else None,
            compile=variant.endswith("compile") and cuda,
        )
        info.update(
            precision="bf16" if "bf16" in variant and cuda else "fp32+tf32" if cuda else "fp32",
            compiled=variant.endswith("compile") and cuda,
        )
    else:
        compile = cuda and variant != "fast-eager"
        if "recompute" in variant:
            set_recompute_gelu(model, True)
        info["recompute_gelu"] = "recompute" in variant
        stepper = FastStep(
            model,
            diffusion,
            make_optimizer(model),
            amp_dtype=bf16,
            compile=compile,
            compile_mode=(
                "max-autotune-no-cudagraphs"
                if "autotune" in variant
                else "reduce-overhead"
                if "cudagraphs" in variant
                else "default"
            ),
            compile_scope="model" if variant == "fast-model" else "loss",
            ema=ema,
            log=lambda m: print(f"  [{name} {variant}] {m}"),
        )
        generator = torch.Generator(device=device).manual_seed(0)

        def step():
            batch_ = draw_batch(data, generator, batch, diffusion, flip=True, class_dropout_prob=0.1)
            stepper(batch_, 0.9999)

        info.update(precision="bf16" if cuda else "fp32")
    start = time.perf_counter()
    info.update(time_steps(step, device, warmup, steps))
    info["wall_s"] = time.perf_counter() - start
    if profile:
        info["profile_table"] = profile_steps(step, device)
        print(f"  [{name} {variant}] where the time goes:\n{info['profile_table']}")
        info["profile"] = profile_calls(step, device, calls=5)
        info["profile"]["what"] = f"5 training steps, batch {batch}"
        print_breakdown(f"{name} {variant}", info["profile"])
    if not variant.startswith("baseline"):
        info["compiled"] = stepper.compiled  # False when compile failed and the step fell back to eager
    info["img_per_s"] = batch / (info["step_ms_median"] / 1000)
    return info


def bench_sampling(
    name: str,
    device,
    batch: int,
    ddpm_steps: int,
    ddim_steps: int,
    cfg_scale: float,
    compile: bool | None,
    block: str,
    compile_mode: str = "default",
    all_samplers: bool = True,
    bf16_weights: bool | None = None,
    profile: bool = False,
) -> list[dict]:
    """Time DDPM (without and with guidance) and DDIM on `batch` images -> one dict per sampler.

    all_samplers=False: DDPM without guidance only (to compare batch sizes and compile modes).
    bf16_weights: passed to `sample` (None: its default). profile: also profile 10 DDPM steps of the
    first sampler after its timed calls (`kernel_breakdown`, in the row's "profile").

    Each run calls `minidit.sample.sample`, the function `python -m minidit.sample` calls, with the same
    defaults (compile=None: compiled on CUDA). Two numbers per sampler: `first_seconds`, the first call
    in a fresh process (torch.compile included: what a user waits for), and `seconds`, the same call
    again (the steady state, which `img_per_s` and `seconds_for_10k_images` are computed from).
    """

    torch.manual_seed(0)
    model = _new_model(name, device, block).eval()
    diffusion = _diffusion.create_diffusion(device=device)
    labels = torch.arange(batch, device=device) % 10
    results = []
    runs = (("ddpm", ddpm_steps, 1.0), ("ddpm", ddpm_steps, cfg_scale), ("ddim", ddim_steps, 1.0))
    runs = runs if all_samplers else runs[:1]
    for sampler, steps, scale in runs:
        seconds = []
        for _ in range(2):  # the first call compiles (once per batch shape and guidance), the second does not
            generator = torch.Generator(device=device).manual_seed(0)
            _sync(device)
            start = time.perf_counter()
            _sample.sample(
                model,
                diffusion,
                labels,
                cfg_scale=scale,
                sampler=sampler,
                steps=steps,
                generator=generator,
                compile=compile,
                compile_mode=compile_mode,
                bf16_weights=bf16_weights,
            )
            _sync(device)
            seconds.append(time.perf_counter() - start)
        compiled = (device.type == "cuda") if compile is None else compile
        row = {
            "model": name,
            "sampler": f"{sampler}-{steps}",
            "cfg_scale": scale,
            "batch": batch,
            "first_seconds": seconds[0],
            "seconds": seconds[1],
            "img_per_s": batch / seconds[1],
            "precision": "bf16" if device.type == "cuda" else "fp32",
            "compiled": compiled,
            "compile_mode": compile_mode if compiled else None,
            "bf16_weights": _sample.BF16_WEIGHTS_DEFAULT and device.type == "cuda"
            if bf16_weights is None
            else bf16_weights,
            "forward_passes_per_image": steps * (2 if scale != 1.0 else 1),
        }
        row["seconds_for_10k_images"] = 10_000 / row["img_per_s"]
        if profile and not results:

            def ten_steps(sampler=sampler, scale=scale):
                _sample.sample(
                    model,
                    diffusion,
                    labels,
                    cfg_scale=scale,
                    sampler=sampler,
                    steps=10,  # a 10-step process: each step costs what a step of the 250 does
                    generator=torch.Generator(device=device).manual_seed(0),
                    compile=compile,
                    compile_mode=compile_mode,
                    bf16_weights=bf16_weights,
                )

            row["profile"] = profile_calls(ten_steps, device, calls=1)
            row["profile"]["what"] = f"one sample() call of 10 {sampler} steps, batch {batch}, cfg {scale}"
            print_breakdown(f"{name} {row['sampler']} batch {batch}", row["profile"])
        results.append(row)
        print(
            f"  {name} {row['sampler']:>9} cfg {scale:<4} batch {batch} {compile_mode:<15} "
            f"bf16 weights {row['bf16_weights']!s:<5} "
            f"{row['img_per_s']:10,.1f} img/s"
            f"   10k images: {row['seconds_for_10k_images']:8.1f} s   first call {seconds[0]:.1f} s"
        )
    return results


# ----------------------------------------------------------------------------- report


def peak_tflops(device: torch.device, override: float | None = None) -> tuple[float | None, str]:
    """(dense bf16 peak in TFLOP/s, where it came from) for MFU; None off CUDA unless given."""
    if override is not None:
        return override, "--peak-tflops"
    if device.type != "cuda":
        return None, f"no peak known for {device.type}"
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_TFLOPS:
        if key in name:
            return value, f"dense bf16 peak of {key} (data sheet)"
    return None, f"no peak known for {name}; pass --peak-tflops"


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def default_out(device: torch.device) -> pathlib.Path:
    slug = re.sub(r"[^a-z0-9]+", "_", device_name(device).lower()).strip("_")
    return pathlib.Path("notebooks") / "results" / "bench" / f"bench_{slug}.json"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=pathlib.Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _summarise(report: dict) -> None:
    by = {(r["model"], r["variant"]): r for r in report["training"] if "img_per_s" in r}
    report["speedups"] = {}
    for (model, variant), row in by.items():
        base = by.get((model, "baseline"))
        if base is not None and variant != "baseline":
            report["speedups"][f"{model} {variant} / baseline"] = row["img_per_s"] / base["img_per_s"]
    fast = by.get(("DiT-S/2", default_variant("DiT-S/2")))
    small = by.get(("DiT-S/4", default_variant("DiT-S/4")))
    report["targets"] = {
        "spec": TARGETS,
        "variant": default_variant("DiT-S/2"),
        "variant_S4": default_variant("DiT-S/4"),
        "train_img_per_s_met": None if fast is None else fast["img_per_s"] >= TARGETS["train_img_per_s"],
        "train_peak_mem_met": None
        if fast is None or fast["peak_mem_gib"] is None
        else fast["peak_mem_gib"] <= TARGETS["train_peak_mem_gib"],
        "small_model_speedup_S4_over_S2": None
        if fast is None or small is None
        else small["img_per_s"] / fast["img_per_s"],
    }
    for key, sampler, scale in (
        ("ddpm250_10k_images_s", "ddpm-250", 1.0),
        ("ddim50_10k_images_s", "ddim-50", 1.0),
        ("ddpm250_cfg_10k_images_s", "ddpm-250", None),
    ):
        rows = [
            r
            for r in report["sampling"]
            if r.get("model") == "DiT-S/2"
            and r.get("sampler") == sampler
            and (r["cfg_scale"] != 1.0 if scale is None else r["cfg_scale"] == scale)
        ]
        if rows:  # the first row has the CLI's settings; compiling once comes on top of the steady state
            estimate = rows[0]["seconds_for_10k_images"] + rows[0]["first_seconds"] - rows[0]["seconds"]
            report["targets"][key.replace("_s", "_estimate_s", 1)] = estimate
            report["targets"][key.replace("_s", "_met", 1)] = estimate <= TARGETS[key]


def combine_concurrent(paths, out) -> dict:
    """Add to the report at `out` a "concurrent" section: the training rows of reports written by processes that
    ran at the same time on one GPU, and their summed img/s.

    Each row's timed window (wall clock) is kept; `overlap_share` is the part of the longest window during which
    every process was timing, so a reader sees whether the sum measures concurrency.
    """
    rows = []
    for path in paths:
        report = json.loads(pathlib.Path(path).read_text())
        rows += [{**r, "device_name": report["device_name"]} for r in report["training"] if "img_per_s" in r]
    if not rows:
        raise ValueError(f"no timed training rows in {list(map(str, paths))}")
    windows = [r["timed_window"] for r in rows]
    common = max(0.0, min(w[1] for w in windows) - max(w[0] for w in windows))
    longest = max(w[1] - w[0] for w in windows)
    out = pathlib.Path(out)
    target = json.loads(out.read_text()) if out.exists() else {"device_name": rows[0]["device_name"]}
    target["concurrent"] = {
        "processes": len(rows),
        "models": sorted({r["model"] for r in rows}),
        "variants": sorted({r["variant"] for r in rows}),
        "batch": rows[0]["batch"],
        "img_per_s_total": sum(r["img_per_s"] for r in rows),
        "img_per_s_each": [r["img_per_s"] for r in rows],
        "overlap_share": common / longest if longest > 0 else 0.0,
        "rows": rows,
    }
    atomic_write_json(out, target)
    return target["concurrent"]


def _describe(err: Exception) -> str:
    """'out of memory', or the error with its traceback printed (the run goes on)."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return "out of memory"
    traceback.print_exc()
    return f"{type(err).__name__}: {err}"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m minidit.tools.bench",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", nargs="+", default=["DiT-S/2"], help="configs to time")
    parser.add_argument("--block", default="adaLN-Zero", help="conditioning block")
    parser.add_argument("--batch", type=int, default=256, help="training batch size")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per variant")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (compilation happens here)")
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help="comma-separated training variants ('default': what minidit.train runs for the model), or 'all': "
        f"{', '.join(TRAIN_VARIANTS)}",
    )
    parser.add_argument("--sample", action=argparse.BooleanOptionalAction, default=True, help="time sampling")
    parser.add_argument(
        "--sample-batch",
        type=int,
        nargs="+",
        default=[DEFAULT_BATCH_SIZE],
        help="images per sample() call; the first is timed with every sampler (the CLI's default), "
        "the others with DDPM only",
    )
    parser.add_argument(
        "--sample-modes",
        default="default",
        help="comma-separated compile modes of the sampler "
        f"({', '.join(SAMPLE_COMPILE_MODES)}); the first is the CLI's, the others DDPM only",
    )
    parser.add_argument(
        "--sample-weights",
        default="default",
        help="comma-separated weights of the sampled model: 'default' (minidit.sample's), 'fp32' (under bf16 "
        "autocast), 'bf16' (a bf16 copy); the first is the CLI's, the others DDPM only",
    )
    parser.add_argument(
        "--sample-first-all",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time every sampler (DDPM, guided DDPM, DDIM) at the first sampling setting; --no-sample-first-all: "
        "DDPM only there too (a lever's row alone, e.g. one that takes minutes to compile)",
    )
    parser.add_argument("--ddpm-steps", type=int, default=250)
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument("--cfg-scale", type=float, default=1.5, help="guidance scale of the CFG sampling run")
    parser.add_argument(
        "--sample-compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="sample with minidit.sample's default (compiled on CUDA); --no-sample-compile: eager",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile 5 steps of each training variant and 10 steps of each sampler setting's first sampler "
        "(GPU time by kind of kernel, and idle time, in the output and the JSON)",
    )
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak for MFU (default: from the GPU name)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=None, help="JSON path (default notebooks/results/bench/bench_<device>.json)")
    parser.add_argument(
        "--combine",
        nargs="+",
        default=None,
        metavar="JSON",
        help="measure nothing: add the reports of processes that ran concurrently on one GPU to --out "
        "as its 'concurrent' section (summed img/s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.combine:
        if args.out is None:
            parser.error("--combine needs --out (the report to add the concurrent section to)")
        try:
            section = combine_concurrent(args.combine, args.out)
        except (ValueError, OSError, KeyError, json.JSONDecodeError) as err:
            parser.error(f"--combine: {err}")
        print(
            f"minidit.tools.bench: {section['processes']} concurrent processes: "
            f"{section['img_per_s_total']:,.0f} img/s in all, overlap {100 * section['overlap_share']:.0f}% "
            f"-> {args.out}"
        )
        return 0
    variants = TRAIN_VARIANTS if args.variants == "all" else tuple(v for v in args.variants.split(",") if v)
    unknown = [v for v in variants if v not in TRAIN_VARIANTS and v != "default"]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; expected some of {list(TRAIN_VARIANTS)} or 'all'")
    bad_models = [m for m in args.model if m not in DiT_models]
    if bad_models:
        parser.error(f"unknown model(s) {bad_models}; expected some of {list(DiT_models)}")
    for flag in ("batch", "steps", "ddpm_steps", "ddim_steps"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    if min(args.sample_batch) < 1:
        parser.error(f"--sample-batch must be >= 1, got {args.sample_batch}")
    sample_weights = [w for w in args.sample_weights.split(",") if w]
    if not sample_weights or any(w not in _SAMPLE_WEIGHTS for w in sample_weights):
        parser.error(f"--sample-weights: expected some of {list(_SAMPLE_WEIGHTS)}, got {args.sample_weights!r}")
    sample_modes = [m for m in args.sample_modes.split(",") if m]
    if not sample_modes or any(m not in SAMPLE_COMPILE_MODES for m in sample_modes):
        parser.error(f"--sample-modes: expected some of {list(SAMPLE_COMPILE_MODES)}, got {args.sample_modes!r}")
    try:
        device = get_device(args.device)
        out = pathlib.Path(args.out) if args.out else default_out(device)
        writable_target(out, "--out")
    except ValueError as err:
        parser.error(str(err))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # the official recipe's fp32 runs with TF32
        torch.backends.cudnn.allow_tf32 = True
    else:
        print(f"minidit.tools.bench: on {device.type} every variant runs in fp32 without compile (CUDA-only features)")
    peak, peak_source = peak_tflops(device, args.peak_tflops)
    report = {
        "device": str(device),
        "device_name": device_name(device),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "command": " ".join(["python -m minidit.tools.bench", *(argv if argv is not None else sys.argv[1:])]),
        "git_commit": _git_commit(),
        "note": os.environ.get("MINIDIT_NOTE"),  # e.g. what else the machine ran
        "peak_tflops": peak,
        "peak_source": peak_source,
        "mfu_definition": "img/s x 6 x forward MACs per image / peak (forward + backward = 3 forward passes)",
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "device")},
        "training": [],
        "sampling": [],
    }
    data = synthetic_data(device)
    print(
        f"minidit.tools.bench: {device_name(device)}, torch {torch.__version__}, batch {args.batch}, "
        f"peak {peak} TFLOP/s ({peak_source}) -> {out}"
    )
    failures = 0

    for name in args.model:
        macs = dit_macs(name, input_size=32, in_channels=1, block=args.block)
        model_variants = dict.fromkeys(default_variant(name, args.batch) if v == "default" else v for v in variants)
        for variant in model_variants:
            try:
                row = bench_training(
                    name, variant, args.batch, device, data, args.warmup, args.steps, args.block, args.profile
                )
            except Exception as err:  # out of memory or broken: record it and go on with the other variants
                row = {"model": name, "variant": variant, "batch": args.batch, "error": _describe(err)}
                failures += 1
            _free(device)
            row["gmacs_forward"] = macs / 1e9
            row["gflop_per_train_image"] = 6 * macs / 1e9
            if "img_per_s" in row:
                row["tflops"] = row["img_per_s"] * 6 * macs / 1e12
                row["mfu"] = None if peak is None else row["tflops"] / peak
                mem = "-" if row["peak_mem_gib"] is None else f"{row['peak_mem_gib']:.2f} GiB"
                mfu = "-" if row["mfu"] is None else f"{100 * row['mfu']:.1f}%"
                print(
                    f"  {name} {variant:>22}: {row['img_per_s']:10,.0f} img/s  {row['step_ms_median']:8.2f} ms/step"
                    f"  peak {mem}  MFU {mfu}  compiled {row.get('compiled')}"
                )
            else:
                print(f"  {name} {variant:>22}: FAILED ({row['error'][:200]})")
            report["training"].append(row)
            _summarise(report)
            atomic_write_json(out, report)
        combos = [(b, m, w) for m in sample_modes for w in sample_weights for b in args.sample_batch]
        combos = combos if args.sample else []
        for i, (sample_batch_size, mode, weights) in enumerate(combos):  # the first: the CLI's settings, every sampler
            try:
                report["sampling"] += bench_sampling(
                    name,
                    device,
                    sample_batch_size,
                    args.ddpm_steps,
                    args.ddim_steps,
                    args.cfg_scale,
                    None if args.sample_compile else False,
                    args.block,
                    mode,
                    all_samplers=i == 0 and args.sample_first_all,
                    bf16_weights=_SAMPLE_WEIGHTS[weights],
                    profile=args.profile,
                )
            except Exception as err:
                report["sampling"].append(
                    {
                        "model": name,
                        "batch": sample_batch_size,
                        "compile_mode": mode,
                        "weights": weights,
                        "error": _describe(err),
                    }
                )
                failures += 1
            _free(device)
            _summarise(report)
            atomic_write_json(out, report)
    for key, value in report["speedups"].items():
        print(f"  speed-up {key}: {value:.2f}x")
    print(
        f"minidit.tools.bench: wrote {out}" + (f" ({failures} measurement(s) failed, see 'error')" if failures else "")
    )
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
