"""The README quotes GPU results; every quoted number here must be what the committed JSON holds.

If a re-run changes a result file, this test names the README numbers that went stale.
"""

from __future__ import annotations

import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "notebooks" / "results"
README = (ROOT / "README.md").read_text()


def _load(*parts: str) -> dict:
    return json.loads(RESULTS.joinpath(*parts).read_text())


def _quoted(texts: list[str]) -> list[str]:
    """The texts that do not appear in the README."""
    return [t for t in texts if t not in README]


def test_training_speed_table_matches_bench_json():
    bench = _load("bench", "bench_h100.json")
    rows = {r["variant"]: r for r in bench["training"]}
    base = rows["baseline"]["img_per_s"]
    texts = []
    for variant in ("baseline", "baseline-bf16-compile", "fast", "fast-recompute"):
        r = rows[variant]
        texts += [f"{r['img_per_s']:,.0f}", f"{100 * r['mfu']:.1f}%"]
        if variant != "baseline":
            texts.append(f"{r['img_per_s'] / base:.2f}×")
    assert bench["targets"]["variant"] == "fast-recompute"
    texts.append(f"{rows['fast-recompute']['peak_mem_gib']:.1f} GiB")
    ddpm = [s for s in bench["sampling"] if s["sampler"] == "ddpm-250" and s["cfg_scale"] == 1.0][0]
    texts.append(f"take {ddpm['seconds_for_10k_images']:.0f} s")
    texts.append(
        f"{rows['fast-recompute']['img_per_s'] / rows['baseline-bf16-compile']['img_per_s']:.2f}× the official"
    )
    assert not _quoted(texts), f"README numbers not in bench_h100.json: {_quoted(texts)}"


def test_ablation_and_scaling_numbers_match_records():
    """The README's part A and B tables are `python -m minidit.tools.experiments tables`, line for line."""
    from minidit.tools import experiments as ex

    results = RESULTS / ex.EXPERIMENT
    rows = ex.ablation_rows(ex.load_part("B", results_dir=results))
    assert len(rows) == 4 and all(len(r["fid_seeds"]) == 2 for r in rows)
    texts = ex.readme_tables(results).splitlines()
    texts += [f"{r['fid']:.1f}" for r in ex.scaling_rows(ex.load_part("C", results_dir=results))]
    assert not _quoted(texts), f"README lines not made from the notebook 08 records: {_quoted(texts)}"


def test_super_resolution_table_matches_results_json():
    metrics = _load("09_super_resolution", "results.json")["metrics"]
    texts = []
    for method in ("bicubic", "regression", "diffusion", "diffusion mean of 3"):
        m = metrics[method]
        texts.append(f"| {m['psnr']:.2f} | {m['ssim']:.3f} | {m['fid']:.2f} |")
    assert not _quoted(texts), f"README numbers not in results.json: {_quoted(texts)}"


@pytest.mark.parametrize("model", ["DiT-S/2", "DiT-B/2"])
def test_many_gpus_table_matches_scaling_json(model):
    s = _load("multi_gpu", "scaling.json")["scaling"][model]
    row = (
        f"| {model} | {s['img_per_s_1']:,.0f} img/s | {s['img_per_s_n']:,.0f} img/s | {s['speedup']:.2f}× | "
        f"{100 * s['scaling_efficiency']:.0f}%"
    )
    assert row in README, f"README's Many GPUs row for {model} should start {row!r}"
    if s["img_per_s_1_same_scope"] is not None:
        same = (
            f"{100 * s['scaling_efficiency_same_scope']:.0f}% against 1 GPU with DDP's compile scope: "
            f"{s['img_per_s_1_same_scope']:,.0f} img/s"
        )
        assert same in README


def test_sampling_cli_times_match_their_json():
    runs = _load("bench", "sample_cli_h200.json")["runs"]
    texts = [f"{r['seconds']:.2f} s" for r in runs]
    assert all(r["rc"] == 0 for r in runs)
    assert not _quoted(texts), f"README numbers not in sample_cli_h200.json: {_quoted(texts)}"


