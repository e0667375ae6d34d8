"""Tests for minidit.superres.degrade: shapes, ranges, seeding, and each operation against an independent oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from minidit.superres import degrade as dg


def _images(n=4, c=1, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, size, size, generator=g) * 2 - 1


@pytest.mark.parametrize("name,lr_size", [("x4", 8), ("x2", 16), ("x4-bicubic", 8), ("x2-bicubic", 16)])
def test_presets_shape_range_dtype(name, lr_size):
    x = _images(5, 1)
    lr = dg.degrade(x, name, generator=torch.Generator().manual_seed(1))
    assert lr.shape == (5, 1, lr_size, lr_size)
    assert lr.dtype == x.dtype
    assert lr.min() >= -1 and lr.max() <= 1
    up = dg.upsample(lr, 32)
    assert up.shape == x.shape and up.min() >= -1 and up.max() <= 1


def test_seeded_draws_are_reproducible_and_differ_between_seeds():
    x = _images(8)
    a = dg.degrade(x, "x4", generator=torch.Generator().manual_seed(3))
    b = dg.degrade(x, "x4", generator=torch.Generator().manual_seed(3))
    c = dg.degrade(x, "x4", generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c), "different seeds gave identical degradations"


def test_strengths_are_random_per_image_and_within_ranges():
    cfg = dg.DEGRADATIONS["x4"]
    _, p = dg.degrade(_images(64), cfg, generator=torch.Generator().manual_seed(0), return_params=True)
    assert p["blur_sigma"].shape == (64,)
    assert cfg.blur_sigma[0] <= p["blur_sigma"].min() and p["blur_sigma"].max() <= cfg.blur_sigma[1]
    assert cfg.noise_sigma[0] <= p["noise_sigma"].min() and p["noise_sigma"].max() <= cfg.noise_sigma[1]
    q = p["jpeg_quality"]
    assert cfg.jpeg_quality[0] <= q.min() and q.max() <= cfg.jpeg_quality[1] and torch.equal(q, q.floor())
    assert set(p["down_mode"].tolist()) == {0, 1}, "both resize filters should occur in 64 draws"
    assert p["blur_sigma"].std() > 0.1, "blur strength should vary from image to image"


def test_bicubic_preset_is_plain_bicubic_downsampling():
    x = _images(3)
    lr = dg.degrade(x, "x4-bicubic")
    expected = torch.nn.functional.interpolate(x, size=(8, 8), mode="bicubic", align_corners=False, antialias=True)
    torch.testing.assert_close(lr, expected.clamp(-1, 1))


def test_gaussian_blur_matches_scipy_per_image():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = _images(2, 2, 16).double()
    sigmas = torch.tensor([0.7, 1.3])
    y = dg.gaussian_blur(x, sigmas, radius=4)
    for i, s in enumerate(sigmas.tolist()):
        for ch in range(2):
            # torch's "reflect" padding is scipy's "mirror" (the edge pixel is not repeated).
            ref = ndimage.gaussian_filter(x[i, ch].numpy(), s, mode="mirror", truncate=4 / s)
            np.testing.assert_allclose(y[i, ch].numpy(), ref, atol=1e-6)


def test_gaussian_blur_zero_sigma_is_identity_and_keeps_constants():
    x = _images(2)
    torch.testing.assert_close(dg.gaussian_blur(x, 0.0), x)
    const = torch.full((1, 1, 32, 32), 0.3)
    torch.testing.assert_close(dg.gaussian_blur(const, 2.0), const)


def test_area_downsampling_is_block_mean():
    x = _images(2, 1, 8)
    y = dg.downsample(x, 4, "area")
    expected = x.reshape(2, 1, 2, 4, 2, 4).mean(dim=(3, 5))
    torch.testing.assert_close(y, expected)


def test_noise_only_has_the_drawn_std():
    cfg = dg.DegradationConfig(
        scale=1, blur_sigma=(0, 0), down_modes=("area",), noise_sigma=(0.05, 0.05), jpeg_quality=None, quantize=False
    )
    x = torch.zeros(16, 1, 32, 32)
    lr = dg.degrade(x, cfg, generator=torch.Generator().manual_seed(0))
    assert abs(lr.std().item() - 0.05) < 0.003


def test_dct_is_orthonormal_and_jpeg_table_at_quality_50_is_the_standard():
    d = dg._dct_matrix()
    torch.testing.assert_close(d @ d.T, torch.eye(8), atol=1e-6, rtol=0)
    torch.testing.assert_close(dg.jpeg_quality_table(torch.tensor([50.0]))[0], dg._JPEG_LUMA)
    assert dg.jpeg_quality_table(torch.tensor([100.0])).max() == 1


def test_jpeg_like_error_grows_as_quality_drops():
    x = dg.gaussian_blur(_images(8, 1, 16), 1.0)
    errs = [(dg.jpeg_like(x, q) - x).abs().mean().item() for q in (100, 75, 30, 5)]
    assert errs[0] < 2 / 255, "quality 100 should only round the DCT coefficients"
    assert errs == sorted(errs), f"JPEG error should grow as the quality drops, got {errs}"
    # A size that is not a multiple of 8 is padded and cropped back.
    assert dg.jpeg_like(_images(2, 1, 12), 50).shape == (2, 1, 12, 12)


def test_quantize_8bit_gives_256_levels():
    y = dg.quantize_8bit(torch.linspace(-1, 1, 10_000))
    assert len(torch.unique(y)) == 256
    torch.testing.assert_close((y + 1) * 127.5, torch.round((y + 1) * 127.5), atol=1e-4, rtol=0)


def test_degradation_really_degrades():
    x = dg.gaussian_blur(_images(16), 0.8)
    up = dg.upsample(dg.degrade(x, "x4", generator=torch.Generator().manual_seed(0)))
    mse = (up - x).pow(2).mean().item()
    assert 1e-3 < mse < 0.5, f"unexpected reconstruction error {mse} after degrade + bicubic"
    assert math.isfinite(mse)


def test_bad_inputs_raise_actionable_errors():
    with pytest.raises(ValueError, match="divisible"):
        dg.degrade(_images(2, 1, 30), "x4")
    with pytest.raises(TypeError, match="float"):
        dg.degrade(torch.zeros(2, 1, 32, 32, dtype=torch.uint8), "x4")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        dg.degrade(torch.zeros(1, 32, 32), "x4")
    with pytest.raises(ValueError, match="unknown degradation"):
        dg.degrade(_images(2), "x8")
    with pytest.raises(ValueError, match="blur_sigma"):
        dg.DegradationConfig(blur_sigma=(1.0, 0.5))
    with pytest.raises(ValueError, match="down_modes"):
        dg.DegradationConfig(down_modes=("lanczos",))
    with pytest.raises(ValueError, match="upsampling mode"):
        dg.upsample(_images(1, 1, 8), 32, mode="lanczos")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cpu_generator_gives_same_draws_on_gpu():
    x = _images(4)
    a = dg.degrade(x, "x4", generator=torch.Generator().manual_seed(0))
    b = dg.degrade(x.cuda(), "x4", generator=torch.Generator().manual_seed(0)).cpu()
    torch.testing.assert_close(a, b, atol=2 / 255, rtol=0)
