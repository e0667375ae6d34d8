"""DiT: a Diffusion Transformer (Peebles & Xie, ICCV 2023, §3 and Figure 3).

    x (N, C, H, W) --x_embedder--> (N, T, D) + pos_embed
    t (N,)         --t_embedder--> (N, D) \
    y (N,)         --y_embedder--> (N, D) /-- conditioning, fed to every block (one of DiT §3.2's four ways)
    blocks (depth x)               (N, T, D)
    final_layer + unpatchify  -->  (N, C_out, H, W), C_out = 2C with learned sigma (eps and variance)

Names, configs and state-dict keys are those of facebookresearch/DiT; ``block="adaLN-Zero"`` (the
default) is exactly the official model. ``forward_with_cfg`` is classifier-free guidance (DiT §3.1,
Ho & Salimans 2022). The model looks its blocks up in ``minidit.blocks.BLOCKS``.
"""

from __future__ import annotations

import torch
from torch import nn

from minidit import blocks as _blocks
from minidit import embeddings as _embeddings
from minidit.device import is_compiling

# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def cfg_combine(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022, Eq. 6; DiT §3.1): eps_u + s * (eps_c - eps_u).

    eps_cond, eps_uncond: (N, C, H, W) noise predictions with and without the label. s = 1 gives
    the conditional prediction, s = 0 the unconditional one, s > 1 pushes samples towards the label.
    """
    return eps_uncond + cfg_scale * (eps_cond - eps_uncond)


# --------------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------------


class DiT(nn.Module):
    """Diffusion model with a transformer backbone (DiT §3); ``block`` picks the conditioning of §3.2."""

    def __init__(
        self,
        input_size: int = 32,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.1,
        num_classes: int = 1000,
        learn_sigma: bool = True,
        block: str = "adaLN-Zero",
    ):
        super().__init__()
        registry = _blocks.BLOCKS  # looked up now, so that a patched registry is honoured
        if block not in registry:
            raise ValueError(f"unknown block {block!r}; expected one of {sorted(registry)}")
        sizes = dict(
            input_size=input_size,
            patch_size=patch_size,
            in_channels=in_channels,
            hidden_size=hidden_size,
            num_heads=num_heads,
            num_classes=num_classes,
        )
        for name, value in sizes.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(depth, int) or depth < 0 or mlp_ratio <= 0:
            raise ValueError(f"need depth >= 0 and mlp_ratio > 0, got depth={depth!r}, mlp_ratio={mlp_ratio!r}")
        if not 0 <= class_dropout_prob < 1:
            raise ValueError(f"class_dropout_prob must be in [0, 1), got {class_dropout_prob}")
        if input_size % patch_size:
            raise ValueError(f"image size {input_size} is not divisible by patch size {patch_size}")
        if hidden_size % num_heads:
            raise ValueError(f"hidden size {hidden_size} is not divisible by the number of heads {num_heads}")
        if hidden_size % 4:
            raise ValueError(f"hidden size {hidden_size} must be divisible by 4 (2D sin-cos position embedding)")
        block_cls = registry[block]
        cond_kind = getattr(block_cls, "cond_kind", None)
        if cond_kind not in _blocks.FINAL_LAYERS:
            raise ValueError(
                f"block class {block_cls.__name__} must set cond_kind to one of {sorted(_blocks.FINAL_LAYERS)}"
            )
        self.input_size = input_size
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.out_channels = in_channels * 2 if learn_sigma else in_channels  # eps and, if learned, variance
        self.hidden_size = hidden_size
        self.depth = depth
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.num_classes = num_classes
        self.class_dropout_prob = class_dropout_prob
        self.learn_sigma = learn_sigma
        self.block = block
        self.cond_kind = cond_kind
        self.name: str | None = None  # set by create_model; used by model_config

        self.x_embedder = _embeddings.PatchEmbed(input_size, patch_size, in_channels, hidden_size)
        self.t_embedder = _embeddings.TimestepEmbedder(hidden_size)
        self.y_embedder = _embeddings.LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        num_patches = self.x_embedder.num_patches
        # Fixed 2D sin-cos embedding, filled in initialize_weights. A Parameter that is not trained,
        # as in the official code, so official state dicts (which contain it) load unchanged.
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, hidden_size), requires_grad=False)
        self.blocks = nn.ModuleList([block_cls(hidden_size, num_heads, mlp_ratio=mlp_ratio) for _ in range(depth)])
        self.final_layer = _blocks.FINAL_LAYERS[cond_kind](hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """All of the model's initialisation, one rule per comment (official DiT ``initialize_weights``)."""

        # Rule 1: every Linear gets xavier-uniform weights and zero bias (keeps activation scale ~1).
        # LayerNorms with learned affine (in-context, cross-attention) start as (1, 0).
        def _basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

        self.apply(_basic_init)

        # Rule 2: pos_embed is the fixed 2D sin-cos embedding (never trained).
        grid_size = self.input_size // self.patch_size
        pos_embed = _embeddings.get_2d_sincos_pos_embed(self.hidden_size, grid_size)  # (T, D)
        self.pos_embed.data.copy_(torch.as_tensor(pos_embed, dtype=torch.float32).unsqueeze(0))

        # Rule 3: the patch-embedding conv is a Linear on flattened patches, so it is initialised as one
        # (xavier over fan_in = C*p*p, fan_out = D) rather than with Conv2d's default.
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)

        # Rule 4: the label table starts small, normal(0, 0.02) (ViT/BERT embedding init).
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)

        # Rule 5: the timestep MLP's two Linears start normal(0, 0.02) (as in the official code).
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)

        if self.block == "adaLN-Zero":
            # Rule 6 (adaLN-Zero, DiT §3.2): zero each block's modulation regressor, so shift = scale = 0
            # and the gates alpha = 0: every residual branch is multiplied by 0, each block is the identity.
            for block in self.blocks:
                nn.init.zeros_(block.adaLN_modulation[-1].weight)
                nn.init.zeros_(block.adaLN_modulation[-1].bias)
            # Rule 7 (adaLN-Zero, official code): zero the final layer's modulation and linear layer,
            # so the network predicts exactly 0 at init (eps = 0, variance interpolation v = 0).
            nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
            nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
            nn.init.zeros_(self.final_layer.linear.weight)
            nn.init.zeros_(self.final_layer.linear.bias)
        # The other three variants keep rule 1 everywhere (no zero-init): adaLN's regressed
        # shift/scale and the plain blocks start from standard transformer initialisation.

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, T, p*p*C_out) -> (N, C_out, H, W)."""
        return _embeddings.unpatchify(x, self.patch_size, self.out_channels)

    def _check_inputs(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(f"x must be a (N, C, H, W) tensor, got {getattr(x, 'shape', type(x))}")
        if not x.dtype.is_floating_point:
            raise TypeError(
                f"x must be floating point (images in [-1, 1], e.g. minidit.data.to_model_range of "
                f"uint8 pixels), got dtype {x.dtype}"
            )
        n, c, h, w = x.shape
        if c != self.in_channels:
            raise ValueError(f"x has {c} channels, this DiT was built for in_channels={self.in_channels}")
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"image size {h}x{w} is not divisible by patch size {self.patch_size}")
        if h != self.input_size or w != self.input_size:
            raise ValueError(
                f"x is {h}x{w}, this DiT was built for input_size={self.input_size} (its position embedding is fixed)"
            )
        if not isinstance(t, torch.Tensor) or t.shape != (n,):
            raise ValueError(f"t must be a tensor of shape (N,) = ({n},), got {getattr(t, 'shape', type(t))}")
        if not isinstance(y, torch.Tensor) or y.shape != (n,):
            raise ValueError(f"y must be a tensor of shape (N,) = ({n},), got {getattr(y, 'shape', type(y))}")
        if y.dtype.is_floating_point or y.dtype == torch.bool:
            raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
        # Label values: checked on CPU, and on accelerators outside training (reading them back would
        # stall the training loop every step); never inside torch.compile.
        if n and not is_compiling() and (y.device.type == "cpu" or not self.training):
            top = self.num_classes if self.y_embedder.dropout_prob > 0 else self.num_classes - 1
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi > top:
                null = f" (or {self.num_classes}, the null label)" if top == self.num_classes else ""
                raise ValueError(f"labels must be in [0, {self.num_classes - 1}]{null}, got values in [{lo}, {hi}]")

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor,
        force_drop_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the noise (and the variance interpolation, with learned sigma) of x_t.

        x: (N, C, H, W) noisy images or latents x_t; t: (N,) timesteps (long or float);
        y: (N,) long class labels (num_classes = the null label); force_drop_ids: optional (N,),
        1 where the label is replaced by the null label (random label dropout happens only in
        training mode, self.training). Returns (N, C_out, H, W). A floating x of another dtype than
        the weights (e.g. float64) is cast to theirs; the output has the weights' dtype.
        """
        self._check_inputs(x, t, y)
        if force_drop_ids is not None and (
            not isinstance(force_drop_ids, torch.Tensor) or force_drop_ids.shape != y.shape
        ):
            raise ValueError(
                f"force_drop_ids must be a tensor of shape (N,) = {tuple(y.shape)} like y, got "
                f"{getattr(force_drop_ids, 'shape', type(force_drop_ids))}"
            )
        x = x.to(self.pos_embed.dtype)  # a no-op for the usual fp32 input (autocast decides the matmul dtype)
        x = self.x_embedder(x) + self.pos_embed  # (N, T, D)
        t_emb = self.t_embedder(t)  # (N, D)
        y_emb = self.y_embedder(y, self.training, force_drop_ids)  # (N, D)
        return self.forward_blocks(x, t_emb, y_emb)  # (N, C_out, H, W)

    def condition(
        self,
        x: torch.Tensor,
        t_emb: torch.Tensor,
        y_emb: torch.Tensor,
        extra_tokens: torch.Tensor | None = None,
        extra_context: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """DiT §3.2's conditioning: the sequence the blocks see and the condition c each block gets.

        x: (N, T, D) patch tokens (with positions); t_emb, y_emb: (N, D). extra_tokens: (N, T', D) more
        tokens of the sequence; extra_context: (N, T'', D) more keys/values of the cross-attention blocks
        (minidit.superres's image conditioning uses both). Returns the sequence (N, T (+ T') (+ 2), D) and
        c: (N, D) for adaLN(-Zero), (N, 2 (+ T''), D) for cross-attention, None for in-context.
        """
        if self.cond_kind == "vector":  # adaLN, adaLN-Zero
            c = t_emb + y_emb  # (N, D)
        elif self.cond_kind == "tokens":  # cross-attention: keys/values [t, y] (+ extra_context)
            c = torch.stack([t_emb, y_emb], dim=1)  # (N, 2, D)
            if extra_context is not None:
                c = torch.cat([c, extra_context], dim=1)  # (N, 2 + T'', D)
        else:  # in-context: t and y become two more tokens of the sequence
            c = None
        if extra_tokens is not None:
            x = torch.cat([x, extra_tokens], dim=1)  # (N, T + T', D)
        if self.cond_kind == "in-context":
            x = torch.cat([x, t_emb.unsqueeze(1), y_emb.unsqueeze(1)], dim=1)  # (N, T (+ T') + 2, D)
        return x, c

    def forward_blocks(
        self,
        x: torch.Tensor,
        t_emb: torch.Tensor,
        y_emb: torch.Tensor,
        extra_tokens: torch.Tensor | None = None,
        extra_context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`condition`, the blocks and the final layer: (N, T, D) patch tokens -> (N, C_out, H, W)."""
        num_tokens = x.shape[1]
        x, c = self.condition(x, t_emb, y_emb, extra_tokens, extra_context)
        for block in self.blocks:
            x = block(x, c)
        x = x[:, :num_tokens]  # drop the extra, t and y tokens -> (N, T, D)
        x = self.final_layer(x, c)  # (N, T, p*p*C_out)
        return self.unpatchify(x)  # (N, C_out, H, W)

    def forward_with_cfg(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor,
        cfg_scale: float,
        guided_channels: int | None = None,
    ) -> torch.Tensor:
        """Classifier-free guided prediction, conditional and unconditional in one batched forward.

        Unlike the official code, this takes the N samples once and doubles the batch itself
        ([x; x] with labels [y; null]), so callers never carry a doubled batch around.

        x: (N, C, H, W); t: (N,); y: (N,) labels; cfg_scale: guidance scale s (1 = conditional,
        0 = unconditional). guided_channels: how many leading eps channels are guided -- None (the
        default) guides all C of them, the standard method; 3 reproduces a known quirk of the official
        facebookresearch/DiT sampling code, which guides only the first 3 of the 4 latent channels
        (the 4th keeps the conditional eps). Learned-variance channels are never guided: they are
        always the conditional prediction. Returns (N, C_out, H, W).
        """
        if self.y_embedder.dropout_prob == 0:
            raise ValueError(
                "classifier-free guidance needs the null label: build the model with class_dropout_prob > 0"
            )
        guided = self.in_channels if guided_channels is None else guided_channels
        if not 1 <= guided <= self.in_channels:
            raise ValueError(f"guided_channels must be in [1, {self.in_channels}] or None, got {guided_channels}")
        n = x.shape[0]
        drop = (torch.arange(2 * n, device=y.device) >= n).long()  # 0: conditional half, 1: unconditional
        x2, t2, y2 = torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, y])  # (2N, ...): both halves at once
        out = self.forward(x2, t2, y2, force_drop_ids=drop)  # (2N, C_out, H, W)
        cond, uncond = out.chunk(2, dim=0)  # (N, C_out, H, W) each
        eps = cfg_combine(cond[:, :guided], uncond[:, :guided], cfg_scale)  # (N, guided, H, W)
        return torch.cat([eps, cond[:, guided:]], dim=1)  # (N, C_out, H, W)


# --------------------------------------------------------------------------------------------------
# configs (DiT Table 1) and the registry
# --------------------------------------------------------------------------------------------------

# size -> (depth, hidden_size D, num_heads). S/B/L/XL from DiT Table 1; "T" (tiny) is ours, for CPUs.
SIZES: dict[str, dict[str, int]] = {
    "T": dict(depth=4, hidden_size=128, num_heads=4),
    "S": dict(depth=12, hidden_size=384, num_heads=6),
    "B": dict(depth=12, hidden_size=768, num_heads=12),
    "L": dict(depth=24, hidden_size=1024, num_heads=16),
    "XL": dict(depth=28, hidden_size=1152, num_heads=16),
}
PATCH_SIZES: dict[str, tuple[int, ...]] = {"T": (2, 4), "S": (2, 4, 8), "B": (2, 4, 8), "L": (2, 4, 8), "XL": (2, 4, 8)}


def _make_config(size: str, patch_size: int):
    preset = dict(SIZES[size], patch_size=patch_size)

    def build(**kwargs) -> DiT:
        return DiT(**{**preset, **kwargs})  # keyword arguments override the preset (e.g. depth in tests)

    build.__name__ = f"DiT_{size}_{patch_size}"
    build.__doc__ = (
        f"DiT-{size}/{patch_size}: depth {preset['depth']}, D = {preset['hidden_size']}, "
        f"{preset['num_heads']} heads, p = {patch_size}."
    )
    build.preset = preset
    return build


DiT_models = {
    f"DiT-{size}/{p}": _make_config(size, p) for size in ("XL", "L", "B", "S", "T") for p in PATCH_SIZES[size]
}


def create_model(name: str, **kwargs) -> DiT:
    """Build a config by name, e.g. create_model("DiT-S/2", input_size=32, in_channels=1, num_classes=10)."""
    if name not in DiT_models:
        raise ValueError(f"unknown model {name!r}; expected one of {list(DiT_models)}")
    model = DiT_models[name](**kwargs)
    model.name = name
    return model


_ARGS = (
    "input_size",
    "patch_size",
    "in_channels",
    "hidden_size",
    "depth",
    "num_heads",
    "mlp_ratio",
    "class_dropout_prob",
    "num_classes",
    "learn_sigma",
    "block",
)


def model_config(model: DiT) -> dict:
    """The JSON-able arguments that rebuild ``model`` (checkpoint metadata): {"model": name, **DiT args}.

    "model" is the config name when the model came from create_model (or matches a preset), else None.
    """
    config = {name: getattr(model, name) for name in _ARGS}
    name = model.name
    if name is None:
        for candidate, build in DiT_models.items():
            if all(config[k] == v for k, v in build.preset.items()):
                name = candidate
                break
    return {"model": name, **config}


def model_from_config(config: dict) -> DiT:
    """Inverse of ``model_config``: a freshly initialised DiT with the same architecture."""
    kwargs = {k: v for k, v in config.items() if k != "model"}
    name = config.get("model")
    return create_model(name, **kwargs) if name else DiT(**kwargs)
