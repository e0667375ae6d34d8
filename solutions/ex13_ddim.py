"""ex13: one DDIM step (about 25 minutes).

DDIM (Song et al. 2021) samples with the same trained network in far fewer steps. From x_t and the
predicted noise, it estimates x_0, then jumps to any earlier step t_prev (DDIM Eq. 12):

    x0     = (x_t - sqrt(1 - abar_t) * eps) / sqrt(abar_t)
    x_prev = sqrt(abar_prev) * x0 + sqrt(1 - abar_prev - sigma ** 2) * eps + sigma * z
    sigma  = eta * sqrt((1 - abar_prev) / (1 - abar_t)) * sqrt(1 - abar_t / abar_prev)     (DDIM Eq. 16)

with abar = alphas_cumprod. eta = 0 is deterministic (DDIM); eta = 1 with t_prev = t - 1 is
DDPM's ancestral step. t_prev = -1 means "all the way to x_0": abar_prev = 1.

Write ddim_step, then check it:   pytest exercises -k ex13
Notebook: 02_loss_and_reverse_process.   minidit's version: minidit/diffusion.py
"""

from __future__ import annotations

import torch


def ddim_step(x_t: torch.Tensor, eps: torch.Tensor, t, t_prev, alphas_cumprod: torch.Tensor, eta: float = 0.0,
              noise: torch.Tensor | None = None) -> torch.Tensor:
    """One DDIM step from t to t_prev < t (DDIM Eqs. 12 and 16).

    Args:
        x_t: (N, ...) samples at step t.
        eps: (N, ...) the predicted noise at (x_t, t).
        t, t_prev: (N,) long tensors or plain ints; t_prev = -1 means abar_prev = 1.
        alphas_cumprod: (num_timesteps,).
        eta: 0 for deterministic DDIM, 1 for DDPM-like noise.
        noise: (N, ...) z, used when eta > 0; drawn with torch.randn_like when None.

    Returns:
        (N, ...) x_{t_prev}.

    Hint: prepend a 1 to alphas_cumprod, so that index t + 1 gives abar_t for every t >= -1.
    Clamp 1 - abar_prev - sigma ** 2 at 0 before its square root (round-off at eta = 1).
    """
    n = x_t.shape[0]
    t = torch.as_tensor(t, device=x_t.device).long().expand(n)  # (N,)
    t_prev = torch.as_tensor(t_prev, device=x_t.device).long().expand(n)  # (N,)
    abar_padded = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod]).to(x_t.device)  # index 0 is t = -1
    shape = (-1, *([1] * (x_t.ndim - 1)))
    abar = abar_padded[t + 1].to(x_t.dtype).view(shape)  # (N, 1, 1, 1)
    abar_prev = abar_padded[t_prev + 1].to(x_t.dtype).view(shape)  # (N, 1, 1, 1)
    x0 = (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()
    sigma = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).sqrt()
    x_prev = abar_prev.sqrt() * x0 + (1 - abar_prev - sigma**2).clamp(min=0).sqrt() * eps
    if eta > 0:
        x_prev = x_prev + sigma * (torch.randn_like(x_t) if noise is None else noise)
    return x_prev
