"""ex03: the epsilon-MSE training loss, L_simple (about 15 minutes).

DDPM trains a network eps_theta(x_t, t) to predict the noise that made x_t, with the plain mean
squared error ("L_simple", DDPM Eq. 14 and Algorithm 1). DiT keeps this loss for the mean and adds
the variational bound only to learn the variance (DiT §3.1, Improved DDPM §3.1), so a learned-sigma
model returns 2C channels and only the first C of them are the eps prediction.

Write the two functions, then check them:   pytest exercises -k ex03
Notebook: 02_loss_and_reverse_process.   minidit's version: minidit/diffusion.py (epsilon_mse_loss, training_losses)
"""

from __future__ import annotations

import torch

from minidit import diffusion


def epsilon_mse_loss(model_output_eps: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """L_simple (DDPM Eq. 14): the squared error between predicted and true noise, one number per example.

    Args:
        model_output_eps: (N, C, H, W) the model's prediction of the noise (any (N, ...) works).
        noise: (N, C, H, W) the noise eps that was used to make x_t.

    Returns:
        (N,) the mean of (noise - model_output_eps) ** 2 over every dimension but the batch.

    Hint: mean, not sum, so that the loss does not grow with the image size; keep dimension 0.
    """
    raise NotImplementedError("ex03: epsilon_mse_loss")


def simple_training_loss(model, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                         alphas_cumprod: torch.Tensor, model_kwargs: dict | None = None) -> torch.Tensor:
    """One evaluation of DDPM's training objective (Algorithm 1, lines 3-5) for given t and noise.

    Args:
        model: callable model(x_t, t, **model_kwargs) -> (N, C, H, W), or (N, 2C, H, W) for a
            learned-sigma DiT, whose first C channels are the eps prediction.
        x_start: (N, C, H, W) clean images x_0.
        t: (N,) long timesteps.
        noise: (N, C, H, W) eps.
        alphas_cumprod: (num_timesteps,).
        model_kwargs: extra keyword arguments for the model, e.g. {"y": labels}.

    Returns:
        (N,) L_simple per example.

    Hint: three lines: diffusion.q_sample (ex02; call it through the module so the course switch
    applies), the model, epsilon_mse_loss on the first C channels of the output.
    """
    raise NotImplementedError("ex03: simple_training_loss")
