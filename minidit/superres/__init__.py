"""Beyond class labels: the same DiT, conditioned on a degraded image, super-resolves it (notebook 09).

DiT (Peebles & Xie 2023) conditions on a class label; super-resolution conditions on a whole image.
Three ways to hand the low-resolution (LR) image to minidit's unchanged blocks:

    "concat"           SR3 (Saharia et al. 2021): bicubic-upsample the LR image to 32x32 and stack it
                       onto the noisy image as extra input channels: x_embedder sees (N, 2C, H, W).
    "in-context"       the LR image's own patch tokens (its own PatchEmbed, a 2D sin-cos position aligned
                       with the high-res grid) are appended to the sequence, like DiT's in-context t/y
                       tokens, and dropped before the final layer.
    "cross-attention"  the same LR tokens extend the keys/values of the cross-attention block:
                       c = [t_emb, y_emb, lr tokens] (N, 2 + T_lr, D) (needs block="cross-attention").

The class label becomes optional (y=None -> the null label). The network still predicts the noise (and
the variance) of the C image channels only, so minidit.diffusion trains and samples it unchanged.

How to judge SR: PSNR and SSIM (Wang et al. 2004) measure distortion -- the regression baseline (the
same DiT trained with L2 to output x_0 in one step) wins them by predicting the blurry posterior mean;
FID and precision/recall measure how real the outputs look -- diffusion samples win those. Blau &
Michaeli (2018) prove the two cannot both be optimal: the perception-distortion trade-off.

    python -m minidit.superres --out notebooks/results/09_super_resolution --minutes 8   # one GPU
    python -m minidit.superres --quick --out /tmp/sr                                     # CPU, 1-2 min
"""

from __future__ import annotations

import copy
import dataclasses
import pathlib
import platform
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from minidit import blocks as _blocks
from minidit import ema as _ema
from minidit import embeddings as _embeddings
from minidit.checkpoint import atomic_write, atomic_write_json, writable_folder
from minidit.cli import ArgumentParser, use_course_env
from minidit.data import load_fashion_mnist, sample_batch, to_model_range
from minidit.device import draw, get_device, is_compiling
from minidit.diffusion import create_diffusion
from minidit.evaluation import metrics
from minidit.model import DiT, DiT_models
from minidit.sample import respace
from minidit.superres import degrade as _degrade
from minidit.superres.degrade import get_degradation, upsample
from minidit.train import FastStep, make_optimizer, resolve_precision

CONDITIONINGS = ("concat", "in-context", "cross-attention")

# --------------------------------------------------------------------------------------------------
# distortion metrics: PSNR and SSIM
# --------------------------------------------------------------------------------------------------


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


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0, win_size: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
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


# --------------------------------------------------------------------------------------------------
# the two conditioning pieces (exercise ex15 re-implements these; called as module globals)
# --------------------------------------------------------------------------------------------------


def concat_low_res(x_t: torch.Tensor, low_res: torch.Tensor) -> torch.Tensor:
    """SR3's conditioning: stack the bicubic-upsampled LR image onto the noisy image, channels [x_t, LR].

    x_t: (N, C, H, W) noisy images; low_res: (N, C, h, w) LR images in [-1, 1].
    Returns (N, 2C, H, W): channels 0..C-1 are x_t, C..2C-1 are upsample(low_res, H) (bicubic, clamped).
    """
    up = upsample(low_res, x_t.shape[-1])  # (N, C, H, W)
    return torch.cat([x_t, up.to(x_t.dtype)], dim=1)  # (N, 2C, H, W)


