"""SRDiT: the same DiT conditioned on a low-resolution image instead of (or beside) a class label.

Three ways to hand the low-resolution (LR) image to minidit's unchanged blocks (`cond`):

    "concat"           SR3 (Saharia et al. 2021): bicubic-upsample the LR image to 32x32 and stack it
                       onto the noisy image as extra input channels: x_embedder sees (N, 2C, H, W).
    "in-context"       the LR image's own patch tokens (its own PatchEmbed, a 2D sin-cos position aligned
                       with the high-res grid) are appended to the sequence, like DiT's in-context t/y
                       tokens, and dropped before the final layer.
    "cross-attention"  the same LR tokens extend the keys/values of the cross-attention block:
                       c = [t_emb, y_emb, lr tokens] (N, 2 + T_lr, D) (needs block="cross-attention").

The class label becomes optional (y=None -> the null label). The network still predicts the noise (and
the variance) of the C image channels only, so minidit.diffusion trains and samples it unchanged.
Exercise ex15 re-implements `concat_low_res` and `low_res_pos_embed`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from minidit import blocks as _blocks
from minidit import embeddings as _embeddings
from minidit.device import is_compiling
from minidit.model import DiT, DiT_models
from minidit.superres.degrade import upsample

CONDITIONINGS = ("concat", "in-context", "cross-attention")


def concat_low_res(x_t: torch.Tensor, low_res: torch.Tensor) -> torch.Tensor:
    """SR3's conditioning: stack the bicubic-upsampled LR image onto the noisy image, channels [x_t, LR].

    x_t: (N, C, H, W) noisy images; low_res: (N, C, h, w) LR images in [-1, 1].
    Returns (N, 2C, H, W): channels 0..C-1 are x_t, C..2C-1 are upsample(low_res, H) (bicubic, clamped).
    """
    up = upsample(low_res, x_t.shape[-1])  # (N, C, H, W)
    return torch.cat([x_t, up.to(x_t.dtype)], dim=1)  # (N, 2C, H, W)


def low_res_pos_embed(embed_dim: int, lr_grid_size: int, grid_size: int) -> np.ndarray:
    """2D sin-cos embedding of LR tokens at their place on the high-res token grid (DiT §3.2 layout).

    LR token i (along one axis) covers high-res tokens [i s, (i + 1) s), s = grid_size / lr_grid_size, so
    its position is their centre, (i + 0.5) s - 0.5 (fractional); with lr_grid_size == grid_size this is
    exactly get_2d_sincos_pos_embed. First half embeds the column, second half the row (official order).
    Returns (lr_grid_size**2, embed_dim), tokens in raster order.
    """
    if embed_dim % 4:
        raise ValueError(f"embed_dim must be divisible by 4 for a 2D sin-cos embedding, got {embed_dim}")
    pos = (np.arange(lr_grid_size, dtype=np.float64) + 0.5) * (grid_size / lr_grid_size) - 0.5  # (g,)
    rows, cols = np.divmod(np.arange(lr_grid_size**2), lr_grid_size)  # (T_lr,) each
    emb_col = _embeddings.get_1d_sincos_pos_embed_from_grid(embed_dim // 2, pos[cols])  # (T_lr, D/2)
    emb_row = _embeddings.get_1d_sincos_pos_embed_from_grid(embed_dim // 2, pos[rows])  # (T_lr, D/2)
    return np.concatenate([emb_col, emb_row], axis=1)  # (T_lr, D)


class SRDiT(DiT):
    """A DiT conditioned on a low-resolution image (and optionally a label); same blocks, same diffusion."""

    def __init__(
        self,
        cond: str = "concat",
        lr_size: int = 8,
        lr_patch_size: int | None = None,
        input_size: int = 32,
        patch_size: int = 2,
        in_channels: int = 1,
        learn_sigma: bool = True,
        num_classes: int = 10,
        class_dropout_prob: float = 0.1,
        **dit_kwargs,
    ):
        """cond: one of CONDITIONINGS; lr_size: LR image side (8 for x4, 16 for x2); lr_patch_size: patch size of
        the LR tokens (default max(1, patch_size * lr_size // input_size): an LR token covers the same image area
        as a high-res token); in_channels: C of the images; other arguments as DiT (hidden_size, depth, ...)."""
        if cond not in CONDITIONINGS:
            raise ValueError(f"unknown conditioning {cond!r}; expected one of {CONDITIONINGS}")
        if not isinstance(lr_size, int) or lr_size < 1 or input_size % lr_size:
            raise ValueError(f"lr_size must divide the image size {input_size}, got {lr_size!r}")
        if cond == "cross-attention" and dit_kwargs.get("block") != "cross-attention":
            raise ValueError(
                "cond='cross-attention' extends the cross-attention block's conditioning tokens: "
                "pass block='cross-attention'"
            )
        # SR3 widens only the input: the x_embedder takes the C noisy + C conditioning channels.
        super().__init__(
            input_size=input_size,
            patch_size=patch_size,
            in_channels=2 * in_channels if cond == "concat" else in_channels,
            learn_sigma=learn_sigma,
            num_classes=num_classes,
            class_dropout_prob=class_dropout_prob,
            **dit_kwargs,
        )
        self.cond, self.lr_size, self.image_channels = cond, lr_size, in_channels
        # ... while the output stays the noise (and variance) of the C image channels.
        self.out_channels = 2 * in_channels if learn_sigma else in_channels
        self.final_layer = _blocks.FINAL_LAYERS[self.cond_kind](self.hidden_size, patch_size, self.out_channels)
        self.lr_patch_size = None
        if cond != "concat":
            self.lr_patch_size = lr_patch_size or max(1, patch_size * lr_size // input_size)
            self.lr_embedder = _embeddings.PatchEmbed(lr_size, self.lr_patch_size, in_channels, self.hidden_size)
            num_lr = self.lr_embedder.num_patches
            self.lr_pos_embed = nn.Parameter(torch.zeros(1, num_lr, self.hidden_size), requires_grad=False)
        self.initialize_weights()  # again: the new final layer and LR embedder follow the same rules

    def initialize_weights(self) -> None:
        """DiT's rules, plus: the LR patch embedding is initialised like x_embedder and lr_pos_embed is fixed."""
        super().initialize_weights()
        if getattr(self, "lr_patch_size", None) is None:
            return  # concat (or still inside DiT.__init__)
        w = self.lr_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.lr_embedder.proj.bias)
        grid = self.input_size // self.patch_size
        pos = low_res_pos_embed(self.hidden_size, self.lr_embedder.grid_size, grid)  # (T_lr, D)
        self.lr_pos_embed.data.copy_(torch.as_tensor(pos, dtype=torch.float32).unsqueeze(0))

    def _check_sr_inputs(self, x, t, low_res, y) -> None:
        c, size = self.image_channels, self.input_size
        if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != (c, size, size):
            raise ValueError(f"x must be (N, {c}, {size}, {size}) noisy images, got {getattr(x, 'shape', type(x))}")
        n = x.shape[0]
        if not isinstance(low_res, torch.Tensor) or tuple(low_res.shape) != (n, c, self.lr_size, self.lr_size):
            raise ValueError(
                f"low_res must be (N, C, h, w) = ({n}, {c}, {self.lr_size}, {self.lr_size}), "
                f"got {getattr(low_res, 'shape', type(low_res))}"
            )
        if not isinstance(t, torch.Tensor) or t.shape != (n,):
            raise ValueError(f"t must be a tensor of shape (N,) = ({n},), got {getattr(t, 'shape', type(t))}")
        if y is None and self.y_embedder.dropout_prob == 0:
            raise ValueError("y=None means the null label, which needs class_dropout_prob > 0; pass labels y")
        if y is not None and (not isinstance(y, torch.Tensor) or y.shape != (n,) or y.dtype.is_floating_point):
            raise ValueError(f"y must be None or (N,) = ({n},) integer labels, got {getattr(y, 'shape', type(y))}")
        if y is not None and n and not is_compiling() and not 0 <= int(y.min()) <= int(y.max()) <= self.num_classes:
            raise ValueError(f"labels must be in [0, {self.num_classes}] ({self.num_classes} = null label)")

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        low_res: torch.Tensor,
        y: torch.Tensor | None = None,
        force_drop_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (N, C, H, W) noisy images x_t; t: (N,) timesteps; low_res: (N, C, h, w) LR images in [-1, 1];
        y: (N,) labels or None (the null label). Returns (N, 2C or C, H, W): eps (and v with learned sigma)."""
        self._check_sr_inputs(x, t, low_res, y)
        if y is None:
            y = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
        if self.cond == "concat":
            x = concat_low_res(x, low_res)  # (N, 2C, H, W)
        tokens = self.x_embedder(x) + self.pos_embed  # (N, T, D)
        t_emb = self.t_embedder(t)  # (N, D)
        y_emb = self.y_embedder(y, self.training, force_drop_ids)  # (N, D)
        lr_tokens = None if self.cond == "concat" else self.lr_embedder(low_res) + self.lr_pos_embed  # (N, T_lr, D)
        return self.forward_blocks(
            tokens,
            t_emb,
            y_emb,  # DiT's conditioning, plus the LR tokens
            extra_tokens=lr_tokens if self.cond == "in-context" else None,
            extra_context=lr_tokens if self.cond == "cross-attention" else None,
        )


def create_sr_model(name: str = "DiT-S/2", cond: str = "concat", lr_size: int = 8, **kwargs) -> SRDiT:
    """An SRDiT with the size of a DiT config, e.g. create_sr_model("DiT-T/4", "in-context", lr_size=8)."""
    if name not in DiT_models:
        raise ValueError(f"unknown model {name!r}; expected one of {list(DiT_models)}")
    model = SRDiT(cond=cond, lr_size=lr_size, **{**DiT_models[name].preset, **kwargs})
    model.name = name
    return model
