"""Tests for ex09 (the in-context block).   Run: pytest exercises -k ex09"""

import torch

from exercises._testing import (check, check_inside_dit, check_state_dict_keys, generator, layer_norm, mlp, randomize_,
                                self_attention)

D, HEADS = 32, 4


def _expected(block, x, post_norm=False, residual=True):
    sd = block.state_dict()
    if post_norm:
        x = layer_norm(x + self_attention(x, sd, "attn.", HEADS), sd, "norm1.")
        return layer_norm(x + mlp(x, sd, "mlp."), sd, "norm2.")
    attn = self_attention(layer_norm(x, sd, "norm1."), sd, "attn.", HEADS)
    x = x + attn if residual else attn
    out = mlp(layer_norm(x, sd, "norm2."), sd, "mlp.")
    return x + out if residual else out


def _block(impl, seed=0):
    torch.manual_seed(0)
    return randomize_(impl.InContextBlock(D, HEADS), seed)


def test_block_has_the_official_parts(impl, ref):
    block = impl.InContextBlock(D, HEADS, mlp_ratio=3.0)
    check_state_dict_keys(block, ref.InContextBlock(D, HEADS, mlp_ratio=3.0), "your InContextBlock")
    assert getattr(block, "cond_kind", None) == "in-context", "keep the class attribute cond_kind = 'in-context'"


def test_block_matches_the_formula(impl):
    block = _block(impl, seed=1)
    x = torch.randn(2, 6, D, generator=generator(2))
    check(block(x, None), _expected(block, x), what="InContextBlock(x)", atol=1e-5, mistakes={
        "pre-norm: x = x + attn(norm1(x)), normalising each branch's input, not the sum (post-norm)":
            _expected(block, x, post_norm=True),
        "keep the residual connections: x = x + branch(...)": _expected(block, x, residual=False),
    })


def test_c_is_optional(impl):
    block = _block(impl, seed=3)
    x = torch.randn(1, 4, D, generator=generator(4))
    check(block(x), block(x, None), what="InContextBlock(x) without c", atol=0)


def test_tokens_are_treated_alike(impl):
    # No position information inside the block: permuting the tokens permutes the output (attention is
    # permutation-equivariant), which is why the t and y tokens need no special treatment.
    block = _block(impl, seed=5)
    x = torch.randn(2, 7, D, generator=generator(6))
    perm = torch.randperm(7, generator=generator(7))
    check(block(x[:, perm]), block(x)[:, perm], what="the output for permuted tokens", atol=1e-5)


def test_conditioning_tokens_reach_the_image_tokens(impl):
    block = _block(impl, seed=8)
    x = torch.randn(2, 6, D, generator=generator(9))
    other = x.clone()
    other[:, -2:] = torch.randn(2, 2, D, generator=generator(10))  # new "t" and "y" tokens
    assert not torch.allclose(block(x)[:, :4], block(other)[:, :4], atol=1e-4), (
        "changing the last two (conditioning) tokens should change the image tokens through attention")


def test_agrees_with_minidit(impl, ref):
    torch.manual_seed(0)
    theirs = randomize_(ref.InContextBlock(D, HEADS), seed=11)
    mine = impl.InContextBlock(D, HEADS)
    mine.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 6, D, generator=generator(12))
    check(mine(x, None), theirs(x, None), what="InContextBlock(x)", atol=1e-5)


def test_runs_inside_dit(impl):
    check_inside_dit("ex09", "in-context")
