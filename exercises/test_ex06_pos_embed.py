"""Tests for ex06 (the 2D sin-cos position embedding).   Run: pytest exercises -k ex06"""

import math

import numpy as np

from exercises._testing import check, check_shape


def _one_d(dim: int, pos: float, order=("sin", "cos"), denominator=None) -> list[float]:
    """The 1D embedding of one position, element by element from the formula."""
    half = dim // 2
    omegas = [1 / 10000 ** (k / (denominator or half)) for k in range(half)]
    parts = {"sin": [math.sin(pos * w) for w in omegas], "cos": [math.cos(pos * w) for w in omegas]}
    return parts[order[0]] + parts[order[1]]


def test_1d_formula(impl):
    pos = np.array([0.0, 1.0, 2.5, 7.0, 100.0])
    emb = impl.get_1d_sincos_pos_embed_from_grid(8, pos)
    check(emb, [_one_d(8, p) for p in pos], what="get_1d_sincos_pos_embed_from_grid(8, pos)", atol=1e-9, mistakes={
        "sin first, then cos (MAE/DiT layout); yours has cos first": [_one_d(8, p, ("cos", "sin")) for p in pos],
        "omega_k = 1 / 10000 ** (k / (D/2)): divide the exponent k by D/2": [_one_d(8, p, denominator=1) for p in pos],
        "omega_k = 1 / 10000 ** (k / (D/2)) with D/2 = 4 here (you divided by D = 8)":
            [_one_d(8, p, denominator=8) for p in pos],
    })


def test_1d_position_zero_and_flattening(impl):
    emb = impl.get_1d_sincos_pos_embed_from_grid(6, np.zeros((2, 2)))
    check_shape(emb, (4, 6), what="the embedding of a (2, 2) array of positions", hint="flatten pos first")
    check(emb, np.tile([0, 0, 0, 1, 1, 1], (4, 1)), what="the embedding of position 0", atol=1e-12)


def test_2d_layout_column_then_row(impl):
    dim, grid = 16, 3
    emb = impl.get_2d_sincos_pos_embed(dim, grid)
    check_shape(emb, (grid * grid, dim), what=f"get_2d_sincos_pos_embed({dim}, {grid})",
                hint="one row per token: (grid_size ** 2, embed_dim)")
    assert isinstance(emb, np.ndarray), (
        f"return a numpy array (as the official code; the model copies it into pos_embed), got {type(emb).__name__}")
    expected = [_one_d(dim // 2, k % grid) + _one_d(dim // 2, k // grid) for k in range(grid * grid)]
    check(emb, expected, what="the 2D position embedding", atol=1e-9, mistakes={
        "the halves are swapped: the first D/2 numbers embed the token's column, the last D/2 its row "
        "(the official np.meshgrid(grid_w, grid_h) layout)":
            [_one_d(dim // 2, k // grid) + _one_d(dim // 2, k % grid) for k in range(grid * grid)],
        "each half is a 1D embedding of D/2 numbers, not D": [
            (_one_d(dim, k % grid)[: dim // 4] + _one_d(dim, k % grid)[dim // 2: dim // 2 + dim // 4]
             + _one_d(dim, k // grid)[: dim // 4] + _one_d(dim, k // grid)[dim // 2: dim // 2 + dim // 4])
            for k in range(grid * grid)],
    })


def test_2d_tokens_are_distinct_and_bounded(impl):
    emb = np.asarray(impl.get_2d_sincos_pos_embed(32, 8), dtype=np.float64)
    assert np.abs(emb).max() <= 1 + 1e-12, "sines and cosines lie in [-1, 1]"
    # Every token must get its own vector, or attention cannot tell patches apart.
    distances = np.linalg.norm(emb[:, None] - emb[None], axis=-1) + np.eye(64)
    assert distances.min() > 1e-3, "two tokens got the same position embedding"
    # Each 1D half holds D/4 (sin, cos) pairs and sin^2 + cos^2 = 1, so every squared norm is exactly D/2.
    check(np.sum(emb**2, axis=1), np.full(64, 16.0), what="squared norm of each token's embedding", atol=1e-9)


def test_agrees_with_minidit(impl, ref):
    for dim, grid in [(64, 16), (128, 4), (8, 1)]:
        check(impl.get_2d_sincos_pos_embed(dim, grid), ref.get_2d_sincos_pos_embed(dim, grid),
              what=f"get_2d_sincos_pos_embed({dim}, {grid})", atol=1e-9)
    pos = np.arange(10.0)
    check(impl.get_1d_sincos_pos_embed_from_grid(12, pos), ref.get_1d_sincos_pos_embed_from_grid(12, pos),
          what="get_1d_sincos_pos_embed_from_grid(12, pos)", atol=1e-9)