def low_res_pos_embed(embed_dim: int, lr_grid_size: int, grid_size: int) -> np.ndarray:
    """2D sin-cos embedding of LR tokens at their place on the high-res token grid (DiT §3.2 layout).

    LR token i (along one axis) covers high-res tokens [i s, (i + 1) s), s = grid_size / lr_grid_size, so
    its position is their centre, (i + 0.5) s - 0.5 (fractional); with lr_grid_size == grid_size this is
    exactly get_2d_sincos_pos_embed. First half embeds the column, second half the row (official order).
    Returns (lr_grid_size**2, embed_dim), tokens in raster order.
    """
    if embed_dim % 4:
        raise ValueError(f"embed_dim must be divisible by 4 for a 2D sin-cos embedding, got {embed_dim}")
    pos = (np.arange(lr_grid_size, dtype=np.float64) + 0.5) * (grid_size / lr_grid_size) - 0.5  # (g,)
    rows, cols = np.divmod(np.arange(lr_grid_size**2), lr_grid_size)  # (T_lr,) each
    emb_col = _embeddings.get_1d_sincos_pos_embed_from_grid(embed_dim // 2, pos[cols])  # (T_lr, D/2)
    emb_row = _embeddings.get_1d_sincos_pos_embed_from_grid(embed_dim // 2, pos[rows])  # (T_lr, D/2)
    return np.concatenate([emb_col, emb_row], axis=1)  # (T_lr, D)


# --------------------------------------------------------------------------------------------------
# the image-conditioned DiT
# --------------------------------------------------------------------------------------------------


class SRDiT(DiT):
    """A DiT conditioned on a low-resolution image (and optionally a label); same blocks, same diffusion."""

    def __init__(self, cond: str = "concat", lr_size: int = 8, lr_patch_size: int | None = None,
                 input_size: int = 32, patch_size: int = 2, in_channels: int = 1, learn_sigma: bool = True,
                 num_classes: int = 10, class_dropout_prob: float = 0.1, **dit_kwargs):
        """cond: one of CONDITIONINGS; lr_size: LR image side (8 for x4, 16 for x2); lr_patch_size: patch size of
        the LR tokens (default max(1, patch_size * lr_size // input_size): an LR token covers the same image area
        as a high-res token); in_channels: C of the images; other arguments as DiT (hidden_size, depth, ...)."""
        if cond not in CONDITIONINGS:
            raise ValueError(f"unknown conditioning {cond!r}; expected one of {CONDITIONINGS}")
        if not isinstance(lr_size, int) or lr_size < 1 or input_size % lr_size:
            raise ValueError(f"lr_size must divide the image size {input_size}, got {lr_size!r}")
        if cond == "cross-attention" and dit_kwargs.get("block") != "cross-attention":
            raise ValueError("cond='cross-attention' extends the cross-attention block's conditioning tokens: "
                             "pass block='cross-attention'")
        # SR3 widens only the input: the x_embedder takes the C noisy + C conditioning channels.
        super().__init__(input_size=input_size, patch_size=patch_size,
                         in_channels=2 * in_channels if cond == "concat" else in_channels,
                         learn_sigma=learn_sigma, num_classes=num_classes, class_dropout_prob=class_dropout_prob,
                         **dit_kwargs)
        self.cond, self.lr_size, self.image_channels = cond, lr_size, in_channels
        # ... while the output stays the noise (and variance) of the C image channels.
        self.out_channels = 2 * in_channels if learn_sigma else in_channels
        self.final_layer = _blocks.FINAL_LAYERS[self.cond_kind](self.hidden_size, patch_size, self.out_channels)
        self.lr_patch_size = None
        if cond != "concat":
            self.lr_patch_size = lr_patch_size or max(1, patch_size * lr_size // input_size)
            self.lr_embedder = _embeddings.PatchEmbed(lr_size, self.lr_patch_size, in_channels, self.hidden_size)
            num_lr = self.lr_embedder.num_patches
            self.lr_pos_embed = nn.Parameter(torch.zeros(1, num_lr, self.hidden_size), requires_grad=False)
        self.initialize_weights()  # again: the new final layer and LR embedder follow the same rules

    def initialize_weights(self) -> None:
        """DiT's rules, plus: the LR patch embedding is initialised like x_embedder and lr_pos_embed is fixed."""
        super().initialize_weights()
        if getattr(self, "lr_patch_size", None) is None:
            return  # concat (or still inside DiT.__init__)
        w = self.lr_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.lr_embedder.proj.bias)
        grid = self.input_size // self.patch_size
        pos = low_res_pos_embed(self.hidden_size, self.lr_embedder.grid_size, grid)  # (T_lr, D)
        self.lr_pos_embed.data.copy_(torch.as_tensor(pos, dtype=torch.float32).unsqueeze(0))

    def _check_sr_inputs(self, x, t, low_res, y) -> None:
        c, size = self.image_channels, self.input_size
        if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != (c, size, size):
            raise ValueError(f"x must be (N, {c}, {size}, {size}) noisy images, got {getattr(x, 'shape', type(x))}")
        n = x.shape[0]
        if not isinstance(low_res, torch.Tensor) or tuple(low_res.shape) != (n, c, self.lr_size, self.lr_size):
            raise ValueError(f"low_res must be (N, C, h, w) = ({n}, {c}, {self.lr_size}, {self.lr_size}), "
                             f"got {getattr(low_res, 'shape', type(low_res))}")
        if not isinstance(t, torch.Tensor) or t.shape != (n,):
            raise ValueError(f"t must be a tensor of shape (N,) = ({n},), got {getattr(t, 'shape', type(t))}")
        if y is None and self.y_embedder.dropout_prob == 0:
            raise ValueError("y=None means the null label, which needs class_dropout_prob > 0; pass labels y")
        if y is not None and (not isinstance(y, torch.Tensor) or y.shape != (n,) or y.dtype.is_floating_point):
            raise ValueError(f"y must be None or (N,) = ({n},) integer labels, got {getattr(y, 'shape', type(y))}")
        if y is not None and n and not is_compiling() and not 0 <= int(y.min()) <= int(y.max()) <= self.num_classes:
            raise ValueError(f"labels must be in [0, {self.num_classes}] ({self.num_classes} = null label)")

    def forward(self, x: torch.Tensor, t: torch.Tensor, low_res: torch.Tensor, y: torch.Tensor | None = None,
                force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        """x: (N, C, H, W) noisy images x_t; t: (N,) timesteps; low_res: (N, C, h, w) LR images in [-1, 1];
        y: (N,) labels or None (the null label). Returns (N, 2C or C, H, W): eps (and v with learned sigma)."""
        self._check_sr_inputs(x, t, low_res, y)
        if y is None:
            y = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
        if self.cond == "concat":
            x = concat_low_res(x, low_res)  # (N, 2C, H, W)
        tokens = self.x_embedder(x) + self.pos_embed  # (N, T, D)
        num_tokens = tokens.shape[1]
        t_emb = self.t_embedder(t)  # (N, D)
        y_emb = self.y_embedder(y, self.training, force_drop_ids)  # (N, D)
        lr_tokens = None
        if self.cond != "concat":
            lr_tokens = self.lr_embedder(low_res) + self.lr_pos_embed  # (N, T_lr, D)
        if self.cond_kind == "vector":  # adaLN, adaLN-Zero
            c = t_emb + y_emb  # (N, D)
        elif self.cond_kind == "tokens":  # cross-attention: keys/values [t, y] (+ the LR tokens)
            c = torch.stack([t_emb, y_emb], dim=1)  # (N, 2, D)
            if self.cond == "cross-attention":
                c = torch.cat([c, lr_tokens], dim=1)  # (N, 2 + T_lr, D)
        else:  # in-context block: t and y are tokens
            c = None
        if self.cond == "in-context":
            tokens = torch.cat([tokens, lr_tokens], dim=1)  # (N, T + T_lr, D)
        if self.cond_kind == "in-context":
            tokens = torch.cat([tokens, t_emb.unsqueeze(1), y_emb.unsqueeze(1)], dim=1)  # (N, T (+ T_lr) + 2, D)
        for block in self.blocks:
            tokens = block(tokens, c)
        tokens = tokens[:, :num_tokens]  # keep the image tokens -> (N, T, D)
        return self.unpatchify(self.final_layer(tokens, c))  # (N, C_out, H, W)


def create_sr_model(name: str = "DiT-S/2", cond: str = "concat", lr_size: int = 8, **kwargs) -> SRDiT:
    """An SRDiT with the size of a DiT config, e.g. create_sr_model("DiT-T/4", "in-context", lr_size=8)."""
    if name not in DiT_models:
        raise ValueError(f"unknown model {name!r}; expected one of {list(DiT_models)}")
    model = SRDiT(cond=cond, lr_size=lr_size, **{**DiT_models[name].preset, **kwargs})
    model.name = name
    return model


# --------------------------------------------------------------------------------------------------
# one-step regression and diffusion sampling
# --------------------------------------------------------------------------------------------------


def regression_predict(model, low_res: torch.Tensor, y: torch.Tensor | None = None,
                       size: int | None = None) -> torch.Tensor:
    """The regression baseline: the same network maps the LR image to x_0 in one step.

    The noisy-image input is empty (zeros) and t = 0; the output is a residual over bicubic upsampling,
    x_0 = upsample(low_res) + model(...), trained with plain L2 (SR3's regression baseline, same network).
    model: an SRDiT built with learn_sigma=False (or any callable model(x, t, low_res=, y=));
    low_res: (N, C, h, w); size: output side H (default model.input_size).
    Returns (N, C, H, W) float32 (not clamped: the L2 loss sees the raw prediction).
    """
    n, c = low_res.shape[:2]
    size = size or model.input_size
    x = torch.zeros(n, c, size, size, device=low_res.device, dtype=low_res.dtype)
    t = torch.zeros(n, dtype=torch.long, device=low_res.device)
    return upsample(low_res, size) + model(x, t, low_res=low_res, y=y)[:, :c].float()  # (N, C, H, W)


@torch.no_grad()
def sample_sr(model: nn.Module, diffusion, low_res: torch.Tensor, num_samples: int = 1, sampler: str = "ddpm",
              steps: int | None = 100, y: torch.Tensor | None = None, generator: torch.Generator | None = None,
              amp: bool | None = None) -> torch.Tensor:
    """Draw num_samples high-res images per LR input by running the reverse process conditioned on it.

    model: an SRDiT (eval mode is used); diffusion: the full process it was trained with (respaced here to
    `steps`, as minidit.sample does); low_res: (N, C, h, w); y: (N,) labels or None; amp: bf16 autocast
    (default on CUDA). Returns (N, num_samples, C, H, W) in [-1, 1].
    """
    device = low_res.device
    amp = device.type == "cuda" if amp is None else amp
    process = respace(diffusion, sampler, steps, device)
    lr = low_res.repeat_interleave(num_samples, dim=0)  # (N*k, C, h, w)
    kwargs = {"low_res": lr, "y": None if y is None else y.repeat_interleave(num_samples, dim=0)}

    def model_fn(x, t, **kw):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            return model(x, t, **kw).float()

    shape = (lr.shape[0], model.image_channels, model.input_size, model.input_size)
    was_training = model.training
    model.eval()
    try:
        loop = process.p_sample_loop if sampler == "ddpm" else process.ddim_sample_loop
        x = loop(model_fn, shape, model_kwargs=kwargs, device=device, generator=generator)
    finally:
        model.train(was_training)
    return rearrange(x.clamp(-1, 1), "(n k) c h w -> n k c h w", k=num_samples)  # (N, k, C, H, W)


# --------------------------------------------------------------------------------------------------
# training: minidit.train's fast step, with an SR batch and an SR objective
# --------------------------------------------------------------------------------------------------

OBJECTIVES = ("diffusion", "regression")
TRAIN_SHARE = 0.82  # of run_experiment's budget; the rest is kept for the evaluation
OBJECTIVE_SHARES = {"diffusion": 0.75, "regression": 0.25}  # of the training time: regression converges faster


@dataclass(frozen=True)
class SRConfig:
    """One SR training run (both objectives use it); CLI flags of `python -m minidit.superres` set it."""

    model: str = "DiT-S/2"
    block: str = "adaLN-Zero"
    cond: str = "concat"
    degradation: str = "x4"
    learn_sigma: bool = True
    class_cond: bool = False  # False: y is always the null label (the LR image is the only condition)
    batch_size: int = 256
    steps: int = 200_000  # an upper bound; a time budget usually ends the run first
    lr: float = 2e-4  # short runs: 2x DiT's 1e-4
    ema_decay: float = 0.999  # a run of a few thousand steps: the paper's 0.9999 would still be mostly init
    ema_warmup: str = "ema_warmup"
    seed: int = 0
    flip: bool = True
    precision: str = "bf16"  # CUDA only; elsewhere fp32
    compile: bool = True  # CUDA only
    log_every: int = 100
    device: str | None = None

    def __post_init__(self):
        choices = {"model": list(DiT_models), "block": list(_blocks.BLOCKS), "cond": CONDITIONINGS,
                   "precision": ("bf16", "fp32"), "ema_warmup": _ema.WARMUPS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; expected one of {list(allowed)}")
        get_degradation(self.degradation)
        for name in ("batch_size", "steps", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or not 0 <= self.ema_decay <= 1:
            raise ValueError(f"need lr > 0 and ema_decay in [0, 1], got lr={self.lr}, ema_decay={self.ema_decay}")


PRESETS = {
    "gpu": {},
    # CPU quick mode: the same code path with a tiny model (notebook 09 in CI, tests).
    "cpu": dict(model="DiT-T/4", batch_size=32, steps=150, lr=1e-3, ema_decay=0.99, precision="fp32",
                compile=False, log_every=25),
}


def build_sr_model(cfg: SRConfig, objective: str = "diffusion", image_size: int = 32, channels: int = 1) -> SRDiT:
    """The SRDiT a config trains: the regression baseline has no learned variance (it outputs x_0 only)."""
    scale = get_degradation(cfg.degradation).scale
    return create_sr_model(cfg.model, cfg.cond, lr_size=image_size // scale, input_size=image_size,
                           in_channels=channels, block=cfg.block,
                           learn_sigma=cfg.learn_sigma and objective == "diffusion")


def draw_sr_batch(data, generator: torch.Generator, batch_size: int, diffusion, degradation, flip: bool = True,
                  class_cond: bool = False):
    """(x, low_res, t, noise, y): x (N, C, H, W) in [-1, 1], low_res = degrade(x) with fresh random strengths,
    t (N,), noise (N, C, H, W), y (N,) labels or None -- all from one generator, on the data's device."""
    x, y = sample_batch(data, batch_size, generator, flip)  # (N, C, H, W), (N,)
    low_res = _degrade.degrade(x, degradation, generator)  # (N, C, h, w)
    t = diffusion.sample_timesteps(batch_size, x.device, generator)  # (N,)
    noise = draw(torch.randn, x.shape, generator=generator, device=x.device)  # (N, C, H, W)
    return x, low_res, t, noise, (y if class_cond else None)


class SRStep(FastStep):
    """minidit.train.FastStep (bf16 autocast, compile with fallback, fused AdamW, foreach EMA) with an SR loss.

    Called as FastStep: step(batch, ema_decay) with batch = (x, low_res, t, noise, y) from `draw_sr_batch`.
    """

    def __init__(self, model, diffusion, optimizer, *, objective: str = "diffusion", **kwargs):
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        self.objective = objective  # read by _build, which FastStep.__init__ calls
        super().__init__(model, diffusion, optimizer, **kwargs)

    def _build(self, compile: bool):
        model = torch.compile(self.model, mode=self.compile_mode) if compile and self.compile_scope == "model" \
            else self.model
        amp_dtype, device_type, diffusion = self.amp_dtype, self.device_type, self.diffusion

        def model_fn(x, t, **kwargs):
            with torch.autocast(device_type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                return model(x, t, **kwargs).float()  # the diffusion maths stays in fp32

        def diffusion_loss(x, low_res, t, noise, y):  # L_simple (+ L_vlb): DiT's loss, conditioned on low_res
            kwargs = {"low_res": low_res, "y": y}
            return diffusion.training_losses(model_fn, x, t, model_kwargs=kwargs, noise=noise)["loss"]  # (N,)

        def regression_loss(x, low_res, t, noise, y):  # plain L2 on x_0, in one step
            return (regression_predict(model_fn, low_res, y, x.shape[-1]) - x).pow(2).flatten(1).mean(1)  # (N,)

        loss_fn = diffusion_loss if self.objective == "diffusion" else regression_loss
        return torch.compile(loss_fn, mode=self.compile_mode) if compile and self.compile_scope == "loss" else loss_fn


def train_sr(cfg: SRConfig, objective: str = "diffusion", data=None, max_seconds: float | None = None,
             log=print) -> dict:
    """Train an SRDiT with the diffusion loss or the L2 regression loss, for cfg.steps or max_seconds.

    max_seconds counts from the end of the first step: that step compiles (torch.compile, about a minute for
    DiT-S/2 on an H100) and is timed on its own as warmup_seconds. Charged to the budget, it once left the
    regression baseline a single step of its 0.9 minutes.
    data: a minidit.data.FashionMNIST (None loads the training split). Returns dict(model, ema, diffusion,
    history) -- history: step, loss, wall_time (since the call), img_per_s lists; final_step, warmup_seconds,
    budget_seconds, train_seconds (the whole call), device/precision/compiled/num_params.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    start = time.monotonic()
    device = get_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    amp_dtype, use_compile, message = resolve_precision(cfg, device)
    if message:
        log(f"minidit.superres: {message}")
    data = (data if data is not None else load_fashion_mnist("train")).to(device)
    channels, size = data.images.shape[1], data.images.shape[-1]
    torch.manual_seed(cfg.seed)
    model = build_sr_model(cfg, objective, size, channels).to(device).train()
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    diffusion = create_diffusion(None, learn_sigma=model.learn_sigma, device=device)
    optimizer = make_optimizer(model, cfg.lr, 0.0)
    generator = torch.Generator(device=device).manual_seed(cfg.seed + OBJECTIVES.index(objective))
    step_fn = SRStep(model, diffusion, optimizer, objective=objective, amp_dtype=amp_dtype, compile=use_compile,
                     ema=ema, log=lambda m: log(f"minidit.superres: {m}"))
    history = {"objective": objective, "config": dataclasses.asdict(cfg), "device": str(device),
               "precision": "bf16" if amp_dtype is not None else "fp32", "compiled": use_compile,
               "num_params": sum(p.numel() for p in model.parameters()), "step": [], "loss": [],
               "wall_time": [], "img_per_s": [], "stopped_by_budget": False, "budget_seconds": max_seconds}
    step, pending, last, last_print = 0, [], (time.monotonic(), 0), time.monotonic()
    clock = None  # when the budget starts: after the first (compiling) step
    while step < cfg.steps:
        batch = draw_sr_batch(data, generator, cfg.batch_size, diffusion, cfg.degradation, cfg.flip, cfg.class_cond)
        pending.append(step_fn(batch, _ema.ema_decay_with_warmup(step, cfg.ema_decay, cfg.ema_warmup)))
        step += 1
        if clock is None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # the first step's kernels belong to the warm-up too
            clock = time.monotonic()
            history["warmup_seconds"] = clock - last[0]
            last = (clock, step)  # throughput from here on, compile excluded
        out_of_time = max_seconds is not None and time.monotonic() - clock >= max_seconds
        if step % cfg.log_every == 0 or step == cfg.steps or out_of_time:
            now = time.monotonic()
            history["step"].append(step)
            history["loss"].append(torch.cat(pending).mean().item())  # the only host sync
            history["wall_time"].append(now - start)
            since = last if step > last[1] else (clock - history["warmup_seconds"], 0)  # logging step 1 itself
            history["img_per_s"].append((step - since[1]) * cfg.batch_size / max(now - since[0], 1e-9))
            pending, last = [], (now, step)
            if now - last_print >= 60:  # a heartbeat for long runs
                log(f"minidit.superres: {objective} step {step}, loss {history['loss'][-1]:.4f}, "
                    f"{history['img_per_s'][-1]:,.0f} img/s, {now - start:.0f} s")
                last_print = now
        if out_of_time:
            history["stopped_by_budget"] = step < cfg.steps
            break
    history["compiled"] = step_fn.compiled
    history["final_step"], history["train_seconds"] = step, time.monotonic() - start
    log(f"minidit.superres: {objective}: {step} steps in {history['train_seconds']:.0f} s (first step, "
        f"compiled {history['compiled']}: {history['warmup_seconds']:.0f} s), loss {history['loss'][-1]:.4f}, "
        f"{history['img_per_s'][-1]:,.0f} img/s")
    return {"model": model, "ema": ema, "diffusion": diffusion, "history": history}


# --------------------------------------------------------------------------------------------------
# evaluation: distortion (PSNR, SSIM) next to perception (FID, precision/recall)
# --------------------------------------------------------------------------------------------------


def _perceptual_metrics(outputs: dict[str, torch.Tensor], reference: torch.Tensor, log=print) -> dict:
    """FID and precision/recall of each method's images vs real images, with minidit's evaluator (if present)."""
    try:

        device = reference.device
        ref = metrics.compute_features(reference, device=device)["pool"]
        out = {}
        for name, images in outputs.items():
            fake = metrics.compute_features(images, device=device)["pool"]
            out[name] = {"fid": metrics.fid_from_features(ref, fake), **metrics.precision_recall(ref, fake, k=3)}
        return out
    except Exception as err:  # no evaluator weights yet, or too few images: distortion metrics still stand
        log(f"minidit.superres: FID / precision-recall skipped ({type(err).__name__}: {str(err)[:200]})")
        return {}


@torch.no_grad()
def evaluate_sr(diffusion_model: SRDiT, regression_model: SRDiT, diffusion, hr: torch.Tensor,
                degradation="x4", num_samples: int = 3, sampler: str = "ddpm", steps: int | None = 100,
                batch_size: int = 500, seed: int = 0, reference: torch.Tensor | None = None,
                deadline: float | None = None, log=print) -> dict:
    """Super-resolve degraded test images with bicubic, regression and diffusion; score them.

    hr: (N, C, H, W) ground-truth images in [-1, 1] (on the models' device); degraded with a CPU generator
    seeded `seed`, so every device sees the same LR inputs. reference: real images for FID/precision/recall
    (default hr). deadline: time.monotonic() after which no new batch starts (the rest is dropped).
    Returns dict(metrics={method: {psnr, ssim, fid?, precision?, recall?}}, diversity, num_eval, outputs
    {low_res, bicubic, regression, diffusion (N, k, C, H, W), ground_truth}).
    """
    lr_all = _degrade.degrade(hr.cpu(), degradation, generator=torch.Generator().manual_seed(seed)).to(hr.device)
    g = torch.Generator(device=hr.device).manual_seed(seed + 1)
    parts: dict[str, list] = {k: [] for k in ("low_res", "bicubic", "regression", "diffusion", "ground_truth")}
    done = 0
    for start in range(0, len(hr), batch_size):
        if deadline is not None and start > 0 and time.monotonic() > deadline:
            log(f"minidit.superres: time budget reached, evaluating on {start} of {len(hr)} test images")
            break
        lr, gt = lr_all[start:start + batch_size], hr[start:start + batch_size]
        with torch.autocast(hr.device.type, dtype=torch.bfloat16, enabled=hr.device.type == "cuda"):
            reg = regression_predict(regression_model.eval(), lr)
        parts["low_res"].append(lr)
        parts["bicubic"].append(upsample(lr, hr.shape[-1]))
        parts["regression"].append(reg.float().clamp(-1, 1))
        parts["diffusion"].append(sample_sr(diffusion_model, diffusion, lr, num_samples, sampler, steps, generator=g))
        parts["ground_truth"].append(gt)
        done = start + len(gt)
    out = {k: torch.cat(v) for k, v in parts.items()}
    gt, samples = out["ground_truth"], out["diffusion"]  # (N, C, H, W), (N, k, C, H, W)
    flat = rearrange(samples, "n k c h w -> (n k) c h w")
    gt_k = gt.repeat_interleave(num_samples, dim=0)
    candidates = {"bicubic": out["bicubic"], "regression": out["regression"], "diffusion": samples[:, 0],
                  f"diffusion mean of {num_samples}": samples.mean(1)}
    table = {}
    for name, images in candidates.items():
        table[name] = {"psnr": psnr(images, gt).mean().item(), "ssim": ssim(images, gt).mean().item()}
    # A diffusion sample's distortion, averaged over all k samples of every input (not just the first).
    table["diffusion"] = {"psnr": psnr(flat, gt_k).mean().item(), "ssim": ssim(flat, gt_k).mean().item()}
    table["ground truth"] = {"psnr": None, "ssim": 1.0}  # PSNR is infinite (None keeps the JSON strict)
    perceptual = _perceptual_metrics({**candidates, "ground truth": gt}, gt if reference is None else reference, log)
    for name, values in perceptual.items():
        table[name].update(values)
    diversity = samples.std(1).mean().item() if num_samples > 1 else 0.0  # per-pixel std over the k samples
    notes = (f"diffusion: PSNR/SSIM averaged over all {num_samples} samples per input; FID and precision/recall "
             "from the first sample per input, so every method is scored on the same number of images")
    return {"metrics": table, "diversity_pixel_std": diversity, "num_eval": done, "num_samples": num_samples,
            "sampler": sampler, "sample_steps": steps, "notes": notes, "outputs": out}


# --------------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------------


def plot_before_after(outputs: dict, rows: int = 6, num_samples: int = 3):
    """LR input (nearest, to show its pixels) | bicubic | regression | k diffusion samples | ground truth."""
    import matplotlib.pyplot as plt  # heavy: only the figures need it

    rows = min(rows, len(outputs["ground_truth"]))
    k = min(num_samples, outputs["diffusion"].shape[1])
    size = outputs["ground_truth"].shape[-1]
    columns = [("LR input", upsample(outputs["low_res"][:rows], size, mode="nearest")),
               ("bicubic", outputs["bicubic"][:rows]), ("regression (L2)", outputs["regression"][:rows])]
    columns += [(f"diffusion #{i + 1}", outputs["diffusion"][:rows, i]) for i in range(k)]
    columns += [("ground truth", outputs["ground_truth"][:rows])]
    fig, axes = plt.subplots(rows, len(columns), figsize=(1.3 * len(columns), 1.3 * rows + 0.3), squeeze=False)
    for j, (title, images) in enumerate(columns):
        for i in range(rows):
            ax = axes[i, j]
            ax.imshow(images[i, 0].float().cpu().numpy(), cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def plot_perception_distortion(table: dict):
    """Distortion (PSNR, higher = closer to the truth) against perception (FID, lower = more realistic)."""
    import matplotlib.pyplot as plt  # heavy: only the figures need it

    points = {k: v for k, v in table.items() if "fid" in v and v["psnr"] is not None}
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    names = [k for k in table if k != "ground truth"]
    ax[0].barh(names, [table[k]["psnr"] for k in names], color="tab:blue")
    ax[0].set_xlabel("PSNR (dB), higher = less distortion")
    ax[0].invert_yaxis()
    if points:
        for name, v in points.items():
            ax[1].scatter(v["psnr"], v["fid"], s=40)
            ax[1].annotate(name, (v["psnr"], v["fid"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
        if "ground truth" in table and "fid" in table["ground truth"]:
            ax[1].axhline(table["ground truth"]["fid"], color="gray", ls="--", lw=1, label="ground truth (FID floor)")
            ax[1].legend(fontsize=8)
        ax[1].set_xlabel("PSNR (dB)  -> less distortion")
        ax[1].set_ylabel("FID  (lower = more realistic)")
        ax[1].set_title("perception-distortion trade-off (Blau & Michaeli 2018)", fontsize=9, pad=10)
        ax[1].margins(0.15)
    else:
        ax[1].text(0.5, 0.5, "FID unavailable\n(no evaluator weights)", ha="center", va="center")
        ax[1].set_axis_off()
    fig.tight_layout()
    return fig


def save_figure(fig, path) -> pathlib.Path:
    """Write a matplotlib figure as PNG atomically (temp file in the same folder, then rename)."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))


# --------------------------------------------------------------------------------------------------
# the experiment: python -m minidit.superres
# --------------------------------------------------------------------------------------------------


def run_experiment(cfg: SRConfig, out_dir=None, minutes: float = 8.0, num_eval: int = 2000, num_samples: int = 3,
                   sampler: str = "ddpm", sample_steps: int = 100, num_reference: int | None = None,
                   command: str | None = None, log=print) -> dict:
    """Train the diffusion SR model and the regression baseline within `minutes` (training and evaluation:
    ~18% is kept for the evaluation), evaluate `num_eval` test images, and write results.json and the figures
    to out_dir (if given). Each model's first step (torch.compile's warm-up, ~1 min on a GPU) is not charged
    to the budget: it comes on top, and results.json records it per model with the steps trained.
    FID/precision/recall use `num_reference` other test images (default: all the rest) as the real
    distribution. Returns the summary written to results.json, plus "outputs" (the image tensors)."""
    start = time.monotonic()
    budget = 60 * minutes
    train_budget = TRAIN_SHARE * budget
    device = get_device(cfg.device)
    data, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    if not 1 <= num_eval < len(test):
        raise ValueError(f"num_eval must be in [1, {len(test) - 1}] (the rest are the FID reference), got {num_eval}")
    # Disjoint test images: num_eval to super-resolve, the others (up to num_reference) as the real distribution.
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(cfg.seed))
    hr = to_model_range(test.images[order[:num_eval]]).to(device)
    ref_idx = order[num_eval:] if num_reference is None else order[num_eval:num_eval + num_reference]
    reference = to_model_range(test.images[ref_idx]).to(device)  # the real distribution for FID, P/R
    out_dir = None if out_dir is None else pathlib.Path(out_dir)
    summary = {
        "command": command or "minidit.superres.run_experiment",
        "device": str(device),
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else platform.processor() or device.type),
        "torch_version": torch.__version__, "minutes_budget": minutes,
        "config": dataclasses.asdict(cfg), "degradation": dataclasses.asdict(get_degradation(cfg.degradation)),
        "fid_reference": f"{len(reference)} other Fashion-MNIST test images, minidit evaluator pool features",
        "status": "training",
    }
    runs = {}
    for objective, share in OBJECTIVE_SHARES.items():
        log(f"minidit.superres: training the {objective} model for up to {share * train_budget / 60:.1f} min "
            "after its first (compiling) step")
        runs[objective] = train_sr(cfg, objective, data, max_seconds=share * train_budget, log=log)
    histories = {k: r["history"] for k, r in runs.items()}
    warmup = sum(h["warmup_seconds"] for h in histories.values())
    summary.update(status="evaluating", train=histories,
                   steps_trained={k: h["final_step"] for k, h in histories.items()},
                   warmup_seconds={k: h["warmup_seconds"] for k, h in histories.items()})
    if out_dir is not None:  # a record of the training even if the evaluation is cut short
        atomic_write_json(out_dir / "results.json", summary)
    eval_start = time.monotonic()
    result = evaluate_sr(runs["diffusion"]["ema"], runs["regression"]["ema"], runs["diffusion"]["diffusion"], hr,
                         cfg.degradation, num_samples, sampler, sample_steps, seed=cfg.seed, reference=reference,
                         deadline=start + budget + warmup, log=log)
    outputs = result.pop("outputs")
    result["notes"] += ("; warmup_seconds: each model's first step (torch.compile and CUDA warm-up), timed apart "
                        "and not charged to its training budget")
    summary.update(result, status="done")
    summary["wall_seconds"] = {**{f"train_{k}": h["train_seconds"] for k, h in histories.items()},  # warm-up included
                               "evaluate": time.monotonic() - eval_start, "total": time.monotonic() - start}
    if out_dir is not None:
        summary["figures"] = []
        try:
            import matplotlib.pyplot as plt  # heavy: only the figures need it

            figures = {"before_after.png": plot_before_after(outputs, 8, num_samples),
                       "perception_distortion.png": plot_perception_distortion(summary["metrics"])}
            for name, fig in figures.items():
                save_figure(fig, out_dir / name)
                plt.close(fig)
                summary["figures"].append(name)
        except Exception as err:  # the numbers matter more than the pictures: never lose them to a plot
            log(f"minidit.superres: figures failed ({type(err).__name__}: {err})")
        atomic_write_json(out_dir / "results.json", summary)
        log(f"minidit.superres: wrote {out_dir / 'results.json'} and {', '.join(summary['figures']) or 'no figures'}")
    summary["outputs"] = outputs
    return summary


def format_table(table: dict) -> str:
    """The metrics table as aligned text."""
    lines = [f"{'method':<22} {'PSNR':>7} {'SSIM':>6} {'FID':>8} {'prec':>5} {'recall':>6}"]
    for name, v in table.items():
        fid = f"{v['fid']:8.2f}" if "fid" in v else f"{'-':>8}"
        pr = f"{v['precision']:5.2f} {v['recall']:6.2f}" if "precision" in v else f"{'-':>5} {'-':>6}"
        psnr_text = f"{v['psnr']:7.2f}" if v["psnr"] is not None else f"{'inf':>7}"
        lines.append(f"{name:<22} {psnr_text} {v['ssim']:6.3f} {fid} {pr}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """python -m minidit.superres --out DIR [--minutes 8] [--quick] [--model DiT-S/2] [--cond concat] ..."""

    parser = ArgumentParser(prog="python -m minidit.superres", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for results.json and the figures")
    parser.add_argument("--minutes", type=float, default=None,
                        help="wall-clock budget of training and evaluation (default 8; quick 5); each model's "
                             "first step (torch.compile, ~1 min on a GPU) comes on top")
    parser.add_argument("--quick", action="store_true", help="CPU-sized: tiny model, few steps, 64 test images")
    parser.add_argument("--model", default=None, help="DiT config for both models (default DiT-S/2; quick DiT-T/4)")
    parser.add_argument("--block", default="adaLN-Zero", choices=sorted(_blocks.BLOCKS))
    parser.add_argument("--cond", default="concat", choices=CONDITIONINGS)
    parser.add_argument("--degradation", default="x4", help="preset of minidit.superres.degrade (x4, x2, x4-bicubic, ...)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--num-eval", type=int, default=None,
                        help="test images to super-resolve (default 2000; quick 64)")
    parser.add_argument("--num-reference", type=int, default=None,
                        help="other real test images for FID / precision-recall (default: all the rest; quick 1000)")
    parser.add_argument("--samples-per-input", type=int, default=3)
    parser.add_argument("--sampler", default="ddpm", choices=("ddpm", "ddim"))
    parser.add_argument("--sample-steps", type=int, default=None, help="respaced steps (default 100; quick 20)")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--precision", default=None, choices=("bf16", "fp32"))
    parser.add_argument("--device", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    use_course_env()  # MINIDIT_IMPL=student runs your ex15 (and other exercises) here
    values = dict(PRESETS["cpu" if args.quick else "gpu"])
    for key in ("model", "batch_size", "lr", "precision", "device"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    values.update(block=args.block, cond=args.cond, degradation=args.degradation, seed=args.seed)
    if args.no_compile:
        values["compile"] = False
    try:  # everything a user can get wrong, before the training

        cfg = SRConfig(**values)
        for name in ("samples_per_input", "num_eval", "sample_steps", "num_reference"):
            value = getattr(args, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if args.minutes is not None and args.minutes <= 0:
            raise ValueError(f"--minutes must be > 0, got {args.minutes}")
        writable_folder(args.out, "--out")
        get_device(cfg.device)
        load_fashion_mnist("train")
        load_fashion_mnist("test")
    except (ValueError, OSError) as err:
        parser.error(str(err))
    minutes = args.minutes if args.minutes is not None else (5.0 if args.quick else 8.0)
    num_eval = args.num_eval or (64 if args.quick else 2000)
    steps = args.sample_steps or (20 if args.quick else 100)
    command = "python -m minidit.superres " + " ".join(sys.argv[1:] if argv is None else argv)
    num_reference = args.num_reference or (1000 if args.quick else None)
    summary = run_experiment(cfg, args.out, minutes, num_eval, args.samples_per_input, args.sampler, steps,
                             num_reference, command)
    print(format_table(summary["metrics"]))
    print(f"diversity (pixel std over {args.samples_per_input} samples): {summary['diversity_pixel_std']:.4f}; "
          f"wall {summary['wall_seconds']['total']:.0f} s on {summary['device_name']}")
    print("steps trained: " + ", ".join(f"{k} {n} (first step {summary['warmup_seconds'][k]:.0f} s)"
                                        for k, n in summary["steps_trained"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
