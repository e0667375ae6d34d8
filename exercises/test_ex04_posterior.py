"""Tests for ex04 (the posterior and one DDPM step).   Run: pytest exercises -k ex04"""

import math

import torch

from exercises._testing import check, check_shape, generator

BETAS = torch.linspace(0.05, 0.3, 8, dtype=torch.float64)  # a short, coarse schedule: big, visible numbers
ABAR = torch.cumprod(1 - BETAS, 0)


def _bayes(x0: float, xt: float, t: int) -> tuple[float, float]:
    """Mean and variance of q(x_{t-1} | x_t, x_0) by completing the square (product of two Gaussians).

    q(x_{t-1} | x_0) = N(sqrt(abar_{t-1}) x0, 1 - abar_{t-1}) times q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t),
    read as a density in x_{t-1}: precisions add, and the mean is the precision-weighted average.
    """
    abar_prev, beta = float(ABAR[t - 1]), float(BETAS[t])
    precision = 1 / (1 - abar_prev) + (1 - beta) / beta
    variance = 1 / precision
    mean = variance * (math.sqrt(abar_prev) * x0 / (1 - abar_prev) + math.sqrt(1 - beta) * xt / beta)
    return mean, variance


def _inputs(seed=0, n=4):
    g = generator(seed)
    return torch.randn(n, 1, 3, 3, generator=g, dtype=torch.float64), torch.randn(n, 1, 3, 3, generator=g, dtype=torch.float64)


def test_posterior_matches_bayes_rule(impl):
    x0, xt = _inputs()
    t = torch.tensor([1, 3, 5, 7])
    mean, variance, _ = impl.q_posterior_mean_variance(x0, xt, t, BETAS, ABAR)
    expected_mean = torch.empty_like(x0)
    expected_var = torch.empty(4, 1, 1, 1, dtype=torch.float64)
    for k, step in enumerate(t.tolist()):
        expected_var[k] = _bayes(0.0, 0.0, step)[1]
        expected_mean[k] = torch.tensor([_bayes(a, b, step)[0] for a, b in zip(x0[k].flatten().tolist(), xt[k].flatten().tolist())],
                                        dtype=torch.float64).view(1, 3, 3)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), ABAR[:-1]])
    c1 = (BETAS * prev.sqrt() / (1 - ABAR))[t].view(-1, 1, 1, 1)
    c2 = ((1 - prev) * (1 - BETAS).sqrt() / (1 - ABAR))[t].view(-1, 1, 1, 1)
    c1_now = (BETAS * ABAR.sqrt() / (1 - ABAR))[t].view(-1, 1, 1, 1)
    check(mean, expected_mean, what="posterior mean", atol=1e-9, mistakes={
        "coef1 and coef2 are swapped: coef1 multiplies x_0, coef2 multiplies x_t": c2 * x0 + c1 * xt,
        "coef1 uses sqrt(alphas_cumprod_prev[t]) (step t - 1), not sqrt(alphas_cumprod[t])": c1_now * x0 + c2 * xt,
    })
    check_shape(variance, (4, 1, 1, 1), what="variance", hint="return it as (N, 1, ..., 1), broadcastable to x")
    check(variance, expected_var, what="posterior variance", atol=1e-12, mistakes={
        "that is beta_t (DDPM's upper bound); the posterior variance is beta tilde = "
        "beta_t (1 - alphas_cumprod_prev) / (1 - alphas_cumprod)": BETAS[t].view(-1, 1, 1, 1),
    })


def test_posterior_at_t0_returns_x0(impl):
    # At t = 0 nothing was noised before: the posterior is a point mass at x_0 (coef1 = 1, coef2 = 0, variance 0).
    x0, xt = _inputs(seed=1, n=2)
    t = torch.zeros(2, dtype=torch.long)
    mean, variance, log_variance = impl.q_posterior_mean_variance(x0, xt, t, BETAS, ABAR)
    check(mean, x0, what="posterior mean at t = 0", atol=1e-12,
          mistakes={"alphas_cumprod_prev[0] must be 1 (the step before t = 0 has no noise)": mean * 0})
    check(variance.flatten(), torch.zeros(2), what="posterior variance at t = 0", atol=1e-12)
    var_t1 = float(BETAS[1] * (1 - ABAR[0]) / (1 - ABAR[1]))
    assert torch.isfinite(log_variance).all(), (
        "log_variance_clipped is -inf at t = 0: use the variance at t = 1 there (ADM's clip)")
    check(log_variance.flatten(), torch.full((2,), math.log(var_t1)), what="log_variance_clipped at t = 0", atol=1e-9)


