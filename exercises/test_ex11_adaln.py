"""Tests for ex11 (the adaLN block).   Run: pytest exercises -k ex11"""

import torch
import torch.nn.functional as F

from exercises._testing import (check, check_inside_dit, check_state_dict_keys, generator, layer_norm, linear, mlp,
                                randomize_, self_attention)

D, HEADS = 32, 4


def _expected(block, x, c, order=("shift", "scale"), modulate_mlp=True):
    sd = block.state_dict()
    chunks = linear(F.silu(c), sd, "adaLN_modulation.1.").chunk(4, dim=1)  # four (N, D)
    m = dict(zip([f"{name}_{branch}" for branch in ("msa", "mlp") for name in order], chunks))

    def mod(h, branch):
        return h * (1 + m[f"scale_{branch}"][:, None]) + m[f"shift_{branch}"][:, None]

    x = x + self_attention(mod(layer_norm(x), "msa"), sd, "attn.", HEADS)
    return x + mlp(mod(layer_norm(x), "mlp") if modulate_mlp else layer_norm(x), sd, "mlp.")


def _block(impl, seed=0):
    torch.manual_seed(0)
    return randomize_(impl.AdaLNBlock(D, HEADS), seed)


def test_block_has_the_parts(impl, ref):
    block = impl.AdaLNBlock(D, HEADS, mlp_ratio=2.0)
    check_state_dict_keys(block, ref.AdaLNBlock(D, HEADS, mlp_ratio=2.0), "your AdaLNBlock")
    assert getattr(block, "cond_kind", None) == "vector", "keep the class attribute cond_kind = 'vector'"


def test_block_matches_the_formula(impl):
    block = _block(impl, seed=1)
    g = generator(2)
    x, c = torch.randn(2, 5, D, generator=g), torch.randn(2, D, generator=g)
    check(block(x, c), _expected(block, x, c), what="AdaLNBlock(x, c)", atol=1e-5, mistakes={
        "the four chunks are (shift, scale) for attention, then (shift, scale) for the MLP":
            _expected(block, x, c, order=("scale", "shift")),
        "the MLP branch is modulated too, with shift_mlp and scale_mlp": _expected(block, x, c, modulate_mlp=False),
    })


def test_zero_modulation_is_a_plain_block_not_the_identity(impl):
    # Unlike adaLN-Zero there is no gate: with zero modulation it is a standard pre-norm block.
    block = _block(impl, seed=3)
    torch.nn.init.zeros_(block.adaLN_modulation[-1].weight)
    torch.nn.init.zeros_(block.adaLN_modulation[-1].bias)
    x, c = torch.randn(2, 5, D, generator=generator(4)), torch.zeros(2, D)
    sd = block.state_dict()
    h = x + self_attention(layer_norm(x), sd, "attn.", HEADS)
    check(block(x, c), h + mlp(layer_norm(h), sd, "mlp."), what="AdaLNBlock with zero modulation", atol=1e-5,
          mistakes={"the adaLN block has no gates (that is adaLN-Zero, ex08)": x})


def test_agrees_with_minidit(impl, ref):
    torch.manual_seed(0)
    theirs = randomize_(ref.AdaLNBlock(D, HEADS), seed=5)
    mine = impl.AdaLNBlock(D, HEADS)
    mine.load_state_dict(theirs.state_dict())
    g = generator(6)
    x, c = torch.randn(3, 6, D, generator=g), torch.randn(3, D, generator=g)
    check(mine(x, c), theirs(x, c), what="AdaLNBlock(x, c)", atol=1e-5)


def test_runs_inside_dit(impl):
    check_inside_dit("ex11", "adaLN")
