"""Tests for ex05 (patchify and unpatchify).   Run: pytest exercises -k ex05"""

import pytest
import torch
import torch.nn.functional as F

from exercises._testing import check, check_shape, generator


def _by_hand(x: torch.Tensor, p: int, column_major: bool = False, order: tuple[int, ...] = (0, 2, 3, 1)) -> torch.Tensor:
    """The patches cut out one by one with slicing: token k = grid row k // (W/p), column k % (W/p).

    order: how a patch (N, C, p1, p2) is laid out in its token; (0, 2, 3, 1) is (p1, p2, c)."""
    n, c, h, w = x.shape
    tokens = []
    cells = [(i, j) for i in range(h // p) for j in range(w // p)]
    for i, j in sorted(cells, key=lambda ij: ij[::-1]) if column_major else cells:
        patch = x[:, :, i * p:(i + 1) * p, j * p:(j + 1) * p]  # (N, C, p, p)
        tokens.append(patch.permute(*order).reshape(n, -1))  # (N, p*p*C), (p1, p2, c) by default
    return torch.stack(tokens, dim=1)  # (N, T, p*p*C)


def _channel_first(x: torch.Tensor, p: int) -> torch.Tensor:
    """The patches in F.unfold's (c, p1, p2) order: the classic mistake."""
    return F.unfold(x, kernel_size=p, stride=p).transpose(1, 2)  # (N, T, C*p*p)


def test_patchify_cuts_patches_in_raster_order(impl):
    x = torch.randn(2, 3, 8, 12, generator=generator(0))  # not square, so rows and columns cannot be confused
    tokens = impl.patchify(x, 4)
    check_shape(tokens, (2, 6, 48), what="patchify(x, 4) for x of shape (2, 3, 8, 12)",
                hint="T = (H/p)(W/p) = 2 * 3 tokens of p*p*C = 48 numbers")
    check(tokens, _by_hand(x, 4), what="patchify", atol=0, mistakes={
        "inside a token the numbers are ordered (row in patch, column in patch, channel), channel last, as the "
        "official DiT.unpatchify expects; yours has the channel first (c p1 p2)": _channel_first(x, 4),
        "tokens go row by row (raster order): token k is grid row k // (W/p), column k % (W/p); yours go "
        "column by column": _by_hand(x, 4, column_major=True),
        "inside a token the numbers are ordered (row in patch, column in patch, channel) = (p1 p2 c); yours are "
        "(p2 p1 c), column in patch first": _by_hand(x, 4, order=(0, 3, 2, 1)),
        "a plain reshape keeps memory order, so each 'token' is a run of one channel's pixel rows, not a p x p "
        "patch: cut the patches with rearrange 'n c (h p1) (w p2) -> n (h w) (p1 p2 c)'": x.reshape(2, 6, 48),
    })


def test_patchify_agrees_with_a_strided_convolution(impl):
    # DiT's PatchEmbed is a p x p, stride-p convolution: the same as one Linear applied to each patch.
    g = generator(1)
    x, weight, bias = torch.randn(2, 3, 8, 8, generator=g), torch.randn(5, 3, 2, 2, generator=g), torch.randn(5, generator=g)
    conv = F.conv2d(x, weight, bias, stride=2).flatten(2).transpose(1, 2)  # (N, T, D)
    tokens = impl.patchify(x, 2)
    check(tokens @ weight.permute(0, 2, 3, 1).reshape(5, -1).T + bias, conv, what="patchify(x) @ W", atol=1e-5)


def test_unpatchify_inverts_patchify(impl):
    x = torch.randn(3, 2, 16, 16, generator=generator(2))
    for p in (1, 2, 4, 8):
        tokens = impl.patchify(x, p)
        back = impl.unpatchify(tokens, p, 2)
        check(back, x, what=f"unpatchify(patchify(x, {p}), {p}, 2)", atol=0)


def test_unpatchify_is_the_official_layout(impl):
    # The official DiT.unpatchify: reshape to (N, h, w, p, p, c), then move c to the front.
    tokens = torch.randn(2, 16, 4 * 4 * 3, generator=generator(3))
    n, h, p, c = 2, 4, 4, 3
    official = tokens.reshape(n, h, h, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(n, c, h * p, h * p)
    check(impl.unpatchify(tokens, p, c), official, what="unpatchify", atol=0, mistakes={
        "the tokens' numbers are ordered (p1, p2, c), channel last":
            tokens.reshape(n, h, h, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h * p, h * p),
        "a plain reshape does not put the patches back where they were cut: read the tokens with rearrange "
        "'n (h w) (p1 p2 c) -> n c (h p1) (w p2)'": tokens.reshape(n, c, h * p, h * p),
    })


def test_patchify_rejects_sizes_not_divisible_by_p(impl):
    with pytest.raises(ValueError, match="divisible"):
        impl.patchify(torch.zeros(1, 1, 30, 32), 4)


def test_agrees_with_minidit(impl, ref):
    x = torch.randn(2, 4, 32, 32, generator=generator(4))
    for p in (2, 4, 8):
        check(impl.patchify(x, p), ref.patchify(x, p), what=f"patchify(x, {p})", atol=0)
        tokens = torch.randn(2, (32 // p) ** 2, p * p * 4, generator=generator(p))
        check(impl.unpatchify(tokens, p, 4), ref.unpatchify(tokens, p, 4), what=f"unpatchify(tokens, {p}, 4)", atol=0)
