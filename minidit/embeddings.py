"""Turning images, timesteps and labels into D-dimensional vectors (DiT §3.2, Figure 4).

* ``patchify`` / ``unpatchify``: an (N, C, H, W) image <-> a sequence of T = (H/p)(W/p) tokens of
  p*p*C numbers each. ``PatchEmbed`` is "patchify, then one linear layer" -- stored as the p x p,
  stride-p convolution of the official code so that state dicts move between the two.
* ``get_2d_sincos_pos_embed``: the fixed (not learned) 2D sine-cosine position embedding of ViT/MAE.
* ``timestep_embedding`` + ``TimestepEmbedder``: 256 sinusoidal frequencies of t, then a 2-layer MLP.
* ``LabelEmbedder``: a table with one row per class plus a "null" row, and the label dropout that
  trains the unconditional model used by classifier-free guidance (Ho & Salimans 2022; DiT §3.1).

Names, layouts and key names follow facebookresearch/DiT (``models.py``), so a student can read the
two side by side.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

# --------------------------------------------------------------------------------------------------
# patchify / unpatchify
# --------------------------------------------------------------------------------------------------


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """Cut images into non-overlapping p x p patches, one token per patch (DiT §3.2 "Patchify", Figure 4).

    x: (N, C, H, W) images, H and W divisible by p.
    Returns (N, T, p*p*C) with T = (H/p)(W/p) tokens in row-major (raster) order; inside a token the
    numbers are ordered (row in patch, column in patch, channel), as the official DiT.unpatchify.
    """
    if x.ndim != 4:
        raise ValueError(f"patchify expects (N, C, H, W) images, got shape {tuple(x.shape)}")
    height, width = x.shape[-2:]
    if height % p or width % p:
        raise ValueError(f"image size {height}x{width} is not divisible by patch size {p}")
    return rearrange(x, "n c (h p1) (w p2) -> n (h w) (p1 p2 c)", p1=p, p2=p)  # (N, T, p*p*C)


def unpatchify(x: torch.Tensor, p: int, c: int) -> torch.Tensor:
    """Inverse of ``patchify`` for a square grid of tokens.

    x: (N, T, p*p*c) tokens, T a perfect square. Returns (N, c, H, W) with H = W = sqrt(T) * p.
    """
    if x.ndim != 3:
        raise ValueError(f"unpatchify expects (N, T, p*p*c) tokens, got shape {tuple(x.shape)}")
    h = math.isqrt(x.shape[1])
    if h * h != x.shape[1]:
        raise ValueError(f"unpatchify needs a square grid of tokens, got T = {x.shape[1]}")
    if x.shape[2] != p * p * c:
        raise ValueError(f"tokens have {x.shape[2]} numbers, expected p*p*c = {p}*{p}*{c} = {p * p * c}")
    return rearrange(x, "n (h w) (p1 p2 c) -> n c (h p1) (w p2)", h=h, p1=p, p2=p, c=c)  # (N, C, H, W)


class PatchEmbed(nn.Module):
    """Patchify + a shared linear map to D dimensions (the first layer of DiT, Figure 4)."""

    def __init__(self, input_size: int = 32, patch_size: int = 2, in_channels: int = 4, hidden_size: int = 1152):
        super().__init__()
        if patch_size < 1:
            raise ValueError(f"patch size must be >= 1, got {patch_size}")
        if input_size % patch_size:
            raise ValueError(f"image size {input_size} is not divisible by patch size {patch_size}")
        self.patch_size = patch_size
        self.grid_size = input_size // patch_size
        self.num_patches = self.grid_size**2
        # Stored as the official p x p, stride-p convolution (key x_embedder.proj.*) ...
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) images -> (N, T, D) patch tokens."""
        # ... and computed as what that convolution is: one linear layer applied to every patch.
        weight = rearrange(self.proj.weight, "d c p1 p2 -> d (p1 p2 c)")  # (D, p*p*C)
        return F.linear(patchify(x, self.patch_size), weight, self.proj.bias)  # (N, T, D)


# --------------------------------------------------------------------------------------------------
# 2D sine-cosine position embedding (fixed; ViT/MAE style)
# --------------------------------------------------------------------------------------------------


