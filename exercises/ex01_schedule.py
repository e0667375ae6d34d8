"""ex01: noise schedules and alphas_cumprod (about 20 minutes).

The forward process adds Gaussian noise in num_timesteps small steps of variance betas[t]
(DDPM §2, Eq. 2). How much of the image survives t + 1 of those steps is
alphas_cumprod[t] = prod_{s <= t} (1 - betas[s]) (DDPM, just above Eq. 4); nearly everything the
diffusion code does is read off this one curve. DDPM used a linear schedule, Improved DDPM a
cosine one that destroys information more slowly at first (IDDPM §3.2); DiT trains with the linear one.

Write the three functions below, then check them:   pytest exercises -k ex01
Notebook: 01_forward_noising.   minidit's version: minidit/diffusion.py
"""

from __future__ import annotations

import math

import torch


def linear_beta_schedule(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """The linear schedule of DDPM (§4), rescaled for any number of steps as ADM does.

    Args:
        num_timesteps: the number of diffusion steps.
        beta_start, beta_end: the first and last beta *for 1000 steps* (DDPM's values). For another
            number of steps both are multiplied by scale = 1000 / num_timesteps, so that a shorter
            process still ends close to pure noise.

    Returns:
        betas: (num_timesteps,) float64, evenly spaced from scale * beta_start to scale * beta_end.

    Hint: torch.linspace takes a dtype. Why float64? alphas_cumprod multiplies 1000 numbers close to 1.
    """
    raise NotImplementedError("ex01: linear_beta_schedule")


def cosine_beta_schedule(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """The cosine schedule of Improved DDPM (§3.2, Eq. 17).

    It defines alphas_cumprod directly through f(u) = cos((u + s) / (1 + s) * pi / 2) ** 2 for
    u = t / num_timesteps in [0, 1], and reads each beta off the ratio of neighbours:

        betas[i] = min(1 - f((i + 1) / num_timesteps) / f(i / num_timesteps), max_beta)

    (the clip stops the last betas from reaching 1 as f goes to 0 at u = 1).

    Args:
        num_timesteps: the number of diffusion steps.
        s: a small offset so that the first betas are not vanishingly small (IDDPM §3.2).
        max_beta: the largest beta allowed.

    Returns:
        betas: (num_timesteps,) float64.

    Hint: evaluate f once on the num_timesteps + 1 points u = 0, 1/num_timesteps, ..., 1, then divide
    neighbours.
    """
    raise NotImplementedError("ex01: cosine_beta_schedule")


def compute_alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """alphas_cumprod[t] = prod_{s <= t} (1 - betas[s])  (DDPM, the line above Eq. 4: "alpha-bar").

    Args:
        betas: (num_timesteps,) the noise variances of the steps.

    Returns:
        alphas_cumprod: (num_timesteps,) same dtype as betas; decreasing, alphas_cumprod[0] = 1 - betas[0].

    Hint: alphas = 1 - betas; torch has a cumulative product.
    """
    raise NotImplementedError("ex01: compute_alphas_cumprod")
