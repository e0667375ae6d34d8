"""Tests for ex08 (modulate and the adaLN-Zero block).   Run: pytest exercises -k ex08"""

import torch
import torch.nn.functional as F

from exercises._testing import (call, check, check_inside_dit, check_state_dict_keys, generator, layer_norm, linear,
                                mlp, randomize_, self_attention)

D, HEADS = 32, 4
CHUNKS = ("shift_msa", "scale_msa", "gate_msa", "shift_mlp", "scale_mlp", "gate_mlp")  # adaLN_modulation(c).chunk(6)
INTERLEAVED = ("shift_msa", "shift_mlp", "scale_msa", "scale_mlp", "gate_msa", "gate_mlp")
UNSQUEEZE_HINT = ("shift and scale are (N, D), one row per sample, and x is (N, T, D): unsqueeze(1) them to "
                  "(N, 1, D) so that they broadcast over the T tokens of each sample")


def _inputs(seed=0, n=2, tokens=5):
    g = generator(seed)
    return torch.randn(n, tokens, D, generator=g), torch.randn(n, D, generator=g)


def _expected(block, x, c, names=CHUNKS, gates=("gate", "gate"), one_plus=True):
    """The adaLN-Zero block computed from its state dict with plain torch ops.

    names: what the six chunks of adaLN_modulation(c) are taken to be, in order; gates: how the attention
    and the MLP branch are scaled, "gate" (alpha, right), "one" (not at all) or "one_plus" (1 + alpha)."""
    sd = block.state_dict()
    m = dict(zip(names, linear(F.silu(c), sd, "adaLN_modulation.1.").chunk(6, dim=1)))  # six (N, D)

    def mod(h, branch):
        return h * (float(one_plus) + m[f"scale_{branch}"][:, None]) + m[f"shift_{branch}"][:, None]

    def gate(branch, how):
        return {"gate": m[f"gate_{branch}"][:, None], "one": 1.0, "one_plus": 1 + m[f"gate_{branch}"][:, None]}[how]

    x = x + gate("msa", gates[0]) * self_attention(mod(layer_norm(x), "msa"), sd, "attn.", HEADS)
    return x + gate("mlp", gates[1]) * mlp(mod(layer_norm(x), "mlp"), sd, "mlp.")


def _block(impl, seed=0):
    torch.manual_seed(0)
    return randomize_(impl.DiTBlock(D, HEADS), seed)


def test_modulate_closed_form(impl):
    g = generator(1)
    x, shift, scale = torch.randn(3, 5, 8, generator=g), torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g)
    out = call(impl.modulate, x, shift, scale, what="modulate(x (3, 5, 8), shift (3, 8), scale (3, 8))",
               errors={"must match the size": UNSQUEEZE_HINT})
    expected = torch.stack([x[n] * (1 + scale[n]) + shift[n] for n in range(3)])
    check(out, expected, what="modulate(x, shift, scale)", atol=1e-6, mistakes={
        "it is x * (1 + scale) + shift: without the 1 +, a zero scale would wipe x out":
            torch.stack([x[n] * scale[n] + shift[n] for n in range(3)]),
        "shift and scale are swapped": torch.stack([x[n] * (1 + shift[n]) + scale[n] for n in range(3)]),
    })
    check(impl.modulate(x, torch.zeros(3, 8), torch.zeros(3, 8)), x, what="modulate with shift = scale = 0", atol=0)
    # As many tokens as samples: forgetting unsqueeze(1) raises nothing here, it broadcasts over the wrong axis.
    x = torch.randn(4, 4, 8, generator=g)
    shift, scale = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    check(impl.modulate(x, shift, scale), x * (1 + scale[:, None]) + shift[:, None], what="modulate with N = T = 4",
          atol=1e-6, mistakes={UNSQUEEZE_HINT: x * (1 + scale[None]) + shift[None]})


def test_block_has_the_official_parts(impl, ref):
    block = impl.DiTBlock(D, HEADS, mlp_ratio=2.0)
    check_state_dict_keys(block, ref.DiTBlock(D, HEADS, mlp_ratio=2.0), "your DiTBlock")
    assert getattr(block, "cond_kind", None) == "vector", "keep the class attribute cond_kind = 'vector'"
    for name in ("norm1", "norm2"):
        norm = getattr(block, name)
        assert isinstance(norm, torch.nn.LayerNorm) and abs(norm.eps - 1e-6) < 1e-12, f"{name}: LayerNorm with eps=1e-6"


