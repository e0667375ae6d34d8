"""ex04: the posterior q(x_{t-1} | x_t, x_0) and one DDPM reverse step (about 30 minutes).

Given the clean image, one step back is Gaussian again (DDPM Eqs. 6-7):

    mean     = coef1 * x_0 + coef2 * x_t
    coef1    = betas[t] * sqrt(alphas_cumprod_prev[t]) / (1 - alphas_cumprod[t])
    coef2    = (1 - alphas_cumprod_prev[t]) * sqrt(1 - betas[t]) / (1 - alphas_cumprod[t])
    variance = betas[t] * (1 - alphas_cumprod_prev[t]) / (1 - alphas_cumprod[t])      ("beta tilde")

where alphas_cumprod_prev[t] = alphas_cumprod[t - 1], and 1 at t = 0 (nothing is noised before
step 0). Sampling plugs the model's x_0 estimate into this mean and takes one Gaussian step
(DDPM Algorithm 2), without noise at the very last step.

Write the two functions, then check them:   pytest exercises -k ex04
Notebook: 02_loss_and_reverse_process.   minidit's version: minidit/diffusion.py
"""

from __future__ import annotations

import torch


def q_posterior_mean_variance(x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, betas: torch.Tensor,
                              alphas_cumprod: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean and variance of q(x_{t-1} | x_t, x_0) (DDPM Eqs. 6-7).

    Args:
        x_start: (N, ...) x_0 (in sampling, the model's estimate of it).
        x_t: (N, ...) the noisy images at step t.
        t: (N,) long timesteps in [0, num_timesteps).
        betas: (num_timesteps,) the schedule; alphas_cumprod: (num_timesteps,) from ex01.

    Returns:
        mean: (N, ...) like x_t.
        variance: (N, 1, ..., 1) (one 1 per dimension of x_t after the first), beta tilde at t.
        log_variance_clipped: (N, 1, ..., 1) its log, where t = 0 (variance 0, log -inf) uses the
            variance at t = 1 instead, as ADM does.

    Hint: build alphas_cumprod_prev with torch.cat, compute the three coefficients for all steps,
    then pick [t] and reshape to (N, 1, ..., 1) as in ex02.
    """
    alphas_cumprod_prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])  # (num_timesteps,)
    coef1 = betas * alphas_cumprod_prev.sqrt() / (1 - alphas_cumprod)
    coef2 = (1 - alphas_cumprod_prev) * (1 - betas).sqrt() / (1 - alphas_cumprod)
    variance = betas * (1 - alphas_cumprod_prev) / (1 - alphas_cumprod)
    log_variance_clipped = torch.log(torch.cat([variance[1:2], variance[1:]]))  # t = 0 borrows t = 1

    def at_t(values: torch.Tensor) -> torch.Tensor:
        out = values.to(t.device)[t].to(x_t.dtype)  # (N,)
        return out.view(-1, *([1] * (x_t.ndim - 1)))  # (N, 1, 1, 1)

    mean = at_t(coef1) * x_start + at_t(coef2) * x_t
    return mean, at_t(variance), at_t(log_variance_clipped)


def ddpm_step(model_mean: torch.Tensor, model_log_variance: torch.Tensor, t: torch.Tensor,
              noise: torch.Tensor) -> torch.Tensor:
    """One ancestral sampling step x_t -> x_{t-1} (DDPM Algorithm 2, line 4).

        x_{t-1} = model_mean + exp(model_log_variance / 2) * noise,   but no noise where t == 0

    Args:
        model_mean: (N, ...) the mean of p(x_{t-1} | x_t).
        model_log_variance: (N, 1, ..., 1) or (N, ...) its log variance.
        t: (N,) long, the current step of each sample.
        noise: (N, ...) z ~ N(0, I).

    Returns:
        (N, ...) x_{t-1}.

    Hint: exp(log_variance / 2) is the standard deviation. Make a (N, 1, ..., 1) mask from t != 0.
    """
    nonzero = (t != 0).to(model_mean.dtype).view(-1, *([1] * (model_mean.ndim - 1)))  # (N, 1, 1, 1)
    return model_mean + nonzero * torch.exp(0.5 * model_log_variance) * noise
