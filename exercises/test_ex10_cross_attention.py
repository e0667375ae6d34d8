"""Tests for ex10 (cross-attention and the cross-attention block).   Run: pytest exercises -k ex10"""

import torch

from exercises._testing import (check, check_inside_dit, check_state_dict_keys, generator, layer_norm, linear, mlp,
                                multi_head_attention, randomize_, self_attention)

D, HEADS = 32, 4


def _attention(module, x, cond, heads=HEADS, swap_kv=False, scale=True, kv_per_head=False, proj=True):
    """CrossAttention from its state dict; the flags plant the mistakes the hints name."""
    sd = module.state_dict()
    q = linear(x, sd, "q.")
    kv = linear(cond, sd, "kv.")  # (N, S, 2D): [k, v]
    if kv_per_head:  # each head's slice read as that head's [k, v]: "(h two d)" instead of "(two h d)"
        n, s, _ = kv.shape
        kv = kv.reshape(n, s, HEADS, 2, D // HEADS)
        k, v = kv[..., 0, :].reshape(n, s, D), kv[..., 1, :].reshape(n, s, D)
    else:
        k, v = kv.chunk(2, dim=-1)
    if swap_kv:
        k, v = v, k
    if not scale:
        q = q * (D // heads) ** 0.5  # undoes the 1 / sqrt(d) inside multi_head_attention
    out = multi_head_attention(q, k, v, heads)  # (N, T, D), the heads concatenated
    return linear(out, sd, "proj.") if proj else out


def _cross(impl, seed=0):
    torch.manual_seed(0)
    return randomize_(impl.CrossAttention(D, num_heads=HEADS), seed, std=0.3)


def test_cross_attention_parts(impl, ref):
    check_state_dict_keys(impl.CrossAttention(D, num_heads=HEADS), ref.CrossAttention(D, num_heads=HEADS),
                          "your CrossAttention")


def test_cross_attention_matches_torch_multihead_attention(impl):
    # torch's own nn.MultiheadAttention with the same weights is an independent oracle.
    attn = _cross(impl, seed=1)
    g = generator(2)
    x, cond = torch.randn(2, 9, D, generator=g), torch.randn(2, 2, D, generator=g)
    mha = torch.nn.MultiheadAttention(D, HEADS, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([attn.q.weight, attn.kv.weight]))
        mha.in_proj_bias.copy_(torch.cat([attn.q.bias, attn.kv.bias]))
        mha.out_proj.weight.copy_(attn.proj.weight)
        mha.out_proj.bias.copy_(attn.proj.bias)
        expected = mha(x, cond, cond, need_weights=False)[0]
    check(attn(x, cond), expected, what="CrossAttention(x, cond)", atol=1e-5, mistakes={
        "kv's output is [k, v] in that order: keys first, values second": _attention(attn, x, cond, swap_kv=True),
        "split into num_heads heads of D / num_heads: rearrange '(h d)' with h=num_heads":
            _attention(attn, x, cond, heads=1),
        "scale the scores by 1 / sqrt(D / num_heads) (scaled_dot_product_attention does it for you)":
            _attention(attn, x, cond, scale=False),
        "kv's output is [k, v]: all D numbers of k first, then all of v, each split into heads inside "
        "('(two h d)'); yours reads each head's slice as that head's k and v ('(h two d)')":
            _attention(attn, x, cond, kv_per_head=True),
        "the heads' outputs, concatenated back to (N, T, D), go through the output projection proj; yours "
        "returns them without it": _attention(attn, x, cond, proj=False),
    })


def test_one_condition_token_gives_its_value_to_every_query(impl):
    # With a single key, softmax puts all weight on it: every query gets proj(v), whatever x is.
    attn = _cross(impl, seed=3)
    g = generator(4)
    x, cond = torch.randn(2, 5, D, generator=g), torch.randn(2, 1, D, generator=g)
    v = linear(cond, attn.state_dict(), "kv.")[..., D:]  # (N, 1, D)
    expected = linear(v, attn.state_dict(), "proj.").expand(2, 5, D)
    check(attn(x, cond), expected, what="CrossAttention with one cond token", atol=1e-5, mistakes={
        "with one cond token every query must receive proj(v): the attention weights are over the cond "
        "tokens (keys from cond), not over the image tokens": self_attention(x, {
            "qkv.weight": torch.cat([attn.q.weight, attn.kv.weight]), "qkv.bias": torch.cat([attn.q.bias, attn.kv.bias]),
            "proj.weight": attn.proj.weight, "proj.bias": attn.proj.bias}, "", HEADS).detach(),
    })


def _block(impl, seed=0):
    torch.manual_seed(0)
    return randomize_(impl.CrossAttentionBlock(D, HEADS), seed)


def _expected_block(block, x, c, order=("attn", "cross", "mlp"), norm_c=False):
    sd = block.state_dict()
    branch = {
        "attn": lambda h: self_attention(layer_norm(h, sd, "norm1."), sd, "attn.", HEADS),
        "cross": lambda h: _attention(block.cross_attn, layer_norm(h, sd, "norm2."),
                                      layer_norm(c, sd, "norm2.") if norm_c else c),
        "mlp": lambda h: mlp(layer_norm(h, sd, "norm3."), sd, "mlp."),
    }
    for name in order:
        x = x + branch[name](x)
    return x


def test_block_has_the_parts(impl, ref):
    block = impl.CrossAttentionBlock(D, HEADS, mlp_ratio=2.0)
    check_state_dict_keys(block, ref.CrossAttentionBlock(D, HEADS, mlp_ratio=2.0), "your CrossAttentionBlock")
    assert getattr(block, "cond_kind", None) == "tokens", "keep the class attribute cond_kind = 'tokens'"


def test_block_matches_the_formula(impl):
    block = _block(impl, seed=5)
    g = generator(6)
    x, c = torch.randn(2, 6, D, generator=g), torch.randn(2, 2, D, generator=g)
    check(block(x, c), _expected_block(block, x, c), what="CrossAttentionBlock(x, c)", atol=1e-5, mistakes={
        "the order is self-attention, then cross-attention, then the MLP": _expected_block(block, x, c, ("cross", "attn", "mlp")),
        "norm2 normalises the queries (x) only; the cond tokens go in as they are": _expected_block(block, x, c, norm_c=True),
    })


def test_agrees_with_minidit(impl, ref):
    torch.manual_seed(0)
    theirs = randomize_(ref.CrossAttentionBlock(D, HEADS), seed=7)
    mine = impl.CrossAttentionBlock(D, HEADS)
    mine.load_state_dict(theirs.state_dict())
    g = generator(8)
    x, c = torch.randn(3, 6, D, generator=g), torch.randn(3, 2, D, generator=g)
    check(mine(x, c), theirs(x, c), what="CrossAttentionBlock(x, c)", atol=1e-5)
    check(mine.cross_attn(x, c), theirs.cross_attn(x, c), what="CrossAttention(x, c)", atol=1e-5)


def test_runs_inside_dit(impl):
    check_inside_dit("ex10", "cross-attention")
