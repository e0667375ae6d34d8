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


def test_h200_speed_tables_match_bench_json():
    """The H200 training, small-model and sampling tables: every row is what the bench JSON files hold."""
    bench = _load("bench", "bench_h200.json")
    assert bench["device_name"] == "NVIDIA H200"
    rows = {r["variant"]: r for r in bench["training"]}
    base, official = rows["baseline"]["img_per_s"], rows["baseline-bf16-compile"]["img_per_s"]
    texts = []
    for variant in ("baseline", "baseline-bf16-compile", "fast-recompute", "fast-recompute-cudagraphs"):
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
    for s in bench["sampling"]:
        texts += [f"{s['img_per_s']:.1f}", f"{s['first_seconds']:.1f} s"]
        assert f"{s['seconds_for_10k_images']:.0f} s" in README or f"{s['seconds_for_10k_images']:.1f} s" in README
    # the sampler's achieved rate and the arithmetic floor, from the DDPM-250 row and the forward MACs of DiT-S/2
    ddpm = next(s for s in bench["sampling"] if s["sampler"] == "ddpm-250" and s["cfg_scale"] == 1.0)
    flop_per_image = 250 * 2 * rows["baseline"]["gmacs_forward"] * 1e9
    achieved = ddpm["img_per_s"] * flop_per_image / 1e12
    texts += [
        f"{achieved:.0f} TFLOP/s, {achieved / bench['peak_tflops']:.0%} of the card's bf16 peak",
        f"floor for DDPM-250 is {10_000 * flop_per_image / (bench['peak_tflops'] * 1e12):.0f} s",
    ]
    small = _load("bench", "bench_h200_small.json")
    by = {(r["model"], r["variant"]): r["img_per_s"] for r in small["training"]}
    for model in ("DiT-S/4", "DiT-S/8"):
        plain, graphs = by[(model, "fast-recompute")], by[(model, "fast-recompute-cudagraphs")]
        texts.append(f"| {model} | ")
        texts += [f"{plain:,.0f} img/s | {graphs:,.0f} img/s | {graphs / plain:.2f}× |"]
    texts.append(f"{by[('DiT-S/4', 'fast-recompute-cudagraphs')] / default['img_per_s']:.2f}× DiT-S/2's default")
    texts.append(f"without graphs {by[('DiT-S/4', 'fast-recompute')] / default['img_per_s']:.2f}×")
    conc = small["concurrent"]
    texts += [f"{conc['img_per_s_total']:,.0f} img/s together", f"overlapping\n{100 * conc['overlap_share']:.0f}%"]
    variants = _load("bench", "bench_h200_sampling.json")["sampling"]
    texts += [f"{s['img_per_s']:.1f}" for s in variants if s["sampler"] == "ddpm-250" and s["cfg_scale"] == 1.0]
    missing = [t for t in _quoted(texts) if t.replace("\n", " ") not in README.replace("\n", " ")]
    assert not missing, f"README numbers not in the H200 bench JSON files: {missing}"


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
