"""ex11: the adaLN block (about 15 minutes, after ex08).

Adaptive layer norm (DiT §3.2, "Adaptive layer norm (adaLN) block"; from FiLM and GANs): the
LayerNorms lose their learned affine and instead get a shift and a scale regressed from
c = t_emb + y_emb. It is adaLN-Zero (ex08) without the gates:

    shift_msa, scale_msa, shift_mlp, scale_mlp = adaLN_modulation(c)   (4 chunks of D)
    x = x + attn(modulate(norm1(x), shift_msa, scale_msa))
    x = x + mlp(modulate(norm2(x), shift_mlp, scale_mlp))

Without gates nothing makes the block start as the identity; DiT §3.2 finds this costs quality
(FID 25.2 vs 19.5 for adaLN-Zero at XL/2, 400K steps). Official-style names, as minidit's.

Write AdaLNBlock, then check it:   pytest exercises -k ex11
Notebook: 04_conditioning_blocks.   minidit's version: minidit/blocks.py
"""

from __future__ import annotations

import torch
from torch import nn

from minidit.blocks import Attention, Mlp, modulate


class AdaLNBlock(nn.Module):
    """adaLN block (DiT §3.2): LayerNorm shift and scale regressed from c; no gates."""

    cond_kind = "vector"  # the model passes c = t_emb + y_emb, (N, D)

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        """Build the parts, with these names:

            norm1, norm2      nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
            attn              Attention(hidden_size, num_heads=num_heads, qkv_bias=True)
            mlp               Mlp(hidden_size, int(hidden_size * mlp_ratio))
            adaLN_modulation  nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 4 * hidden_size))
        """
        raise NotImplementedError("ex11: AdaLNBlock.__init__")

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x: (N, T, D) tokens; c: (N, D) conditioning -> (N, T, D).

        Hint: modulate, imported above from minidit.blocks, is minidit's version of your ex08 function.
        """
        raise NotImplementedError("ex11: AdaLNBlock.forward")
