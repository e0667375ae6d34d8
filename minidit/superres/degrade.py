"""A "real-world" degradation pipeline for super-resolution: blur -> downsample -> noise -> JPEG.

The classical model of a low-resolution camera image (e.g. Real-ESRGAN's first-order model,
Wang et al. 2021 §3.1) is

    y = JPEG( (x * k_sigma) downsampled by s  +  n ),     n ~ N(0, noise_sigma^2)

with a Gaussian blur kernel k of random width, a random resize filter (area or bicubic), additive
Gaussian noise of random strength and a JPEG-like quantisation of random quality. Because every
strength is drawn per image, an SR model trained on these pairs has to cope with degradations it
does not know in advance ("blind" SR) instead of inverting one fixed bicubic kernel.

Everything here is batched, works on any device and draws its randomness from an optional
torch.Generator, so `degrade(x, cfg, generator=torch.Generator().manual_seed(0))` is reproducible.
Images are in the model range [-1, 1] (minidit.data.to_model_range).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange

from minidit.device import draw

DOWN_MODES = ("area", "bicubic", "bilinear")


@dataclass(frozen=True)
class DegradationConfig:
    """Ranges of the random degradation; each image draws its own strengths uniformly in them."""

    scale: int = 4  # 32 -> 8 (4) or 32 -> 16 (2)
    blur_sigma: tuple[float, float] = (0.2, 1.2)  # Gaussian blur std, in high-res pixels
    down_modes: tuple[str, ...] = ("area", "bicubic")  # resize filter, one chosen per image
    noise_sigma: tuple[float, float] = (0.0, 0.1)  # additive noise std, in [-1, 1] units (0.1 = 12.75/255)
    jpeg_quality: tuple[int, int] | None = (40, 95)  # JPEG-like quality range; None switches it off
    quantize: bool = True  # round the result to 256 grey levels like a stored image
    antialias: bool = False  # bicubic/bilinear with antialiasing (MATLAB imresize-like)

    def __post_init__(self):
        if not isinstance(self.scale, int) or self.scale < 1:
            raise ValueError(f"scale must be a positive int, got {self.scale!r}")
        for name in ("blur_sigma", "noise_sigma"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} must be a range (low, high) with 0 <= low <= high, got {(low, high)}")
        if not self.down_modes or any(m not in DOWN_MODES for m in self.down_modes):
            raise ValueError(f"down_modes must be a non-empty subset of {DOWN_MODES}, got {self.down_modes}")
        if self.jpeg_quality is not None:
            low, high = self.jpeg_quality
            if not 1 <= low <= high <= 100:
                raise ValueError(f"jpeg_quality must be a range within [1, 100], got {self.jpeg_quality}")


# Named presets. "x4"/"x2": the random real-world pipeline; "*-bicubic": the textbook fixed
# degradation (antialiased bicubic downsampling only, as MATLAB's imresize), to compare with.
DEGRADATIONS: dict[str, DegradationConfig] = {
    "x4": DegradationConfig(scale=4),
    "x2": DegradationConfig(scale=2, blur_sigma=(0.2, 1.0), noise_sigma=(0.0, 0.08)),
    "x4-bicubic": DegradationConfig(
        scale=4,
        blur_sigma=(0.0, 0.0),
        down_modes=("bicubic",),
        noise_sigma=(0.0, 0.0),
        jpeg_quality=None,
        quantize=False,
        antialias=True,
    ),
    "x2-bicubic": DegradationConfig(
        scale=2,
        blur_sigma=(0.0, 0.0),
        down_modes=("bicubic",),
        noise_sigma=(0.0, 0.0),
        jpeg_quality=None,
        quantize=False,
        antialias=True,
    ),
}


def get_degradation(name_or_config: str | DegradationConfig) -> DegradationConfig:
    """A preset by name ("x4", "x2", "x4-bicubic", "x2-bicubic") or the config itself."""
    if isinstance(name_or_config, DegradationConfig):
        return name_or_config
    if name_or_config not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {name_or_config!r}; expected one of {sorted(DEGRADATIONS)}")
    return DEGRADATIONS[name_or_config]


# ----------------------------------------------------------------------------- randomness helpers


def _uniform(low: float, high: float, n: int, generator, device) -> torch.Tensor:
    """(n,) uniform draws. Drawn on the generator's device, so a CPU generator gives the same numbers everywhere."""
    return low + (high - low) * draw(torch.rand, n, generator=generator, device=device)