def _per_step(profile: dict, kind: str, steps: int) -> float:
    return profile["kinds"][kind]["ms"] / steps


def test_h200_speed_tables_match_bench_json():
    """The H200 training, small-model and sampling tables and the profiles quoted beside them: every number is what
    the bench JSON files hold."""
    bench = _load("bench", "bench_h200.json")
    assert bench["device_name"] == "NVIDIA H200"
    rows = {r["variant"]: r for r in bench["training"]}
    base, official = rows["baseline"]["img_per_s"], rows["baseline-bf16-compile"]["img_per_s"]
    texts = []
    for variant in ("baseline", "baseline-bf16-compile", "fast-recompute"):
        r = rows[variant]
        texts += [
            f"{r['img_per_s']:,.0f}",
            f"{100 * r['mfu']:.1f}%",
            f"{r['img_per_s'] / base:.2f}×",
            f"{r['img_per_s'] / official:.2f}×",
        ]
    default = rows[bench["targets"]["variant"]]
    texts.append(f"**{default['peak_mem_gib']:.1f} GiB**")
    assert bench["targets"]["train_img_per_s_met"] is False and "≥ 9,000 img/s — **missed**" in README
    texts.append(f"{default['img_per_s'] / bench['targets']['spec']['train_img_per_s']:.0%} of")
    # the training profile: 5 steps of the default and of the official model's best
    prof = default["profile"]
    texts += [
        f"step is {default['step_ms_median']:.1f} ms, of which the GPU is busy {prof['busy_ms'] / 5:.1f} ms",
        f"matrix products {_per_step(prof, 'matmul', 5):.1f} ms",
        f"{_per_step(prof, 'compiled elementwise/norm (Triton)', 5):.1f} ms, attention",
        f"attention {_per_step(prof, 'attention', 5):.1f} ms, eager kernels",
        f"{_per_step(prof, 'eager elementwise/other (ATen)', 5):.1f} ms, the fused AdamW",
        f"the fused AdamW {_per_step(prof, 'optimizer', 5):.1f} ms",
    ]
    best = rows["baseline-bf16-compile"]
    texts.append(f"{_per_step(best['profile'], 'optimizer', 5):.1f} ms of its {best['step_ms_median']:.1f} ms step")
    gelu = [t["ms"] for t in prof["top"] if "gelu" in t["name"]]
    texts.append(f"about {sum(gelu) / 5:.1f} ms a step as separate kernels")
    earlier = {r["variant"]: r["img_per_s"] for r in _load("bench", "bench_h200_run1.json")["training"]}
    three = (earlier["baseline"], earlier["baseline-bf16-compile"], earlier["fast-recompute"])
    texts.append("{:,.0f}, {:,.0f} and {:,.0f} img/s".format(*three))
    texts.append(f"{earlier['fast-recompute-cudagraphs']:,.0f} img/s for the default with CUDA graphs")
    # sampling: the CLI's settings (every sampler) and the fp32-weights row
    for s in bench["sampling"]:
        texts += [f"{s['img_per_s']:.1f}", f"{s['first_seconds']:.1f} s"]
        assert f"{s['seconds_for_10k_images']:.0f} s" in README or f"{s['seconds_for_10k_images']:.1f} s" in README
    ddpm = next(s for s in bench["sampling"] if s["sampler"] == "ddpm-250" and s["cfg_scale"] == 1.0)
    assert ddpm["bf16_weights"] is True  # the CLI's default, the first row
    sp = ddpm["profile"]
    texts += [
        f"matrix products\n{_per_step(sp, 'matmul', 10):.1f} ms",
        f"elementwise kernels {_per_step(sp, 'compiled elementwise/norm (Triton)', 10):.1f} ms",
        f"attention {_per_step(sp, 'attention', 10):.1f} ms",
        f"maths between model calls {_per_step(sp, 'eager elementwise/other (ATen)', 10):.2f} ms",
        f"bf16 copy, {1000 * ddpm['seconds'] / 250:.1f} ms",
    ]
    fp32 = next(s for s in bench["sampling"] if s.get("bf16_weights") is False)
    texts.append(f"{fp32['profile']['busy_ms'] / 10:.1f} ms busy of {1000 * fp32['seconds'] / 250:.1f} ms")
    texts.append(f"{fp32['profile']['busy_ms'] / 10:.1f} → {sp['busy_ms'] / 10:.1f} ms")
    # the sampler's achieved rate and the arithmetic floor, from the DDPM-250 row and the forward MACs of DiT-S/2
    flop_per_image = 250 * 2 * rows["baseline"]["gmacs_forward"] * 1e9
    achieved = ddpm["img_per_s"] * flop_per_image / 1e12
    texts += [
        f"{achieved:.0f} TFLOP/s, {achieved / bench['peak_tflops']:.0%} of the card's\nbf16 peak",
        f"floor for DDPM-250 is {10_000 * flop_per_image / (bench['peak_tflops'] * 1e12):.0f} s",
    ]
    # the ladder run (before the per-step check was removed): idle share, bf16 copy, max-autotune
    ladder = _load("bench", "bench_h200_sample_ladder.json")["sampling"]
    unguided = [s for s in ladder if s["sampler"] == "ddpm-250" and s["cfg_scale"] == 1.0]
    by_setting = {(s["compile_mode"], s["bf16_weights"]): s for s in unguided}
    assert len(by_setting) == len(unguided) == 4
    before = by_setting[("default", False)]
    texts.append(f"({before['profile']['busy_ms'] / 10:.1f} ms busy of {1000 * before['seconds'] / 250:.1f} ms)")
    texts.append(f"(17.9 → {by_setting[('default', True)]['profile']['busy_ms'] / 10:.1f} ms")
    tuned = by_setting[("max-autotune-no-cudagraphs", False)]
    texts.append(f"({tuned['img_per_s']:.1f} against\n{before['img_per_s']:.1f} img/s)")
    texts.append(f"for {tuned['first_seconds']:.0f} s of compiling")
    small = _load("bench", "bench_h200_small.json")
    by = {(r["model"], r["variant"]): r["img_per_s"] for r in small["training"]}
    for model in ("DiT-S/4", "DiT-S/8"):
        plain, graphs = by[(model, "fast-recompute")], by[(model, "fast-recompute-cudagraphs")]
        texts.append(f"| {model} | ")
        texts += [f"{plain:,.0f} img/s | {graphs:,.0f} img/s | {graphs / plain:.2f}× |"]
    default_then = earlier["fast-recompute"]  # the small models were timed in that sitting
    texts.append(f"{by[('DiT-S/4', 'fast-recompute-cudagraphs')] / default_then:.2f}× DiT-S/2's default")
    texts.append(f"graphs\n{by[('DiT-S/4', 'fast-recompute')] / default_then:.2f}×")
    conc = small["concurrent"]
    texts += [f"{conc['img_per_s_total']:,.0f} img/s together", f"overlapping {100 * conc['overlap_share']:.0f}%"]
    variants = _load("bench", "bench_h200_sampling.json")["sampling"]
    texts += [f"{s['img_per_s']:.1f}" for s in variants if s["sampler"] == "ddpm-250" and s["cfg_scale"] == 1.0]
    missing = [t for t in _quoted(texts) if t.replace("\n", " ") not in README.replace("\n", " ")]
    assert not missing, f"README numbers not in the H200 bench JSON files: {missing}"


