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
