"""Tests for minidit.latent (the KL autoencoder, its latent and scale factor) and minidit.tools.latent_experiment
(notebook 10's run, end to end in quick mode): closed forms and torch.distributions first, then behaviour."""

from __future__ import annotations

import json

import pytest
import torch

from minidit import latent as lat
from minidit.data import LatentDataset, sample_batch
from minidit.diffusion import create_diffusion
from minidit.model import create_model
from minidit.sample import sample
from minidit.tools import latent_experiment as lx
from minidit.train import TrainConfig, train

TINY = lat.AEConfig(widths=(8, 16, 16))


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _uint8_images(n=64, seed=0):
    """Bright squares of random size and place on black: a toy data set the autoencoder can learn fast."""
    g = _g(seed)
    x = torch.zeros(n, 1, 32, 32, dtype=torch.uint8)
    for i in range(n):
        a, b = torch.randint(2, 16, (2,), generator=g).tolist()
        s = int(torch.randint(6, 14, (1,), generator=g))
        x[i, :, a : a + s, b : b + s] = 255
    return x


# ----------------------------------------------------------------------------- the latent


def test_sample_posterior_is_the_reparameterisation():
    mean, logvar, noise = (
        torch.randn(2, 4, 8, 8, generator=_g(1)),
        torch.randn(2, 4, 8, 8, generator=_g(2)),
        torch.randn(2, 4, 8, 8, generator=_g(3)),
    )
    expected = mean + torch.sqrt(torch.exp(logvar)) * noise  # std = sqrt(variance)
    torch.testing.assert_close(lat.sample_posterior(mean, logvar, noise), expected, atol=1e-6, rtol=1e-6)
    # differentiable in mean and logvar: d z / d mean = 1, d z / d logvar = z_noise_part / 2
    m, lv = mean.clone().requires_grad_(), logvar.clone().requires_grad_()
    lat.sample_posterior(m, lv, noise).sum().backward()
    torch.testing.assert_close(m.grad, torch.ones_like(mean))
    torch.testing.assert_close(lv.grad, 0.5 * torch.exp(0.5 * logvar) * noise, atol=1e-6, rtol=1e-6)


def test_sample_posterior_draws_have_the_posterior_moments():
    mean, logvar = torch.full((20000, 1), 1.5), torch.full((20000, 1), 2 * torch.log(torch.tensor(0.5)).item())
    z = lat.sample_posterior(mean, logvar, generator=_g(4))
    assert abs(z.mean().item() - 1.5) < 0.02 and abs(z.std().item() - 0.5) < 0.02


