"""Tests for ex01 (noise schedules and alphas_cumprod).   Run: pytest exercises -k ex01"""

import math

import numpy as np
import torch

from exercises._testing import check, generator


def _f(u: float, s: float = 0.008) -> float:
    return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2


def test_linear_schedule_1000_steps(impl):
    betas = impl.linear_beta_schedule(1000)
    check(betas, np.linspace(1e-4, 0.02, 1000), what="linear_beta_schedule(1000)", atol=1e-12,
          mistakes={"it should hold 1000 values from 1e-4 to 0.02 (torch.linspace includes both ends)":
                    np.linspace(1e-4, 0.02, 1001)[:-1]})
    assert betas.dtype == torch.float64, (
        f"betas have dtype {betas.dtype}; use float64 (alphas_cumprod multiplies 1000 numbers close to 1)")


def test_linear_schedule_is_rescaled_for_fewer_steps(impl):
    betas = impl.linear_beta_schedule(250)
    check(betas, np.linspace(4e-4, 0.08, 250), what="linear_beta_schedule(250)", atol=1e-12,
          mistakes={"beta_start and beta_end are for 1000 steps: multiply both by scale = 1000 / num_timesteps":
                    np.linspace(1e-4, 0.02, 250)})
    # The point of the rescaling: a 250-step process ends about as noisy as the 1000-step one.
    end_250 = float(torch.prod(1 - betas))
    assert end_250 < 1e-3, f"after 250 rescaled steps alphas_cumprod is {end_250:.3g}; it should be near 0"


def test_linear_schedule_custom_ends(impl):
    betas = impl.linear_beta_schedule(100, beta_start=1e-3, beta_end=1e-2)
    check(betas, np.linspace(1e-2, 1e-1, 100), what="linear_beta_schedule(100, 1e-3, 1e-2)", atol=1e-12,
          mistakes={"use the beta_start and beta_end arguments, not fixed numbers": np.linspace(1e-3, 0.2, 100)})


def test_cosine_schedule_closed_form(impl):
    n = 50
    expected = [min(1 - _f((i + 1) / n) / _f(i / n), 0.999) for i in range(n)]
    betas = impl.cosine_beta_schedule(n)
    check(betas, expected, what="cosine_beta_schedule(50)", atol=1e-10, mistakes={
        "f(u) is the *squared* cosine (IDDPM Eq. 17)":
            [min(1 - math.sqrt(_f((i + 1) / n)) / math.sqrt(_f(i / n)), 0.999) for i in range(n)],
        "clip each beta at max_beta": [1 - _f((i + 1) / n) / _f(i / n) for i in range(n)],
        "betas[i] = 1 - f((i + 1) / n) / f(i / n): i / n, not i, inside f":
            [min(1 - _f(i + 1) / _f(i), 0.999) for i in range(n)],
    })
    assert betas.dtype == torch.float64, f"betas have dtype {betas.dtype}; use float64"


def test_cosine_alphas_cumprod_follows_f(impl):
    # An invariant rather than the formula: the product of (1 - beta) telescopes to f(t) / f(0).
    n = 100
    betas = impl.cosine_beta_schedule(n, max_beta=1.0)
    abar = torch.cumprod(1 - betas.double(), 0)
    expected = [_f((i + 1) / n) / _f(0) for i in range(n)]
    check(abar[:-1], expected[:-1], what="cumprod(1 - cosine betas)", atol=1e-9,
          mistakes={"f(u) needs the offset s: cos((u + s) / (1 + s) * pi / 2) ** 2": [
              math.cos((i + 1) / n * math.pi / 2) ** 2 for i in range(n - 1)]})


def test_cosine_schedule_is_clipped(impl):
    betas = impl.cosine_beta_schedule(1000)
    assert float(betas.max()) <= 0.999 + 1e-12, f"the largest beta is {float(betas.max()):.6f}; clip at max_beta"
    assert abs(float(betas[-1]) - 0.999) < 1e-12, "the last beta should be clipped to max_beta = 0.999"
    low = impl.cosine_beta_schedule(20, max_beta=0.5)
    assert abs(float(low.max()) - 0.5) < 1e-12, "use the max_beta argument for the clip"


def test_alphas_cumprod_closed_form(impl):
    betas = torch.rand(20, generator=generator(1), dtype=torch.float64) * 0.1
    expected, running = [], 1.0
    for b in betas.tolist():
        running *= 1 - b
        expected.append(running)
    abar = impl.compute_alphas_cumprod(betas)
    check(abar, expected, what="compute_alphas_cumprod(betas)", atol=1e-12, mistakes={
        "alphas are 1 - betas: take the cumulative product of 1 - betas, not of betas": torch.cumprod(betas, 0),
        "a cumulative *product* (torch.cumprod), not a sum": 1 - torch.cumsum(betas, 0),
        "off by one: alphas_cumprod[0] is 1 - betas[0]; the version starting at 1 is alphas_cumprod_prev":
            [1.0] + expected[:-1],
        "no square root here; q_sample takes it later": [math.sqrt(v) for v in expected],
    })
    assert abar.dtype == betas.dtype, f"alphas_cumprod should keep the dtype of betas ({betas.dtype}), got {abar.dtype}"


def test_alphas_cumprod_of_linear_schedule(impl):
    abar = impl.compute_alphas_cumprod(impl.linear_beta_schedule(1000))
    assert abar.shape == (1000,), f"alphas_cumprod has shape {tuple(abar.shape)} where (1000,) was expected"
    assert bool((abar[1:] < abar[:-1]).all()), "alphas_cumprod must decrease with t"
    # Closed form of the DDPM schedule's end points (a known value: about 4e-5 at t = 999).
    assert abs(float(abar[0]) - (1 - 1e-4)) < 1e-12, f"alphas_cumprod[0] = {float(abar[0])}, expected 1 - 1e-4"
    assert 3e-5 < float(abar[-1]) < 5e-5, f"alphas_cumprod[999] = {float(abar[-1]):.3g}, expected about 4.0e-5"


def test_agrees_with_minidit(impl, ref):
    for n in (1000, 100):
        check(impl.linear_beta_schedule(n), ref.linear_beta_schedule(n), what=f"linear_beta_schedule({n})", atol=1e-12)
        check(impl.cosine_beta_schedule(n), ref.cosine_beta_schedule(n), what=f"cosine_beta_schedule({n})", atol=1e-12)
    betas = ref.cosine_beta_schedule(100)
    check(impl.compute_alphas_cumprod(betas), ref.compute_alphas_cumprod(betas), what="compute_alphas_cumprod",
          atol=1e-12)
