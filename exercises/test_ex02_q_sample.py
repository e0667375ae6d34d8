"""Tests for ex02 (q_sample).   Run: pytest exercises -k ex02"""

import math

import pytest
import torch

from exercises._testing import check, generator

# A small hand-made schedule with round numbers: alphas_cumprod = 0.64 at t = 1, 0.25 at t = 3.
ABAR = torch.tensor([0.99, 0.64, 0.5, 0.25, 0.01], dtype=torch.float64)


def test_without_noise_x_start_is_scaled_by_sqrt_abar(impl):
    x0 = torch.randn(5, 1, 4, 4, generator=generator(0))
    t = torch.arange(5)
    x_t = impl.q_sample(x0, t, torch.zeros_like(x0), ABAR)
    scale = ABAR.float().view(-1, 1, 1, 1)
    shifted = ABAR.float()[t - 1].view(-1, 1, 1, 1)  # t - 1 = -1 at t = 0 reads the last entry
    check(x_t, scale.sqrt() * x0, what="q_sample(x0, t, noise=0)", atol=1e-6, mistakes={
        "alphas_cumprod[t - 1] was used (off by one): t is already the 0-based index of the step, "
        "so use alphas_cumprod[t]": shifted.sqrt() * x0,
        "x_0 is multiplied by alphas_cumprod itself; it needs its square root, sqrt(alphas_cumprod[t])": scale * x0,
        "the coefficients are swapped: x_0 gets sqrt(alphas_cumprod), the noise sqrt(1 - alphas_cumprod)":
            (1 - scale).sqrt() * x0,
        "every image used the timestep of the first one: index alphas_cumprod with the whole vector t":
            math.sqrt(0.99) * x0,
    })


@pytest.mark.parametrize("t_value", [1, 3])
def test_noise_part_has_variance_one_minus_abar(impl, t_value):
    # With x_0 = 0, x_t = sqrt(1 - abar) eps has variance 1 - abar: 0.36 at t = 1, 0.75 at t = 3.
    noise = torch.randn(4, 1, 32, 32, generator=generator(1), dtype=torch.float64)
    noise = (noise - noise.mean()) / noise.std()  # exactly unit variance, so the numbers below are exact
    x_t = impl.q_sample(torch.zeros_like(noise), torch.full((4,), t_value), noise, ABAR)
    abar = float(ABAR[t_value])
    expected, got = 1 - abar, float(x_t.var())
    guesses = {
        1 - float(ABAR[t_value - 1]): "the variance is 1 - alphas_cumprod[t - 1] (off by one): t is already the "
                                      "0-based index of the step, so use alphas_cumprod[t]",
        1 - float(ABAR[t_value + 1]): "the variance is 1 - alphas_cumprod[t + 1] (off by one): use alphas_cumprod[t]",
        abar: "the coefficients are swapped: the noise gets sqrt(1 - alphas_cumprod)",
        (1 - abar) ** 2: "did you use 1 - alphas_cumprod instead of its square root?",
        1 - abar**2: "did you use sqrt(1 - alphas_cumprod ** 2)? It is sqrt(1 - alphas_cumprod)",
        1.0: "the noise is not scaled at all: multiply it by sqrt(1 - alphas_cumprod[t])",
    }
    if abs(got - expected) > 1e-6:
        hint = next((h for v, h in guesses.items() if abs(got - v) < 1e-6),
                    "the noise is multiplied by sqrt(1 - alphas_cumprod[t]): check that factor and the index t")
        raise AssertionError(f"with x_0 = 0, x_t has variance {got:.4g} where {expected:.4g} was expected: {hint}")


def test_closed_form_per_sample(impl):
    g = generator(2)
    x0, noise = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 4, 4, generator=g)
    t = torch.tensor([4, 0, 2])
    x_t = impl.q_sample(x0, t, noise, ABAR)
    expected = torch.stack([math.sqrt(ABAR[i]) * x0[k] + math.sqrt(1 - ABAR[i]) * noise[k] for k, i in enumerate(t.tolist())])
    shifted = torch.stack([math.sqrt(ABAR[i - 1]) * x0[k] + math.sqrt(1 - ABAR[i - 1]) * noise[k]
                           for k, i in enumerate(t.tolist())])
    noise_no_sqrt = torch.stack([math.sqrt(ABAR[i]) * x0[k] + (1 - ABAR[i]) * noise[k] for k, i in enumerate(t.tolist())])
    check(x_t, expected, what="q_sample", atol=1e-6, mistakes={
        "alphas_cumprod[t - 1] was used; index it with t itself": shifted,
        "the noise is multiplied by 1 - alphas_cumprod; it needs the square root, sqrt(1 - alphas_cumprod[t])":
            noise_no_sqrt,
    })


def test_keeps_shape_and_dtype_for_any_rank(impl):
    # float32 images with a float64 schedule come back float32; (N, D) inputs work too.
    for shape in [(4, 1, 8, 8), (4, 3), (4, 2, 3, 5, 5)]:
        x0 = torch.randn(shape, generator=generator(3))
        x_t = impl.q_sample(x0, torch.tensor([0, 1, 2, 3]), torch.ones_like(x0), ABAR)
        assert x_t is not None, "q_sample returned None: did you forget to `return` x_t?"
        assert tuple(x_t.shape) == shape, (
            f"for x_start of shape {shape} x_t has shape {tuple(x_t.shape)}: reshape alphas_cumprod[t] to "
            f"(N, 1, ..., 1) with one 1 per dimension after the first")
        assert x_t.dtype == torch.float32, f"x_t has dtype {x_t.dtype}; cast alphas_cumprod[t] to x_start's dtype"


def test_endpoints_of_a_real_schedule(impl):
    # With DDPM's 1000 linear steps, t = 0 keeps almost all of x_0 and t = 999 is almost pure noise.
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    g = generator(4)
    x0, noise = torch.randn(2, 1, 8, 8, generator=g), torch.randn(2, 1, 8, 8, generator=g)
    x_t = impl.q_sample(x0, torch.tensor([0, 999]), noise, abar)
    check(x_t[0], x0[0], what="x_t at t = 0", atol=0.05)
    check(x_t[1], noise[1], what="x_t at t = 999", atol=0.05)


def test_agrees_with_minidit(impl, ref):
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    g = generator(5)
    x0, noise = torch.randn(6, 1, 8, 8, generator=g), torch.randn(6, 1, 8, 8, generator=g)
    t = torch.randint(0, 1000, (6,), generator=g)
    check(impl.q_sample(x0, t, noise, abar), ref.q_sample(x0, t, noise, abar), what="q_sample", atol=1e-6)
