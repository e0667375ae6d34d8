"""The four conditioning blocks of DiT §3.2, their layers, and the adaLN-Zero identity at init."""

from __future__ import annotations

import math

import pytest
import torch

from minidit import blocks
from minidit.blocks import BLOCKS, Attention, CrossAttention, DiTBlock, FinalLayer, Mlp, modulate
from minidit.model import DiT

D, HEADS = 32, 4


def _explicit_attention(q, k, v, heads):
    """Oracle: per-head softmax(q k^T / sqrt(d)) v with an explicit softmax. q: (N,T,D), k/v: (N,S,D)."""
    hd = q.shape[-1] // heads
    outs = []
    for h in range(heads):
        sl = slice(h * hd, (h + 1) * hd)
        scores = q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(hd)
        w = torch.exp(scores - scores.amax(-1, keepdim=True))
        outs.append((w / w.sum(-1, keepdim=True)) @ v[..., sl])
    return torch.cat(outs, dim=-1)


def _perturb(module: torch.nn.Module, std: float = 0.05, seed: int = 0) -> None:
    """Add noise to every trainable parameter (undoes the zero-init so conditioning can act)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * std)


def test_modulate_closed_form():
    x, shift, scale = torch.randn(2, 5, D), torch.randn(2, D), torch.randn(2, D)
    out = modulate(x, shift, scale)
    for n in range(2):
        for t in range(5):
            torch.testing.assert_close(out[n, t], x[n, t] * (1 + scale[n]) + shift[n])
    assert torch.equal(modulate(x, torch.zeros(2, D), torch.zeros(2, D)), x), "zero shift and scale must be a no-op"


def test_attention_matches_explicit_softmax():
    attn = Attention(D, num_heads=HEADS)
    x = torch.randn(2, 7, D)
    qkv = attn.qkv(x)
    q, k, v = qkv[..., :D], qkv[..., D : 2 * D], qkv[..., 2 * D :]  # timm/official layout: (3, heads, d)
    expected = attn.proj(_explicit_attention(q, k, v, HEADS))
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)


def test_cross_attention_matches_explicit_softmax():
    attn = CrossAttention(D, num_heads=HEADS)
    x, cond = torch.randn(2, 7, D), torch.randn(2, 2, D)
    kv = attn.kv(cond)
    expected = attn.proj(_explicit_attention(attn.q(x), kv[..., :D], kv[..., D:], HEADS))
    torch.testing.assert_close(attn(x, cond), expected, atol=1e-5, rtol=1e-5)


def test_mlp_uses_tanh_gelu():
    mlp = Mlp(D, 4 * D)
    x = torch.randn(3, D)
    h = mlp.fc1(x)
    gelu = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
    torch.testing.assert_close(mlp(x), mlp.fc2(gelu), atol=1e-5, rtol=1e-5)


def test_registry_and_cond_kinds():
    assert set(BLOCKS) == {"in-context", "cross-attention", "adaLN", "adaLN-Zero"}
    assert BLOCKS["adaLN-Zero"] is DiTBlock
    kinds = {name: cls.cond_kind for name, cls in BLOCKS.items()}
    assert kinds == {"in-context": "in-context", "cross-attention": "tokens", "adaLN": "vector", "adaLN-Zero": "vector"}


def _cond(name, n=2):
    kind = BLOCKS[name].cond_kind
    return {"vector": torch.randn(n, D), "tokens": torch.randn(n, 2, D), "in-context": None}[kind]


@pytest.mark.parametrize("name", list(BLOCKS))
def test_block_shapes(name):
    block = BLOCKS[name](D, HEADS, mlp_ratio=4.0)
    x = torch.randn(2, 6, D)
    assert block(x, _cond(name)).shape == x.shape


def test_every_adaLN_zero_block_is_identity_at_init():
    model = DiT(input_size=8, patch_size=2, in_channels=1, hidden_size=D, depth=3, num_heads=HEADS, num_classes=5)
    x, c = torch.randn(2, 16, D), torch.randn(2, D)
    for i, block in enumerate(model.blocks):
        out = block(x, c)
        assert torch.equal(out, x), (
            f"adaLN-Zero block {i} changes its input at init (max |out - x| = {(out - x).abs().max():.3g}): "
            "are the adaLN_modulation outputs (the gates alpha) zero-initialised?"
        )
    assert torch.equal(model.final_layer(x, c), torch.zeros(2, 16, 2 * 2 * 2)), "the zeroed final layer must output 0"


def test_gates_alone_make_the_identity():
    """Zero gates but random shift/scale: still the identity. Gates at 1: not the identity."""
    block = DiTBlock(D, HEADS)
    lin = block.adaLN_modulation[-1]
    x, c = torch.randn(2, 5, D), torch.randn(2, D)
    with torch.no_grad():
        lin.weight.normal_(0, 0.1)
        lin.bias.normal_(0, 0.1)
        for gate in (2, 5):  # chunks: shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp
            lin.weight[gate * D : (gate + 1) * D] = 0
            lin.bias[gate * D : (gate + 1) * D] = 0
    assert torch.equal(block(x, c), x)
    with torch.no_grad():
        lin.bias[2 * D : 3 * D] = 1.0
    assert not torch.allclose(block(x, c), x)


@pytest.mark.parametrize("name", list(BLOCKS))
def test_conditioning_changes_the_block_output(name):
    torch.manual_seed(0)
    block = BLOCKS[name](D, HEADS)
    _perturb(block)
    x = torch.randn(2, 6, D)
    if name == "in-context":  # the last two tokens play t and y; the image tokens must feel them
        x2 = x.clone()
        x2[:, -2:] = torch.randn(2, 2, D)
        a, b = block(x)[:, :-2], block(x2)[:, :-2]
    else:
        a, b = block(x, _cond(name)), block(x, _cond(name))
    assert (a - b).abs().max() > 1e-3, f"{name}: changing the conditioning did not change the output"


def test_final_layer_modulation():
    layer = FinalLayer(D, patch_size=2, out_channels=3)
    assert layer.linear.out_features == 12
    x = torch.randn(2, 5, D)
    _perturb(layer)
    assert not torch.allclose(layer(x, torch.randn(2, D)), layer(x, torch.randn(2, D)))
    plain = blocks.PlainFinalLayer(D, patch_size=2, out_channels=3)
    assert plain(x, None).shape == (2, 5, 12)


def test_heads_must_divide_width():
    with pytest.raises(ValueError, match="not divisible by the number of heads"):
        Attention(30, num_heads=4)


def _compiled_loss_saved_bytes(recompute: bool) -> tuple[int, torch.Tensor, list[torch.Tensor]]:
    """Bytes the compiled (aot_eager partitioner) DiT-T/4 loss keeps for the backward, the loss, the grads."""
    from minidit import diffusion
    from minidit.model import create_model

    torch.manual_seed(0)
    model = create_model("DiT-T/4", input_size=32, in_channels=1, num_classes=10, learn_sigma=True)
    assert blocks.set_recompute_gelu(model, recompute) == len(model.blocks)
    diff = diffusion.create_diffusion(None, "linear", True, 1000)

    def loss_fn(x, y, t, noise):
        return diff.training_losses(model, x, t, model_kwargs={"y": y}, noise=noise)["loss"].mean()

    # the partitioner torch.compile's inductor uses, without generating kernels (fast on a CPU)
    compiled = torch.compile(loss_fn, backend="aot_eager_decomp_partition")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 1, 32, 32, generator=g)
    y, t = torch.randint(0, 10, (4,), generator=g), torch.randint(0, 1000, (4,), generator=g)
    noise = torch.randn(x.shape, generator=g)
    saved = [0]

    def pack(tensor):
        saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = compiled(x, y, t, noise)
    loss.backward()
    return saved[0], loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_recompute_gelu_keeps_one_tensor_less_per_block_and_the_same_gradients():
    plain_bytes, plain_loss, plain_grads = _compiled_loss_saved_bytes(False)
    lean_bytes, lean_loss, lean_grads = _compiled_loss_saved_bytes(True)
    # DiT-T/4 on 32x32: 4 blocks, 64 tokens, MLP width 512; batch 4, fp32 -> GELU(h) no longer kept
    assert plain_bytes - lean_bytes == 4 * (4 * 64 * 512) * 4
    assert torch.equal(plain_loss, lean_loss)
    assert len(plain_grads) == len(lean_grads)
    for a, b in zip(plain_grads, lean_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_recompute_gelu_is_off_at_eval_and_by_default():
    mlp = Mlp(8, 32)
    assert mlp.recompute_act is False
    x = torch.randn(2, 3, 8)
    expected = mlp(x)
    blocks.set_recompute_gelu(mlp, True)
    assert mlp.recompute_act is True
    with torch.no_grad():
        torch.testing.assert_close(mlp(x), expected, rtol=0, atol=0)
