"""minidit.tools.bench: the CPU smoke run, its JSON, the MFU arithmetic and bad flags."""

from __future__ import annotations

import json

import pytest
import torch

from minidit.flops import dit_macs
from minidit.tools import bench


def test_flops_per_training_image_of_dit_s2():
    """The issue's anchor: DiT-S/2 is 6.05 GMAC forward, so 3 x 2 x 6.05 = 36.3 GFLOP per training image."""
    gflop = 6 * dit_macs("DiT-S/2", input_size=32, in_channels=4) / 1e9
    assert gflop == pytest.approx(36.3, rel=0.01)


def test_time_steps_on_cpu():
    calls = []
    timing = bench.time_steps(lambda: calls.append(1), torch.device("cpu"), warmup=2, steps=5)
    assert len(calls) == 7 and timing["timed_steps"] == 5
    assert 0 <= timing["step_ms_min"] <= timing["step_ms_median"]
    assert bench.peak_tflops(torch.device("cpu"), 2.0) == (2.0, "--peak-tflops")
    assert bench.peak_tflops(torch.device("cpu"))[0] is None


def test_cpu_smoke_run(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = bench.main(
        [
            "--model",
            "DiT-T/4",
            "--batch",
            "8",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--sample-batch",
            "2",
            "--ddpm-steps",
            "2",
            "--ddim-steps",
            "2",
            "--peak-tflops",
            "1.0",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    for key in ("device_name", "torch_version", "date", "command", "peak_tflops", "training", "sampling"):
        assert key in report
    assert report["command"].startswith("python -m minidit.tools.bench --model DiT-T/4")
    rows = {r["variant"]: r for r in report["training"]}
    # a DiT-T/4 step at batch 8 is tiny: what minidit.train runs for it ("auto") is the CUDA-graph step
    assert set(rows) == {"baseline", bench.default_variant("DiT-T/4", 8)} == {"baseline", "fast-recompute-cudagraphs"}
    for row in rows.values():
        assert row["img_per_s"] > 0 and row["step_ms_median"] > 0
        assert row["gflop_per_train_image"] == pytest.approx(6 * row["gmacs_forward"])
        assert row["mfu"] == pytest.approx(row["img_per_s"] * row["gflop_per_train_image"] / 1e3)  # peak 1 TFLOP/s
    assert [r["sampler"] for r in report["sampling"]] == ["ddpm-2", "ddpm-2", "ddim-2"]
    assert [r["cfg_scale"] for r in report["sampling"]] == [1.0, 1.5, 1.0]
    assert all(r["img_per_s"] > 0 for r in report["sampling"])
    assert f"DiT-T/4 {bench.default_variant('DiT-T/4', 8)} / baseline" in report["speedups"]
    assert "img/s" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--variants", "turbo"], "unknown variant"),
        (["--model", "DiT-Q/2"], "unknown model"),
        (["--batch", "0"], "--batch must be >= 1"),
        (["--sample-batch", "500", "0"], "--sample-batch must be >= 1"),
        (["--sample-modes", "turbo"], "--sample-modes: expected some of"),
        (["--sample-weights", "fp16"], "--sample-weights: expected some of"),
        (["--combine", "a.json"], "--combine needs --out"),
    ],
)
def test_bad_flags(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        bench.main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_bench_times_the_sampler_the_cli_runs(tmp_path, monkeypatch):
    """One sampler path (issue [11]): the bench and `python -m minidit.sample` call the same function, alike."""
    import minidit.sample as sample_module
    from minidit import checkpoint
    from minidit.model import create_model
    from minidit.tools.bench import bench_sampling

    calls, batches = [], []
    real = sample_module.sample

    def recording(model, diffusion, labels, **kwargs):
        keys = ("sampler", "steps", "cfg_scale", "compile", "amp", "compile_mode", "bf16_weights")
        calls.append({k: kwargs.get(k) for k in keys})
        calls[-1]["compile_mode"] = calls[-1]["compile_mode"] or "default"  # the CLI leaves it at sample()'s default
        batches.append(len(labels))
        return real(model, diffusion, labels, **{**kwargs, "steps": 2})  # the same call, kept short

    monkeypatch.setattr(sample_module, "sample", recording)
    rows = bench_sampling(
        "DiT-T/4",
        torch.device("cpu"),
        4,
        ddpm_steps=250,
        ddim_steps=50,
        cfg_scale=1.5,
        compile=None,
        block="adaLN-Zero",
    )
    bench_calls = calls[:]
    assert [r["sampler"] for r in rows] == ["ddpm-250", "ddpm-250", "ddim-50"] and len(bench_calls) == 6
    assert all(r["first_seconds"] > 0 and r["seconds"] > 0 for r in rows)
    calls.clear()
    model = create_model("DiT-T/4", input_size=16, in_channels=1, num_classes=10)
    ckpt = checkpoint.save_weights(
        tmp_path / "w.safetensors", model, model, {"train": {"noise_schedule": "linear", "diffusion_steps": 1000}}
    )
    for argv in ([], ["--cfg-scale", "1.5"], ["--sampler", "ddim", "--steps", "50"]):
        assert (
            sample_module.main(["--ckpt", str(ckpt), "--out", str(tmp_path / "g.png"), "--per-class", "1", *argv]) == 0
        )
    cli_calls = calls[:]
    # every setting the CLI passes is what the bench passes for the same sampler (defaults included)
    for cli in cli_calls:
        same = [
            b
            for b in bench_calls
            if (b["sampler"], b["steps"], b["cfg_scale"]) == (cli["sampler"], cli["steps"], cli["cfg_scale"])
        ]
        assert same and all(b == cli for b in same), (cli, bench_calls)
    # and the same batch: the bench's default is the CLI's (a 600-image CLI run samples 500, then 100)
    batches.clear()
    assert sample_module.main(["--ckpt", str(ckpt), "--out", str(tmp_path / "g.png"), "--num", "600"]) == 0
    assert batches == [sample_module.DEFAULT_BATCH_SIZE, 100]
    assert bench.build_parser().parse_args([]).sample_batch == [sample_module.DEFAULT_BATCH_SIZE]


@pytest.mark.parametrize(
    "mode, recompute, model, name",
    [
        ("default", True, "DiT-S/2", "fast-recompute"),
        ("default", False, "DiT-S/2", "fast"),
        ("reduce-overhead", True, "DiT-S/2", "fast-recompute-cudagraphs"),
        ("reduce-overhead", False, "DiT-S/2", "fast-cudagraphs"),
        ("max-autotune-no-cudagraphs", True, "DiT-S/2", "fast-autotune-recompute"),
        ("auto", True, "DiT-S/2", "fast-recompute"),  # 1,549 forward GMACs a step: no graphs
        ("auto", True, "DiT-B/4", "fast-recompute"),  # 1,420
        ("auto", True, "DiT-S/4", "fast-recompute-cudagraphs"),  # 361: launch-bound, graphs
        ("auto", True, "DiT-S/8", "fast-recompute-cudagraphs"),
    ],
)
def test_default_variant_is_what_train_runs(monkeypatch, mode, recompute, model, name):
    from minidit.train import TrainConfig

    monkeypatch.setattr(bench, "TrainConfig", lambda: TrainConfig(compile_mode=mode, recompute_gelu=recompute))
    assert bench.default_variant(model) == name and name in bench.TRAIN_VARIANTS


def test_kernel_breakdown_sums_kinds_and_finds_idle_time():
    """Three kernels in a 10 ms window: a matmul 0-4 ms, an overlapping Triton kernel 3-5 ms (the union is 5 ms
    busy), an attention kernel 8-9 ms: 6 ms busy of a 9 ms span, a third idle; kinds sum the kernels' own times."""
    kernels = [
        ("nvjet_sm90_tst_128x256_bias_TNN", 0, 4000),
        ("triton_per_fused_add_native_layer_norm_0", 3000, 5000),
        ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop", 8000, 9000),
    ]
    b = bench.kernel_breakdown(kernels, wall_ms=10.0)
    assert b["busy_ms"] == pytest.approx(6.0) and b["span_ms"] == pytest.approx(9.0)
    assert b["idle_share"] == pytest.approx(1 / 3) and b["wall_ms"] == 10.0
    assert {k: v["ms"] for k, v in b["kinds"].items()} == {
        "matmul": 4.0,
        "compiled elementwise/norm (Triton)": 2.0,
        "attention": 1.0,
    }
    assert sum(v["share"] for v in b["kinds"].values()) == pytest.approx(1.0)
    assert b["top"][0]["name"].startswith("nvjet") and b["top"][0]["kind"] == "matmul"
    assert bench.kernel_kind("void at::native::vectorized_elementwise_kernel<4>") == "eager elementwise/other (ATen)"
    assert bench.kernel_kind("multi_tensor_apply_kernel<FusedAdam>") == "optimizer"
    assert bench.kernel_kind("fmha_cutlassF_f32_aligned_64x64_rf_sm80") == "attention"
    assert bench.kernel_kind("triton_tem_fused_addmm_gelu_3") == "matmul"
    assert bench.kernel_breakdown([], wall_ms=5.0)["idle_share"] is None  # no kernels seen (CPU): no claim


def _report(path, rows):
    path.write_text(json.dumps({"device_name": "GPU X", "training": rows}))
    return path


def test_combine_concurrent_sums_rates_and_measures_overlap(tmp_path):
    """Three processes timed over [0, 10], [2, 12] and [4, 10] s: all three were timing during [4, 10], 6 s of the
    longest window (10 s); a failed row (no img/s) is left out."""
    row = {"model": "DiT-S/4", "variant": "fast", "batch": 256}
    paths = [
        _report(tmp_path / f"p{i}.json", [{**row, "img_per_s": rate, "timed_window": window}])
        for i, (rate, window) in enumerate([(100.0, [0, 10]), (200.0, [2, 12]), (300.0, [4, 10])])
    ]
    paths.append(_report(tmp_path / "failed.json", [{**row, "error": "out of memory"}]))
    out = _report(tmp_path / "small.json", [{**row, "img_per_s": 5.0, "timed_window": [0, 1]}])
    assert bench.main(["--combine", *map(str, paths), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    conc = report["concurrent"]
    assert conc["processes"] == 3 and conc["img_per_s_total"] == 600.0
    assert conc["overlap_share"] == pytest.approx(0.6)
    assert report["training"][0]["img_per_s"] == 5.0  # what the report held stays
    apart = [
        _report(tmp_path / f"q{i}.json", [{**row, "img_per_s": 1.0, "timed_window": w}])
        for i, w in enumerate([[0, 1], [2, 3]])
    ]
    assert bench.combine_concurrent(apart, tmp_path / "apart.json")["overlap_share"] == 0.0
    with pytest.raises(ValueError, match="no timed training rows"):
        bench.combine_concurrent([paths[-1]], tmp_path / "none.json")