def test_fusion_levers_match_their_json():
    """The Triton-only products row (same process as a default row) and the cuBLASLt GELU-epilogue probe."""
    rows = _load("bench", "bench_h200_sample_triton.json")["sampling"]
    triton = next(r for r in rows if r["compile_mode"] == "max-autotune-triton")
    default = next(r for r in rows if r["compile_mode"] == "default")
    assert triton["img_per_s"] < default["img_per_s"]  # the README says slower
    texts = [
        f"{triton['img_per_s']:.1f} img/s against {default['img_per_s']:.1f}",
        f"after {triton['first_seconds']:.0f} s of compiling",
        f"{_per_step(triton['profile'], 'matmul', 10):.1f} ms a step against cuBLAS's "
        f"{_per_step(default['profile'], 'matmul', 10):.1f} ms",
        f"from {_per_step(default['profile'], 'compiled elementwise/norm (Triton)', 10):.1f} to "
        f"{_per_step(triton['profile'], 'compiled elementwise/norm (Triton)', 10):.1f} ms",
    ]
    probe = _load("bench", "gelu_epilogue_h200.json")
    assert probe["device_name"] == "NVIDIA H200" and probe["shape"]["tokens"] == 500 * 256
    assert probe["max_abs_err_vs_tanh_gelu_fp64"] <= probe["max_abs_err_separate_vs_tanh_gelu_fp64"]
    texts += [
        f"it takes {probe['ms_fused_epilogue']:.2f} ms against {probe['ms_separate_compiled']:.2f} ms",
        f"{probe['fused_saves_ms_per_sampling_step_12_blocks']:.1f} ms of a 19.6 ms step",
    ]
    missing = [t for t in texts if t not in README.replace("\n", " ")]
    assert not missing, f"README numbers not in the fusion JSON files: {missing}"


