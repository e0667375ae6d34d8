"""A small KL autoencoder and its latent space, where DiT does its diffusion (DiT §3.1 "Latent diffusion models").

DiT never sees pixels: the Stable Diffusion VAE (Rombach et al. 2022, LDM §3 "Perceptual image compression")
encodes a 256x256x3 image into a 32x32x4 latent (downsampling factor f = 8), DiT learns the diffusion of
those latents, and the decoder maps its samples back to pixels. This module is that pipeline scaled down
to Fashion-MNIST (notebook 10):

    x (N, 1, 32, 32) in [-1, 1] --encoder--> mean, logvar (N, 4, 8, 8) --sample--> z --decoder--> x_rec

f = 4, so a 32x32x1 image becomes an 8x8x4 latent: 4x fewer numbers, and DiT-S/2 sees 16 tokens instead of
256. (16x16x4 would hold as many numbers as the image itself: no compression, nothing for the latent route
to buy.) The architecture is the SD VAE's, shrunk: ResNet blocks with GroupNorm and SiLU, stride-2
convolutions down, nearest-neighbour upsampling + convolution up, a diagonal-Gaussian posterior
q(z | x) = N(mean, exp(logvar)). The loss is LDM's without its perceptual (LPIPS) and GAN terms: an L1
reconstruction plus a small KL pull towards N(0, I) (weight 1e-6, as the SD VAE's).

The KL weight is so small that it does not fix the latents' scale; the SD VAE's latents have a std of
about 5.5. Diffusion assumes data of unit variance (the noise schedule is tuned for it), so the latents
are multiplied by `latent_scale_factor` = 1 / std before diffusion (SD: 0.18215) and divided by it before
decoding.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from minidit.data import LatentDataset, random_hflip, to_model_range
from minidit.device import draw

# ----------------------------------------------------------------------------- the latent (ex17)


def sample_posterior(
    mean: torch.Tensor,
    logvar: torch.Tensor,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The reparameterisation trick (Kingma & Welling 2014, §2.4): z = mean + exp(logvar / 2) * noise.

    mean, logvar: (N, C, h, w) the posterior's parameters; noise: (N, C, h, w) standard normal (drawn
    from `generator` when None). z is differentiable in mean and logvar. Returns z: (N, C, h, w).
    """
    if noise is None:
        noise = draw(torch.randn, mean.shape, generator=generator, device=mean.device)
    return mean + torch.exp(0.5 * logvar) * noise


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) per example, summed over the latent: (N, ...) -> (N,).

    In closed form, per dimension: (mean^2 + var - 1 - logvar) / 2 (Kingma & Welling 2014, App. B).
    """
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)


def latent_scale_factor(latents: torch.Tensor) -> float:
    """1 / std of the latents (all elements): scaled latents have unit variance, as diffusion assumes.

    latents: (N, C, h, w) encoder outputs. The SD VAE's 0.18215 is this number for its latents.
    """
    return 1.0 / latents.float().std().item()


# ----------------------------------------------------------------------------- layers


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels, eps=1e-6)  # 32 groups, as SD, when the width allows


class ResnetBlock(nn.Module):
    """(GroupNorm, SiLU, conv 3x3) twice plus a skip (1x1 conv if widths differ): (N, c_in, H, W) -> (N, c_out, H, W)"""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 convolution (SD's decoder; no checkerboard of transposed convs)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (N, C, 2H, 2W)


# ----------------------------------------------------------------------------- the autoencoder


@dataclass(frozen=True)
class AEConfig:
    """The autoencoder's shape: one ResNet block per level, a stride-2 convolution between levels."""

    in_channels: int = 1
    latent_channels: int = 4
    widths: tuple[int, ...] = (64, 128, 128)  # per level; f = 2 ** (len(widths) - 1) = 4: 32x32 -> 8x8
    kl_weight: float = 1e-6  # the SD VAE's

    def __post_init__(self):
        if len(self.widths) < 1 or min(self.widths) < 1 or self.latent_channels < 1 or self.in_channels < 1:
            raise ValueError(f"need at least one level and positive widths/channels, got {self}")
        if self.kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {self.kl_weight}")

    @property
    def factor(self) -> int:
        """The downsampling factor f: an H x W image gives an (H / f) x (W / f) latent."""
        return 2 ** (len(self.widths) - 1)


