"""The four ways of feeding the conditioning (t, y) into a transformer block (DiT §3.2, Figure 3).

    "in-context"       t and y are two extra tokens of the sequence; a standard ViT block.
    "cross-attention"  a standard block plus a cross-attention layer, after self-attention, that
                       attends to the length-2 sequence [t_emb, y_emb] (about 16% more Gflops).
    "adaLN"            LayerNorms without learned affine; their shift and scale (beta, gamma) are
                       regressed from c = t_emb + y_emb.
    "adaLN-Zero"       adaLN plus a gate alpha before each residual connection, also regressed from c;
                       the regression MLP's last layer starts at zero, so the block starts as the
                       identity. The official ``DiTBlock``.

Every block has the same call ``block(x, c) -> x`` with x: (N, T, D); what c is depends on the
class attribute ``cond_kind``, which the model reads:

    "vector"      c: (N, D) = t_emb + y_emb                 (adaLN, adaLN-Zero)
    "tokens"      c: (N, 2, D) = stack([t_emb, y_emb], 1)   (cross-attention)
    "in-context"  c: None; the model appends the two tokens to x and strips them before the final layer

The final layer follows the same split (see ``FinalLayer`` and ``PlainFinalLayer``). Key names are
those of facebookresearch/DiT and timm (``attn.qkv``, ``attn.proj``, ``mlp.fc1``, ``mlp.fc2``,
``adaLN_modulation.1``), so official state dicts load into ``DiTBlock``. The model looks its block up
in the ``BLOCKS`` registry when it is built.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from minidit.device import is_compiling

# --------------------------------------------------------------------------------------------------
# helpers and layers
# --------------------------------------------------------------------------------------------------


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Adaptive layer norm's affine step, one (shift, scale) per sample (DiT §3.2, adaLN).

    x: (N, T, D) normalised tokens; shift, scale: (N, D). Returns x * (1 + scale) + shift, the same
    (shift, scale) for all T tokens of a sample. "1 +": a zero regression output means "no change".
    """
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)  # (N, T, D)


class Mlp(nn.Module):
    """The transformer's feed-forward layer: Linear -> GELU (tanh approximation) -> Linear (timm's Mlp).

    recompute_act (off by default; `set_recompute_gelu` switches it for a whole model): while torch.compile
    traces the model, wrap the GELU in `torch.utils.checkpoint`, which tells the compiler's partitioner to
    recompute GELU(h) in the backward pass from h instead of keeping both h and GELU(h) (each N x T x 4D)
    until then. For DiT-S/2 at batch 256 that is 12 x 256 x 256 x 1536 bf16 values (2.25 GiB) less; the
    H100 bench measured 12.15 -> 10.09 GiB peak for 2% of the speed. The maths is unchanged. Eager mode
    ignores the flag: there fc2 keeps its input, GELU(h), anyway, so recomputing would only cost time.
    """

    recompute_act = False

    def __init__(self, in_features: int, hidden_features: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU(approximate="tanh")  # the official DiT's choice (faster, same quality)
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, T, D) -> (N, T, D)."""
        h = self.fc1(x)  # (N, T, 4D)
        if self.recompute_act and torch.is_grad_enabled() and is_compiling():
            return self.fc2(checkpoint(self.act, h, use_reentrant=False))
        return self.fc2(self.act(h))


def set_recompute_gelu(model: nn.Module, enabled: bool = True) -> int:
    """Switch `Mlp.recompute_act` on every Mlp of `model`; returns how many were switched."""
    mlps = [m for m in model.modules() if isinstance(m, Mlp)]
    for m in mlps:
        m.recompute_act = enabled
    return len(mlps)


def _check_heads(dim: int, num_heads: int) -> None:
    if dim % num_heads:
        raise ValueError(f"hidden size {dim} is not divisible by the number of heads {num_heads}")


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection (timm's Attention key names)."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True):
        super().__init__()
        _check_heads(dim, num_heads)
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, T, D) -> (N, T, D); softmax(q k^T / sqrt(D/heads)) v per head."""
        q, k, v = rearrange(self.qkv(x), "n t (three h d) -> three n h t d", three=3, h=self.num_heads)
        out = F.scaled_dot_product_attention(q, k, v)  # (N, heads, T, D/heads)
        return self.proj(rearrange(out, "n h t d -> n t (h d)"))  # (N, T, D)


class CrossAttention(nn.Module):
    """Multi-head cross-attention: queries from the image tokens, keys/values from the cond tokens."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True):
        super().__init__()
        _check_heads(dim, num_heads)
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x: (N, T, D) queries; cond: (N, S, D) keys/values (S = 2 for [t, y]) -> (N, T, D)."""
        q = rearrange(self.q(x), "n t (h d) -> n h t d", h=self.num_heads)  # (N, heads, T, D/heads)
        k, v = rearrange(self.kv(cond), "n s (two h d) -> two n h s d", two=2, h=self.num_heads)
        out = F.scaled_dot_product_attention(q, k, v)  # (N, heads, T, D/heads)
        return self.proj(rearrange(out, "n h t d -> n t (h d)"))  # (N, T, D)


