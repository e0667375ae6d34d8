"""ex10: cross-attention and the cross-attention block (about 40 minutes).

DiT §3.2, "Cross-attention block": t_emb and y_emb form a separate length-2 sequence
c = [t_emb, y_emb] of shape (N, 2, D), and a multi-head cross-attention layer is added after
self-attention: its queries come from the image tokens, its keys and values from c (as text
conditioning does in latent diffusion). It costs about 16% more Gflops than adaLN-Zero
(DiT-XL/2: 137.6 against 118.6).

    CrossAttention:  q = x W_q, (k, v) = c W_kv, per head softmax(q k^T / sqrt(D / heads)) v, then proj
    block:           x = x + attn(norm1(x));  x = x + cross_attn(norm2(x), c);  x = x + mlp(norm3(x))

Official-style names, so state dicts match minidit's (kv is one Linear giving k then v).

Write CrossAttention and CrossAttentionBlock, then check them:   pytest exercises -k ex10
Notebook: 04_conditioning_blocks.   minidit's version: minidit/blocks.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from minidit.blocks import Attention, Mlp


class CrossAttention(nn.Module):
    """Multi-head cross-attention: queries from the image tokens, keys/values from the cond tokens."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True):
        """Build the parts, with these names:

            q     nn.Linear(dim, dim, bias=qkv_bias)
            kv    nn.Linear(dim, 2 * dim, bias=qkv_bias)   (its output is [k, v], each (h d) inside)
            proj  nn.Linear(dim, dim)
        and keep num_heads.
        """
        raise NotImplementedError("ex10: CrossAttention.__init__")

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x: (N, T, D) queries; cond: (N, S, D) keys and values (S = 2: [t_emb, y_emb]) -> (N, T, D).

        Hint: rearrange to (N, heads, tokens, D / heads); F.scaled_dot_product_attention(q, k, v)
        does the softmax part; rearrange back and apply proj.
        """
        raise NotImplementedError("ex10: CrossAttention.forward")


class CrossAttentionBlock(nn.Module):
    """Cross-attention block (DiT §3.2): self-attention, then cross-attention to [t_emb, y_emb], then MLP."""

    cond_kind = "tokens"  # the model passes c = stack([t_emb, y_emb], 1), (N, 2, D)

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        """Build the parts, with these names:

            norm1, norm2, norm3  nn.LayerNorm(hidden_size, eps=1e-6)   (with the learned affine)
            attn                 Attention(hidden_size, num_heads=num_heads, qkv_bias=True)
            cross_attn           CrossAttention(hidden_size, num_heads=num_heads, qkv_bias=True)  (yours, above)
            mlp                  Mlp(hidden_size, int(hidden_size * mlp_ratio))
        """
        raise NotImplementedError("ex10: CrossAttentionBlock.__init__")

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x: (N, T, D) tokens; c: (N, 2, D) conditioning tokens -> (N, T, D).

        Hint: three pre-norm residual branches; only the queries are normalised in the second one.
        """
        raise NotImplementedError("ex10: CrossAttentionBlock.forward")
