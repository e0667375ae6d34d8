"""Tests for minidit.superres: PSNR/SSIM against closed forms and a numpy oracle, the image-conditioned DiT
in each conditioning mode, regression/diffusion training and sampling, and the experiment's command line."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import torch

from minidit.data import FashionMNIST
from minidit.embeddings import get_1d_sincos_pos_embed_from_grid, get_2d_sincos_pos_embed
from minidit.superres import distortion
from minidit.superres import experiment as sr
from minidit.superres import model as srm
from minidit.superres.degrade import upsample

MODES = [
    ("concat", "adaLN-Zero"),
    ("concat", "cross-attention"),
    ("concat", "in-context"),
    ("concat", "adaLN"),
    ("in-context", "adaLN-Zero"),
    ("in-context", "in-context"),
    ("cross-attention", "cross-attention"),
]


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _images(n=2, size=32, seed=0):
    return torch.rand(n, 1, size, size, generator=_g(seed)) * 2 - 1


def _tiny(cond="concat", block="adaLN-Zero", **kw):
    torch.manual_seed(0)
    return srm.create_sr_model("DiT-T/4", cond, lr_size=8, block=block, depth=2, hidden_size=32, num_heads=2, **kw)


def _perturb(model):
    """Non-zero weights everywhere (adaLN-Zero's final layer starts at zero: the output ignores every input)."""
    g = _g(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


# ----------------------------------------------------------------------------- PSNR / SSIM


def _ssim_numpy(x: np.ndarray, y: np.ndarray, data_range: float, win: int = 11, sigma: float = 1.5) -> float:
    """Independent oracle: a 2D Gaussian window slid over the image ('valid' windows), float64."""
    g = np.exp(-0.5 * ((np.arange(win) - (win - 1) / 2) / sigma) ** 2)
    w = np.outer(g, g) / np.outer(g, g).sum()

    def filt(a):
        return np.einsum("ijkl,kl->ij", np.lib.stride_tricks.sliding_window_view(a, (win, win)), w)

    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return float(np.mean((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))))


def test_psnr_closed_forms():
    x = _images(3)
    assert torch.isinf(distortion.psnr(x, x)).all() and (distortion.psnr(x, x) > 0).all()
    offset = 0.1
    expected = 20 * math.log10(2.0 / offset)  # MSE = offset^2
    torch.testing.assert_close(distortion.psnr(x, x + offset), torch.full((3,), expected, dtype=torch.float64))
    # The same images on the uint8 scale: same PSNR with data_range 255.
    torch.testing.assert_close(
        distortion.psnr((x + 1) * 127.5, (x + offset + 1) * 127.5, data_range=255.0),
        torch.full((3,), expected, dtype=torch.float64),
    )


def test_ssim_identical_and_constant_images():
    x = _images(2)
    torch.testing.assert_close(distortion.ssim(x, x), torch.ones(2, dtype=torch.float64))
    a, b, L = 0.3, -0.2, 2.0
    c1 = (0.01 * L) ** 2
    got = distortion.ssim(torch.full((1, 1, 16, 16), a), torch.full((1, 1, 16, 16), b), data_range=L)
    # Constant images: no variance, so SSIM is its luminance term alone.
    expected = (2 * a * b + c1) / (a**2 + b**2 + c1)
    torch.testing.assert_close(got, torch.tensor([expected], dtype=torch.float64), atol=1e-6, rtol=0)


def test_ssim_matches_numpy_oracle():
    x = _images(3, 20, seed=1)
    y = (x + 0.3 * _images(3, 20, seed=2)).clamp(-1, 1)
    got = distortion.ssim(x, y)
    for i in range(3):
        expected = _ssim_numpy(x[i, 0].double().numpy(), y[i, 0].double().numpy(), 2.0)
        assert abs(got[i].item() - expected) < 1e-9, (got[i].item(), expected)
    # Symmetric, and more noise means less similarity.
    torch.testing.assert_close(distortion.ssim(y, x), got)
    noisier = (x + 0.6 * _images(3, 20, seed=2)).clamp(-1, 1)
    assert (distortion.ssim(x, noisier) < got).all()


def test_ssim_matches_skimage_if_installed():
    metrics = pytest.importorskip("skimage.metrics")
    x, y = _images(1, 32, 3), _images(1, 32, 4)
    expected = metrics.structural_similarity(
        x[0, 0].double().numpy(),
        y[0, 0].double().numpy(),
        data_range=2.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    assert abs(distortion.ssim(x, y).item() - expected) < 1e-6


def test_metric_errors():
    with pytest.raises(ValueError, match="same shape"):
        distortion.psnr(_images(2), _images(3))
    with pytest.raises(ValueError, match="data_range"):
        distortion.ssim(_images(1), _images(1), data_range=0)
    with pytest.raises(ValueError, match="smaller than the SSIM window"):
        distortion.ssim(_images(1, 8), _images(1, 8))
    with pytest.raises(TypeError):
        distortion.psnr(np.zeros((1, 1, 32, 32)), _images(1))


# ----------------------------------------------------------------------------- conditioning pieces


def test_concat_low_res_puts_x_t_first_then_bicubic():
    x_t, low = _images(2), _images(2, 8, seed=5)
    out = srm.concat_low_res(x_t, low)
    assert out.shape == (2, 2, 32, 32)
    torch.testing.assert_close(out[:, :1], x_t, rtol=0, atol=0)
    torch.testing.assert_close(out[:, 1:], upsample(low, 32))


def test_low_res_pos_embed_aligns_with_the_high_res_grid():
    # Same grid: exactly the model's 2D sin-cos embedding.
    np.testing.assert_allclose(srm.low_res_pos_embed(64, 8, 8), get_2d_sincos_pos_embed(64, 8), atol=1e-12)
    # A 4x4 LR grid on a 16x16 grid: LR token (r, c) sits at the centre (4r + 1.5, 4c + 1.5) of its 4x4 block.
    emb = srm.low_res_pos_embed(64, 4, 16)
    assert emb.shape == (16, 64)
    r, c = 2, 1
    expected = np.concatenate(
        [
            get_1d_sincos_pos_embed_from_grid(32, np.array([4 * c + 1.5])),
            get_1d_sincos_pos_embed_from_grid(32, np.array([4 * r + 1.5])),
        ],
        axis=1,
    )[0]
    np.testing.assert_allclose(emb[r * 4 + c], expected, atol=1e-12)


# ----------------------------------------------------------------------------- the model


@pytest.mark.parametrize("cond,block", MODES)
@pytest.mark.parametrize("learn_sigma", [True, False])
def test_forward_shapes_every_mode(cond, block, learn_sigma):
    model = _tiny(cond, block, learn_sigma=learn_sigma)
    x, low, t = _images(3), _images(3, 8, 1), torch.tensor([0, 10, 999])
    out = model(x, t, low)
    assert out.shape == (3, 2 if learn_sigma else 1, 32, 32)
    expected_in = 2 if cond == "concat" else 1
    assert model.x_embedder.proj.in_channels == expected_in
    if cond != "concat":
        assert model.lr_embedder.num_patches == 64  # x4: 8x8 LR pixels, lr_patch_size 1 (= a 4x4 HR patch)


@pytest.mark.parametrize(
    "cond,block",
    [
        ("concat", "adaLN-Zero"),
        ("in-context", "adaLN-Zero"),
        ("in-context", "in-context"),
        ("cross-attention", "cross-attention"),
    ],
)
def test_output_depends_on_the_low_res_input(cond, block):
    model = _perturb(_tiny(cond, block)).eval()
    x, t = _images(2), torch.tensor([5, 500])
    low = _images(2, 8, 1).requires_grad_(True)
    out = model(x, t, low)
    other = model(x, t, _images(2, 8, 2))
    assert (out - other).abs().max() > 1e-4, f"cond={cond}: the output ignores the low-res image"
    out.pow(2).sum().backward()
    assert low.grad.abs().sum() > 0
    # ... and each sample depends only on its own LR image.
    low2 = low.detach().clone()
    low2[1] = _images(1, 8, 9)[0]
    torch.testing.assert_close(model(x, t, low2)[0], out[0].detach(), atol=1e-5, rtol=1e-5)


def test_y_none_is_the_null_label_and_labels_are_optional():
    model = _perturb(_tiny()).eval()
    x, t, low = _images(2), torch.tensor([1, 2]), _images(2, 8, 1)
    torch.testing.assert_close(model(x, t, low), model(x, t, low, y=torch.tensor([10, 10])))
    assert not torch.allclose(model(x, t, low), model(x, t, low, y=torch.tensor([3, 4])))


def test_adaln_zero_model_starts_at_zero_and_regression_starts_at_bicubic():
    model = _tiny(learn_sigma=False)
    low = _images(2, 8, 1)
    assert model(_images(2), torch.tensor([0, 1]), low).abs().max() == 0
    torch.testing.assert_close(sr.regression_predict(model, low), upsample(low, 32))


def test_bad_inputs_raise():
    model = _tiny()
    x, t = _images(2), torch.tensor([1, 2])
    with pytest.raises(ValueError, match="low_res must be"):
        model(x, t, _images(2, 16))
    with pytest.raises(ValueError, match="x must be"):
        model(_images(2, 16), t, _images(2, 8))
    with pytest.raises(ValueError, match="t must be"):
        model(x, torch.tensor([1]), _images(2, 8))
    with pytest.raises(ValueError, match="labels must be"):
        model(x, t, _images(2, 8), y=torch.tensor([0, 11]))
    with pytest.raises(ValueError, match="unknown conditioning"):
        srm.create_sr_model("DiT-T/4", "film")
    with pytest.raises(ValueError, match="block='cross-attention'"):
        srm.create_sr_model("DiT-T/4", "cross-attention")
    with pytest.raises(ValueError, match="lr_size"):
        srm.create_sr_model("DiT-T/4", lr_size=7)
    with pytest.raises(ValueError, match="null label"):
        srm.create_sr_model("DiT-T/4", class_dropout_prob=0.0)(x, t, _images(2, 8))
    with pytest.raises(ValueError, match="unknown cond"):
        sr.SRConfig(cond="film")
    with pytest.raises(ValueError, match="objective"):
        sr.train_sr(sr.SRConfig(**sr.PRESETS["cpu"]), "gan")


# ----------------------------------------------------------------------------- training, sampling, evaluation


def _synthetic_data(n=64):
    """Bright rectangles with sharp edges as uint8 images: learnable in a few steps, no dataset needed."""
    g = _g(7)
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    corners = torch.randint(4, 28, (n, 4), generator=g).sort(dim=1).values  # (n, 4): y0 <= x0 <= y1 <= x1 mixed
    top, left, bottom, right = corners[:, 0], corners[:, 1], corners[:, 2] + 1, corners[:, 3] + 1
    inside = (
        (yy >= top[:, None, None])
        & (yy < bottom[:, None, None])
        & (xx >= left[:, None, None])
        & (xx < right[:, None, None])
    )  # (n, 32, 32)
    images = (inside.to(torch.uint8) * 220).unsqueeze(1)  # (n, 1, 32, 32)
    return FashionMNIST(images, torch.randint(0, 10, (n,), generator=g), "train")


def _tiny_cfg(**kw):
    return sr.SRConfig(**{**sr.PRESETS["cpu"], "batch_size": 16, "steps": 40, "log_every": 10, "lr": 2e-3, **kw})


@pytest.fixture
def tinier_models(monkeypatch):
    """train_sr builds DiT-T/4 at depth 2, width 32: the same code path, a fraction of the time."""
    build = sr.build_sr_model

    def build_tiny(cfg, objective="diffusion", image_size=32, channels=1):
        model = build(cfg, objective, image_size, channels)
        return srm.create_sr_model(
            cfg.model,
            cfg.cond,
            model.lr_size,
            in_channels=channels,
            block=cfg.block,
            learn_sigma=model.learn_sigma,
            depth=2,
            hidden_size=32,
            num_heads=2,
        )

    monkeypatch.setattr(sr, "build_sr_model", build_tiny)


def test_a_few_diffusion_steps_reduce_the_loss(tinier_models):
    run = sr.train_sr(_tiny_cfg(), "diffusion", _synthetic_data(), log=lambda m: None)
    losses = run["history"]["loss"]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.6 * losses[0], f"the diffusion loss did not go down: {losses}"
    assert run["history"]["final_step"] == 40 and run["ema"].training is False


def test_a_few_regression_steps_beat_bicubic(tinier_models):
    from minidit.data import to_model_range
    from minidit.superres.degrade import degrade

    data = _synthetic_data()
    x = to_model_range(data.images)
    low = degrade(x, "x4", _g(0))
    before = (upsample(low) - x).pow(2).mean().item()  # the untrained (adaLN-Zero) model outputs bicubic
    run = sr.train_sr(_tiny_cfg(steps=60), "regression", data, log=lambda m: None)
    with torch.no_grad():
        after = (sr.regression_predict(run["model"].eval(), low) - x).pow(2).mean().item()
    assert after < 0.95 * before, f"L2 training did not improve on bicubic: MSE {before:.4f} -> {after:.4f}"


def test_time_budget_stops_training(tinier_models):
    run = sr.train_sr(_tiny_cfg(steps=10_000), "regression", _synthetic_data(), max_seconds=0.5, log=lambda m: None)
    assert run["history"]["stopped_by_budget"] and run["history"]["final_step"] < 10_000


COMPILE_SECONDS = 1.0  # a stand-in for torch.compile's first step (63 s for DiT-S/2 on the H100)


@pytest.fixture
def slow_first_step(monkeypatch):
    """Every training step's first call sleeps COMPILE_SECONDS, as a compiling step does on a GPU."""
    from minidit.train import FastStep

    call = FastStep.__call__

    def compiling_call(self, batch, ema_decay=None):
        if self._first_call:
            time.sleep(COMPILE_SECONDS)
        return call(self, batch, ema_decay)

    monkeypatch.setattr(FastStep, "__call__", compiling_call)


def test_compile_time_is_not_charged_to_the_training_budget(tinier_models, slow_first_step):
    run = sr.train_sr(_tiny_cfg(steps=10_000), "regression", _synthetic_data(), max_seconds=0.4, log=lambda m: None)
    history = run["history"]
    assert history["warmup_seconds"] >= COMPILE_SECONDS and history["budget_seconds"] == 0.4
    assert history["final_step"] >= 5, (
        f"a {COMPILE_SECONDS} s first step and a 0.4 s budget gave {history['final_step']} step(s): is the "
        "compile warm-up charged to max_seconds? (the first GPU run's regression baseline trained 1 step)"
    )
    assert history["train_seconds"] >= COMPILE_SECONDS + 0.4


def test_each_model_trains_under_a_small_budget_and_results_record_it(
    tinier_models, slow_first_step, monkeypatch, tmp_path
):
    """The first GPU run: compile took 63 s of the regression model's 0.9-minute budget, which then trained 1 step."""
    monkeypatch.setattr(sr, "load_fashion_mnist", lambda split: _synthetic_data(64 if split == "train" else 24))
    monkeypatch.setattr(sr, "_perceptual_metrics", lambda *args, **kwargs: {})  # no FID: this test is about training
    minutes = 0.04  # training 2 s: diffusion 1.5 s, regression 0.5 s (less than the simulated compile)
    summary = sr.run_experiment(
        _tiny_cfg(steps=100_000),
        tmp_path,
        minutes,
        num_eval=8,
        num_samples=2,
        sampler="ddim",
        sample_steps=2,
        log=lambda m: None,
    )
    results = json.loads((tmp_path / "results.json").read_text())
    steps, warmup = results["steps_trained"], results["warmup_seconds"]
    assert set(steps) == set(warmup) == {"diffusion", "regression"}
    for objective in steps:
        assert steps[objective] == results["train"][objective]["final_step"] == summary["steps_trained"][objective]
        assert warmup[objective] >= COMPILE_SECONDS, f"{objective}: the first step's time is not recorded"
        assert steps[objective] >= 5, f"{objective} trained {steps[objective]} step(s) under the budget: {steps}"
    assert steps["regression"] >= 0.1 * steps["diffusion"], f"the regression baseline got too few steps: {steps}"


def test_sample_sr_and_evaluate_sr_shapes():
    from minidit.diffusion import create_diffusion

    model, reg = _tiny(), _tiny(learn_sigma=False)
    diffusion = create_diffusion(None)
    low = _images(2, 8, 1)
    samples = sr.sample_sr(model, diffusion, low, num_samples=3, sampler="ddim", steps=3, generator=_g())
    assert samples.shape == (2, 3, 1, 32, 32) and samples.abs().max() <= 1
    result = sr.evaluate_sr(
        model, reg, diffusion, _images(5), num_samples=2, sampler="ddim", steps=2, batch_size=3, log=lambda m: None
    )
    assert result["num_eval"] == 5 and result["outputs"]["diffusion"].shape == (5, 2, 1, 32, 32)
    table = result["metrics"]
    assert {"bicubic", "regression", "diffusion", "diffusion mean of 2", "ground truth"} <= set(table)
    # An untrained adaLN-Zero regression model outputs exactly bicubic.
    assert table["regression"]["psnr"] == pytest.approx(table["bicubic"]["psnr"], abs=1e-3)


@pytest.mark.data
def test_command_line_quick_run_writes_results(tmp_path, fashion_mnist_dir):
    out = tmp_path / "sr"
    args = [
        "--quick",
        "--out",
        str(out),
        "--minutes",
        "0.05",
        "--num-eval",
        "8",
        "--samples-per-input",
        "2",
        "--sample-steps",
        "2",
        "--num-reference",
        "64",
    ]
    assert sr.main(args) == 0
    results = json.loads((out / "results.json").read_text())  # strict JSON: no NaN/inf
    assert results["device"] == "cpu" and results["torch_version"] == torch.__version__
    assert results["command"].startswith("python -m minidit.superres --quick")
    assert set(results["wall_seconds"]) >= {"train_diffusion", "train_regression", "evaluate", "total"}
    assert set(results["steps_trained"]) == set(results["warmup_seconds"]) == {"diffusion", "regression"}
    assert min(results["steps_trained"].values()) > 1, f"a model trained one step: {results['steps_trained']}"
    assert (out / "before_after.png").stat().st_size > 1000 and (out / "perception_distortion.png").is_file()
    assert not list(out.glob(".*tmp"))  # atomic writes leave no temporary files


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_sample_sr_is_the_reverse_process_conditioned_on_the_low_res_image(sampler):
    """sample_sr runs minidit.sample.sample; its samples are those of the plain loop (what it ran before)."""
    from einops import rearrange

    from minidit.diffusion import create_diffusion
    from minidit.sample import respace

    model, diffusion = _tiny(), create_diffusion(None)
    with torch.no_grad():
        for p in model.parameters():  # a model whose output depends on everything
            p.add_(0.05 * torch.randn(p.shape, generator=_g()))
    low = _images(2, 8, 1)
    got = sr.sample_sr(model, diffusion, low, num_samples=2, sampler=sampler, steps=4, generator=_g())
    process = respace(diffusion, sampler, 4)
    loop = process.p_sample_loop if sampler == "ddpm" else process.ddim_sample_loop
    lr = low.repeat_interleave(2, dim=0)
    with torch.no_grad():
        x = loop(
            lambda x, t, **kw: model.eval()(x, t, **kw).float(),
            (4, 1, 32, 32),
            model_kwargs={"low_res": lr, "y": None},
            generator=_g(),
        )
    expected = rearrange(x.clamp(-1, 1), "(n k) c h w -> n k c h w", k=2)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
