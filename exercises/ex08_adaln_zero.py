"""ex08: modulate and the adaLN-Zero block, DiT's own block (about 40 minutes).

adaLN-Zero (DiT §3.2, Figure 3) conditions a transformer block on c = t_emb + y_emb by
regressing, from c, a shift and a scale for each LayerNorm (which has no learned affine of its
own) and a gate alpha that scales each residual branch:

    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = adaLN_modulation(c)   (6 chunks of D)
    x = x + gate_msa * attn(modulate(norm1(x), shift_msa, scale_msa))
    x = x + gate_mlp * mlp(modulate(norm2(x), shift_mlp, scale_mlp))

The model zero-initialises adaLN_modulation's Linear (DiT.initialize_weights), so every gate starts
at 0 and every block starts as the identity: the "Zero". Use the official submodule names below,
so that minidit's and the official checkpoints load into your block.

Write modulate and DiTBlock, then check them:   pytest exercises -k ex08
Notebook: 04_conditioning_blocks.   minidit's version: minidit/blocks.py
"""

from __future__ import annotations

import torch
from torch import nn

from minidit.blocks import Attention, Mlp


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN's affine step, one (shift, scale) per sample for all its tokens (DiT §3.2).

    Args:
        x: (N, T, D) normalised tokens.
        shift, scale: (N, D), regressed from the conditioning.

    Returns:
        (N, T, D): x * (1 + scale) + shift, broadcast over the T tokens. With "1 +", a regression
        output of zero means "leave x unchanged".

    Hint: scale.unsqueeze(1) is (N, 1, D).
    """
    raise NotImplementedError("ex08: modulate")


class DiTBlock(nn.Module):
    """adaLN-Zero block (DiT §3.2): adaLN shift/scale plus a gate alpha before each residual."""

    cond_kind = "vector"  # the model passes c = t_emb + y_emb, (N, D)

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        """Build the parts, with the official names (state-dict keys):

            norm1, norm2      nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
            attn              Attention(hidden_size, num_heads=num_heads, qkv_bias=True)
            mlp               Mlp(hidden_size, int(hidden_size * mlp_ratio))
            adaLN_modulation  nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

        Hint: call super().__init__() first.
        """
        raise NotImplementedError("ex08: DiTBlock.__init__")

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x: (N, T, D) tokens; c: (N, D) conditioning -> (N, T, D).

        Hint: .chunk(6, dim=1) splits (N, 6D) into six (N, D) in the order of the module docstring;
        a gate multiplies its branch as gate.unsqueeze(1).
        """
        raise NotImplementedError("ex08: DiTBlock.forward")
