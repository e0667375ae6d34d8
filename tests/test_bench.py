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
    assert set(rows) == {"baseline", bench.default_variant()} and bench.default_variant() == "fast-recompute"
    for row in rows.values():
        assert row["img_per_s"] > 0 and row["step_ms_median"] > 0
        assert row["gflop_per_train_image"] == pytest.approx(6 * row["gmacs_forward"])
        assert row["mfu"] == pytest.approx(row["img_per_s"] * row["gflop_per_train_image"] / 1e3)  # peak 1 TFLOP/s
    assert [r["sampler"] for r in report["sampling"]] == ["ddpm-2", "ddpm-2", "ddim-2"]
    assert [r["cfg_scale"] for r in report["sampling"]] == [1.0, 1.5, 1.0]
    assert all(r["img_per_s"] > 0 for r in report["sampling"])
    assert f"DiT-T/4 {bench.default_variant()} / baseline" in report["speedups"]
    assert "img/s" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--variants", "turbo"], "unknown variant"),
        (["--model", "DiT-Q/2"], "unknown model"),
        (["--batch", "0"], "--batch must be >= 1"),
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

    calls = []
    real = sample_module.sample

    def recording(model, diffusion, labels, **kwargs):
        calls.append({k: kwargs.get(k) for k in ("sampler", "steps", "cfg_scale", "compile", "amp")})
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