class Posterior(NamedTuple):
    """q(z | x) and one draw from it, each (N, latent_channels, H / f, W / f)."""

    sample: torch.Tensor
    mean: torch.Tensor
    logvar: torch.Tensor


class AutoencoderKL(nn.Module):
    """The SD VAE's design, small: (N, 1, 32, 32) images in [-1, 1] <-> (N, 4, 8, 8) latents."""

    def __init__(self, cfg: AEConfig = AEConfig()):
        super().__init__()
        self.cfg = cfg
        w = cfg.widths
        down = [ResnetBlock(w[0], w[0])]
        for prev, width in zip(w[:-1], w[1:]):
            down += [nn.Conv2d(prev, prev, 3, stride=2, padding=1), ResnetBlock(prev, width)]  # H -> H / 2
        self.encoder = nn.Sequential(
            nn.Conv2d(cfg.in_channels, w[0], 3, padding=1),
            *down,
            ResnetBlock(w[-1], w[-1]),
            _norm(w[-1]),
            nn.SiLU(),
            nn.Conv2d(w[-1], 2 * cfg.latent_channels, 3, padding=1),
        )  # mean and logvar
        up = [ResnetBlock(w[-1], w[-1])]
        for width, nxt in zip(w[::-1][:-1], w[::-1][1:]):
            up += [Upsample(width), ResnetBlock(width, nxt)]  # H -> 2H
        self.decoder = nn.Sequential(
            nn.Conv2d(cfg.latent_channels, w[-1], 3, padding=1),
            *up,
            _norm(w[0]),
            nn.SiLU(),
            nn.Conv2d(w[0], cfg.in_channels, 3, padding=1),
        )

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Posterior:
        """x: (N, 1, H, W) in [-1, 1] -> Posterior(sample, mean, logvar), each (N, 4, H / f, W / f)."""
        f = self.cfg.factor
        if x.ndim != 4 or x.shape[1] != self.cfg.in_channels or x.shape[-2] % f or x.shape[-1] % f:
            raise ValueError(
                f"expected images (N, {self.cfg.in_channels}, H, W) with H, W divisible by {f}, got {tuple(x.shape)}"
            )
        mean, logvar = self.encoder(x).float().chunk(2, dim=1)  # (N, C, h, w) each
        logvar = logvar.clamp(-30.0, 20.0)  # as the SD VAE: keeps exp(logvar) finite
        return Posterior(sample_posterior(mean, logvar, generator=generator), mean, logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z: (N, 4, h, w) unscaled latents -> (N, 1, f h, f w) images (not clamped)."""
        return self.decoder(z).float()

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, Posterior]:
        """x: (N, 1, H, W) -> (reconstruction (N, 1, H, W), posterior)."""
        posterior = self.encode(x, generator)
        return self.decode(posterior.sample), posterior


def autoencoder_loss(x: torch.Tensor, x_rec: torch.Tensor, posterior: Posterior, kl_weight: float) -> dict:
    """LDM's loss without LPIPS and GAN: sum |x - x_rec| + kl_weight * KL, per image, batch-averaged.

    x, x_rec: (N, 1, H, W); returns {"loss", "rec" (L1 per image), "kl"} as scalars.
    """
    rec = (x - x_rec).abs().flatten(1).sum(1).mean()
    kl = kl_divergence(posterior.mean, posterior.logvar).mean()
    return {"loss": rec + kl_weight * kl, "rec": rec, "kl": kl}


# ----------------------------------------------------------------------------- training and the latent dataset


def train_autoencoder(
    images: torch.Tensor,
    cfg: AEConfig = AEConfig(),
    *,
    steps: int = 20_000,
    max_seconds: float | None = None,
    batch_size: int = 256,
    lr: float = 5e-4,
    seed: int = 0,
    log_every: int = 100,
    log=print,
) -> tuple[AutoencoderKL, dict]:
    """Train an AutoencoderKL on uint8 images (N, 1, 32, 32) on their device, with random flips.

    Stops after `steps` or `max_seconds`, whichever comes first (bf16 autocast on CUDA). Returns the model
    (eval mode) and a history: step, loss, rec, kl (every log_every steps), img_per_s, seconds, steps.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W) uint8, got {tuple(images.shape)} {images.dtype}")
    if steps < 1 or batch_size < 1 or log_every < 1:
        raise ValueError(f"steps, batch_size and log_every must be >= 1, got {steps}, {batch_size}, {log_every}")
    device = images.device
    torch.manual_seed(seed)
    model = AutoencoderKL(cfg).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator(device=device).manual_seed(seed)
    history = {"step": [], "loss": [], "rec": [], "kl": [], "num_params": sum(p.numel() for p in model.parameters())}
    start = time.monotonic()
    sums, step = torch.zeros(3, device=device), 0
    while step < steps:
        idx = torch.randint(len(images), (batch_size,), generator=generator, device=device)  # (B,)
        x = random_hflip(to_model_range(images[idx]), generator)  # (B, 1, 32, 32)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            x_rec, posterior = model(x, generator)
        losses = autoencoder_loss(x, x_rec.float(), posterior, cfg.kl_weight)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        sums += torch.stack([losses["loss"].detach(), losses["rec"].detach(), losses["kl"].detach()])
        step += 1
        out_of_time = max_seconds is not None and time.monotonic() - start >= max_seconds
        if step % log_every == 0 or step == steps or out_of_time:
            mean = (sums / (step - (history["step"][-1] if history["step"] else 0))).tolist()  # one host sync
            for key, value in zip(("loss", "rec", "kl"), mean):
                history[key].append(value)
            history["step"].append(step)
            sums.zero_()
            log(f"minidit.latent: autoencoder step {step}: L1 {mean[1]:.2f} per image, KL {mean[2]:.1f}")
        if out_of_time:
            break
    seconds = time.monotonic() - start
    history.update(
        steps=step, seconds=seconds, img_per_s=step * batch_size / max(seconds, 1e-9), stopped_by_budget=step < steps
    )
    return model.eval().requires_grad_(False), history