def _layer_norm(dim: int, affine: bool) -> nn.LayerNorm:
    # eps 1e-6 as the official code. Without affine when adaLN regresses the shift and scale instead.
    return nn.LayerNorm(dim, elementwise_affine=affine, eps=1e-6)


# --------------------------------------------------------------------------------------------------
# the four blocks
# --------------------------------------------------------------------------------------------------


class DiTBlock(nn.Module):
    """adaLN-Zero block (DiT §3.2): adaLN shift/scale plus a gate alpha before each residual."""

    cond_kind = "vector"

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = _layer_norm(hidden_size, affine=False)
        self.attn = Attention(hidden_size, num_heads=num_heads, qkv_bias=True)
        self.norm2 = _layer_norm(hidden_size, affine=False)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        # c -> (shift, scale, gate) for attention and for the MLP; the model zero-initialises the Linear.
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x: (N, T, D) tokens; c: (N, D) = t_emb + y_emb -> (N, T, D)."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class AdaLNBlock(nn.Module):
    """adaLN block (DiT §3.2): LayerNorm shift and scale regressed from c; no gates."""

    cond_kind = "vector"

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = _layer_norm(hidden_size, affine=False)
        self.attn = Attention(hidden_size, num_heads=num_heads, qkv_bias=True)
        self.norm2 = _layer_norm(hidden_size, affine=False)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        # c -> (shift, scale) for attention and for the MLP: 4D outputs instead of adaLN-Zero's 6D.
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 4 * hidden_size, bias=True))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x: (N, T, D) tokens; c: (N, D) = t_emb + y_emb -> (N, T, D)."""
        shift_msa, scale_msa, shift_mlp, scale_mlp = self.adaLN_modulation(c).chunk(4, dim=1)
        x = x + self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class CrossAttentionBlock(nn.Module):
    """Cross-attention block (DiT §3.2): self-attention, then cross-attention to [t_emb, y_emb], then MLP."""

    cond_kind = "tokens"

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        # A standard pre-norm transformer block: LayerNorms with their own learned affine.
        self.norm1 = _layer_norm(hidden_size, affine=True)
        self.attn = Attention(hidden_size, num_heads=num_heads, qkv_bias=True)
        self.norm2 = _layer_norm(hidden_size, affine=True)
        self.cross_attn = CrossAttention(hidden_size, num_heads=num_heads, qkv_bias=True)
        self.norm3 = _layer_norm(hidden_size, affine=True)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x: (N, T, D) tokens; c: (N, 2, D) conditioning tokens [t_emb, y_emb] -> (N, T, D)."""
        x = x + self.attn(self.norm1(x))
        x = x + self.cross_attn(self.norm2(x), c)
        x = x + self.mlp(self.norm3(x))
        return x


class InContextBlock(nn.Module):
    """In-context block (DiT §3.2): a standard ViT block; t and y are already tokens of x."""

    cond_kind = "in-context"

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = _layer_norm(hidden_size, affine=True)
        self.attn = Attention(hidden_size, num_heads=num_heads, qkv_bias=True)
        self.norm2 = _layer_norm(hidden_size, affine=True)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))

    def forward(self, x: torch.Tensor, c: None = None) -> torch.Tensor:
        """x: (N, T + 2, D) image tokens followed by the t and y tokens; c: unused (None) -> same shape."""
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x


# --------------------------------------------------------------------------------------------------
# final layers
# --------------------------------------------------------------------------------------------------


class FinalLayer(nn.Module):
    """Final layer of the adaLN variants: adaLN-modulated LayerNorm, then Linear to p*p*C_out per token.

    adaLN and adaLN-Zero condition *every* LayerNorm on c, and the last one is no exception: its
    (shift, scale) are regressed from c, as in the official code. For adaLN-Zero the model also
    zero-initialises this modulation and the linear layer, so the whole network outputs zero at init.
    """

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = _layer_norm(hidden_size, affine=False)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, bias=True))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x: (N, T, D); c: (N, D) -> (N, T, p*p*C_out)."""
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (N, T, p*p*C_out)


class PlainFinalLayer(nn.Module):
    """Final layer of the in-context and cross-attention variants: LayerNorm (learned affine) + Linear.

    Not conditioned on c: in these variants the conditioning reaches the image tokens only through
    the blocks' own mechanism (attention to the t/y tokens), as in a standard transformer, so the
    comparison of DiT §3.2 isolates that mechanism. For in-context the model has already removed
    the two conditioning tokens, so this layer sees exactly the T image tokens.
    """

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = _layer_norm(hidden_size, affine=True)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """x: (N, T, D); c: ignored -> (N, T, p*p*C_out)."""
        return self.linear(self.norm_final(x))  # (N, T, p*p*C_out)


# --------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------

BLOCKS: dict[str, type[nn.Module]] = {
    "in-context": InContextBlock,
    "cross-attention": CrossAttentionBlock,
    "adaLN": AdaLNBlock,
    "adaLN-Zero": DiTBlock,
}

# Which final layer goes with which kind of conditioning (read by the model).
FINAL_LAYERS: dict[str, type[nn.Module]] = {
    "vector": FinalLayer,
    "tokens": PlainFinalLayer,
    "in-context": PlainFinalLayer,
}
