"""ex06: the 2D sine-cosine position embedding (about 25 minutes).

Attention is blind to order, so each token gets a fixed vector that says where its patch sits
(DiT §3.2 uses the "frequency-based" embedding of ViT/MAE; Vaswani et al. 2017 §3.5 in 1D). In
1D, position pos and frequency omega_k = 1 / 10000 ** (k / (D/2)), k = 0 .. D/2 - 1, give
[sin(pos * omega), cos(pos * omega)]. In 2D, half the channels embed the column and half the row.
It returns numpy, as the official code; the model copies it into its pos_embed buffer.

Write the two functions, then check them:   pytest exercises -k ex06
Notebook: 03_patchify_and_embeddings.   minidit's version: minidit/embeddings.py
"""

from __future__ import annotations

import numpy as np


def get_1d_sincos_pos_embed_from_grid(embed_dim: int, pos: np.ndarray) -> np.ndarray:
    """Sine-cosine embedding of positions along one axis (Vaswani et al. 2017, §3.5).

    Args:
        embed_dim: the output size D', even.
        pos: (M,) positions (any shape; it is flattened).

    Returns:
        (M, embed_dim) float64: columns 0 .. D'/2 - 1 hold sin(pos * omega_k), the next D'/2
        cos(pos * omega_k), with omega_k = 1 / 10000 ** (k / (D'/2)).

    Hint: np.outer(pos, omega) gives all the angles at once.
    """
    omega = 1.0 / 10000 ** (np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2))  # (D'/2,)
    angles = np.outer(np.asarray(pos, dtype=np.float64).reshape(-1), omega)  # (M, D'/2)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=-1)  # (M, D'): sines, then cosines


def get_2d_sincos_pos_embed(embed_dim: int, grid_size: int) -> np.ndarray:
    """The fixed position embedding of a grid_size x grid_size grid of tokens (DiT §3.2, from MAE).

    Args:
        embed_dim: D, divisible by 4.
        grid_size: tokens per side, H / p.

    Returns:
        (grid_size ** 2, embed_dim) float64, tokens in raster order (token k sits in row
        k // grid_size and column k % grid_size). Its first D/2 columns are the 1D embedding
        (D/2 numbers) of the token's column, the last D/2 that of its row: the official layout
        (built there with np.meshgrid(grid_w, grid_h)), which official checkpoints expect.

    Hint: np.divmod(np.arange(grid_size ** 2), grid_size) gives every token's (row, column).
    """
    rows, cols = np.divmod(np.arange(grid_size * grid_size), grid_size)  # (T,), (T,)
    emb_col = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, cols)  # (T, D/2)
    emb_row = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, rows)  # (T, D/2)
    return np.concatenate([emb_col, emb_row], axis=1)  # (T, D)
