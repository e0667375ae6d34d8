"""ex02: q_sample, noising an image to any step in one jump (about 15 minutes).

Adding noise step by step t times is the same, in distribution, as one Gaussian jump
(DDPM Eq. 4):  q(x_t | x_0) = N(sqrt(alphas_cumprod[t]) x_0, (1 - alphas_cumprod[t]) I),
so x_t = sqrt(alphas_cumprod[t]) x_0 + sqrt(1 - alphas_cumprod[t]) eps with eps ~ N(0, I).
This is how training draws x_t for a random t in one line (DDPM Algorithm 1).

Write q_sample, then check it:   pytest exercises -k ex02
Notebook: 01_forward_noising.   minidit's version: minidit/diffusion.py
"""

from __future__ import annotations

import torch


def q_sample(x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Sample x_t ~ q(x_t | x_0) in closed form (DDPM Eq. 4).

        x_t = sqrt(alphas_cumprod[t]) * x_start + sqrt(1 - alphas_cumprod[t]) * noise

    Args:
        x_start: (N, ...) clean images x_0, e.g. (N, C, H, W).
        t: (N,) long, one timestep per image, in [0, num_timesteps).
        noise: (N, ...) eps ~ N(0, I), the same shape as x_start.
        alphas_cumprod: (num_timesteps,) cumulative products of 1 - betas (ex01), any float dtype.

    Returns:
        x_t: (N, ...) the same shape and dtype as x_start.

    Hint: alphas_cumprod[t] has shape (N,). Give it shape (N, 1, 1, 1) (one 1 per dimension of
    x_start after the first) so that it broadcasts over each image, and cast it to x_start's dtype.
    """
    raise NotImplementedError("ex02: q_sample")
