"""ex14: the EMA update (about 10 minutes).

DiT samples from an exponential moving average of the weights, decay 0.9999, updated after every
optimiser step (DiT §4 "Training"; ADM):

    ema <- decay * ema + (1 - decay) * theta

The average has no gradient and changes in place: the EMA model's tensors stay the same objects.
minidit's version does the same arithmetic in one multi-tensor call (torch._foreach_lerp_).

Write update_ema, then check it:   pytest exercises -k ex14
Notebook: 08_train_dit_and_ablation.   minidit's version: minidit/ema.py
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def update_ema(ema_model: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, for every parameter, in place.

    Args:
        ema_model: the averaged copy (same architecture as model); changed in place.
        model: the model being trained; not changed.
        decay: in [0, 1]; 0 copies the model into the EMA, 1 leaves the EMA as it is.

    Returns:
        None. Buffers (e.g. BatchNorm statistics; DiT has none) are copied, not averaged.

    Hint: pair the parameters by name (named_parameters); tensor.mul_(a).add_(b, alpha=w) works in place.
    """
    ema_params = dict(ema_model.named_parameters())
    for name, weight in model.named_parameters():
        ema_params[name].mul_(decay).add_(weight, alpha=1 - decay)
    for ema_buffer, buffer in zip(ema_model.buffers(), model.buffers()):
        ema_buffer.copy_(buffer)
