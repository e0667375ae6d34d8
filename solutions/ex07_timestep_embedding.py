"""ex07: the sinusoidal timestep embedding (about 15 minutes).

The network is told the noise level t through the same kind of sinusoids as positions: t is
multiplied by dim/2 frequencies from 1 down to 1/max_period, and the cosines and sines of those
angles form a vector (DDPM §4 / ADM; DiT §3.2 then passes 256 of them through a 2-layer MLP, the
TimestepEmbedder). t may be fractional (respaced samplers feed the original, non-integer steps).
Note the order: the official DiT puts the cosines first, unlike the position embedding (ex06).

Write timestep_embedding, then check it:   pytest exercises -k ex07
Notebook: 03_patchify_and_embeddings.   minidit's version: minidit/embeddings.py
"""

from __future__ import annotations

import math

import torch


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps.

    Args:
        t: (N,) timesteps, integer or float.
        dim: the output size.
        max_period: the slowest frequency is 1 / max_period.

    Returns:
        (N, dim) float32: columns 0 .. dim//2 - 1 hold cos(t * f_k), the next dim//2 sin(t * f_k),
        with f_k = exp(-log(max_period) * k / (dim//2)) for k = 0 .. dim//2 - 1; when dim is odd one
        column of zeros is appended.

    Hint: build the (dim//2,) frequencies on t's device, then t[:, None] * freqs[None] is (N, dim//2).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)  # (dim//2,)
    args = t[:, None].float() * freqs[None]  # (N, dim//2)
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (N, 2 * (dim//2))
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)  # (N, dim)
    return embedding
