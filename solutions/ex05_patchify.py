"""ex05: patchify and unpatchify (about 20 minutes).

DiT's first step cuts an image into p x p patches and treats each patch as one token (DiT §3.2,
Figure 4): an (N, C, H, W) image becomes (N, T, p*p*C) with T = (H/p) * (W/p). The last step
(unpatchify) puts the tokens back. The layouts below are the official DiT's, so that its
checkpoints and its unpatchify agree with ours: tokens in raster order (row by row), and inside a
token the numbers ordered (row in patch, column in patch, channel).

Write the two functions, then check them:   pytest exercises -k ex05
Notebook: 03_patchify_and_embeddings.   minidit's version: minidit/embeddings.py
"""

from __future__ import annotations

import math

import torch
from einops import rearrange


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """Cut images into non-overlapping p x p patches, one token per patch (DiT §3.2 *Patchify*).

    Args:
        x: (N, C, H, W) images; H and W must be divisible by p.
        p: the patch size.

    Returns:
        (N, T, p*p*C), T = (H/p) * (W/p). Token k is the patch in grid row k // (W/p) and column
        k % (W/p); its p*p*C numbers are ordered (row in patch, column in patch, channel).

    Raises:
        ValueError: if H or W is not divisible by p (say which size and which p).

    Hint: one einops.rearrange; write the image axes as (h p1) and (w p2).
    """
    height, width = x.shape[-2:]
    if height % p or width % p:
        raise ValueError(f"image size {height}x{width} is not divisible by patch size {p}")
    return rearrange(x, "n c (h p1) (w p2) -> n (h w) (p1 p2 c)", p1=p, p2=p)  # (N, T, p*p*C)


def unpatchify(x: torch.Tensor, p: int, c: int) -> torch.Tensor:
    """The inverse of patchify for a square grid of tokens (the official DiT.unpatchify layout).

    Args:
        x: (N, T, p*p*c) tokens; T must be a perfect square.
        p: the patch size; c: the number of channels.

    Returns:
        (N, c, H, W) with H = W = sqrt(T) * p.

    Raises:
        ValueError: if T is not a perfect square or the token size is not p*p*c.

    Hint: the same rearrange pattern read backwards; einops needs to be told h (or w).
    """
    h = math.isqrt(x.shape[1])
    if h * h != x.shape[1]:
        raise ValueError(f"unpatchify needs a square grid of tokens, got T = {x.shape[1]}")
    if x.shape[2] != p * p * c:
        raise ValueError(f"tokens have {x.shape[2]} numbers, expected p*p*c = {p * p * c}")
    return rearrange(x, "n (h w) (p1 p2 c) -> n c (h p1) (w p2)", h=h, p1=p, p2=p, c=c)  # (N, C, H, W)