@torch.no_grad()
def encode_images(
    ae: AutoencoderKL,
    images: torch.Tensor,
    sample: bool = True,
    batch_size: int = 2048,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """images: (N, 1, 32, 32) uint8 or float in [-1, 1] -> unscaled latents (N, 4, 8, 8) float32.

    sample: a draw from q(z | x), as DiT's pipeline (`vae.encode(x).latent_dist.sample()`); False: the mean.
    """
    device = next(ae.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device)
        x = to_model_range(x) if x.dtype == torch.uint8 else x.float()
        posterior = ae.encode(x, generator)
        out.append(posterior.sample if sample else posterior.mean)
    return torch.cat(out)  # (N, 4, 8, 8)


@torch.no_grad()
def decode_latents(ae: AutoencoderKL, z: torch.Tensor, scale_factor: float, batch_size: int = 2048) -> torch.Tensor:
    """Scaled latents (N, 4, 8, 8), as DiT samples them -> images (N, 1, 32, 32) in [-1, 1]: decode(z / scale)."""
    device = next(ae.parameters()).device
    parts = [ae.decode(z[i : i + batch_size].to(device) / scale_factor) for i in range(0, len(z), batch_size)]
    return torch.cat(parts).clamp(-1, 1)


def encode_dataset(
    ae: AutoencoderKL, images: torch.Tensor, labels: torch.Tensor, seed: int = 0, scale_factor: float | None = None
) -> tuple[LatentDataset, float]:
    """Precompute, once, the latents DiT trains on: every image and its mirror image (the flip augmentation,
    which cannot be applied to a latent afterwards), on the images' device.

    images: (N, 1, 32, 32) uint8; labels: (N,). scale_factor: None computes `latent_scale_factor` of these
    latents. Returns (LatentDataset of scaled latents (2N, 4, 8, 8) and labels (2N,), the scale factor).
    """
    generator = torch.Generator(device=next(ae.parameters()).device).manual_seed(seed)
    z = torch.cat(
        [encode_images(ae, images, generator=generator), encode_images(ae, images.flip(-1), generator=generator)]
    )  # (2N, 4, 8, 8)
    scale = latent_scale_factor(z) if scale_factor is None else scale_factor
    return LatentDataset(z * scale, torch.cat([labels, labels]).to(z.device), "train-latents"), scale