def test_kl_divergence_matches_torch_distributions():
    mean, logvar = torch.randn(3, 4, 8, 8, generator=_g(5)), torch.randn(3, 4, 8, 8, generator=_g(6))
    q = torch.distributions.Normal(mean, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    expected = torch.distributions.kl_divergence(q, p).flatten(1).sum(1)  # (3,)
    torch.testing.assert_close(lat.kl_divergence(mean, logvar), expected, atol=1e-4, rtol=1e-5)
    assert torch.equal(lat.kl_divergence(torch.zeros(2, 4), torch.zeros(2, 4)), torch.zeros(2))  # q = p


def test_latent_scale_factor_gives_unit_std_and_matches_sd_convention():
    z = 5.5 * torch.randn(4096, 4, 8, 8, generator=_g(7)) + 0.3
    scale = lat.latent_scale_factor(z)
    assert isinstance(scale, float)
    assert scale == pytest.approx(1 / z.std().item(), rel=1e-6)
    assert (z * scale).std().item() == pytest.approx(1.0, abs=1e-5)
    assert scale == pytest.approx(1 / 5.5, rel=0.01)  # the SD VAE's 0.18215 is 1/5.49
    assert lat.latent_scale_factor(3 * z) == pytest.approx(scale / 3, rel=1e-5)


# ----------------------------------------------------------------------------- the autoencoder


def test_shapes_and_downsampling_factor():
    for cfg, size in ((TINY, 8), (lat.AEConfig(widths=(8, 16)), 16), (lat.AEConfig(), 8)):
        ae = lat.AutoencoderKL(cfg)
        x = torch.rand(2, 1, 32, 32, generator=_g(8)) * 2 - 1
        posterior = ae.encode(x, _g(9))
        assert cfg.factor == 32 // size
        for t in posterior:
            assert t.shape == (2, 4, size, size)
        assert ae.decode(posterior.sample).shape == (2, 1, 32, 32)
        rec, post = ae(x)
        assert rec.shape == x.shape and post.mean.shape == (2, 4, size, size)


def test_encode_samples_around_the_mean_and_rejects_bad_images():
    torch.manual_seed(0)
    ae = lat.AutoencoderKL(TINY)
    x = torch.rand(2, 1, 32, 32, generator=_g(10)) * 2 - 1
    p1, p2 = ae.encode(x, _g(1)), ae.encode(x, _g(2))
    torch.testing.assert_close(p1.mean, p2.mean)
    assert not torch.equal(p1.sample, p2.sample)
    noise = (p1.sample - p1.mean) / torch.exp(0.5 * p1.logvar)
    torch.testing.assert_close(lat.sample_posterior(p1.mean, p1.logvar, noise), p1.sample, atol=1e-5, rtol=1e-5)
    for bad in (torch.zeros(2, 3, 32, 32), torch.zeros(2, 1, 30, 30), torch.zeros(1, 32, 32)):
        with pytest.raises(ValueError, match="expected images"):
            ae.encode(bad)
    with pytest.raises(ValueError, match="kl_weight"):
        lat.AEConfig(kl_weight=-1)


def test_loss_is_l1_sum_plus_weighted_kl():
    x, x_rec = torch.rand(3, 1, 32, 32, generator=_g(11)), torch.rand(3, 1, 32, 32, generator=_g(12))
    mean, logvar = torch.randn(3, 4, 8, 8, generator=_g(13)), torch.randn(3, 4, 8, 8, generator=_g(14))
    post = lat.Posterior(mean, mean, logvar)
    out = lat.autoencoder_loss(x, x_rec, post, kl_weight=0.01)
    rec = (x - x_rec).abs().sum() / 3
    kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum() / 3
    torch.testing.assert_close(out["rec"], rec, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(out["kl"], kl, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(out["loss"], rec + 0.01 * kl, atol=1e-4, rtol=1e-5)


def test_training_reduces_the_reconstruction_error_and_respects_the_budget():
    images = _uint8_images(64)
    ae, history = lat.train_autoencoder(images, TINY, steps=60, batch_size=16, lr=3e-3, log_every=20, log=lambda m: 0)
    assert history["steps"] == 60 and history["step"] == [20, 40, 60] and not history["stopped_by_budget"]
    assert history["rec"][-1] < 0.6 * history["rec"][0], history["rec"]
    assert not ae.training and not any(p.requires_grad for p in ae.parameters())
    _, short = lat.train_autoencoder(images, TINY, steps=10_000, max_seconds=0.0, batch_size=4, log=lambda m: 0)
    assert short["steps"] == 1 and short["stopped_by_budget"] and short["step"] == [1]
    with pytest.raises(ValueError, match="uint8"):
        lat.train_autoencoder(images.float(), TINY, steps=1)


def test_encode_dataset_holds_scaled_latents_of_images_and_their_mirrors():
    torch.manual_seed(0)
    ae = lat.AutoencoderKL(TINY).eval()
    images, labels = _uint8_images(40), torch.arange(40) % 10
    data, scale = lat.encode_dataset(ae, images, labels, seed=3)
    assert isinstance(data, LatentDataset) and len(data) == 80 and data.images.shape == (80, 4, 8, 8)
    assert torch.equal(data.labels, torch.cat([labels, labels]))
    assert data.images.std().item() == pytest.approx(1.0, abs=1e-4)  # scaled to unit variance
    # the second half encodes the mirrored images, not mirrored latents
    mean_flipped = lat.encode_images(ae, images.flip(-1), sample=False)
    raw = data.images[40:] / scale
    assert (raw - mean_flipped).abs().mean() < (raw - mean_flipped.flip(-1)).abs().mean()
    # a given scale factor is used as it is
    data2, scale2 = lat.encode_dataset(ae, images, labels, seed=3, scale_factor=0.5)
    assert scale2 == 0.5
    torch.testing.assert_close(data2.images, data.images / scale * 0.5, atol=1e-5, rtol=1e-5)


def test_decode_latents_unscales_and_clamps():
    torch.manual_seed(0)
    ae = lat.AutoencoderKL(TINY).eval()
    z = torch.randn(3, 4, 8, 8, generator=_g(15))
    with torch.no_grad():
        expected = ae.decode(z).clamp(-1, 1)
    torch.testing.assert_close(lat.decode_latents(ae, z * 0.25, 0.25), expected, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- the seams in data, train, sample


def test_latent_dataset_batches_and_checks():
    data = LatentDataset(torch.randn(10, 4, 8, 8, generator=_g(16)) * 3, torch.arange(10), "latents")
    x, y = sample_batch(data, 5, _g(17))
    assert x.dtype == torch.float32 and x.shape == (5, 4, 8, 8) and x.abs().max() > 1  # not rescaled or clamped
    for row, label in zip(x, y):
        assert torch.equal(row, data.images[label])
    with pytest.raises(ValueError, match="float"):
        LatentDataset(torch.zeros(2, 4, 8, 8, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), "x")
    with pytest.raises(ValueError, match="labels"):
        LatentDataset(torch.zeros(2, 4, 8, 8), torch.zeros(3, dtype=torch.long), "x")


def test_train_takes_latents(tmp_path):
    data = LatentDataset(torch.randn(32, 4, 8, 8, generator=_g(18)), torch.arange(32) % 10, "latents")
    cfg = TrainConfig(
        model="DiT-T/2",
        global_batch_size=8,
        steps=3,
        log_every=1,
        ckpt_every=0,
        sample_every=0,
        precision="fp32",
        compile=False,
        flip=False,
        out_dir=str(tmp_path),
        progress=False,
    )
    history = train(cfg, data)
    assert history["final_step"] == 3 and len(history["loss"]) == 3
    assert history["model_config"]["input_size"] == 8 and history["model_config"]["in_channels"] == 4
    with pytest.raises(ValueError, match="sample_every=0"):
        train(TrainConfig(**{**cfg.__dict__, "sample_every": 3, "out_dir": str(tmp_path / "grids")}), data)


def test_sample_without_clipping_leaves_latents_unbounded():
    torch.manual_seed(0)
    model = create_model("DiT-T/2", input_size=8, in_channels=4, num_classes=10)  # adaLN-Zero: eps = 0 at init
    diffusion = create_diffusion(diffusion_steps=100)
    labels = torch.arange(4)
    free = sample(model, diffusion, labels, sampler="ddim", steps=5, generator=_g(19), clip_denoised=False)
    clipped = sample(model, diffusion, labels, sampler="ddim", steps=5, generator=_g(19))
    assert free.abs().max() > 1.5, "with eps = 0 the predicted x_0 is x_t / sqrt(alphas_cumprod): large"
    assert clipped.abs().max() <= 1.0


# ----------------------------------------------------------------------------- the experiment


@pytest.mark.data
@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path, fashion_mnist_dir):
    out = tmp_path / "out"
    assert lx.main(["--quick", "--out", str(out), "--work-dir", str(tmp_path / "work")]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "done" and "error" not in results, results.get("traceback")
    assert results["device"] == "cpu" and results["torch_version"] == torch.__version__
    assert results["command"].startswith("python -m minidit.tools.latent_experiment --quick")
    rec = results["autoencoder"]["reconstruction"]
    assert 5 < rec["psnr"] < 60 and 0 < rec["ssim"] <= 1 and rec["fid"] > rec["floor"]["fid"] >= 0
    assert results["autoencoder"]["encoder_gflops"] > 0 and results["autoencoder"]["decoder_gflops"] > 0
    la = results["latents"]
    assert la["shape"] == [4, 8, 8] and la["num"] == 2 * lx.PRESETS["quick"].num_train
    assert la["scale_factor"] == pytest.approx(1 / la["raw_std"], rel=1e-4) and la["scaled_std"] == pytest.approx(1)
    latent, pixel = results["models"]["latent"], results["models"]["pixel"]
    assert (latent["tokens_per_image"], pixel["tokens_per_image"]) == (16, 256)
    assert latent["input_size"] == 8 and latent["in_channels"] == 4 and pixel["input_size"] == 32
    # equal compute: the pixel DiT trains for the latent DiT's Gflops x steps, rounded to whole steps
    assert pixel["steps"] == round(latent["steps"] * latent["gflops"] / pixel["gflops"]) >= 1
    assert abs(results["equal_compute"]["compute_ratio_pixel_to_latent"] - 1) <= 0.5 / pixel["steps"] + 1e-9
    for name in ("latent", "pixel"):
        assert set(results["samples"][name]) == {"1", "1.5"}
        for scores in results["samples"][name].values():
            assert scores["num_samples"] == lx.PRESETS["quick"].num_samples and scores["complete"]
            assert scores["fid"] >= 0 and 0 <= scores["class_accuracy"] <= 1 and 0 <= scores["precision"] <= 1
    assert set(results["figures"]) == {"reconstructions.png", "samples.png", "training.png"}
    assert all((out / f).stat().st_size > 1000 for f in results["figures"])
    assert not list(out.glob(".*tmp"))  # atomic writes leave no temporary files


@pytest.mark.data
def test_a_tiny_budget_skips_phases_cleanly(tmp_path, fashion_mnist_dir):
    out = tmp_path / "out"
    assert lx.main(["--quick", "--minutes", "0.02", "--out", str(out), "--work-dir", str(tmp_path / "work")]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "done" and "scale_factor" in results["latents"]
    assert results["models"]["latent"]["status"] == "skipped: no time left"
    assert results["models"]["pixel"]["steps"] == 0 and "no compute to match" in results["models"]["pixel"]["status"]
    assert results["samples"] == {"latent": {}, "pixel": {}}


@pytest.mark.data
def test_an_error_keeps_what_was_measured(tmp_path, fashion_mnist_dir, monkeypatch):
    def broken(cfg, data=None):
        raise RuntimeError("planted failure")

    monkeypatch.setattr(lx, "train", broken)  # the trainer notebook 10's runner calls
    out = tmp_path / "out"
    assert lx.main(["--quick", "--out", str(out), "--work-dir", str(tmp_path / "work")]) == 1
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "failed" and "planted failure" in results["error"] and "'training'" in results["error"]
    assert "psnr" in results["autoencoder"]["reconstruction"] and "reconstructions.png" in results["figures"]


def test_config_and_command_line_errors(capsys):
    with pytest.raises(ValueError, match="latent_share"):
        lx.LatentRunConfig(latent_share=1.5)
    with pytest.raises(ValueError, match="cfg_scales"):
        lx.LatentRunConfig(cfg_scales=(0.5,))
    with pytest.raises(SystemExit):
        lx.main(["--out", "x", "--minutes", "0"])
    assert "--minutes must be > 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        lx.main(["--out", "x", "--num-samples", "5"])
    assert "class-balanced" in capsys.readouterr().err


@pytest.mark.data
def test_the_gpu_budget_plan_fits_with_gpu_like_timings(tmp_path, fashion_mnist_dir, monkeypatch):
    """The GPU preset's time plan, replayed on a fake clock. Assumed timings: 36 ms per pixel DiT-S/2 step
    (notebook 08 measured 6,445 img/s on an H100), 60 s to compile each DiT (its first 100 steps took 75 s
    there), 5 ms per latent step (a guess: 16 tokens leave the GPU launch-bound), 4-8 s per 1,000 pixel
    samples. Every phase must fit the 8-minute budget, all four sample sets must complete, and the pixel
    DiT must reach the latent DiT's compute. Training and sampling are faked (a real 1-step run makes the
    checkpoint); scoring and figures are real, on a few samples."""
    import dataclasses
    import types

    import minidit.evaluation.metrics
    import minidit.sample
    import minidit.train

    clock = types.SimpleNamespace(t=0.0)
    monkeypatch.setattr(lx, "time", types.SimpleNamespace(monotonic=lambda: clock.t))
    real_ae, real_train, real_report = (
        lat.train_autoencoder,
        minidit.train.train,
        minidit.evaluation.metrics.evaluation_report,
    )

    def fake_ae(images, cfg, *, max_seconds=None, **kw):
        clock.t += max_seconds
        return real_ae(images, cfg, **{**kw, "steps": 2, "log": lambda m: None})

    def fake_train(cfg, data):
        per_step = 0.005 if isinstance(data, LatentDataset) else 0.036
        budget = cfg.max_minutes * 60
        steps = max(1, min(cfg.steps, int((budget - 60) / per_step)))
        clock.t += min(budget, 60 + steps * per_step)
        history = real_train(dataclasses.replace(cfg, steps=1, max_minutes=None), data)
        history.update(
            final_step=steps,
            stopped_by_budget=steps < cfg.steps,
            step=[steps],
            loss=[0.1],
            img_per_s=[cfg.global_batch_size / per_step],
            wall_time=[60 + steps * per_step],
        )
        return history

    def fake_sample(model, diffusion, labels, cfg_scale=1.0, **kw):
        pixel = model.input_size == 32
        clock.t += (4.0 if cfg_scale == 1 else 8.0) if pixel else 0.5  # per 1,000 samples
        return torch.rand(len(labels), model.in_channels, model.input_size, model.input_size) * 2 - 1

    def slow_report(*args, **kwargs):
        clock.t += 4.0
        return real_report(*args, **kwargs)

    monkeypatch.setattr(lat, "train_autoencoder", fake_ae)
    monkeypatch.setattr(lx, "train", fake_train)  # the names notebook 10's runner calls
    monkeypatch.setattr(lx, "sample", fake_sample)
    monkeypatch.setattr(lx, "evaluation_report", slow_report)
    gpu = lx.PRESETS["gpu"]
    cfg = dataclasses.replace(
        gpu,
        ae=TINY,
        num_train=300,
        ae_batch_size=16,
        model="DiT-T/2",
        batch_size=8,
        num_recon=50,
        num_samples=50,
        sample_batch=10,
        precision="fp32",
        compile=False,
    )
    summary = lx.run(cfg, tmp_path / "out", minutes=8, work_dir=tmp_path / "work", log=lambda m: None)
    assert summary["status"] == "done", summary.get("traceback")
    assert clock.t <= 8 * 60 - gpu.end_margin_s + 1, f"the plan ran {clock.t:.0f} s of an 8-minute budget"
    latent, pixel = summary["models"]["latent"], summary["models"]["pixel"]
    assert latent["stopped_by_budget"] and not pixel["stopped_by_budget"], (latent["steps"], pixel["steps"])
    assert summary["equal_compute"]["compute_ratio_pixel_to_latent"] == pytest.approx(1, abs=0.01)
    assert all(s["complete"] for runs in summary["samples"].values() for s in runs.values())
    assert len(summary["samples"]["latent"]) == len(summary["samples"]["pixel"]) == 2