def test_auto_compile_mode_run_is_what_the_readme_says():
    """The whole training loop with compile mode auto on a small model: the history the README links."""
    h = _load("bench", "train_auto_s8_history.json")
    assert h["device_name"] == "NVIDIA H200" and h["config"]["model"] == "DiT-S/8"
    assert h["config"]["compile_mode"] == "auto" and h["compile_mode"] == "reduce-overhead" and h["compiled"]
    assert h["final_step"] == 600 and len(h["checkpoints"]) == 4 and h["config"]["resume"]
    fast = [r for r in h["img_per_s"] if r > 10_000]  # the log intervals without a checkpoint or sample grid
    assert len(fast) >= 6 and min(fast) >= 30_000 and max(fast) <= 40_500
    assert "logged 30,000-40,000 img/s between checkpoints" in README.replace("\n", " ")


def test_sampling_cli_breakdown_matches_the_bench():
    """The CLI's steady batch is the bench's (one sampler path): 117.9 s of sampling, 24.9 s of it the first
    batch, so 19 more batches of 500 at 4.9 s each -- what the bench measured for its steady call."""
    bench = _load("bench", "bench_h200.json")
    ddpm = next(s for s in bench["sampling"] if s["sampler"] == "ddpm-250" and s["cfg_scale"] == 1.0)
    assert "it reports 117.9 s of sampling, 24.9 s of it the first batch" in README.replace("\n", " ")
    cli_batch = (117.9 - 24.9) / 19
    assert abs(cli_batch - ddpm["seconds"]) / ddpm["seconds"] < 0.02
    assert f"steady batch\n({ddpm['seconds']:.1f} s)" in README


def test_latent_table_matches_results_json():
    g = _load("10_latent_diffusion", "results.json")
    assert g["device_name"] == "NVIDIA H200" and g["status"] == "done"
    texts = []
    for name, label in (("latent", "latent DiT-S/2"), ("pixel", "pixel DiT-S/2")):
        m = g["models"][name]
        for scale, s in g["samples"][name].items():
            texts.append(
                f"| {label} | {m['tokens_per_image']} | {m['gflops']:.3f} | {m['steps']:,} | "
                f"{m['img_per_s']:,.0f} | {scale} | {s['fid']:.2f} | {100 * s['class_accuracy']:.1f}% | "
                f"{s['precision']:.2f} | {s['recall']:.2f} |"
            )
    r = g["autoencoder"]["reconstruction"]
    texts += [
        f"PSNR {r['psnr']:.2f} dB",
        f"SSIM {r['ssim']:.3f}",
        f"FID {r['fid']:.2f}",
        f"(real floor {r['floor']['fid']:.2f})",
        f"std {g['latents']['raw_std']:.3f}",
        f"scale factor is {g['latents']['scale_factor']:.4f}",
        f"{g['autoencoder']['training_compute'] / g['models']['latent']['training_compute']:.1f}× the latent DiT",
    ]
    missing = [t for t in _quoted(texts) if t.replace("\n", " ") not in README.replace("\n", " ")]
    assert not missing, f"README numbers not in 10_latent_diffusion/results.json: {missing}"