def _check_images(x: torch.Tensor, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, C, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a float tensor in [-1, 1] (see minidit.data.to_model_range), got {x.dtype}")


def _per_image(value, n: int, device) -> torch.Tensor:
    """A float or an (N,) tensor -> (N,) float32 tensor on device."""
    v = torch.as_tensor(value, dtype=torch.float32, device=device)
    if v.ndim == 0:
        v = v.expand(n)
    if v.shape != (n,):
        raise ValueError(f"expected a float or a tensor of shape ({n},), got shape {tuple(v.shape)}")
    return v


# ----------------------------------------------------------------------------- the four operations


def gaussian_blur(x: torch.Tensor, sigma: float | torch.Tensor, radius: int | None = None) -> torch.Tensor:
    """Blur each image with its own isotropic Gaussian (separable, reflect padding).

    Args:
        x: (N, C, H, W) images.
        sigma: float or (N,) standard deviations in pixels; 0 leaves an image unchanged.
        radius: kernel half-width; default ceil(3 * max sigma), so one kernel size serves the batch.
    Returns:
        (N, C, H, W) blurred images.
    """
    _check_images(x)
    n, c, h, w = x.shape
    sigma = _per_image(sigma, n, x.device)
    if radius is None:
        radius = max(1, math.ceil(3 * float(sigma.max())))
    radius = min(radius, h - 1, w - 1)  # reflect padding needs pad < size
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)
    # sigma -> 0 gives a delta (exp(-big) underflows to 0 away from the centre).
    kernel = torch.exp(-0.5 * (offsets[None] / sigma.clamp_min(1e-4)[:, None]) ** 2)  # (N, K)
    kernel = (kernel / kernel.sum(1, keepdim=True)).to(x.dtype)
    kernel = kernel.repeat_interleave(c, dim=0)  # (N*C, K): one kernel per image, shared by its channels
    # A grouped convolution applies every image's own kernel in one call.
    y = rearrange(x, "n c h w -> 1 (n c) h w")
    y = F.pad(y, (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, rearrange(kernel, "g k -> g 1 1 k"), groups=n * c)  # blur along W
    y = F.conv2d(y, rearrange(kernel, "g k -> g 1 k 1"), groups=n * c)  # blur along H
    return rearrange(y, "1 (n c) h w -> n c h w", n=n)  # (N, C, H, W)


def downsample(x: torch.Tensor, scale: int, mode: str = "area", antialias: bool = False) -> torch.Tensor:
    """Shrink by an integer factor. area = mean of each scale x scale block; bicubic/bilinear interpolate, by
    default without antialiasing (the random blur before it is then the only low-pass filter, and some
    aliasing is part of the degradation); antialias=True widens the kernel as MATLAB's imresize does.

    Args:
        x: (N, C, H, W) with H and W divisible by scale.
    Returns:
        (N, C, H // scale, W // scale)
    """
    _check_images(x)
    h, w = x.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"image size {h}x{w} is not divisible by the downsampling factor {scale}")
    if mode == "area":
        return F.avg_pool2d(x, scale)  # (N, C, H/s, W/s)
    if mode in ("bicubic", "bilinear"):
        return F.interpolate(x, size=(h // scale, w // scale), mode=mode, align_corners=False, antialias=antialias)
    raise ValueError(f"unknown downsampling mode {mode!r}; expected one of {DOWN_MODES}")


def upsample(x: torch.Tensor, size: int = 32, mode: str = "bicubic") -> torch.Tensor:
    """Bicubic upsampling to size x size, clamped to [-1, 1]: the classical baseline and SR3's conditioning input.

    Args:
        x: (N, C, h, w) low-resolution images in [-1, 1].
    Returns:
        (N, C, size, size)
    """
    _check_images(x)
    if mode not in ("bicubic", "bilinear", "nearest"):
        raise ValueError(f"unknown upsampling mode {mode!r}; expected 'bicubic', 'bilinear' or 'nearest'")
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    return F.interpolate(x, size=(size, size), mode=mode, **kwargs).clamp(-1, 1)  # (N, C, size, size)


# The JPEG standard's luminance quantisation table (ITU-T T.81, Annex K, Table K.1).
_JPEG_LUMA = torch.tensor(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=torch.float32,
)


def _dct_matrix(n: int = 8) -> torch.Tensor:
    """Orthonormal DCT-II matrix D, so that coefficients = D @ block @ D.T."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d.float()


_ON_DEVICE: dict[tuple[str, str], torch.Tensor] = {}


def _constant(name: str, device) -> torch.Tensor:
    """The DCT matrix or the JPEG table on `device`, copied there once (a copy per batch would sync the GPU)."""
    key = (name, str(device))
    if key not in _ON_DEVICE:
        _ON_DEVICE[key] = (_dct_matrix() if name == "dct" else _JPEG_LUMA).to(device)
    return _ON_DEVICE[key]


def jpeg_quality_table(quality: torch.Tensor) -> torch.Tensor:
    """quality: (N,) in [1, 100] -> (N, 8, 8) quantisation steps, scaled as the IJG libjpeg does."""
    q = quality.float().clamp(1, 100)
    s = torch.where(q < 50, 5000 / q, 200 - 2 * q)  # (N,)
    table = torch.floor((_constant("luma", q.device)[None] * s[:, None, None] + 50) / 100)
    return table.clamp_min(1)  # (N, 8, 8)


def jpeg_like(x: torch.Tensor, quality: float | torch.Tensor) -> torch.Tensor:
    """JPEG's lossy core: 8x8 block DCT, quantise with the quality-scaled luminance table, invert.

    Chroma subsampling and entropy coding are left out (grey images; the entropy coder is lossless).
    Sizes that are not multiples of 8 are padded by replication and cropped back.

    Args:
        x: (N, C, H, W) images in [-1, 1].
        quality: float or (N,) JPEG quality in [1, 100]; lower = coarser.
    Returns:
        (N, C, H, W) in [-1, 1].
    """
    _check_images(x)
    n, c, h, w = x.shape
    quality = _per_image(quality, n, x.device)
    ph, pw = (-h) % 8, (-w) % 8
    v = F.pad(x.float(), (0, pw, 0, ph), mode="replicate") if ph or pw else x.float()
    v = (v + 1) * 127.5 - 128  # JPEG's level-shifted 8-bit values
    blocks = rearrange(v, "n c (hb i) (wb j) -> n c hb wb i j", i=8, j=8)  # (N, C, H/8, W/8, 8, 8)
    d = _constant("dct", x.device)
    coeffs = d @ blocks @ d.T
    table = rearrange(jpeg_quality_table(quality), "n i j -> n 1 1 1 i j")
    coeffs = torch.round(coeffs / table) * table
    blocks = d.T @ coeffs @ d
    v = rearrange(blocks, "n c hb wb i j -> n c (hb i) (wb j)")[..., :h, :w]  # (N, C, H, W)
    return ((v + 128) / 127.5 - 1).clamp(-1, 1).to(x.dtype)


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """Round [-1, 1] images to the 256 levels of a stored 8-bit image (still float, still in [-1, 1])."""
    return torch.round((x.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1


# ----------------------------------------------------------------------------- the pipeline


def degrade(
    x: torch.Tensor,
    config: str | DegradationConfig = "x4",
    generator: torch.Generator | None = None,
    return_params: bool = False,
):
    """Degrade a batch of high-resolution images: blur -> downsample -> noise -> JPEG, each with random strength.

    Args:
        x: (N, C, H, W) high-resolution images in [-1, 1], H and W divisible by config.scale.
        config: a DegradationConfig or a preset name (see DEGRADATIONS).
        generator: optional torch.Generator for reproducible draws (any device; draws happen on its device).
        return_params: also return the per-image strengths that were drawn.
    Returns:
        lr: (N, C, H // scale, W // scale) low-resolution images in [-1, 1];
        with return_params, (lr, params) where params holds (N,) tensors blur_sigma, down_mode (index into
        config.down_modes), noise_sigma and jpeg_quality (nan when switched off).
    """
    cfg = get_degradation(config)
    _check_images(x)
    n, device = x.shape[0], x.device
    # Draw every random number first, in a fixed order, so the pipeline is reproducible under a seed.
    blur_sigma = _uniform(*cfg.blur_sigma, n, generator, device)
    mode_index = (_uniform(0, len(cfg.down_modes), n, generator, device)).long().clamp_max(len(cfg.down_modes) - 1)
    noise_sigma = _uniform(*cfg.noise_sigma, n, generator, device)
    lr_shape = (n, x.shape[1], x.shape[2] // cfg.scale, x.shape[3] // cfg.scale)
    noise = draw(torch.randn, lr_shape, generator=generator, device=device)
    if cfg.jpeg_quality is not None:
        quality = _uniform(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1, n, generator, device).floor().clamp_max(100)
    else:
        quality = torch.full((n,), float("nan"), device=device)

    # The kernel radius comes from the config, not from the drawn sigmas: no GPU -> host sync per batch.
    y = gaussian_blur(x, blur_sigma, radius=max(1, math.ceil(3 * cfg.blur_sigma[1]))) if cfg.blur_sigma[1] > 0 else x
    if len(cfg.down_modes) == 1:
        y = downsample(y, cfg.scale, cfg.down_modes[0], cfg.antialias)  # (N, C, H/s, W/s)
    else:
        # Compute each filter for the whole batch and pick per image: cheaper than splitting the batch.
        candidates = torch.stack([downsample(y, cfg.scale, m, cfg.antialias) for m in cfg.down_modes])  # (M, N, ...)
        y = candidates[mode_index, torch.arange(n, device=device)]  # (N, C, H/s, W/s)
    y = y + noise_sigma[:, None, None, None].to(y.dtype) * noise.to(y.dtype)
    y = y.clamp(-1, 1)
    if cfg.jpeg_quality is not None:
        y = jpeg_like(y, quality)
    if cfg.quantize:
        y = quantize_8bit(y)
    if return_params:
        params = {
            "blur_sigma": blur_sigma,
            "down_mode": mode_index,
            "noise_sigma": noise_sigma,
            "jpeg_quality": quality,
        }
        return y, params
    return y
