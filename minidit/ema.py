"""Exponential moving average (EMA) of the model weights (DiT §4 "Training", ADM).

DiT samples from an EMA copy of the weights, decay 0.9999, updated after every optimiser step:

    ema <- decay * ema + (1 - decay) * theta   ==   lerp(ema, theta, 1 - decay)

The official code loops over the parameters one by one (two small kernels per tensor, ~300 kernel
launches a step for DiT-S/2). `update_ema` does the same arithmetic with one multi-tensor
("foreach") call: `torch._foreach_lerp_`. The course's EMA exercise (ex14) mirrors this function.

With the paper's constant decay 0.9999 the EMA averages over ~10,000 steps, so after a short run
(a few thousand steps) it still holds a large share of the random initial weights: after n steps
their weight is decay**n (0.9999**5000 = 0.61), and samples from it are noise. minidit therefore
ramps the decay up by default, as min(decay, (1 + step) / (10 + step)) -- the `num_updates` rule
of TensorFlow's ExponentialMovingAverage -- which is safe for any run length and reaches the
paper's 0.9999 after ~90,000 steps. `warmup="none"` (`--ema-warmup none`) is the paper's constant
decay. `ema_stats` says how much of the initialisation an EMA still holds, and over how many recent
steps it averages; checkpoints record it and `minidit.sample` warns when the EMA is still young.
"""

from __future__ import annotations

import math

import torch
from torch import nn

WARMUPS = ("none", "ema_warmup")
DEFAULT_WARMUP = "ema_warmup"  # "none" is the paper's constant decay
# An EMA that still holds more than this share of its random initialisation samples noise-like images.
YOUNG_EMA_INIT_SHARE = 0.1


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
    """The official DiT update, one parameter at a time (the baseline `minidit.tools.bench` times).

    Same arguments and result as `update_ema`, up to float rounding.
    """
    ema_params, params = _paired_tensors(unwrap_model(ema_model), unwrap_model(model))
    for ema_param, param in zip(ema_params, params):
        ema_param.mul_(decay).add_(param.data, alpha=1 - decay)


def ema_decay_with_warmup(step: int, decay: float = 0.9999, warmup: str = DEFAULT_WARMUP) -> float:
    """The EMA decay to use after optimiser step `step` (0-based).

    warmup: "none" -> `decay` at every step (the paper's constant 0.9999);
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


def ema_stats(updates: int, decay: float = 0.9999, warmup: str = DEFAULT_WARMUP) -> dict:
    """What an EMA holds after `updates` optimiser steps (decays from `ema_decay_with_warmup`).

    Returns {"ema_updates", "ema_decay_last", "ema_window_steps", "ema_init_share"}:
    ema_window_steps = 1 / (1 - last decay), the number of recent steps the average effectively
    spans; ema_init_share = prod(decay_s), the weight the random initial weights still carry.
    """
    if updates < 0:
        raise ValueError(f"updates must be >= 0, got {updates}")
    if warmup not in WARMUPS:
        raise ValueError(f"unknown EMA warm-up {warmup!r}; expected one of {WARMUPS}")
    if updates == 0:
        return {"ema_updates": 0, "ema_decay_last": None, "ema_window_steps": 0.0, "ema_init_share": 1.0}
    last = ema_decay_with_warmup(updates - 1, decay, warmup)
    if warmup == "none" or decay <= 0.1:  # the ramp (1 + s) / (10 + s) starts at 0.1
        log_share = updates * math.log(decay) if decay > 0 else -math.inf
    else:
        # the ramp holds until (1 + s) / (10 + s) reaches decay, at s* = (10 decay - 1) / (1 - decay)
        ramp = min(updates, max(0, math.ceil((10 * decay - 1) / (1 - decay)))) if decay < 1 else updates
        # prod_{s<ramp} (1 + s) / (10 + s) = ramp! 9! / (ramp + 9)!, through log-gamma
        log_share = math.lgamma(ramp + 1) + math.lgamma(10) - math.lgamma(ramp + 10)
        log_share += (updates - ramp) * (math.log(decay) if decay > 0 else -math.inf)
    window = math.inf if last >= 1.0 else 1.0 / (1.0 - last)
    return {
        "ema_updates": updates,
        "ema_decay_last": last,
        "ema_window_steps": window,
        "ema_init_share": math.exp(log_share),
    }


def young_ema_message(stats: dict) -> str | None:
    """A warning with what to do when an EMA is still mostly its initialisation, else None."""
    share = stats.get("ema_init_share")
    if share is None or share <= YOUNG_EMA_INIT_SHARE:
        return None
    return (
        f"this EMA has had {stats.get('ema_updates')} updates and still holds {share:.0%} of the random "
        "initial weights, so its samples will look like noise. Train longer, train with the EMA warm-up "
        "(--ema-warmup ema_warmup, the default), or sample the raw weights (--raw / use_ema=False)"
    )
