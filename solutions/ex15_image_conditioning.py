"""ex15: conditioning a DiT on an image (about 30 minutes).

Super-resolution conditions on a whole low-resolution (LR) image instead of a class label
(notebook 09). Two ways to hand it to DiT's unchanged blocks:

* SR3 (Saharia et al. 2021): upsample the LR image to the output size (bicubic) and stack it onto
  the noisy image x_t as extra input channels; only the patch embedding gets wider.
* LR tokens: patch-embed the LR image itself and append its tokens to the sequence (in context) or
  to the cross-attention block's keys/values. Its tokens need positions on the same grid as the
  image tokens, or attention cannot tell which image patch an LR token describes.

minidit.superres.model.SRDiT calls your two functions (through `minidit.course`), so once they pass,
`MINIDIT_IMPL=student python -m minidit.superres --quick --out /tmp/sr` trains with them.

Write the two functions, then check them:   pytest exercises -k ex15
Notebook: 09_super_resolution.   minidit's version: minidit/superres/model.py
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from minidit.embeddings import get_1d_sincos_pos_embed_from_grid


def concat_low_res(x_t: torch.Tensor, low_res: torch.Tensor) -> torch.Tensor:
    """SR3's conditioning: the noisy image and the upsampled LR image, stacked along the channels.

    Args:
        x_t: (N, C, H, W) noisy images (H = W).
        low_res: (N, C, h, w) LR images in [-1, 1].

    Returns:
        (N, 2C, H, W): channels 0 .. C-1 are x_t unchanged, channels C .. 2C-1 the LR image
        upsampled to H x W with bicubic interpolation (align_corners=False), clamped to [-1, 1].
        The order matters: the model's first C input channels are the ones it denoises.

    Hint: F.interpolate(low_res, size=..., mode="bicubic", align_corners=False); bicubic
    overshoots near sharp edges, hence the clamp (minidit.superres.degrade.upsample does both).
    """
    size = x_t.shape[-1]
    up = F.interpolate(low_res, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)
    return torch.cat([x_t, up.to(x_t.dtype)], dim=1)


def low_res_pos_embed(embed_dim: int, lr_grid_size: int, grid_size: int) -> np.ndarray:
    """2D sin-cos embedding of LR tokens, placed on the grid of the image tokens (DiT §3.2 layout).

    Along one axis, LR token i covers image tokens i*s .. (i+1)*s - 1, s = grid_size / lr_grid_size,
    so its position is their centre, (i + 0.5) * s - 0.5 -- fractional in general. With
    lr_grid_size == grid_size this is exactly get_2d_sincos_pos_embed(embed_dim, grid_size).

    Args:
        embed_dim: D, divisible by 4.
        lr_grid_size: LR tokens per side.
        grid_size: image tokens per side.

    Returns:
        (lr_grid_size ** 2, embed_dim) float64, LR tokens in raster order (token k sits in row
        k // lr_grid_size, column k % lr_grid_size). First D/2 columns: the 1D embedding of the
        token's column position, last D/2: of its row position (the official order, as in ex06).

    Hint: get_1d_sincos_pos_embed_from_grid(D/2, positions) accepts fractional positions.
    """
    pos = (np.arange(lr_grid_size, dtype=np.float64) + 0.5) * (grid_size / lr_grid_size) - 0.5
    rows, cols = np.divmod(np.arange(lr_grid_size**2), lr_grid_size)
    emb_col = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, pos[cols])
    emb_row = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, pos[rows])
    return np.concatenate([emb_col, emb_row], axis=1)
