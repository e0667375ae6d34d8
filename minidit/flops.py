"""The paper's "Gflops" column, counted analytically (DiT §4, Table 1, Table 4, Figure 5).

DiT's "Gflops" are forward-pass multiply-accumulates (MACs) of one image, in units of 1e9, counted
over the matrix products: every Linear, the patch-embedding convolution (a Linear on each patch)
and attention's two products q k^T and softmax(.) v. Elementwise work (LayerNorm, softmax, GELU,
SiLU, modulate, residual adds) and the label lookup are not counted; they change the totals by
well under 1%. ``dit_macs`` needs only the config, so it prices DiT-XL/2 without building it.

Per block, with S tokens (S = T, or T + 2 for in-context), width D, MLP width rD:

    self-attention   qkv 3 S D^2, scores S^2 D, values S^2 D, proj S D^2
    MLP              2 r S D^2
    adaLN-Zero       6 D^2 (regressing shift, scale, gate twice, once per image)
    adaLN            4 D^2
    cross-attention  q T D^2, kv 2 * 2 D^2, scores + values 2 * 2 T D, proj T D^2   (the ~16% extra)
"""

from __future__ import annotations

from torch import nn

from minidit.model import DiT, DiT_models

_VECTOR = ("adaLN", "adaLN-Zero")
_BLOCK_NAMES = ("in-context", "cross-attention", "adaLN", "adaLN-Zero")


def _resolve(model_name_or_config) -> dict:
    """A config name, a dict with depth/hidden_size/num_heads/patch_size, or a DiT -> a dict."""

    if isinstance(model_name_or_config, str):
        if model_name_or_config not in DiT_models:
            raise ValueError(f"unknown model {model_name_or_config!r}; expected one of {list(DiT_models)}")
        return dict(DiT_models[model_name_or_config].preset)
    if isinstance(model_name_or_config, DiT):
        m = model_name_or_config
        return dict(
            depth=m.depth,
            hidden_size=m.hidden_size,
            num_heads=m.num_heads,
            patch_size=m.patch_size,
            input_size=m.input_size,
            in_channels=m.in_channels,
            learn_sigma=m.learn_sigma,
            mlp_ratio=m.mlp_ratio,
            block=m.block,
        )
    if isinstance(model_name_or_config, dict):
        config = {k: v for k, v in model_name_or_config.items() if k != "model"}
        name = model_name_or_config.get("model")
        if name is not None:
            config = {**_resolve(name), **config}
        missing = {"depth", "hidden_size", "patch_size"} - set(config)
        if missing:
            raise ValueError(f"config lacks {sorted(missing)}")
        return config
    raise TypeError(f"expected a config name, a config dict or a DiT, got {type(model_name_or_config).__name__}")


def dit_macs(
    model_name_or_config,
    input_size: int | None = None,
    block: str | None = None,
    in_channels: int | None = None,
    learn_sigma: bool | None = None,
    mlp_ratio: float | None = None,
    frequency_embedding_size: int = 256,
) -> int:
    """Forward multiply-accumulates of one sample (the paper counts latents: input_size 32 = 256 px).

    model_name_or_config: "DiT-XL/2", a ``model_config`` dict, or a DiT. Arguments left as None come
    from a dict/DiT if it has them, else the paper's setting: input_size 32, block "adaLN-Zero",
    in_channels 4, learned sigma, mlp_ratio 4.
    """
    config = _resolve(model_name_or_config)
    defaults = dict(input_size=32, block="adaLN-Zero", in_channels=4, learn_sigma=True, mlp_ratio=4.0)
    given = dict(
        input_size=input_size, block=block, in_channels=in_channels, learn_sigma=learn_sigma, mlp_ratio=mlp_ratio
    )
    for key, value in given.items():
        config[key] = value if value is not None else config.get(key, defaults[key])
    if config["block"] not in _BLOCK_NAMES:
        raise ValueError(f"unknown block {config['block']!r}; expected one of {list(_BLOCK_NAMES)}")
    p, d, depth, c = config["patch_size"], config["hidden_size"], config["depth"], config["in_channels"]
    if config["input_size"] % p:
        raise ValueError(f"image size {config['input_size']} is not divisible by patch size {p}")
    c_out = 2 * c if config["learn_sigma"] else c
    mlp_hidden = int(d * config["mlp_ratio"])
    t = (config["input_size"] // p) ** 2  # image tokens T
    kind = config["block"]

    embed = t * (p * p * c) * d  # patch embedding
    embed += frequency_embedding_size * d + d * d  # timestep MLP

    s = t + 2 if kind == "in-context" else t  # sequence length inside the blocks
    block_macs = 4 * s * d * d + 2 * s * s * d  # qkv + proj; q k^T and attn @ v
    block_macs += 2 * s * d * mlp_hidden  # MLP fc1 + fc2
    if kind == "adaLN-Zero":
        block_macs += d * 6 * d
    elif kind == "adaLN":
        block_macs += d * 4 * d
    elif kind == "cross-attention":
        block_macs += 2 * t * d * d + 2 * d * 2 * d + 2 * t * 2 * d  # q, proj; kv of 2 tokens; scores + values

    final = t * d * (p * p * c_out)
    if kind in _VECTOR:
        final += d * 2 * d  # the final layer's adaLN (shift, scale)
    return embed + depth * block_macs + final


def dit_gflops(*args, **kwargs) -> float:
    """``dit_macs`` / 1e9: the paper's "Gflops" (e.g. dit_gflops("DiT-XL/2") -> 118.6)."""
    return dit_macs(*args, **kwargs) / 1e9


def count_parameters(model: nn.Module, include_fixed: bool = True) -> int:
    """Number of parameters; include_fixed=False leaves out those with requires_grad=False (pos_embed).

    The paper's and the official code's counts include the fixed position embedding
    (DiT-XL/2: 675M; DiT-S/2 with 4 channels and 1000 classes: 32.96M).
    """
    return sum(p.numel() for p in model.parameters() if include_fixed or p.requires_grad)
