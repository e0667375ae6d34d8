"""Tests of minidit.diffusion against independent oracles: float64 numpy schedules, Bayes' rule, numerical
integration (scipy), closed-form Gaussian facts and Monte Carlo moments -- never minidit against itself."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

import minidit.diffusion as D

# The oracle schedule, written out from DDPM §4 in numpy float64.
BETAS = np.linspace(1e-4, 0.02, 1000)
ABAR = np.cumprod(1.0 - BETAS)
ABAR_PREV = np.concatenate([[1.0], ABAR[:-1]])


def gaussian_posterior(x0, xt, abar_prev, beta):
    """q(x_{t-1} | x_t, x_0) by multiplying two Gaussians in x_{t-1} (float64 numpy, abar_prev < 1):
    the prior q(x_{t-1} | x_0) = N(sqrt(abar_prev) x0, 1 - abar_prev) and the likelihood
    q(x_t | x_{t-1}) = N(sqrt(1 - beta) x_{t-1}, beta). Returns (mean, variance)."""
    prior_precision, prior_mean = 1.0 / (1.0 - abar_prev), np.sqrt(abar_prev) * x0
    like_precision, like_mean = (1.0 - beta) / beta, xt / np.sqrt(1.0 - beta)
    precision = prior_precision + like_precision
    return (prior_precision * prior_mean + like_precision * like_mean) / precision, 1.0 / precision


def bayes_posterior(x0, xt, t):
    """The posterior of the 1000-step linear process at step t >= 1."""
    return gaussian_posterior(x0, xt, ABAR[t - 1], BETAS[t])


def bcast(v, ndim=4):
    return np.asarray(v).reshape(-1, *([1] * (ndim - 1)))


# ----------------------------------------------------------------------------- schedules


def test_linear_schedule_is_ddpm_default_and_rescales_like_adm():
    betas = D.linear_beta_schedule(1000)
    assert betas.dtype == torch.float64 and betas.shape == (1000,)
    np.testing.assert_allclose(betas.numpy(), BETAS, rtol=1e-12)
    np.testing.assert_allclose(D.linear_beta_schedule(250).numpy(), np.linspace(4e-4, 0.08, 250), rtol=1e-12)
    np.testing.assert_allclose(D.compute_alphas_cumprod(betas).numpy(), ABAR, rtol=1e-12)
    assert ABAR[-1] == pytest.approx(4.04e-5, rel=1e-2)  # x_T is essentially pure noise


def test_cosine_schedule_follows_iddpm_eq17():
    s, n = 0.008, 1000
    abar = D.compute_alphas_cumprod(D.cosine_beta_schedule(n)).numpy()
    f = np.cos((np.arange(n + 1) / n + s) / (1 + s) * np.pi / 2) ** 2
    np.testing.assert_allclose(abar[:990], (f[1:] / f[0])[:990], rtol=1e-10)  # before the 0.999 clip acts
    assert D.cosine_beta_schedule(n).max() <= 0.999


@pytest.mark.parametrize("bad", [0, -5, 10, 2.5])
def test_schedule_rejects_bad_step_counts(bad):
    with pytest.raises(ValueError):
        D.linear_beta_schedule(bad)  # 10 steps would rescale beta_end to 2.0


def test_snr_is_abar_over_one_minus_abar_and_decreasing():
    snr = D.snr(torch.from_numpy(ABAR)).numpy()
    np.testing.assert_allclose(snr, ABAR / (1 - ABAR), rtol=1e-12)
    assert np.all(np.diff(snr) < 0) and snr[0] == pytest.approx(1e4, rel=1e-3)


def test_class_schedule_is_float32_and_matches_float64_oracle():
    diff = D.GaussianDiffusion(D.linear_beta_schedule(1000), learn_sigma=False)
    assert diff.num_timesteps == 1000
    for name in ("betas", "alphas_cumprod", "alphas_cumprod_prev", "posterior_variance", "posterior_mean_coef1"):
        assert getattr(diff, name).dtype == torch.float32, name
    np.testing.assert_allclose(diff.alphas_cumprod.numpy(), ABAR, rtol=1e-6)
    np.testing.assert_allclose(
        diff.alphas_cumprod_prev.numpy(),
        ABAR_PREV,
        rtol=1e-6,
        err_msg="alphas_cumprod_prev[t] must be alphas_cumprod[t - 1] (and 1 at t = 0)",
    )
    oracle_var = np.array([0.0] + [bayes_posterior(0.0, 0.0, t)[1] for t in range(1, 1000)])
    np.testing.assert_allclose(diff.posterior_variance.numpy(), oracle_var, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(
        diff.posterior_log_variance_clipped.numpy(),
        np.log(np.concatenate([[oracle_var[1]], oracle_var[1:]])),
        rtol=1e-5,
    )


# ----------------------------------------------------------------------------- forward process


def test_q_sample_moments_match_closed_form():
    """Monte Carlo over many noise draws: E[x_t] = sqrt(abar) x0, Var[x_t] = 1 - abar (DDPM Eq. 4)."""
    gen = torch.Generator().manual_seed(0)
    steps, draws, x0_value = [0, 10, 250, 500, 999], 100_000, 0.7
    t = torch.tensor(steps).repeat_interleave(draws)
    x0 = torch.full((len(t), 1), x0_value, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    xt = D.q_sample(x0, t, noise, torch.from_numpy(ABAR)).reshape(len(steps), draws)
    mean, var = xt.mean(1).numpy(), xt.var(1).numpy()
    want_mean, want_var = np.sqrt(ABAR[steps]) * x0_value, 1 - ABAR[steps]
    se_mean, se_var = np.sqrt(want_var / draws), want_var * np.sqrt(2 / draws)
    assert np.all(np.abs(mean - want_mean) < 5 * se_mean + 1e-6), (
        f"E[x_t] is {mean} where {want_mean} was expected -- did you scale x_0 by abar instead of sqrt(abar)?"
    )
    assert np.all(np.abs(var - want_var) < 5 * se_var + 1e-6), (
        f"Var[x_t] is {var} where {want_var} was expected -- did you scale eps by 1 - abar instead of its sqrt?"
    )


def test_q_sample_class_and_q_mean_variance_agree_with_oracle():
    diff = D.create_diffusion(learn_sigma=False)
    x0 = torch.randn(3, 2, 4, 4)
    t = torch.tensor([0, 400, 999])
    mean, var, log_var = diff.q_mean_variance(x0, t)
    torch.testing.assert_close(mean, torch.from_numpy(bcast(np.sqrt(ABAR[t]))).float() * x0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(var, torch.from_numpy(bcast(1 - ABAR[t])).float(), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(log_var, var.log())
    torch.testing.assert_close(diff.q_sample(x0, t, torch.zeros_like(x0)), mean)


def test_predict_xstart_from_eps_inverts_q_sample():
    abar = torch.from_numpy(ABAR)
    x0, eps = torch.randn(5, 1, 3, 3, dtype=torch.float64), torch.randn(5, 1, 3, 3, dtype=torch.float64)
    t = torch.tensor([0, 1, 100, 700, 999])
    xt = D.q_sample(x0, t, eps, abar)
    torch.testing.assert_close(D.predict_xstart_from_eps(xt, t, eps, abar), x0, rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------- posterior and reverse steps


def test_posterior_matches_bayes_rule_in_float64():
    gen = torch.Generator().manual_seed(1)
    t = torch.tensor([1, 2, 5, 50, 300, 998, 999])
    x0 = torch.randn(len(t), 1, 2, 2, generator=gen, dtype=torch.float64)
    xt = torch.randn(len(t), 1, 2, 2, generator=gen, dtype=torch.float64)
    mean, var, log_var = D.q_posterior_mean_variance(x0, xt, t, torch.from_numpy(BETAS), torch.from_numpy(ABAR))
    want_mean, want_var = bayes_posterior(x0.numpy(), xt.numpy(), bcast(t.numpy()))
    np.testing.assert_allclose(mean.numpy(), want_mean, rtol=1e-9, atol=1e-12, err_msg="posterior mean (DDPM Eq. 7)")
    np.testing.assert_allclose(var.numpy(), want_var, rtol=1e-9, err_msg="posterior variance beta_tilde (DDPM Eq. 7)")
    np.testing.assert_allclose(log_var.numpy(), np.log(want_var), rtol=1e-9)
    # The class stores float32 schedules; on float32 inputs it must still be accurate to float32 precision.
    diff = D.create_diffusion(learn_sigma=False)
    mean32, var32, _ = diff.q_posterior_mean_variance(x0.float(), xt.float(), t)
    np.testing.assert_allclose(mean32.numpy(), want_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var32.numpy(), want_var, rtol=1e-5)


def test_posterior_at_t0_is_x0_with_clipped_log_variance():
    x0, xt = torch.randn(2, 1, 2, 2, dtype=torch.float64), torch.randn(2, 1, 2, 2, dtype=torch.float64)
    t = torch.zeros(2, dtype=torch.long)
    mean, var, log_var = D.q_posterior_mean_variance(x0, xt, t, torch.from_numpy(BETAS), torch.from_numpy(ABAR))
    torch.testing.assert_close(mean, x0)
    assert torch.all(var == 0)
    np.testing.assert_allclose(log_var.numpy().ravel(), np.log(bayes_posterior(0.0, 0.0, 1)[1]), rtol=1e-9)


def test_ddpm_step_adds_scaled_noise_except_at_t0():
    mean, noise = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    log_var = torch.log(torch.tensor([0.5, 0.25, 0.1])).reshape(3, 1, 1, 1)
    out = D.ddpm_step(mean, log_var, torch.tensor([0, 1, 7]), noise)
    torch.testing.assert_close(out[0], mean[0])
    std = torch.tensor([0.25, 0.1]).sqrt().reshape(2, 1, 1, 1)
    torch.testing.assert_close(out[1:], mean[1:] + std * noise[1:])


def test_ddim_step_with_exact_eps_stays_on_the_trajectory():
    """For a single data point, eps is known exactly; DDIM (eta = 0) must map x_t to
    sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps (DDIM Eq. 12), and t_prev = -1 to x0 itself."""
    abar = torch.from_numpy(ABAR)
    x0, eps = torch.randn(3, 1, 2, 2, dtype=torch.float64), torch.randn(3, 1, 2, 2, dtype=torch.float64)
    t, t_prev = torch.tensor([999, 500, 20]), torch.tensor([979, 0, -1])
    xt = D.q_sample(x0, t, eps, abar)
    want = (
        torch.from_numpy(bcast(np.sqrt(np.append(ABAR, 1.0)[t_prev]))) * x0
        + torch.from_numpy(bcast(np.sqrt(1 - np.append(ABAR, 1.0)[t_prev]))) * eps
    )
    torch.testing.assert_close(D.ddim_step(xt, eps, t, t_prev, abar), want, rtol=1e-9, atol=1e-9)


def test_ddim_eta1_one_step_is_the_ddpm_posterior():
    """DDIM §4.1: with eta = 1 and t_prev = t - 1 the step is q(x_{t-1} | x_t, x0) with x0 from eps."""
    abar = torch.from_numpy(ABAR)
    x0, eps, z = (torch.randn(3, 1, 2, 2, dtype=torch.float64) for _ in range(3))
    t = torch.tensor([1, 300, 999])
    xt = D.q_sample(x0, t, eps, abar)
    want_mean, want_var = bayes_posterior(x0.numpy(), xt.numpy(), bcast(t.numpy()))
    out = D.ddim_step(xt, eps, t, t - 1, abar, eta=1.0, noise=z)
    np.testing.assert_allclose(out.numpy(), want_mean + np.sqrt(want_var) * z.numpy(), rtol=1e-7, atol=1e-9)


def test_ddim_step_rejects_bad_times():
    x = torch.randn(2, 1, 2, 2)
    abar = torch.from_numpy(ABAR).float()
    with pytest.raises(ValueError, match="backwards"):
        D.ddim_step(x, x, torch.tensor([5, 5]), torch.tensor([5, 4]), abar)
    with pytest.raises(ValueError, match="t_prev"):
        D.ddim_step(x, x, torch.tensor([5, 5]), torch.tensor([-2, 4]), abar)


# ----------------------------------------------------------------------------- KL and likelihood vs integration


@pytest.mark.parametrize(
    "m1, lv1, m2, lv2", [(0.0, 0.0, 0.0, 0.0), (0.3, -1.0, -0.2, 0.5), (1.0, -4.0, 0.9, -3.0), (-2.0, 1.0, 0.5, -0.5)]
)
def test_normal_kl_matches_numerical_integration(m1, lv1, m2, lv2):
    s1, s2 = math.exp(lv1 / 2), math.exp(lv2 / 2)

    def integrand(x):  # p log(p / q)
        return stats.norm.pdf(x, m1, s1) * (stats.norm.logpdf(x, m1, s1) - stats.norm.logpdf(x, m2, s2))

    want, _ = integrate.quad(integrand, m1 - 30 * s1, m1 + 30 * s1, points=[m1], limit=200)
    got = D.normal_kl(*(torch.tensor(v, dtype=torch.float64) for v in (m1, lv1, m2, lv2)))
    assert got.item() == pytest.approx(want, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize(
    "x, mean, log_scale",
    [
        (-1.0, -0.95, math.log(0.1)),
        (1.0, 0.2, math.log(0.5)),
        (0.0, 0.01, math.log(0.003)),
        (0.5, 0.3, math.log(0.2)),
        (-0.2, 0.6, math.log(0.2)),
        (0.9, -0.4, math.log(0.4)),
    ],
)
def test_discretized_log_likelihood_matches_numerical_integration(x, mean, log_scale):
    x = round((x + 1) * 127.5) / 127.5 - 1  # a point of the 8-bit grid
    low = -np.inf if x < -0.999 else x - 1 / 255
    high = np.inf if x > 0.999 else x + 1 / 255
    scale = math.exp(log_scale)
    lo, hi = max(low, mean - 40 * scale), min(high, mean + 40 * scale)
    points = [mean] if lo < mean < hi else None
    prob, _ = integrate.quad(lambda v: stats.norm.pdf(v, mean, scale), lo, hi, points=points)
    got = D.discretized_gaussian_log_likelihood(*(torch.tensor([v], dtype=torch.float64) for v in (x, mean, log_scale)))
    assert got.item() == pytest.approx(math.log(prob), rel=1e-6, abs=1e-7)


def test_discretized_likelihood_sums_to_one_over_all_bins():
    grid = torch.arange(256, dtype=torch.float64) / 127.5 - 1  # (256,)
    for mean, log_scale in [(0.1, -2.0), (-0.9, -1.0), (0.999, -5.0)]:
        logp = D.discretized_gaussian_log_likelihood(grid, torch.tensor(mean), torch.tensor(log_scale))
        assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)


# ----------------------------------------------------------------------------- losses, learned variance, hybrid loss


def test_epsilon_mse_loss_is_per_example_mean():
    a, b = torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3)
    torch.testing.assert_close(D.epsilon_mse_loss(a, b), torch.stack([((a[i] - b[i]) ** 2).mean() for i in range(4)]))
    with pytest.raises(ValueError, match="same shape"):
        D.epsilon_mse_loss(a, b[:, :1])


def constant_model(out):
    """A 'model' that returns a fixed tensor and records the timesteps it was called with."""

    def model(x, t, **kwargs):
        model.seen_t = t
        return out

    return model


@pytest.mark.parametrize("v, want", [(-1.0, "posterior"), (1.0, "beta"), (0.0, "midpoint")])
def test_learned_sigma_interpolates_between_posterior_variance_and_beta(v, want):
    diff = D.create_diffusion(learn_sigma=True)
    t = torch.tensor([0, 1, 40, 999])
    x = torch.randn(4, 1, 2, 2)
    out = diff.p_mean_variance(constant_model(torch.cat([torch.randn_like(x), torch.full_like(x, v)], 1)), x, t)
    post = np.log([bayes_posterior(0.0, 0.0, max(int(s), 1))[1] for s in t])  # clipped: t = 0 uses t = 1
    oracle = {"posterior": post, "beta": np.log(BETAS[t]), "midpoint": (post + np.log(BETAS[t])) / 2}[want]
    np.testing.assert_allclose(out["log_variance"].numpy(), np.broadcast_to(bcast(oracle), x.shape), rtol=1e-5)
    torch.testing.assert_close(out["variance"], out["log_variance"].exp())


def test_p_mean_variance_mean_is_posterior_at_predicted_x0():
    diff = D.create_diffusion(learn_sigma=False)
    x0 = torch.rand(3, 1, 2, 2, dtype=torch.float64) * 1.6 - 0.8
    eps = torch.randn_like(x0)
    t = torch.tensor([3, 200, 900])
    xt = D.q_sample(x0, t, eps, torch.from_numpy(ABAR))
    out = diff.p_mean_variance(constant_model(eps.float()), xt.float(), t)
    torch.testing.assert_close(out["pred_xstart"].double(), x0, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        out["mean"].numpy(), bayes_posterior(x0.numpy(), xt.numpy(), bcast(t.numpy()))[0], rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(out["log_variance"].numpy().ravel(), np.log(BETAS[t]), rtol=1e-5)  # "fixed large"


def test_training_losses_mse_against_manual_computation():
    diff = D.create_diffusion(learn_sigma=False)
    x0, noise, pred = torch.randn(4, 1, 4, 4), torch.randn(4, 1, 4, 4), torch.randn(4, 1, 4, 4)
    t = torch.tensor([0, 10, 500, 999])
    terms = diff.training_losses(constant_model(pred), x0, t, noise=noise)
    assert set(terms) == {"loss", "mse"}
    torch.testing.assert_close(terms["mse"], ((pred - noise) ** 2).mean(dim=(1, 2, 3)))
    torch.testing.assert_close(terms["loss"], terms["mse"])


def test_hybrid_vb_term_sends_no_gradient_to_the_mean():
    diff = D.create_diffusion(learn_sigma=True)
    x0 = torch.rand(4, 1, 4, 4) * 2 - 1
    t = torch.tensor([0, 3, 300, 999])
    out = torch.randn(4, 2, 4, 4, requires_grad=True)
    terms = diff.training_losses(constant_model(out), x0, t)
    assert set(terms) == {"loss", "mse", "vb"}
    torch.testing.assert_close(terms["loss"], terms["mse"] + terms["vb"])
    (grad_vb,) = torch.autograd.grad(terms["vb"].sum(), out, retain_graph=True)
    assert torch.all(grad_vb[:, :1] == 0), "L_vlb must not train the mean: detach the eps channels (IDDPM §3.1)"
    assert grad_vb[:, 1:].abs().sum() > 0, "L_vlb must train the variance channels"
    (grad_mse,) = torch.autograd.grad(terms["mse"].sum(), out)
    assert torch.all(grad_mse[:, 1:] == 0) and grad_mse[:, :1].abs().sum() > 0


def test_vb_term_is_zero_kl_for_a_perfect_model_and_decoder_nll_at_t0():
    diff = D.create_diffusion(learn_sigma=True)
    x0 = torch.randint(0, 256, (3, 1, 2, 2)).float() / 127.5 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 5, 600])
    perfect = constant_model(torch.cat([noise, -torch.ones_like(noise)], 1))  # exact eps, posterior variance
    terms = diff.training_losses(perfect, x0, t, noise=noise)
    assert terms["mse"].abs().max() < 1e-12
    assert terms["vb"][1:].abs().max() < 1e-3, "KL of the true posterior against itself must be 0"
    # At t = 0 the term is -log2 p(x0 | x1) of the 8-bit bin under N(x0, posterior variance at t = 1).
    scale = math.sqrt(bayes_posterior(0.0, 0.0, 1)[1])
    bits = []
    for value in x0[0].flatten().tolist():
        lo = -np.inf if value < -0.999 else value - 1 / 255
        hi = np.inf if value > 0.999 else value + 1 / 255
        bits.append(-math.log2(stats.norm.cdf(hi, value, scale) - stats.norm.cdf(lo, value, scale)))
    assert terms["vb"][0].item() == pytest.approx(np.mean(bits), rel=1e-5)


def test_vb_kl_against_closed_form_when_variance_is_beta():
    """With the exact mean and sigma^2 = beta_t (v = +1): KL = 0.5 (log(beta/beta~) + beta~/beta - 1) nats."""
    diff = D.create_diffusion("250", learn_sigma=True)  # respaced: vb is also scaled by 250 / 1000
    x0, noise = torch.rand(2, 1, 2, 2) * 2 - 1, torch.randn(2, 1, 2, 2)
    t = torch.tensor([1, 3])  # where beta and beta~ differ most (the KL shrinks fast with t)
    terms = diff.training_losses(constant_model(torch.cat([noise, torch.ones_like(noise)], 1)), x0, t, noise=noise)
    abar = ABAR[sorted(D.space_timesteps(1000, "250"))][:4]
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    beta = 1 - abar / abar_prev
    beta_tilde = beta * (1 - abar_prev) / (1 - abar)
    kl_bits = 0.5 * (np.log(beta[1:] / beta_tilde[1:]) + beta_tilde[1:] / beta[1:] - 1) / math.log(2)
    assert kl_bits[0] > 0.1
    np.testing.assert_allclose(terms["vb"].numpy(), kl_bits[t - 1] * 250 / 1000, rtol=1e-3)


# ----------------------------------------------------------------------------- respacing


def test_space_timesteps_patterns():
    dit = D.space_timesteps(1000, "250")
    assert len(dit) == 250 and min(dit) == 0 and max(dit) == 999
    assert set(np.diff(sorted(dit))) <= {4, 5}, "250 of 1000 steps must be evenly spread"
    assert D.space_timesteps(1000, "ddim50") == set(range(0, 1000, 20))
    assert D.space_timesteps(1000, 100) == D.space_timesteps(1000, [100]) == D.space_timesteps(1000, "100")
    sections = sorted(D.space_timesteps(300, "10,15,20"))
    counts = np.histogram(sections, bins=[0, 100, 200, 300])[0]
    assert list(counts) == [10, 15, 20]
    assert D.space_timesteps(1000, "1000") == set(range(1000))


@pytest.mark.parametrize("bad", ["1001", [0], "ddim3000", "500,600", "ddim0"])
def test_space_timesteps_rejects_impossible_requests(bad):
    with pytest.raises(ValueError):
        D.space_timesteps(1000, bad)


@pytest.mark.parametrize("respacing", ["250", "ddim50", "10,20,30"])
def test_respaced_process_keeps_alphas_cumprod_at_kept_steps(respacing):
    diff = D.create_diffusion(respacing, learn_sigma=False)
    kept = sorted(D.space_timesteps(1000, respacing))
    assert diff.num_timesteps == len(kept)
    np.testing.assert_allclose(diff.alphas_cumprod.numpy(), ABAR[kept], rtol=1e-5)
    assert diff.timestep_map.tolist() == kept
    model = constant_model(torch.zeros(2, 1, 2, 2))
    diff.p_mean_variance(model, torch.zeros(2, 1, 2, 2), torch.tensor([0, len(kept) - 1]))
    assert model.seen_t.tolist() == [kept[0], kept[-1]], "the model must see the original timesteps"


# ----------------------------------------------------------------------------- samplers on a known Gaussian


MU, SIGMA = 0.3, 0.2  # the data distribution N(MU, SIGMA^2), one value per example


def exact_eps_model(learned_v=None):
    """E[eps | x_t] for Gaussian data, at the ORIGINAL timestep t the model is given:
    x_t ~ N(sqrt(abar) MU, abar SIGMA^2 + 1 - abar) and eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar)."""
    abar_all = torch.from_numpy(ABAR)

    def model(x, t):
        abar = abar_all[t].reshape(-1, 1, 1, 1).to(x.dtype)
        eps = (1 - abar).sqrt() * (x - abar.sqrt() * MU) / (abar * SIGMA**2 + 1 - abar)
        return eps if learned_v is None else torch.cat([eps, torch.full_like(eps, learned_v)], 1)

    return model


def chain_moments(respacing, sampler, learned_v=None, eta=0.0):
    """The exact mean and std of the sampler's output for this Gaussian data, in float64 numpy. Every step
    is linear-Gaussian, x_prev = A x + B + sqrt(Q) z, so the moments propagate in closed form: m <- A m + B,
    v <- A^2 v + Q, from x_T ~ N(0, 1). This includes the error of taking few, large steps."""
    kept = sorted(D.space_timesteps(1000, respacing)) if respacing else list(range(1000))
    abar = ABAR[kept]
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    beta = 1 - abar / abar_prev
    m, v = 0.0, 1.0
    for i in reversed(range(len(kept))):
        k = np.sqrt(1 - abar[i]) / (abar[i] * SIGMA**2 + 1 - abar[i])  # eps = k (x - sqrt(abar) MU)
        p, q = (1 - np.sqrt(1 - abar[i]) * k) / np.sqrt(abar[i]), np.sqrt(1 - abar[i]) * k * MU  # x0_pred = p x + q
        if sampler == "ddpm":  # posterior mean c1 x0_pred + c2 x by Bayes' rule, then the chosen variance
            c1 = 1.0 if i == 0 else gaussian_posterior(1.0, 0.0, abar_prev[i], beta[i])[0]
            c2 = 0.0 if i == 0 else gaussian_posterior(0.0, 1.0, abar_prev[i], beta[i])[0]
            A, B = c1 * p + c2, c1 * q
            assert learned_v in (None, -1.0)  # fixed sigma^2 = beta, or the posterior variance
            posterior_var = gaussian_posterior(0.0, 0.0, abar_prev[i], beta[i])[1] if i > 0 else 0.0
            Q = 0.0 if i == 0 else (beta[i] if learned_v is None else posterior_var)
        else:  # DDIM Eq. 12 with sigma from Eq. 16
            Q = eta**2 * (1 - abar_prev[i]) / (1 - abar[i]) * (1 - abar[i] / abar_prev[i])
            d = np.sqrt(1 - abar_prev[i] - Q)
            A, B = np.sqrt(abar_prev[i]) * p + d * k, np.sqrt(abar_prev[i]) * q - d * k * np.sqrt(abar[i]) * MU
        m, v = A * m + B, A**2 * v + Q
    return m, np.sqrt(v)


@pytest.mark.parametrize(
    "sampler, respacing, learned_v, eta",
    [
        ("ddpm", "250", None, 0.0),  # DiT samples with 250 respaced steps; here sigma^2 = beta
        ("ddpm", "100", -1.0, 0.0),  # learned sigma at the posterior-variance end
        ("ddim", "ddim50", None, 0.0),
        ("ddim", "ddim50", None, 1.0),
    ],
)
def test_sampler_with_exact_eps_recovers_the_gaussian(sampler, respacing, learned_v, eta):
    diff = D.create_diffusion(respacing, learn_sigma=learned_v is not None)
    gen = torch.Generator().manual_seed(0)
    draws = 20_000
    model = exact_eps_model(learned_v)
    if sampler == "ddpm":
        x0 = diff.p_sample_loop(model, (draws, 1, 1, 1), generator=gen, clip_denoised=False)
    else:
        x0 = diff.ddim_sample_loop(model, (draws, 1, 1, 1), generator=gen, clip_denoised=False, eta=eta)
    mean, std = x0.double().mean().item(), x0.double().std().item()
    want_mean, want_std = chain_moments(respacing, sampler, learned_v, eta)
    # With all 1000 steps the same chain lands on the data distribution: what separates want_std from SIGMA
    # above (up to 20% with 50 DDIM steps) is the error of taking few, large steps, not of the sampler.
    full_mean, full_std = chain_moments("ddim1000" if sampler == "ddim" else "", sampler, learned_v, eta)
    assert abs(full_mean - MU) < 1e-3 and abs(full_std / SIGMA - 1) < 0.02
    assert mean == pytest.approx(want_mean, abs=5 * want_std / math.sqrt(draws)), (
        f"{sampler}: sample mean {mean:.4f} where {want_mean:.4f} was expected (data mean {MU})"
    )
    assert std == pytest.approx(want_std, rel=5 / math.sqrt(2 * draws)), (
        f"{sampler}: sample std {std:.4f} where {want_std:.4f} was expected (data std {SIGMA})"
    )


def test_sampling_is_reproducible_with_a_generator_and_progressive_yields_every_step():
    diff = D.create_diffusion("ddim10", learn_sigma=False)
    model = exact_eps_model()
    a = diff.p_sample_loop(model, (4, 1, 2, 2), generator=torch.Generator().manual_seed(3))
    b = diff.p_sample_loop(model, (4, 1, 2, 2), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    steps = list(diff.sample_loop_progressive(model, (4, 1, 2, 2), sampler="ddim"))
    assert len(steps) == 10 and steps[-1]["sample"].shape == (4, 1, 2, 2)


def test_sample_timesteps_is_uniform_over_the_range():
    diff = D.create_diffusion("100", learn_sigma=False)
    t = diff.sample_timesteps(50_000, "cpu", generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and t.min() == 0 and t.max() == 99
    counts = torch.bincount(t, minlength=100).numpy()
    assert stats.chisquare(counts).pvalue > 1e-4


def test_loss_per_quarter():
    q = D.loss_per_quarter(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0, 249, 250, 999]), 1000)
    assert q["q0"] == 1.5 and q["q1"] == 3.0 and q["q3"] == 4.0 and math.isnan(q["q2"])


# ----------------------------------------------------------------------------- errors and the course switch


def test_clear_errors_on_bad_input():
    diff = D.create_diffusion(learn_sigma=True)
    x = torch.randn(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"\[0, 1000\)"):
        diff.q_sample(x, torch.tensor([0, 1000]))
    with pytest.raises(ValueError, match=r"\[0, 1000\)"):
        diff.q_sample(x, torch.tensor([-1, 3]))
    with pytest.raises(ValueError, match="integer"):
        diff.q_sample(x, torch.tensor([0.5, 3.0]))
    with pytest.raises(ValueError, match="shape"):
        diff.q_sample(x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="same shape"):
        diff.q_sample(x, torch.tensor([1, 2]), noise=torch.randn(2, 1, 4, 3))
    with pytest.raises(ValueError, match="learn_sigma"):  # C channels where 2C are needed
        diff.training_losses(constant_model(torch.randn(2, 1, 4, 4)), x, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="learn_sigma"):
        D.GaussianDiffusion(D.linear_beta_schedule(1000), learn_sigma=False, loss_type="hybrid")
    with pytest.raises(ValueError):
        D.create_diffusion(noise_schedule="quadratic")
    with pytest.raises(ValueError):
        D.create_diffusion("2000")


@pytest.mark.parametrize(
    "name",
    ["q_sample", "q_posterior_mean_variance", "predict_xstart_from_eps", "epsilon_mse_loss", "ddpm_step", "ddim_step"],
)
def test_class_calls_pure_functions_as_module_globals(name, monkeypatch):
    """minidit.course swaps implementations by patching minidit.diffusion.<name>; the class must notice."""
    calls = []
    original = getattr(D, name)

    def spy(*args, **kwargs):
        calls.append(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(D, name, spy)
    diff = D.create_diffusion("ddim5", learn_sigma=True)
    model = lambda x, t: torch.cat([torch.zeros_like(x), torch.zeros_like(x)], 1)  # noqa: E731
    x0, t = torch.rand(2, 1, 2, 2), torch.tensor([0, 3])
    diff.training_losses(model, x0, t)
    diff.p_sample_loop(model, (2, 1, 2, 2))
    diff.ddim_sample_loop(model, (2, 1, 2, 2))
    assert calls, f"GaussianDiffusion never called minidit.diffusion.{name}"


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_sampling_loops_do_not_read_timesteps_back(monkeypatch, sampler):
    """The loops make t themselves, so their steps skip the range checks that read a tensor back to the CPU (a
    GPU sync every step); a step called directly still checks, and the check still fails on a bad t."""
    diffusion = D.create_diffusion("10", "linear", True, 1000)
    reads = []
    real_any = torch.Tensor.any
    monkeypatch.setattr(torch.Tensor, "any", lambda self, *a, **k: reads.append(1) or real_any(self, *a, **k))

    def model(x, t, **kwargs):
        return torch.cat([0.1 * x, torch.zeros_like(x)], dim=1)  # (N, 2C, H, W): eps and v

    loop = diffusion.p_sample_loop if sampler == "ddpm" else diffusion.ddim_sample_loop
    x = loop(model, (2, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 1, 4, 4) and reads == []
    step = diffusion.p_sample if sampler == "ddpm" else diffusion.ddim_sample
    step(model, torch.zeros(2, 1, 4, 4), torch.tensor([3, 4]))
    assert reads  # outside the loop the check runs
    with pytest.raises(ValueError, match="t must lie in"):
        step(model, torch.zeros(2, 1, 4, 4), torch.tensor([3, 10]))