def test_log_variance_is_log_of_variance_for_t_positive(impl):
    x0, xt = _inputs(seed=2, n=3)
    t = torch.tensor([1, 4, 7])
    _, variance, log_variance = impl.q_posterior_mean_variance(x0, xt, t, BETAS, ABAR)
    check(log_variance, torch.log(variance), what="log_variance_clipped for t > 0", atol=1e-9,
          mistakes={"only t = 0 is clipped; shift nothing else": torch.log(variance).roll(1, 0)})


def test_posterior_dtype_follows_x(impl):
    x0, xt = (v.float() for v in _inputs(seed=3, n=2))
    mean, variance, log_variance = impl.q_posterior_mean_variance(x0, xt, torch.tensor([2, 6]), BETAS, ABAR)
    assert mean.dtype == torch.float32 and variance.dtype == torch.float32 and log_variance.dtype == torch.float32, (
        f"float32 images in, but got mean {mean.dtype}, variance {variance.dtype}, log_variance {log_variance.dtype}: "
        f"cast the schedule values to x_t's dtype")


def test_ddpm_step_adds_scaled_noise(impl):
    g = generator(4)
    mean, noise = torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g)
    log_var = torch.tensor([-2.0, -1.0, -4.0]).view(3, 1, 1, 1)
    out = impl.ddpm_step(mean, log_var, torch.tensor([5, 1, 9]), noise)
    std = torch.exp(0.5 * log_var)
    check(out, mean + std * noise, what="ddpm_step", atol=1e-6, mistakes={
        "exp(log_variance) is the variance; the noise is scaled by the standard deviation exp(log_variance / 2)":
            mean + torch.exp(log_var) * noise,
        "the noise is scaled by exp(log_variance / 2), not added unscaled": mean + noise,
    })


def test_ddpm_step_adds_no_noise_at_t0(impl):
    g = generator(5)
    mean, noise = torch.randn(4, 1, 4, 4, generator=g), torch.randn(4, 1, 4, 4, generator=g)
    log_var = torch.full((4, 1, 1, 1), -1.0)
    t = torch.tensor([0, 3, 0, 1])
    out = impl.ddpm_step(mean, log_var, t, noise)
    mask = (t != 0).float().view(-1, 1, 1, 1)
    check(out, mean + mask * math.exp(-0.5) * noise, what="ddpm_step", atol=1e-6, mistakes={
        "the last step (t == 0) returns the mean: no noise where t == 0 (DDPM Algorithm 2, z = 0 if t = 1)":
            mean + math.exp(-0.5) * noise,
        "no noise only where t == 0, per sample; the others get noise": mean,
    })


def test_ddpm_step_with_per_pixel_log_variance(impl):
    # A learned-sigma model gives one log variance per pixel: (N, C, H, W).
    g = generator(6)
    mean, noise, log_var = (torch.randn(2, 2, 4, 4, generator=g) for _ in range(3))
    out = impl.ddpm_step(mean, log_var, torch.tensor([3, 0]), noise)
    check(out[0], mean[0] + torch.exp(0.5 * log_var[0]) * noise[0], what="ddpm_step (sample with t = 3)", atol=1e-6)
    check(out[1], mean[1], what="ddpm_step (sample with t = 0)", atol=1e-6)


def test_agrees_with_minidit(impl, ref):
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    g = generator(7)
    x0, xt, noise = (torch.randn(5, 1, 4, 4, generator=g) for _ in range(3))
    t = torch.tensor([0, 1, 10, 500, 999])
    for name, mine, theirs in zip(("mean", "variance", "log_variance_clipped"),
                                  impl.q_posterior_mean_variance(x0, xt, t, betas, abar),
                                  ref.q_posterior_mean_variance(x0, xt, t, betas, abar)):
        check(mine, theirs, what=f"posterior {name}", atol=1e-5, rtol=1e-5)
    log_var = torch.randn(5, 1, 4, 4, generator=g)
    check(impl.ddpm_step(x0, log_var, t, noise), ref.ddpm_step(x0, log_var, t, noise), what="ddpm_step", atol=1e-6)
