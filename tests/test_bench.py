"""minidit.bench: the CPU smoke run, its JSON, the MFU arithmetic and bad flags."""

from __future__ import annotations

import json

import pytest
import torch

from minidit import bench
from minidit.flops import dit_macs


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
    code = bench.main(["--model", "DiT-T/4", "--batch", "8", "--steps", "2", "--warmup", "1", "--sample-batch", "2",
                       "--ddpm-steps", "2", "--ddim-steps", "2", "--peak-tflops", "1.0", "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    for key in ("device_name", "torch_version", "date", "command", "peak_tflops", "training", "sampling"):
        assert key in report
    assert report["command"].startswith("python -m minidit.bench --model DiT-T/4")
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


@pytest.mark.parametrize("argv, message", [(["--variants", "turbo"], "unknown variant"),
                                           (["--model", "DiT-Q/2"], "unknown model"),
                                           (["--batch", "0"], "--batch must be >= 1")])
def test_bad_flags(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        bench.main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err
