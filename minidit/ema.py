"""Exponential moving average (EMA) of the model weights (DiT §4 "Training", ADM).

DiT samples from an EMA copy of the weights, decay 0.9999, updated after every optimiser step:

    ema <- decay * ema + (1 - decay) * theta   ==   lerp(ema, theta, 1 - decay)

The official code loops over the parameters one by one (two small kernels per tensor, ~300 kernel
launches a step for DiT-S/2). `update_ema` does the same arithmetic with one multi-tensor
("foreach") call: `torch._foreach_lerp_`. The course's EMA exercise (ex14) mirrors this function.

With decay 0.9999 the EMA averages over ~10,000 steps, so after a short run (a few thousand steps)
it still holds a large share of the random initial weights: after n steps their weight is
decay**n (0.9999**5000 = 0.61). `ema_decay_with_warmup(..., warmup="ema_warmup")` ramps the
decay up as min(decay, (1 + step) / (10 + step)) -- the `num_updates` rule of TensorFlow's
ExponentialMovingAverage -- so short runs get a useful EMA. It is off by default, as in the paper.
"""

from __future__ import annotations

import torch
from torch import nn

WARMUPS = ("none", "ema_warmup")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under DistributedDataParallel (`.module`) and torch.compile (`._orig_mod`)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def _paired_tensors(ema_model: nn.Module, model: nn.Module) -> tuple[list, list]:
    ema_params = list(ema_model.parameters())
    params = list(model.parameters())
    if len(ema_params) != len(params):
        raise ValueError(
            f"EMA model has {len(ema_params)} parameter tensors but the model has {len(params)}: "
            "the EMA must be a copy of the same architecture"
        )
    return ema_params, params


@torch.no_grad()
def update_ema(ema_model: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, for every parameter, in place, in one foreach call.

    ema_model, model: the same architecture (DDP / torch.compile wrappers are looked through).
    decay: in [0, 1]; 0 copies the model into the EMA (how training starts), 1 freezes the EMA.
    Buffers (DiT has none) are copied.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
    ema_model, model = unwrap_model(ema_model), unwrap_model(model)
    ema_params, params = _paired_tensors(ema_model, model)
    if ema_params:
        # lerp(a, b, w) = a + w (b - a) = (1 - w) a + w b, with w = 1 - decay.
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
    for ema_buffer, buffer in zip(ema_model.buffers(), model.buffers()):
        ema_buffer.copy_(buffer)


@torch.no_grad()
def update_ema_loop(ema_model: nn.Module, model: nn.Module, decay: float) -> None:
    """The official DiT update, one parameter at a time (the baseline `minidit.bench` times).

    Same arguments and result as `update_ema`, up to float rounding.
    """
    ema_params, params = _paired_tensors(unwrap_model(ema_model), unwrap_model(model))
    for ema_param, param in zip(ema_params, params):
        ema_param.mul_(decay).add_(param.data, alpha=1 - decay)


def ema_decay_with_warmup(step: int, decay: float = 0.9999, warmup: str = "none") -> float:
    """The EMA decay to use after optimiser step `step` (0-based).

    warmup: "none" -> `decay` at every step (the paper);
            "ema_warmup" -> min(decay, (1 + step) / (10 + step)): 0.1 at step 0, 0.9 at step 80,
            0.99 at step 890, reaching 0.9999 only after ~90,000 steps -- so a run of a few
            thousand steps averages over its recent past instead of its random initialisation.
    """
    if warmup not in WARMUPS:
        raise ValueError(f"unknown EMA warm-up {warmup!r}; expected one of {WARMUPS}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if warmup == "ema_warmup":
        return min(decay, (1.0 + step) / (10.0 + step))
    return decay
