"""minidit.sample: respacing, DDIM's closed form at init, guidance wiring, PNG/NPZ files and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minidit import checkpoint
from minidit.diffusion import create_diffusion
from minidit.model import create_model
from minidit.sample import main, make_grid, respace, sample, save_image_grid, save_npz, write_png


def _model(perturb: bool = True, seed: int = 0):
    """DiT-T/4 on 16x16 images; perturbed so its output depends on x, t and y (at init adaLN-Zero outputs 0)."""
    torch.manual_seed(seed)
    model = create_model("DiT-T/4", input_size=16, in_channels=1, num_classes=10)
    if perturb:
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(0.05 * torch.randn_like(p))
    return model


def test_respace():
    base = create_diffusion()
    ddpm = respace(base, "ddpm", 10)
    assert ddpm.num_timesteps == 10 and ddpm.timestep_map.tolist() == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    assert respace(base, "ddim", 10).timestep_map.tolist() == list(range(0, 1000, 100))
    torch.testing.assert_close(ddpm.alphas_cumprod, base.alphas_cumprod[ddpm.timestep_map], rtol=1e-5, atol=0)
    assert respace(base, "ddpm", None) is base and respace(base, "ddpm", 1000) is base
    with pytest.raises(ValueError, match="already respaced"):
        respace(ddpm, "ddpm", 5)
    with pytest.raises(ValueError, match="sampler"):
        respace(base, "euler", 10)


def test_ddim_from_a_model_that_predicts_zero_noise():
    """adaLN-Zero at init predicts eps = 0, so DDIM (eta 0) returns clamp(x_T / sqrt(abar of its first step))."""
    model, diffusion = _model(perturb=False), create_diffusion()
    noise = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    out = sample(model, diffusion, [0, 1, 2], sampler="ddim", steps=5, noise=noise)
    first_abar = respace(diffusion, "ddim", 5).alphas_cumprod[-1]
    torch.testing.assert_close(out, (noise / first_abar.sqrt()).clamp(-1, 1), rtol=1e-5, atol=1e-5)


def test_shapes_determinism_and_mode():
    model, diffusion = _model(), create_diffusion()
    model.train()
    runs = [
        sample(model, diffusion, torch.tensor([0, 3, 9, 9]), steps=4, generator=torch.Generator().manual_seed(1))
        for _ in range(2)
    ]
    assert runs[0].shape == (4, 1, 16, 16) and runs[0].dtype == torch.float32
    assert runs[0].min() >= -1 and runs[0].max() <= 1
    assert torch.equal(runs[0], runs[1]), "the same generator seed must give the same images"
    assert model.training, "sample() must restore the model's training mode"
    with pytest.raises(ValueError, match="eta"):
        sample(model, diffusion, [0], eta=0.5)


def test_guidance_goes_through_forward_with_cfg(monkeypatch):
    model, diffusion = _model(), create_diffusion()
    noise = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    seen = []
    real = model.forward_with_cfg

    def spy(x, t, y, cfg_scale, guided_channels=None):
        seen.append((cfg_scale, guided_channels, x.shape[0]))
        return real(x, t, y, cfg_scale, guided_channels)

    monkeypatch.setattr(model, "forward_with_cfg", spy)
    sample(model, diffusion, [1, 2], cfg_scale=1.0, sampler="ddim", steps=3, noise=noise)
    assert seen == [], "cfg_scale 1 is plain conditional sampling"
    guided_zero = sample(model, diffusion, [1, 2], cfg_scale=0.0, sampler="ddim", steps=3, noise=noise)
    assert seen == [(0.0, None, 2)] * 3
    # scale 0 is the unconditional model: the same as sampling with the null label (index num_classes)
    unconditional = sample(model, diffusion, [10, 10], sampler="ddim", steps=3, noise=noise)
    torch.testing.assert_close(guided_zero, unconditional, rtol=1e-4, atol=1e-5)
    conditional = sample(model, diffusion, [1, 2], sampler="ddim", steps=3, noise=noise)
    assert (conditional - unconditional).abs().max() > 1e-3, "the label should matter for a perturbed model"


def test_png_and_npz(tmp_path):
    import matplotlib.image

    images = torch.linspace(-1, 1, 5 * 3 * 4).reshape(5, 1, 3, 4)
    grid = make_grid(images, nrow=2, padding=1)
    assert grid.shape == (3 * (3 + 1) + 1, 2 * (4 + 1) + 1) and grid.dtype == np.uint8
    path = save_image_grid(images, tmp_path / "g.png", nrow=2)
    decoded = matplotlib.image.imread(path)  # an independent PNG decoder
    np.testing.assert_array_equal(np.round(decoded * 255).astype(np.uint8), make_grid(images, nrow=2))
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    write_png(tmp_path / "rgb.png", rgb)
    np.testing.assert_array_equal(np.round(matplotlib.image.imread(tmp_path / "rgb.png") * 255).astype(np.uint8), rgb)
    labels = torch.arange(5)
    with np.load(save_npz(images, labels, tmp_path / "s.npz")) as f:
        assert f["images"].dtype == np.uint8 and f["images"].shape == (5, 1, 3, 4)
        np.testing.assert_array_equal(f["labels"], labels.numpy())
        assert f["images"][0, 0, 0, 0] == 0 and f["images"][-1, 0, -1, -1] == 255


def test_cli(tmp_path, capsys):
    model = _model()
    ckpt = checkpoint.save_weights(
        tmp_path / "run" / "checkpoints" / "0000010.safetensors",
        model,
        model,
        {"train": {"noise_schedule": "linear", "diffusion_steps": 1000}},
    )
    code = main(
        [
            "--ckpt",
            str(tmp_path / "run"),
            "--out",
            str(tmp_path / "grid.png"),
            "--npz",
            str(tmp_path / "s.npz"),
            "--per-class",
            "1",
            "--sampler",
            "ddim",
            "--steps",
            "3",
            "--cfg-scale",
            "2",
            "--batch-size",
            "4",
        ]
    )
    assert code == 0
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"
    with np.load(tmp_path / "s.npz") as f:
        assert f["images"].shape == (10, 1, 16, 16)
        np.testing.assert_array_equal(f["labels"], np.arange(10))
    assert "wrote" in capsys.readouterr().out
    raw_only = checkpoint.save_weights(tmp_path / "raw.safetensors", model)
    for argv, message in (
        ([str(tmp_path / "nothing.safetensors")], "does not exist"),
        ([str(raw_only)], "no EMA weights"),
    ):
        with pytest.raises(SystemExit) as info:
            main(["--ckpt", *argv, "--out", str(tmp_path / "x.png")])
        assert info.value.code == 2 and message in capsys.readouterr().err
    assert ckpt.exists()


def _weights(tmp_path, name: str, step: int, warmup: str | None, with_stats: bool = True):
    """A weights file as minidit.train writes it after `step` steps with this EMA warm-up (None: no train config)."""
    from minidit.ema import ema_stats

    model = _model()
    config = {"train": {"noise_schedule": "linear", "diffusion_steps": 1000}}
    if warmup is not None:
        config = {"train": {**config["train"], "ema_decay": 0.9999, "ema_warmup": warmup}, "step": step}
        if with_stats:
            config.update(ema_stats(step, 0.9999, warmup))
    return checkpoint.save_weights(tmp_path / name, model, model, config)


def test_sampling_a_young_ema_warns_and_says_what_to_do(tmp_path, capsys):
    import warnings

    from minidit.sample import YoungEMAWarning, checkpoint_ema_stats, load_model_for_sampling

    young = _weights(tmp_path, "young.safetensors", 7420, "none")  # the run: 48% of the init left
    with pytest.warns(YoungEMAWarning, match=r"48%.*--ema-warmup.*--raw"):
        load_model_for_sampling(young, device="cpu")
    # files written before the EMA fields existed: recomputed from the training config and step
    old = _weights(tmp_path, "old.safetensors", 7420, "none", with_stats=False)
    assert checkpoint_ema_stats(checkpoint.read_weights_config(old))["ema_init_share"] == pytest.approx(0.9999**7420)
    with pytest.warns(YoungEMAWarning):
        load_model_for_sampling(old, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of these may warn
        load_model_for_sampling(_weights(tmp_path, "ok.safetensors", 7420, "ema_warmup"), device="cpu")
        load_model_for_sampling(young, use_ema=False, device="cpu")  # the raw weights are not an EMA
        load_model_for_sampling(_weights(tmp_path, "bare.safetensors", 0, None), device="cpu")  # nothing known
    # the CLI shows it too
    assert (
        main(
            [
                "--ckpt",
                str(young),
                "--out",
                str(tmp_path / "g.png"),
                "--per-class",
                "1",
                "--sampler",
                "ddim",
                "--steps",
                "2",
                "--batch-size",
                "10",
            ]
        )
        == 0
    )
    assert "48%" in capsys.readouterr().err


def test_compiled_sampling_matches_eager():
    """The compiled path (the CUDA default) draws the same images as the eager one, with and without guidance."""
    model, diffusion = _model(), create_diffusion(None, "linear", True, 1000)
    labels = torch.arange(4)
    for scale in (1.0, 2.5):
        eager = sample(
            model,
            diffusion,
            labels,
            cfg_scale=scale,
            steps=3,
            compile=False,
            generator=torch.Generator().manual_seed(0),
        )
        compiled = sample(
            model, diffusion, labels, cfg_scale=scale, steps=3, compile=True, generator=torch.Generator().manual_seed(0)
        )
        torch.testing.assert_close(compiled, eager, atol=2e-3, rtol=0)  # fused kernels round differently


def test_unknown_compile_mode_is_an_error():
    model, diffusion = _model(), create_diffusion(None, "linear", True, 1000)
    with pytest.raises(ValueError, match="compile mode must be one of"):
        sample(model, diffusion, torch.arange(2), steps=2, compile=False, compile_mode="turbo")


def _run_dir(tmp_path, steps=(10, 20)):
    """A run folder with EMA checkpoints at the given steps (what minidit.train writes)."""
    model = _model()
    for step in steps:
        checkpoint.save_weights(
            tmp_path / "run" / "checkpoints" / f"{step:07d}.safetensors",
            model,
            model,
            {"step": step, "train": {"noise_schedule": "linear", "diffusion_steps": 1000}},
        )
    return tmp_path / "run"


def _cli_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
    return err


def test_cli_says_which_weights_it_loaded(tmp_path, capsys):
    run = _run_dir(tmp_path)
    assert (
        main(
            [
                "--ckpt",
                str(run),
                "--out",
                str(tmp_path / "g.png"),
                "--per-class",
                "1",
                "--sampler",
                "ddim",
                "--steps",
                "2",
            ]
        )
        == 0
    )
    assert f"loaded {run / 'checkpoints' / '0000020.safetensors'} (step 20, EMA weights)" in capsys.readouterr().out


def test_cli_rejects_bad_flags_and_outputs_before_sampling(tmp_path, capsys, monkeypatch):
    import minidit.sample as sample_module

    run = str(_run_dir(tmp_path))
    monkeypatch.setattr(sample_module, "sample", lambda *a, **k: pytest.fail("sampling started despite a bad flag"))
    good = ["--ckpt", run, "--out", str(tmp_path / "g.png")]
    assert "--per-class must be >= 1" in _cli_error(capsys, [*good, "--per-class", "0"])
    assert "--batch-size must be >= 1" in _cli_error(capsys, [*good, "--batch-size", "0"])
    assert "--steps must be >= 1" in _cli_error(capsys, [*good, "--steps", "-3"])
    assert "--num must be >= 1" in _cli_error(capsys, [*good, "--num", "0"])
    assert "1000" in _cli_error(capsys, [*good, "--steps", "2000"])
    assert "--sampler ddim" in _cli_error(capsys, [*good, "--eta", "0.5"])
    (tmp_path / "taken").mkdir()
    assert "is an existing folder" in _cli_error(capsys, ["--ckpt", run, "--out", str(tmp_path / "taken")])
    (tmp_path / "a_file").write_text("x")
    assert "is a file" in _cli_error(capsys, [*good, "--npz", str(tmp_path / "a_file" / "s.npz")])
    no_null = create_model("DiT-T/4", input_size=16, in_channels=1, num_classes=10, class_dropout_prob=0.0)
    path = checkpoint.save_weights(tmp_path / "no_null.safetensors", no_null, no_null)
    assert "guidance" in _cli_error(capsys, ["--ckpt", str(path), "--cfg-scale", "4", "--out", str(tmp_path / "x.png")])


def test_cli_refuses_a_damaged_checkpoint_and_names_the_intact_one(tmp_path, capsys):
    run = _run_dir(tmp_path)
    newest = run / "checkpoints" / "0000020.safetensors"
    raw = bytearray(newest.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one flipped bit in the tensor data
    newest.write_bytes(bytes(raw))
    err = _cli_error(capsys, ["--ckpt", str(run), "--out", str(tmp_path / "g.png")])
    assert "0000020.safetensors failed its checksum" in err and "0000010.safetensors" in err


def test_a_diverged_model_is_an_error_not_black_images():
    model = _model()
    with torch.no_grad():
        model.final_layer.linear.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN/inf"):
        sample(model, create_diffusion(), torch.tensor([0, 1]), sampler="ddim", steps=2)


def test_bf16_weights_sample_a_copy_as_close_to_fp32_as_autocast():
    """bf16_weights samples a bf16 copy of the model: the caller's weights stay fp32 and its mode is kept. Against
    fp32 sampling, its images differ about as much as bf16 autocast's (the CUDA default's) do: bf16 keeps 8 bits of
    mantissa, and a bf16 residual stream adds little to the error of bf16 matmuls."""
    model, diffusion = _model(), create_diffusion(None, "linear", True, 1000)
    model.train()
    labels = torch.arange(6)

    def run(**kwargs):
        return sample(
            model,
            diffusion,
            labels,
            sampler="ddpm",
            steps=25,
            compile=False,
            generator=torch.Generator().manual_seed(0),
            **kwargs,
        )

    fp32, autocast, bf16 = run(amp=False), run(amp=True, bf16_weights=False), run(amp=True, bf16_weights=True)
    # the default: the bf16 copy whenever bf16 autocast is on (CUDA's default), the weights as they are without it
    assert torch.equal(run(amp=True), bf16) and torch.equal(run(amp=False, bf16_weights=None), fp32)
    assert all(p.dtype == torch.float32 for p in model.parameters()) and model.training
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    err_autocast, err_bf16 = (autocast - fp32).abs().mean().item(), (bf16 - fp32).abs().mean().item()
    assert 0 < err_bf16 < 3 * err_autocast, (err_bf16, err_autocast)  # bf16 did run, and is as close
    assert (bf16 - fp32).abs().max().item() < 0.1
