"""ex17: the reparameterised KL latent and the latent scale factor (about 20 minutes).

DiT diffuses the latents of a frozen autoencoder (DiT §3.1, "Latent diffusion models"): the encoder of
a KL autoencoder (Rombach et al. 2022, LDM §3; the Stable Diffusion VAE) outputs, for each latent
element, the mean and log-variance of a Gaussian q(z | x) = N(mean, exp(logvar)). Three small pieces:

    z = mean + exp(logvar / 2) * noise,  noise ~ N(0, I)             (reparameterisation; Kingma & Welling
                                                                        2014, §2.4: z is differentiable)
    KL(q || N(0, I)) = 1/2 sum(mean^2 + exp(logvar) - 1 - logvar)     (closed form, summed per example)
    scale_factor = 1 / std(latents)                                  (SD's 0.18215 = 1 / 5.49)

Diffusion's noise schedule assumes data of unit variance, so DiT trains on z * scale_factor and the
decoder receives samples / scale_factor.

Write the three functions, then check them:   pytest exercises -k ex17
Notebook: 10_latent_diffusion.   minidit's version: minidit/latent.py
"""

from __future__ import annotations

import torch


def sample_posterior(mean: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor | None = None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw z ~ N(mean, exp(logvar)) by the reparameterisation trick.

    Args:
        mean: (N, C, h, w) the posterior's means.
        logvar: (N, C, h, w) the log of its variances.
        noise: (N, C, h, w) standard normal noise; None draws it with torch.randn from `generator`
            (on the generator's device, then moved to mean's device).

    Returns:
        z: (N, C, h, w), differentiable with respect to mean and logvar.

    Hint: the standard deviation is exp(logvar / 2), not exp(logvar).
    """
    raise NotImplementedError("ex17: sample_posterior")


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) per example.

    Args:
        mean, logvar: (N, ...) the posterior's parameters.

    Returns:
        (N,) the KL of each example: the per-element KL summed over every dimension but the first.

    Hint: per element, (mean^2 + var - 1 - log var) / 2; it is 0 exactly when mean = 0 and var = 1.
    """
    raise NotImplementedError("ex17: kl_divergence")


def latent_scale_factor(latents: torch.Tensor) -> float:
    """The number that gives the latents unit variance: 1 / (standard deviation of all their elements).

    Args:
        latents: (N, C, h, w) encoder outputs (any shape works: every element counts).

    Returns:
        A Python float; latents * latent_scale_factor(latents) has std 1.

    Hint: one std over all elements (not per channel, not the variance); .item() gives the float.
    """
    raise NotImplementedError("ex17: latent_scale_factor")