def test_block_is_the_identity_when_the_modulation_is_zero(impl):
    # adaLN-Zero: DiT.initialize_weights zeroes adaLN_modulation's Linear, so all gates are 0 at init.
    block = _block(impl)
    torch.nn.init.zeros_(block.adaLN_modulation[-1].weight)
    torch.nn.init.zeros_(block.adaLN_modulation[-1].bias)
    x, c = _inputs(2)
    check(block(x, c), x, what="the adaLN-Zero block with zero modulation", atol=1e-6, mistakes={
        "with zero gates the block must be the identity: multiply each residual branch by its gate "
        "(gate_msa, gate_mlp), not by 1 + gate": _expected(block, x, c, gates=("one", "one")),
        "with zero gates the block must be the identity, but its attention branch still adds its output: multiply "
        "it by gate_msa.unsqueeze(1), not by 1 + gate_msa (or nothing)": _expected(block, x, c, gates=("one", "gate")),
        "with zero gates the block must be the identity, but its MLP branch still adds its output: multiply "
        "it by gate_mlp.unsqueeze(1), not by 1 + gate_mlp (or nothing)": _expected(block, x, c, gates=("gate", "one")),
    })


def test_block_matches_the_formula(impl):
    block = _block(impl, seed=3)
    x, c = _inputs(4)
    check(block(x, c), _expected(block, x, c), what="DiTBlock(x, c)", atol=1e-5, mistakes={
        "each residual branch is multiplied by its gate alpha (gate_msa, gate_mlp)":
            _expected(block, x, c, gates=("one", "one")),
        "the attention branch is multiplied by 1 + gate_msa; it is gate_msa alone (0 at init, so the block starts "
        "as the identity)": _expected(block, x, c, gates=("one_plus", "gate")),
        "the MLP branch is multiplied by 1 + gate_mlp; it is gate_mlp alone": _expected(block, x, c, gates=("gate", "one_plus")),
        "both branches are multiplied by 1 + gate; each is multiplied by its gate alone":
            _expected(block, x, c, gates=("one_plus", "one_plus")),
        "the six chunks are (shift, scale, gate) for attention, then for the MLP, in that order; yours read "
        "scale before shift": _expected(block, x, c, names=("scale_msa", "shift_msa", "gate_msa", "scale_mlp",
                                                             "shift_mlp", "gate_mlp")),
        "the six chunks are all three of attention's (shift_msa, scale_msa, gate_msa), then the MLP's; yours "
        "interleave the branches (shift_msa, shift_mlp, scale_msa, ...)": _expected(block, x, c, names=INTERLEAVED),
        "modulate is x * (1 + scale) + shift": _expected(block, x, c, one_plus=False),
    })


def test_conditioning_changes_the_output_per_sample(impl):
    block = _block(impl, seed=5)
    x, c = _inputs(6, n=2)
    out = block(x, c)
    out_swapped = block(x, c.flip(0))
    assert not torch.allclose(out, out_swapped), "the output does not depend on c"
    check(block(x[:1], c[:1]), out[:1], what="sample 0 computed alone", atol=1e-5,
          mistakes={"each sample uses its own c: modulate per sample, not with the batch mean": out[1:]})


def test_agrees_with_minidit(impl, ref):
    torch.manual_seed(0)
    theirs = randomize_(ref.DiTBlock(D, HEADS), seed=7)
    mine = impl.DiTBlock(D, HEADS)
    mine.load_state_dict(theirs.state_dict())
    x, c = _inputs(8)
    check(mine(x, c), theirs(x, c), what="DiTBlock(x, c)", atol=1e-5)
    g = generator(9)
    args = torch.randn(2, 7, D, generator=g), torch.randn(2, D, generator=g), torch.randn(2, D, generator=g)
    check(impl.modulate(*args), ref.modulate(*args), what="modulate", atol=1e-6)


def test_runs_inside_dit(impl):
    check_inside_dit("ex08", "adaLN-Zero")
