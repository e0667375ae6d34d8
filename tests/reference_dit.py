"""A deliberately plain re-implementation of the official DiT (adaLN-Zero) architecture -- a test oracle.

Written from the paper (DiT §3, Figure 3) and the official checkpoint's key names, sharing no code
with minidit: index loops instead of einops, an explicit softmax instead of
scaled_dot_product_attention, LayerNorm / GELU / SiLU written out, patches cut one by one. It is
slow and only meant for tiny configs. Modules exist only to give the parameters the official names
(x_embedder.proj, t_embedder.mlp.0/2, y_embedder.embedding_table, pos_embed, blocks.{i}.attn.qkv,
blocks.{i}.attn.proj, blocks.{i}.mlp.fc1/fc2, blocks.{i}.adaLN_modulation.1, final_layer.linear,
final_layer.adaLN_modulation.1); the computation reads the raw tensors.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def ref_pos_embed(dim: int, grid: int) -> torch.Tensor:
    """(grid*grid, dim): quarters sin(col w), cos(col w), sin(row w), cos(row w), w_i = 10000^(-i/(dim/4))."""
    quarter = dim // 4
    out = torch.zeros(grid * grid, dim, dtype=torch.float64)
    for row in range(grid):
        for col in range(grid):
            k = row * grid + col
            for i in range(quarter):
                w = 10000.0 ** (-i / quarter)
                out[k, i] = math.sin(col * w)
                out[k, quarter + i] = math.cos(col * w)
                out[k, 2 * quarter + i] = math.sin(row * w)
                out[k, 3 * quarter + i] = math.cos(row * w)
    return out


def ref_timestep_frequencies(t: torch.Tensor, dim: int = 256) -> torch.Tensor:
    """(N, dim): cos(t f_k) then sin(t f_k), f_k = exp(-ln(10000) k / (dim/2))."""
    half = dim // 2
    rows = []
    for value in t.tolist():
        cos_part = [math.cos(value * math.exp(-math.log(10000.0) * k / half)) for k in range(half)]
        sin_part = [math.sin(value * math.exp(-math.log(10000.0) * k / half)) for k in range(half)]
        rows.append(cos_part + sin_part)
    return torch.tensor(rows, dtype=torch.float32)


def linear(x, layer: nn.Linear):
    return x @ layer.weight.T + layer.bias


def silu(x):
    return x * torch.sigmoid(x)


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def layer_norm(x, eps: float = 1e-6):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


class _Attn(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)


class _Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)


class _Block(nn.Module):
    def __init__(self, dim, mlp_ratio):
        super().__init__()
        self.attn = _Attn(dim)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))


class _Final(nn.Module):
    def __init__(self, dim, out_per_token):
        super().__init__()
        self.linear = nn.Linear(dim, out_per_token)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))


class _PatchEmbed(nn.Module):
    def __init__(self, c, dim, p):
        super().__init__()
        self.proj = nn.Conv2d(c, dim, p, stride=p)


class _TEmb(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(256, dim), nn.SiLU(), nn.Linear(dim, dim))


class _YEmb(nn.Module):
    def __init__(self, rows, dim):
        super().__init__()
        self.embedding_table = nn.Embedding(rows, dim)


class ReferenceDiT(nn.Module):
    def __init__(
        self,
        input_size,
        patch_size,
        in_channels,
        hidden_size,
        depth,
        num_heads,
        num_classes,
        learn_sigma=True,
        null_class=True,
        mlp_ratio=4.0,
    ):
        super().__init__()
        self.p, self.c, self.d, self.heads = patch_size, in_channels, hidden_size, num_heads
        self.grid = input_size // patch_size
        self.c_out = 2 * in_channels if learn_sigma else in_channels
        self.x_embedder = _PatchEmbed(in_channels, hidden_size, patch_size)
        self.t_embedder = _TEmb(hidden_size)
        self.y_embedder = _YEmb(num_classes + int(null_class), hidden_size)
        self.pos_embed = nn.Parameter(ref_pos_embed(hidden_size, self.grid).float()[None], requires_grad=False)
        self.blocks = nn.ModuleList([_Block(hidden_size, mlp_ratio) for _ in range(depth)])
        self.final_layer = _Final(hidden_size, patch_size * patch_size * self.c_out)

    def randomize(self, seed: int = 0) -> None:
        """Random, non-degenerate weights everywhere (the official zero-init would hide most bugs)."""
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in self.named_parameters():
                if name == "pos_embed":
                    continue
                if param.ndim >= 2:
                    fan_in = param[0].numel()
                    std = 1.0 if "embedding_table" in name else 0.5 / math.sqrt(fan_in)
                else:
                    std = 0.1
                param.copy_(torch.randn(param.shape, generator=g) * std)

    def embed_patches(self, x):
        n, p, g = x.shape[0], self.p, self.grid
        w = self.x_embedder.proj.weight.reshape(self.d, -1)  # (D, C*p*p) in (c, row, col) order
        tokens = []
        for i in range(g):
            for j in range(g):
                patch = x[:, :, i * p : (i + 1) * p, j * p : (j + 1) * p].reshape(n, -1)
                tokens.append(patch @ w.T + self.x_embedder.proj.bias)
        return torch.stack(tokens, dim=1)

    def attention(self, x, attn: _Attn):
        d, h = self.d, self.heads
        hd = d // h
        qkv = linear(x, attn.qkv)
        q, k, v = qkv[..., :d], qkv[..., d : 2 * d], qkv[..., 2 * d :]
        outs = []
        for head in range(h):
            sl = slice(head * hd, (head + 1) * hd)
            scores = q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(hd)
            scores = scores - scores.max(dim=-1, keepdim=True).values
            weights = torch.exp(scores) / torch.exp(scores).sum(dim=-1, keepdim=True)
            outs.append(weights @ v[..., sl])
        return linear(torch.cat(outs, dim=-1), attn.proj)

    def unpatch(self, tokens):
        n, p, g, c = tokens.shape[0], self.p, self.grid, self.c_out
        out = torch.zeros(n, c, g * p, g * p)
        for i in range(g):
            for j in range(g):
                for a in range(p):
                    for b in range(p):
                        for ch in range(c):
                            out[:, ch, i * p + a, j * p + b] = tokens[:, i * g + j, (a * p + b) * c + ch]
        return out

    def forward(self, x, t, y):
        x = self.embed_patches(x) + self.pos_embed
        t_emb = linear(silu(linear(ref_timestep_frequencies(t), self.t_embedder.mlp[0])), self.t_embedder.mlp[2])
        c = t_emb + self.y_embedder.embedding_table.weight[y]
        for blk in self.blocks:
            mod = linear(silu(c), blk.adaLN_modulation[1])
            d = self.d
            shift1, scale1, gate1 = mod[:, :d], mod[:, d : 2 * d], mod[:, 2 * d : 3 * d]
            shift2, scale2, gate2 = mod[:, 3 * d : 4 * d], mod[:, 4 * d : 5 * d], mod[:, 5 * d :]
            h = layer_norm(x) * (1 + scale1[:, None]) + shift1[:, None]
            x = x + gate1[:, None] * self.attention(h, blk.attn)
            h = layer_norm(x) * (1 + scale2[:, None]) + shift2[:, None]
            x = x + gate2[:, None] * linear(gelu_tanh(linear(h, blk.mlp.fc1)), blk.mlp.fc2)
        mod = linear(silu(c), self.final_layer.adaLN_modulation[1])
        shift, scale = mod[:, : self.d], mod[:, self.d :]
        x = linear(layer_norm(x) * (1 + scale[:, None]) + shift[:, None], self.final_layer.linear)
        return self.unpatch(x)
