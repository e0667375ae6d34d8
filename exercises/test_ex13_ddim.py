"""Tests for ex13 (one DDIM step).   Run: pytest exercises -k ex13"""

import math

import torch

from exercises._testing import check, generator

BETAS = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
ABAR = torch.cumprod(1 - BETAS, 0)


def _setup(seed=0, n=3):
    g = generator(seed)
    return torch.randn(n, 1, 4, 4, generator=g, dtype=torch.float64), torch.randn(n, 1, 4, 4, generator=g, dtype=torch.float64)


def _noised(x0, eps, t):
    a = ABAR[t].view(-1, 1, 1, 1)
    return a.sqrt() * x0 + (1 - a).sqrt() * eps


def test_true_noise_lands_exactly_on_q_sample(impl):
    # If eps is the noise that made x_t from x_0, deterministic DDIM (eta = 0) to t_prev gives exactly
    # q_sample(x_0, t_prev, eps): DDIM keeps the same "direction" eps all the way down.
    x0, eps = _setup()
    t, t_prev = torch.tensor([999, 500, 20]), torch.tensor([600, 499, 3])
    out = impl.ddim_step(_noised(x0, eps, t), eps, t, t_prev, ABAR)
    a_prev = ABAR[t_prev].view(-1, 1, 1, 1)
    check(out, _noised(x0, eps, t_prev), what="ddim_step with eta = 0", atol=1e-9, mistakes={
        "x_prev uses sqrt(alphas_cumprod[t_prev]) (the step you go to), not alphas_cumprod[t_prev] itself":
            a_prev * x0 + (1 - a_prev).sqrt() * eps,
        "the direction term is sqrt(1 - abar_prev - sigma^2) * eps, its square root": a_prev.sqrt() * x0 + (1 - a_prev) * eps,
        "t_prev's alphas_cumprod goes with x0 and t's with x_t, not the other way round": _noised(x0, eps, t),
    })


def test_last_step_returns_the_x0_estimate(impl):
    x0, eps = _setup(seed=1)
    t = torch.tensor([10, 300, 999])
    out = impl.ddim_step(_noised(x0, eps, t), eps, t, torch.full((3,), -1), ABAR)
    check(out, x0, what="ddim_step to t_prev = -1", atol=1e-8, mistakes={
        "t_prev = -1 means alphas_cumprod_prev = 1 (x_0 itself); alphas_cumprod[-1] is the *last* step of the "
        "schedule": _noised(x0, eps, torch.full((3,), 999)),
    }, nan_hint="t_prev = -1 must mean alphas_cumprod_prev = 1, but alphas_cumprod[-1] wraps to the *last* step "
                "(about 4e-5), so 1 - abar_t / abar_prev < 0 and sigma takes the square root of a negative number "
                "(NaN, even times eta = 0): prepend a 1 to alphas_cumprod and index it with t_prev + 1")


def test_integer_steps(impl):
    x0, eps = _setup(seed=2, n=2)
    t = torch.full((2,), 700)
    out = impl.ddim_step(_noised(x0, eps, t), eps, 700, 400, ABAR)
    check(out, _noised(x0, eps, torch.full((2,), 400)), what="ddim_step(x_t, eps, 700, 400, ...)", atol=1e-9)


def test_eta_one_is_the_ddpm_posterior_noise(impl):
    # With eta = 1 and t_prev = t - 1, sigma^2 equals DDPM's posterior variance beta tilde (DDIM §4.1).
    x0, eps = _setup(seed=3)
    z = torch.randn(3, 1, 4, 4, generator=generator(4), dtype=torch.float64)
    t = torch.tensor([1, 100, 999])
    x_t = _noised(x0, eps, t)
    with_noise = impl.ddim_step(x_t, eps, t, t - 1, ABAR, eta=1.0, noise=z)
    without = impl.ddim_step(x_t, eps, t, t - 1, ABAR, eta=1.0, noise=torch.zeros_like(z))
    beta_tilde = BETAS[t] * (1 - ABAR[t - 1]) / (1 - ABAR[t])
    check(with_noise - without, beta_tilde.sqrt().view(-1, 1, 1, 1) * z, what="sigma * z at eta = 1", atol=1e-9,
          mistakes={"sigma = eta * sqrt((1 - abar_prev) / (1 - abar)) * sqrt(1 - abar / abar_prev), a standard "
                    "deviation: you used its square": beta_tilde.view(-1, 1, 1, 1) * z})
    # And the mean part: sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps.
    a_prev = ABAR[t - 1].view(-1, 1, 1, 1)
    expected_mean = a_prev.sqrt() * x0 + (1 - a_prev - beta_tilde.view(-1, 1, 1, 1)).clamp(min=0).sqrt() * eps
    check(without, expected_mean, what="ddim_step at eta = 1 without noise", atol=1e-9, mistakes={
        "with eta > 0 the eps direction shrinks to sqrt(1 - abar_prev - sigma^2)":
            a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps})


def test_eta_zero_ignores_noise_and_keeps_dtype(impl):
    x0, eps = (v.float() for v in _setup(seed=5, n=2))
    t = torch.tensor([50, 60])
    x_t = _noised(x0.double(), eps.double(), t).float()
    a = impl.ddim_step(x_t, eps, t, t - 10, ABAR, eta=0.0, noise=torch.ones_like(x_t))
    b = impl.ddim_step(x_t, eps, t, t - 10, ABAR, eta=0.0)
    check(a, b, what="ddim_step with eta = 0 and some noise", atol=0)
    assert a.dtype == torch.float32, f"float32 in, {a.dtype} out: cast the schedule to x_t's dtype"


def test_agrees_with_minidit(impl, ref):
    g = generator(6)
    x_t, eps, z = (torch.randn(4, 2, 4, 4, generator=g) for _ in range(3))
    t, t_prev = torch.tensor([999, 500, 10, 1]), torch.tensor([979, 250, -1, 0])
    for eta in (0.0, 0.5, 1.0):
        check(impl.ddim_step(x_t, eps, t, t_prev, ABAR, eta=eta, noise=z),
              ref.ddim_step(x_t, eps, t, t_prev, ABAR, eta=eta, noise=z), what=f"ddim_step (eta = {eta})",
              atol=1e-4, rtol=1e-4)
    assert math.isfinite(float(impl.ddim_step(x_t, eps, t, t_prev, ABAR, eta=1.0, noise=z).abs().max()))
