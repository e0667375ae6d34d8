"""Distortion metrics of super-resolution: PSNR and SSIM (Wang et al. 2004), per image.

They reward closeness to the ground truth, so the blurry posterior mean (the regression baseline)
wins them; FID and precision/recall (minidit.evaluation.metrics) measure realism instead, which
diffusion samples win (the perception-distortion trade-off, Blau & Michaeli 2018; notebook 09).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange


def _metric_pair(x: torch.Tensor, y: torch.Tensor, data_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    for name, v in (("x", x), ("y", y)):
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape (N, C, H, W), got {type(v).__name__}")
    if x.ndim != 4 or x.shape != y.shape:
        raise ValueError(f"x and y must be (N, C, H, W) of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0 (2.0 for images in [-1, 1]), got {data_range}")
    dtype = torch.float32 if x.device.type == "mps" else torch.float64  # MPS has no float64
    return x.to(dtype), y.to(device=x.device, dtype=dtype)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, 10 log10(data_range^2 / MSE) in dB (inf for identical images).

    x, y: (N, C, H, W); data_range: max - min of the pixel scale (2 for [-1, 1], 255 for uint8). Returns (N,).
    """
    x, y = _metric_pair(x, y, data_range)
    mse = (x - y).pow(2).flatten(1).mean(1)  # (N,)
    return 10 * torch.log10(data_range**2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """(size,) normalised 1D Gaussian; its outer product with itself is SSIM's 11x11, sigma 1.5 window."""
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    w = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return w / w.sum()


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 2.0,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004, Eq. 13) with their Gaussian window, mean over the valid map.

    Local means mu, variances s^2 and covariance s_xy are Gaussian-weighted averages (window win_size,
    std sigma, no padding: only windows fully inside the image count, as the authors' reference code);
    SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)),
    C1 = (k1 L)^2, C2 = (k2 L)^2, L = data_range. Channels are averaged.

    x, y: (N, C, H, W) with H, W >= win_size. Returns (N,), 1 for identical images.
    """
    x, y = _metric_pair(x, y, data_range)
    if min(x.shape[-2:]) < win_size:
        raise ValueError(f"images of size {tuple(x.shape[-2:])} are smaller than the SSIM window {win_size}")
    n, c = x.shape[:2]
    w = gaussian_window(win_size, sigma).to(x)
    kernel_h, kernel_w = rearrange(w, "k -> 1 1 k 1"), rearrange(w, "k -> 1 1 1 k")

    def local_mean(v: torch.Tensor) -> torch.Tensor:  # separable Gaussian filter, 'valid' region
        v = rearrange(v, "n c h w -> (n c) 1 h w")
        return F.conv2d(F.conv2d(v, kernel_w), kernel_h)  # (N*C, 1, H - win + 1, W - win + 1)

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x**2
    var_y = local_mean(y * y) - mu_y**2
    cov = local_mean(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return rearrange(ssim_map, "(n c) 1 h w -> n (c h w)", n=n, c=c).mean(1)  # (N,)
