"""ex09: the in-context conditioning block (about 15 minutes).

The simplest way to condition (DiT §3.2, "In-context conditioning"): t_emb and y_emb become two
more tokens of the sequence, and the block is a standard pre-norm ViT block that never sees them
separately; attention lets the image tokens read them. The model appends the two tokens before the
first block and removes them after the last (DiT.forward), so the block only does:

    x = x + attn(norm1(x))
    x = x + mlp(norm2(x))

with LayerNorms that keep their learned affine (nothing else modulates them). Official names, so
state dicts match minidit's.

Write InContextBlock, then check it:   pytest exercises -k ex09
Notebook: 04_conditioning_blocks.   minidit's version: minidit/blocks.py
"""

from __future__ import annotations

import torch
from torch import nn

from minidit.blocks import Attention, Mlp


class InContextBlock(nn.Module):
    """In-context block (DiT §3.2): a standard ViT block; t and y are already tokens of x."""

    cond_kind = "in-context"  # the model passes c = None and puts the two tokens in x

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        """Build the parts, with the official names:

            norm1, norm2  nn.LayerNorm(hidden_size, eps=1e-6)   (with the learned affine)
            attn          Attention(hidden_size, num_heads=num_heads, qkv_bias=True)
            mlp           Mlp(hidden_size, int(hidden_size * mlp_ratio))
        """
        raise NotImplementedError("ex09: InContextBlock.__init__")

    def forward(self, x: torch.Tensor, c: None = None) -> torch.Tensor:
        """x: (N, T + 2, D) image tokens followed by the t and y tokens; c: unused -> (N, T + 2, D).

        Hint: pre-norm: normalise the input of each branch, not the residual stream.
        """
        raise NotImplementedError("ex09: InContextBlock.forward")