def get_1d_sincos_pos_embed_from_grid(embed_dim: int, pos: np.ndarray) -> np.ndarray:
    """Sine-cosine embedding of positions along one axis (Vaswani et al. 2017, §3.5).

    embed_dim: even output size D'. pos: (M,) positions (any shape; flattened).
    Returns (M, D'): first half sin(pos * omega_k), second half cos(pos * omega_k),
    omega_k = 10000^(-k / (D'/2)), k = 0 .. D'/2 - 1.
    """
    if embed_dim % 2:
        raise ValueError(f"embed_dim must be even, got {embed_dim}")
    omega = 1.0 / 10000 ** (np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0))  # (D'/2,)
    angles = np.outer(np.asarray(pos, dtype=np.float64).reshape(-1), omega)  # (M, D'/2)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)  # (M, D')


def get_2d_sincos_pos_embed(embed_dim: int, grid_size: int) -> np.ndarray:
    """Fixed 2D position embedding of a grid_size x grid_size grid of tokens (DiT §3.2, from MAE).

    Returns (grid_size**2, embed_dim), tokens in raster order (token k = row * grid_size + col).
    The first embed_dim/2 numbers embed the token's column, the last embed_dim/2 its row -- the
    official layout (it builds the grid with ``np.meshgrid(grid_w, grid_h)``), which a loaded
    official checkpoint expects.
    """
    if embed_dim % 4:
        raise ValueError(f"embed_dim must be divisible by 4 for a 2D sin-cos embedding, got {embed_dim}")
    rows, cols = np.divmod(np.arange(grid_size * grid_size), grid_size)  # (T,), (T,)
    emb_col = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, cols)  # (T, D/2)
    emb_row = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, rows)  # (T, D/2)
    return np.concatenate([emb_col, emb_row], axis=1)  # (T, D)


# --------------------------------------------------------------------------------------------------
# timestep and label embedders
# --------------------------------------------------------------------------------------------------


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps (DDPM/ADM; DiT §3.2).

    t: (N,) timesteps. Returns (N, dim) float32: first half cos(t * f_k), second half sin(t * f_k),
    f_k = max_period^(-k / (dim/2)), k = 0 .. dim/2 - 1 (the official [cos, sin] order); one zero
    column is appended when dim is odd.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]  # (N, dim/2)
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (N, 2*(dim//2))
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)  # (N, dim)
    return embedding


class TimestepEmbedder(nn.Module):
    """t -> 256 sinusoidal frequencies -> Linear -> SiLU -> Linear -> (N, D) (DiT §3.2)."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t: (N,) timesteps (long or float) -> (N, D)."""
        t_freq = timestep_embedding(t, self.frequency_embedding_size)  # (N, 256)
        return self.mlp(t_freq.to(self.mlp[0].weight.dtype))  # (N, D)


class LabelEmbedder(nn.Module):
    """Class labels -> (N, D), with label dropout for classifier-free guidance (DiT §3.1).

    The table has num_classes rows plus, when dropout_prob > 0, one extra row (index num_classes):
    the learned "null" label of the unconditional model.
    """

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float = 0.1):
        super().__init__()
        if not 0.0 <= dropout_prob < 1.0:
            raise ValueError(f"class dropout probability must be in [0, 1), got {dropout_prob}")
        use_cfg_embedding = dropout_prob > 0
        self.embedding_table = nn.Embedding(num_classes + int(use_cfg_embedding), hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def token_drop(
        self,
        labels: torch.Tensor,
        force_drop_ids: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Replace labels by the null label num_classes.

        labels: (N,) long. force_drop_ids: (N,) -- where given, exactly the rows with
        force_drop_ids == 1 are dropped (used by classifier-free guidance at sampling time);
        otherwise each label is dropped independently with probability dropout_prob.
        """
        if force_drop_ids is None:
            drop_ids = torch.rand(labels.shape[0], device=labels.device, generator=generator) < self.dropout_prob
        else:
            drop_ids = force_drop_ids == 1
        return torch.where(drop_ids, torch.full_like(labels, self.num_classes), labels)

    def forward(self, labels: torch.Tensor, train: bool, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        """labels: (N,) long; train: drop labels at random (training only) -> (N, D)."""
        if force_drop_ids is not None and self.dropout_prob == 0:
            raise ValueError("this label embedder has no null label (class_dropout_prob=0): cannot drop labels")
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            labels = self.token_drop(labels, force_drop_ids)
        return self.embedding_table(labels)  # (N, D)
