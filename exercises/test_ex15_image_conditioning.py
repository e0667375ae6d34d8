"""Tests for ex15 (conditioning on an image).   Run: pytest exercises -k ex15"""

import math

import numpy as np
import torch
import torch.nn.functional as F

from exercises._testing import check, check_shape, generator


def _one_d(dim: int, pos: float) -> list[float]:
    """The 1D sin-cos embedding of one (possibly fractional) position, from the formula."""
    omegas = [1 / 10000 ** (k / (dim // 2)) for k in range(dim // 2)]
    return [math.sin(pos * w) for w in omegas] + [math.cos(pos * w) for w in omegas]


def _expected_pos(dim: int, lr_grid: int, grid: int, centre=0.5, swap=False) -> list[list[float]]:
    s = grid / lr_grid
    out = []
    for k in range(lr_grid * lr_grid):
        row, col = (centre + k // lr_grid) * s - centre, (centre + k % lr_grid) * s - centre
        first, second = (row, col) if swap else (col, row)
        out.append(_one_d(dim // 2, first) + _one_d(dim // 2, second))
    return out


def _bicubic(low_res, size, align_corners=False, mode="bicubic"):
    kwargs = {} if mode == "nearest" else {"align_corners": align_corners}
    return F.interpolate(low_res, size=(size, size), mode=mode, **kwargs)


def test_concat_shape_and_channel_order(impl):
    g = generator(0)
    x_t, low_res = torch.randn(2, 1, 16, 16, generator=g), torch.rand(2, 1, 4, 4, generator=g) * 2 - 1
    out = impl.concat_low_res(x_t, low_res)
    check_shape(out, (2, 2, 16, 16), what="concat_low_res(x_t (2, 1, 16, 16), low_res (2, 1, 4, 4))",
                hint="upsample the LR image to 16 x 16, then concatenate along dim=1 (channels)")
    up = _bicubic(low_res, 16).clamp(-1, 1)
    check(out, torch.cat([x_t, up], 1), what="concat_low_res", atol=1e-5, mistakes={
        "the channels are in the wrong order: x_t first (the channels the model denoises), then the LR image":
            torch.cat([up, x_t], 1),
    })


def test_upsampling_is_bicubic_and_clamped(impl):
    # A checkerboard of +-1: bicubic overshoots beyond [-1, 1] here, nearest and bilinear differ from it.
    low_res = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(2, 2).reshape(1, 1, 4, 4)
    out = impl.concat_low_res(torch.zeros(1, 1, 16, 16), low_res)
    check_shape(out, (1, 2, 16, 16), what="concat_low_res(x_t (1, 1, 16, 16), low_res (1, 1, 4, 4))")
    expected = _bicubic(low_res, 16).clamp(-1, 1)
    check(out[:, 1:], expected, what="the upsampled LR channel", atol=1e-5, mistakes={
        "bicubic overshoots past [-1, 1] at sharp edges: clamp the upsampled image to [-1, 1]": _bicubic(low_res, 16),
        "use mode='bicubic' (you used nearest)": _bicubic(low_res, 16, mode="nearest").clamp(-1, 1),
        "use mode='bicubic' (you used bilinear)": _bicubic(low_res, 16, mode="bilinear").clamp(-1, 1),
        "use align_corners=False (as minidit.superres.degrade.upsample)": _bicubic(low_res, 16, True).clamp(-1, 1),
    })


def test_concat_keeps_x_t_untouched_with_several_channels(impl):
    g = generator(1)
    x_t, low_res = torch.randn(3, 3, 8, 8, generator=g), torch.rand(3, 3, 2, 2, generator=g) * 2 - 1
    out = impl.concat_low_res(x_t, low_res)
    check_shape(out, (3, 6, 8, 8), what="concat_low_res with C = 3", hint="(N, 2C, H, W)")
    check(out[:, :3], x_t, what="the first C channels (x_t)", atol=0)
    check(out[:, 3:], _bicubic(low_res, 8).clamp(-1, 1), what="the last C channels (upsampled LR)", atol=1e-5)


def test_pos_embed_on_the_same_grid_is_the_2d_sincos_embedding(impl):
    emb = impl.low_res_pos_embed(16, 3, 3)
    check_shape(emb, (9, 16), what="low_res_pos_embed(16, 3, 3)", hint="one row per LR token: (lr_grid_size ** 2, D)")
    assert isinstance(emb, np.ndarray), f"return a numpy array (as get_2d_sincos_pos_embed), got {type(emb).__name__}"
    check(emb, _expected_pos(16, 3, 3), what="low_res_pos_embed(16, 3, 3)", atol=1e-9, mistakes={
        "the halves are swapped: the first D/2 numbers embed the column, the last D/2 the row":
            _expected_pos(16, 3, 3, swap=True),
    })


def test_pos_embed_puts_lr_tokens_at_the_centre_of_their_block(impl):
    dim, lr_grid, grid = 16, 4, 16  # each LR token covers a 4 x 4 block of image tokens
    emb = impl.low_res_pos_embed(dim, lr_grid, grid)
    check_shape(emb, (16, dim), what=f"low_res_pos_embed({dim}, {lr_grid}, {grid})")
    check(emb, _expected_pos(dim, lr_grid, grid), what="the LR tokens' positions", atol=1e-9, mistakes={
        "LR token i sits at the centre of image tokens i*s .. (i+1)*s - 1, i.e. (i + 0.5) * s - 0.5; "
        "you used i * s (its first image token)": _expected_pos(dim, lr_grid, grid, centre=0.0),
        "the halves are swapped: the first D/2 numbers embed the column, the last D/2 the row":
            _expected_pos(dim, lr_grid, grid, swap=True),
        "positions are in units of image tokens: scale the LR index by s = grid_size / lr_grid_size":
            _expected_pos(dim, lr_grid, lr_grid),
    })


def test_agrees_with_minidit(impl, ref):
    g = generator(2)
    x_t, low_res = torch.randn(2, 1, 32, 32, generator=g), torch.rand(2, 1, 8, 8, generator=g) * 2 - 1
    check(impl.concat_low_res(x_t, low_res), ref.concat_low_res(x_t, low_res), what="concat_low_res", atol=1e-5)
    for dim, lr_grid, grid in [(64, 8, 16), (32, 16, 16), (128, 4, 8)]:
        check(impl.low_res_pos_embed(dim, lr_grid, grid), ref.low_res_pos_embed(dim, lr_grid, grid),
              what=f"low_res_pos_embed({dim}, {lr_grid}, {grid})", atol=1e-9)
