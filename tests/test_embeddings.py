"""Embeddings (DiT §3.2): patchify, the 2D sin-cos position embedding, timestep and label embedders."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from minidit.embeddings import (
    LabelEmbedder,
    PatchEmbed,
    TimestepEmbedder,
    get_1d_sincos_pos_embed_from_grid,
    get_2d_sincos_pos_embed,
    patchify,
    timestep_embedding,
    unpatchify,
)


def _patchify_by_loops(x: torch.Tensor, p: int) -> torch.Tensor:
    """Independent oracle: token k = row * (W/p) + col; inside it (row in patch, col in patch, channel)."""
    n, c, h, w = x.shape
    gh, gw = h // p, w // p
    out = torch.empty(n, gh * gw, p * p * c)
    for i in range(gh):
        for j in range(gw):
            for a in range(p):
                for b in range(p):
                    for ch in range(c):
                        out[:, i * gw + j, (a * p + b) * c + ch] = x[:, ch, i * p + a, j * p + b]
    return out


# ----------------------------------------------------------------------------- patchify


@pytest.mark.parametrize("c,size,p", [(1, 8, 2), (3, 8, 4), (4, 6, 3)])
def test_patchify_matches_index_loops(c, size, p):
    x = torch.randn(2, c, size, size, generator=torch.Generator().manual_seed(0))
    tokens = patchify(x, p)
    assert tokens.shape == (2, (size // p) ** 2, p * p * c)
    torch.testing.assert_close(
        tokens,
        _patchify_by_loops(x, p),
        atol=0,
        rtol=0,
        msg="patchify orders tokens or numbers inside a token differently from "
        "(raster order of patches; row in patch, column in patch, channel)",
    )


@pytest.mark.parametrize("c,size,p", [(1, 8, 2), (4, 8, 4), (2, 9, 3)])
def test_unpatchify_inverts_patchify(c, size, p):
    x = torch.randn(3, c, size, size)
    assert torch.equal(unpatchify(patchify(x, p), p, c), x)
    tokens = torch.randn(3, (size // p) ** 2, p * p * c)
    assert torch.equal(patchify(unpatchify(tokens, p, c), p), tokens)


def test_patchify_errors():
    with pytest.raises(ValueError, match="not divisible by patch size 4"):
        patchify(torch.zeros(1, 1, 30, 30), 4)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        patchify(torch.zeros(1, 30, 30), 2)
    with pytest.raises(ValueError, match="square"):
        unpatchify(torch.zeros(1, 15, 4), 2, 1)
    with pytest.raises(ValueError, match="p\\*p\\*c"):
        unpatchify(torch.zeros(1, 16, 5), 2, 1)
    with pytest.raises(ValueError, match="not divisible"):
        PatchEmbed(input_size=30, patch_size=4, in_channels=1, hidden_size=8)


def test_patch_embed_is_the_strided_convolution():
    """PatchEmbed computes patchify + Linear; it must equal the official p x p, stride-p Conv2d."""
    embed = PatchEmbed(input_size=8, patch_size=4, in_channels=3, hidden_size=16)
    x = torch.randn(2, 3, 8, 8)
    conv = embed.proj(x).flatten(2).transpose(1, 2)  # (N, T, D) the official way
    assert embed.num_patches == 4
    torch.testing.assert_close(embed(x), conv, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- positions


def test_pos_embed_closed_form_and_range():
    dim, grid = 16, 4
    emb = get_2d_sincos_pos_embed(dim, grid)
    assert emb.shape == (grid * grid, dim)
    assert np.abs(emb).max() <= 1.0
    q = dim // 4
    # each (sin, cos) pair of a frequency lies on the unit circle
    np.testing.assert_allclose(emb[:, :q] ** 2 + emb[:, q : 2 * q] ** 2, 1.0, atol=1e-12)
    np.testing.assert_allclose(emb[:, 2 * q : 3 * q] ** 2 + emb[:, 3 * q :] ** 2, 1.0, atol=1e-12)
    # token k = row * grid + col: the first half encodes the column, the second half the row
    k, row, col = 6, 1, 2
    w = 10000.0 ** (-np.arange(q) / q)
    expected = np.concatenate([np.sin(col * w), np.cos(col * w), np.sin(row * w), np.cos(row * w)])
    np.testing.assert_allclose(
        emb[k], expected, atol=1e-12, err_msg="token 6 of a 4x4 grid is (row 1, column 2): is the grid transposed?"
    )
    # the origin: sin = 0, cos = 1
    np.testing.assert_allclose(emb[0], np.tile(np.repeat([0.0, 1.0], q), 2), atol=0)


def test_pos_embed_is_not_transposed():
    """Moving one column right changes only the first half; one row down, only the second half."""
    emb, grid, half = get_2d_sincos_pos_embed(32, 8), 8, 16
    right, down = emb[3 * grid + 4] - emb[3 * grid + 3], emb[4 * grid + 3] - emb[3 * grid + 3]
    assert np.abs(right[half:]).max() == 0 and np.abs(right[:half]).max() > 0.1, "column must live in the first half"
    assert np.abs(down[:half]).max() == 0 and np.abs(down[half:]).max() > 0.1, "row must live in the second half"


def test_nearby_patches_are_more_similar():
    grid = 8
    emb = get_2d_sincos_pos_embed(64, grid)
    sim = emb @ emb.T  # dot products
    center = 3 * grid + 3
    for direction in (1, grid):  # right, down
        near, far = sim[center, center + direction], sim[center, center + 3 * direction]
        assert sim[center, center] > near > far
    # and over the whole grid: similarity decreases with Manhattan distance on average
    rows, cols = np.divmod(np.arange(grid * grid), grid)
    dist = np.abs(rows[:, None] - rows[None]) + np.abs(cols[:, None] - cols[None])
    means = [sim[dist == d].mean() for d in range(5)]
    assert all(a > b for a, b in zip(means, means[1:])), f"mean similarity by distance: {means}"


def test_1d_embedding_and_errors():
    emb = get_1d_sincos_pos_embed_from_grid(4, np.array([0.0, 1.0]))
    np.testing.assert_allclose(emb[1], [math.sin(1), math.sin(0.01), math.cos(1), math.cos(0.01)], atol=1e-12)
    with pytest.raises(ValueError, match="even"):
        get_1d_sincos_pos_embed_from_grid(5, np.arange(3))
    with pytest.raises(ValueError, match="divisible by 4"):
        get_2d_sincos_pos_embed(6, 2)


# ----------------------------------------------------------------------------- timesteps and labels


def test_timestep_embedding_closed_form():
    t = torch.tensor([0, 1, 500])
    emb = timestep_embedding(t, 8)
    f = torch.exp(-math.log(10000) * torch.arange(4) / 4)
    expected = torch.cat([torch.cos(t[:, None] * f), torch.sin(t[:, None] * f)], dim=1)
    torch.testing.assert_close(emb, expected, msg="expected [cos, sin] halves with f_k = 10000^(-k/(dim/2))")
    assert timestep_embedding(t, 7).shape == (3, 7) and (timestep_embedding(t, 7)[:, -1] == 0).all()
    # fractional timesteps (respaced samplers) are allowed and move the embedding continuously
    a, b = timestep_embedding(torch.tensor([10.0]), 256), timestep_embedding(torch.tensor([10.001]), 256)
    assert 0 < (a - b).abs().max() < 1e-2


def test_timestep_embedder_shapes():
    emb = TimestepEmbedder(32)
    assert emb.mlp[0].in_features == 256 and emb.frequency_embedding_size == 256
    assert emb(torch.tensor([1, 2, 3])).shape == (3, 32)
    assert emb(torch.tensor([1.5])).shape == (1, 32)


def test_label_dropout_rate_and_null_label():
    torch.manual_seed(0)
    emb = LabelEmbedder(num_classes=10, hidden_size=8, dropout_prob=0.1)
    assert emb.embedding_table.num_embeddings == 11  # + the null label
    labels = torch.randint(0, 10, (20000,))
    dropped = emb.token_drop(labels) == 10
    # Binomial(20000, 0.1): std 0.0021; 5 sigma
    assert abs(dropped.float().mean().item() - 0.1) < 0.011, f"dropout rate {dropped.float().mean():.4f}, expected 0.1"
    # forced drops are exact, and a generator makes random drops reproducible
    force = torch.tensor([1, 0, 1, 0])
    assert emb.token_drop(torch.tensor([3, 4, 5, 6]), force).tolist() == [10, 4, 10, 6]
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(emb.token_drop(labels, generator=g1), emb.token_drop(labels, generator=g2))


def test_label_embedder_drops_only_in_training():
    emb = LabelEmbedder(num_classes=10, hidden_size=8, dropout_prob=0.5)
    labels = torch.arange(10).repeat(100)
    expected = emb.embedding_table(labels)
    assert torch.equal(emb(labels, train=False), expected)
    assert not torch.equal(emb(labels, train=True), expected)
    null = emb.embedding_table.weight[10]
    out = emb(labels[:2], train=False, force_drop_ids=torch.tensor([0, 1]))
    assert torch.equal(out[1], null) and torch.equal(out[0], expected[0])
    no_null = LabelEmbedder(num_classes=10, hidden_size=8, dropout_prob=0.0)
    assert no_null.embedding_table.num_embeddings == 10
    assert torch.equal(no_null(labels, train=True), no_null.embedding_table(labels))
    with pytest.raises(ValueError, match="null label"):
        no_null(labels[:2], train=False, force_drop_ids=torch.tensor([0, 1]))
