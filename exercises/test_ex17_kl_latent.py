"""Tests for ex17 (the reparameterised KL latent and the scale factor).   Run: pytest exercises -k ex17"""

import numpy as np
import pytest
import torch

from exercises._testing import check, check_shape, generator


def _posterior(seed=0, shape=(2, 4, 8, 8)):
    g = generator(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g) - 0.5, torch.randn(shape, generator=g)


def test_sample_posterior_formula(impl):
    mean, logvar, noise = _posterior(1)
    z = impl.sample_posterior(mean, logvar, noise)
    check_shape(z, mean.shape, what="z")
    assert torch.equal(z, impl.sample_posterior(mean, logvar, noise)), (
        "the same noise gave two different z: use the `noise` argument (draw your own only when it is None)")
    std = torch.sqrt(torch.exp(logvar))  # independent of the exp(logvar / 2) spelling
    check(z, mean + std * noise, what="z", atol=1e-5, mistakes={
        "exp(logvar) is the variance: the standard deviation is exp(logvar / 2)": mean + torch.exp(logvar) * noise,
        "logvar is a log-variance, not a standard deviation: use exp(logvar / 2)": mean + logvar * noise,
        "z = mean + std * noise: the mean is missing": std * noise,
        "the noise is scaled by the std, then added to the mean (not multiplied)": mean * std + noise,
    })


def test_sample_posterior_is_differentiable(impl):
    mean, logvar, noise = _posterior(2)
    mean.requires_grad_(True)
    logvar.requires_grad_(True)
    impl.sample_posterior(mean, logvar, noise).sum().backward()
    assert mean.grad is not None and logvar.grad is not None, (
        "z must stay differentiable in mean and logvar (that is the point of the trick): compute "
        "mean + exp(logvar / 2) * noise with tensor operations, not torch.normal or .detach()")
    check(mean.grad, torch.ones_like(mean), what="dz/dmean", atol=1e-6)
    check(logvar.grad, 0.5 * torch.exp(0.5 * logvar.detach()) * noise, what="dz/dlogvar", atol=1e-5)


def test_sample_posterior_draws_its_own_noise_from_the_generator(impl):
    mean, logvar, _ = _posterior(3)
    z = impl.sample_posterior(mean, logvar, generator=generator(7))
    expected = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator(7))
    check(z, expected, what="z drawn with noise=None", atol=1e-5, mistakes={
        "with noise=None, draw torch.randn(mean.shape, generator=generator) (not randn_like, which ignores it)":
            mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator(0)),
    })


def test_sample_posterior_has_the_posterior_moments(impl):
    mean, logvar = torch.full((40000,), 2.0), torch.full((40000,), float(np.log(0.25)))  # std 0.5
    z = impl.sample_posterior(mean, logvar, generator=generator(8))
    assert abs(z.mean().item() - 2.0) < 0.02, f"samples have mean {z.mean().item():.3f} where 2.0 was expected"
    assert abs(z.std().item() - 0.5) < 0.02, (
        f"samples have std {z.std().item():.3f} where 0.5 (= exp(log(0.25) / 2)) was expected")


def test_kl_matches_torch_distributions(impl):
    mean, logvar, _ = _posterior(4, shape=(3, 4, 2, 2))
    q = torch.distributions.Normal(mean, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    per_element = torch.distributions.kl_divergence(q, p)  # (3, 4, 2, 2)
    expected = per_element.flatten(1).sum(1)  # (3,)
    kl = impl.kl_divergence(mean, logvar)
    check(kl, expected, what="KL per example", atol=1e-4, rtol=1e-5, mistakes={
        "sum the KL over the latent (C, h, w) of each example, then return one number per example":
            per_element.flatten(1).mean(1),
        "one KL per example, shape (N,): do not also sum over the batch": per_element.sum(),
        "the closed form is (mean^2 + var - 1 - log var) / 2: the - 1 is missing": expected + 0.5 * 16,
        "the closed form has a factor 1/2": 2 * expected,
        "var = exp(logvar), not exp(logvar / 2)":
            0.5 * (mean**2 + torch.exp(0.5 * logvar) - 1 - logvar).flatten(1).sum(1),
    })


def test_kl_is_zero_only_at_the_standard_normal(impl):
    zeros = torch.zeros(2, 3, 4)
    check(impl.kl_divergence(zeros, zeros), torch.zeros(2), what="KL(N(0, 1) || N(0, 1))", atol=1e-7)
    assert (impl.kl_divergence(zeros + 0.1, zeros) > 0).all(), "a shifted mean must give a positive KL"
    assert (impl.kl_divergence(zeros, zeros + 0.1) > 0).all(), "a variance other than 1 must give a positive KL"


def test_scale_factor_is_one_over_the_std(impl):
    latents = 5.5 * torch.randn(512, 4, 8, 8, generator=generator(5)) + 2.0  # mean 2: std and RMS differ
    flat = latents.double().numpy().ravel()
    std = float(np.std(flat, ddof=1))
    scale = impl.latent_scale_factor(latents)
    assert isinstance(scale, float), f"return a Python float (tensor.item()), got {type(scale).__name__}"
    check(scale, 1 / std, what="the scale factor", atol=0, rtol=1e-4, mistakes={
        "the factor is 1 / std: it multiplies the latents to give them unit variance": std,
        "1 / std, not 1 / variance": 1 / std**2,
        "use the standard deviation (around the mean), not the root mean square": 1 / float(np.sqrt(np.mean(flat**2))),
    })
    assert abs((latents * scale).std().item() - 1) < 1e-3, "latents * scale must have standard deviation 1"


def test_scale_factor_uses_every_element(impl):
    latents = torch.randn(256, 4, 8, 8, generator=generator(6)) * torch.tensor([1.0, 2.0, 4.0, 8.0])[:, None, None]
    scale = impl.latent_scale_factor(latents)
    assert isinstance(scale, float), ("one number for all channels (the SD VAE has one, 0.18215), not one per "
                                      f"channel; got {type(scale).__name__}")
    check(scale, 1 / latents.std().item(), what="the scale factor", atol=0, rtol=1e-4, mistakes={
        "one std over all elements, not the mean of the per-channel stds":
            1 / latents.std(dim=(0, 2, 3)).mean().item(),
    })


def test_agrees_with_minidit(impl, ref):
    mean, logvar, noise = _posterior(9)
    check(impl.sample_posterior(mean, logvar, noise), ref.sample_posterior(mean, logvar, noise), what="z", atol=1e-6)
    check(impl.kl_divergence(mean, logvar), ref.kl_divergence(mean, logvar), what="KL", atol=1e-4, rtol=1e-6)
    latents = torch.randn(64, 4, 8, 8, generator=generator(10)) * 3
    assert impl.latent_scale_factor(latents) == pytest.approx(ref.latent_scale_factor(latents), rel=1e-6)
