"""Gaussian diffusion: noise schedules, forward noising, losses, learned variance, DDPM and DDIM sampling.

Follows DDPM (Ho et al. 2020), Improved DDPM (Nichol & Dhariwal 2021, "IDDPM") and DDIM (Song et al.
2021) with the names of the ADM/DiT code, so this file reads beside DiT's `diffusion/`. The maths lives
in pure module-level functions; `GaussianDiffusion` holds the schedule and calls them.

Schedules are computed in float64 and stored float32 on the device (MPS has no float64). The functions
compute their per-step coefficients in the schedule's dtype and only then cast to x's dtype.
Shapes: x is (N, C, H, W) (any (N, ...) works); t is (N,) int64 indices into the schedule.
"""

from __future__ import annotations

import contextvars
import math

import torch
from tqdm.auto import tqdm

from minidit.device import draw, is_compiling


# ----------------------------------------------------------------------------- schedules
def linear_beta_schedule(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM §4 linear betas -> (num_timesteps,) float64. beta_start/end are for 1000 steps and are scaled
    by 1000 / num_timesteps as in ADM, so a shorter process still ends near pure noise."""
    _check_count(num_timesteps)
    scale = 1000 / num_timesteps
    betas = torch.linspace(scale * beta_start, scale * beta_end, num_timesteps, dtype=torch.float64)
    if not ((betas > 0) & (betas < 1)).all():
        raise ValueError(f"with {num_timesteps} steps the scaled linear betas leave (0, 1); use more steps")
    return betas


def cosine_beta_schedule(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """IDDPM Eq. 17 -> (num_timesteps,) float64: abar(t) = cos((t/T + s) / (1 + s) * pi/2)^2 and
    beta_t = 1 - abar(t+1) / abar(t), clipped at max_beta against the singularity at the end."""
    _check_count(num_timesteps)
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps  # (num_timesteps + 1,)
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


def compute_alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """betas: (num_timesteps,) -> abar_t = prod_{s<=t} (1 - beta_s), (num_timesteps,) (DDPM §2, above Eq. 4)."""
    return torch.cumprod(1.0 - betas, dim=0)


def snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio of x_t, abar / (1 - abar): (num_timesteps,) (VDM, Kingma et al. 2021, Eq. 1)."""
    return alphas_cumprod / (1.0 - alphas_cumprod)


# ----------------------------------------------------------------------------- input checks and helpers
def _check_count(num_timesteps) -> None:
    if not isinstance(num_timesteps, int) or num_timesteps < 1:
        raise ValueError(f"num_timesteps must be a positive int, got {num_timesteps!r}")


# True while a sampling loop runs one of its own steps: it makes t itself, valid by construction.
_LOOP_TIMESTEPS = contextvars.ContextVar("minidit_loop_timesteps", default=False)


def _any(condition: torch.Tensor) -> bool:
    """condition.any() for a check on timesteps, skipped (False) inside torch.compile, where a data-dependent branch
    would break the graph, and inside a sampling loop's step, where reading the answer back would make the CPU wait
    for the GPU every step (an H200 idled 17% of each DiT-S/2 sampling step so)."""
    return not is_compiling() and not _LOOP_TIMESTEPS.get() and bool(condition.any())


def _check_t(t, x: torch.Tensor, num_timesteps: int, name: str = "t", low: int = 0) -> None:
    """t must be an (N,) integer tensor, N = x.shape[0], with low <= t < num_timesteps."""
    if not isinstance(t, torch.Tensor) or t.dtype.is_floating_point or t.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor of timesteps, got {getattr(t, 'dtype', type(t))}")
    if t.shape != (x.shape[0],):
        raise ValueError(f"{name} must have shape ({x.shape[0]},) for a batch of {x.shape[0]}, got {tuple(t.shape)}")
    if _any((t < low) | (t >= num_timesteps)):
        raise ValueError(f"{name} must lie in [{low}, {num_timesteps}), got {int(t.min())}..{int(t.max())}")


def _check_same_shape(a: torch.Tensor, b: torch.Tensor, names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def _extract(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values: (num_timesteps,), t: (N,) -> values[t] as (N, 1, ..., 1) in like's dtype, broadcastable to like."""
    return _bcast(values.to(t.device)[t], like)


def _bcast(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values: (N,) -> (N, 1, ..., 1) in like's dtype and on its device."""
    return values.to(like.device, like.dtype).reshape(-1, *([1] * (like.ndim - 1)))  # (N, 1, 1, 1)


def _alphas_cumprod_prev(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """abar_{t-1} for every t, with abar_{-1} = 1 (nothing is noised before step 0): (num_timesteps,)."""
    return torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])


def _posterior_schedule(betas: torch.Tensor, alphas_cumprod: torch.Tensor):
    """DDPM Eq. 7 for every t -> (coef1, coef2, variance, log_variance_clipped), each (num_timesteps,)."""
    prev = _alphas_cumprod_prev(alphas_cumprod)
    coef1 = betas * prev.sqrt() / (1.0 - alphas_cumprod)
    coef2 = (1.0 - prev) * (1.0 - betas).sqrt() / (1.0 - alphas_cumprod)
    variance = betas * (1.0 - prev) / (1.0 - alphas_cumprod)
    # The variance is 0 at t = 0; ADM takes t = 1's value there so that the log stays finite.
    first = variance[1:2] if len(variance) > 1 else betas[:1]
    return coef1, coef2, variance, torch.log(torch.cat([first, variance[1:]]))


# ----------------------------------------------------------------------------- pure functions (exercises mirror them)
def q_sample(x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Sample q(x_t | x_0) in closed form (DDPM Eq. 4): x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps.
    Args: x_start: (N, ...) clean x_0; t: (N,) timesteps; noise: (N, ...) eps ~ N(0, I);
        alphas_cumprod: (num_timesteps,) abar.
    Returns: (N, ...) x_t.
    """
    _check_same_shape(x_start, noise, "x_start and noise")
    _check_t(t, x_start, len(alphas_cumprod))
    signal = _extract(alphas_cumprod.sqrt(), t, x_start)  # (N, 1, 1, 1)
    noise_scale = _extract((1.0 - alphas_cumprod).sqrt(), t, x_start)  # (N, 1, 1, 1)
    return signal * x_start + noise_scale * noise


def q_posterior_mean_variance(x_start, x_t, t, betas, alphas_cumprod):
    """The forward-process posterior q(x_{t-1} | x_t, x_0) = N(mean, variance) (DDPM Eqs. 6-7).
    Args: x_start: (N, ...) x_0; x_t: (N, ...); t: (N,); betas, alphas_cumprod: (num_timesteps,).
    Returns: mean (N, ...); variance (N, 1, ..., 1); log_variance_clipped (N, 1, ..., 1), which at t = 0
        (variance 0) holds the log of t = 1's variance, as ADM.
    """
    _check_same_shape(x_start, x_t, "x_start and x_t")
    _check_t(t, x_t, len(alphas_cumprod))
    coef1, coef2, variance, log_variance = _posterior_schedule(betas, alphas_cumprod)
    mean = _extract(coef1, t, x_t) * x_start + _extract(coef2, t, x_t) * x_t
    return mean, _extract(variance, t, x_t), _extract(log_variance, t, x_t)


def predict_xstart_from_eps(x_t, t, eps, alphas_cumprod):
    """x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t): DDPM Eq. 4 solved for x_0 (cf. DDPM Eq. 15).
    Args: x_t: (N, ...); t: (N,); eps: (N, ...) predicted noise; alphas_cumprod: (num_timesteps,).
    Returns: (N, ...) estimate of x_0.
    """
    _check_same_shape(x_t, eps, "x_t and eps")
    _check_t(t, x_t, len(alphas_cumprod))
    sqrt_recip = _extract((1.0 / alphas_cumprod).sqrt(), t, x_t)  # 1 / sqrt(abar), (N, 1, 1, 1)
    sqrt_recipm1 = _extract((1.0 / alphas_cumprod - 1.0).sqrt(), t, x_t)  # sqrt(1 - abar) / sqrt(abar)
    return sqrt_recip * x_t - sqrt_recipm1 * eps


def epsilon_mse_loss(model_output_eps: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """L_simple (DDPM Eq. 14): ||eps - eps_theta||^2 averaged over all but the batch dim.
    Args: model_output_eps: (N, C, H, W) predicted noise; noise: (N, C, H, W) the eps that made x_t.
    Returns: (N,) loss per example.
    """
    _check_same_shape(model_output_eps, noise, "model_output_eps and noise")
    return ((noise - model_output_eps) ** 2).flatten(1).mean(dim=1)  # (N,)


def ddpm_step(model_mean, model_log_variance, t, noise):
    """One ancestral step (DDPM Algorithm 2, line 4): x_{t-1} = mean + exp(log_var / 2) z, with z = 0 at t = 0.
    Args: model_mean: (N, ...); model_log_variance: (N, 1, ..., 1) or (N, ...); t: (N,); noise: (N, ...) z.
    Returns: (N, ...) x_{t-1}.
    """
    _check_same_shape(model_mean, noise, "model_mean and noise")
    nonzero = (t != 0).to(model_mean.dtype).reshape(-1, *([1] * (model_mean.ndim - 1)))  # (N, 1, 1, 1)
    return model_mean + nonzero * torch.exp(0.5 * model_log_variance) * noise


def ddim_step(x_t, eps, t, t_prev, alphas_cumprod, eta: float = 0.0, noise=None):
    """One DDIM step t -> t_prev (DDIM Eq. 12; sigma is DDIM Eq. 16 times eta):

        x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z,
        x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar),
        sigma = eta sqrt((1 - abar_prev) / (1 - abar) (1 - abar / abar_prev)).

    Args: x_t: (N, ...); eps: (N, ...) predicted noise; t, t_prev: (N,) or ints, t_prev = -1 meaning abar = 1
        (the last step returns x0); alphas_cumprod: (num_timesteps,); eta: 0 deterministic, 1 DDPM-like;
        noise: (N, ...) z, drawn when None and eta > 0.
    Returns: (N, ...) x_{t_prev}.
    """
    _check_same_shape(x_t, eps, "x_t and eps")
    t, t_prev = (v if torch.is_tensor(v) else torch.full((len(x_t),), v, device=x_t.device) for v in (t, t_prev))
    _check_t(t, x_t, len(alphas_cumprod))
    _check_t(t_prev, x_t, len(alphas_cumprod), "t_prev", low=-1)
    if _any(t_prev >= t):
        raise ValueError("ddim_step goes backwards in time: t_prev must be smaller than t")
    abar_padded = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod]).to(t.device)  # index 0 is t = -1
    abar, abar_prev = abar_padded[t + 1], abar_padded[t_prev + 1]  # (N,) each, in the schedule's dtype
    sigma = eta * ((1.0 - abar_prev) / (1.0 - abar) * (1.0 - abar / abar_prev)).sqrt()  # (N,)
    x0 = (x_t - _bcast((1.0 - abar).sqrt(), x_t) * eps) / _bcast(abar.sqrt(), x_t)
    out = _bcast(abar_prev.sqrt(), x_t) * x0 + _bcast((1.0 - abar_prev - sigma**2).clamp(min=0).sqrt(), x_t) * eps
    if eta > 0:
        out = out + _bcast(sigma, x_t) * (torch.randn_like(x_t) if noise is None else noise)
    return out


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) in nats, elementwise (the terms of DDPM Eq. 5).
    Args: means and log variances of any broadcastable shapes, e.g. (N, C, H, W). Returns: the broadcast shape."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(x, means, log_scales):
    """log P(x) for 8-bit data: N(means, exp(log_scales)^2) integrated over x's bin (DDPM §3.3, Eq. 13).
    Args: x: (N, ...) data in [-1, 1] on the 256-level grid; means, log_scales: (N, ...) (broadcastable).
    Returns: (N, ...) log-likelihood in nats; the edge bins reach to -inf and +inf. (ADM approximates the
        normal CDF with tanh; we use the exact one.)
    """
    inv_std = torch.exp(-log_scales)
    upper, lower = inv_std * (x - means + 1.0 / 255), inv_std * (x - means - 1.0 / 255)
    # P(lower < z < upper), taken from the side of 0 where it does not cancel in float32.
    delta = torch.where(
        lower > 0,
        torch.special.ndtr(-lower) - torch.special.ndtr(-upper),
        torch.special.ndtr(upper) - torch.special.ndtr(lower),
    ).clamp(min=1e-12)
    edges = torch.where(x < -0.999, torch.special.log_ndtr(upper), torch.special.log_ndtr(-lower))
    return torch.where((x < -0.999) | (x > 0.999), edges, torch.log(delta))


def space_timesteps(num_timesteps: int, section_counts) -> set[int]:
    """The steps of the original process kept when sampling with fewer (IDDPM §4 "respacing").
    Args: num_timesteps: steps of the original process; section_counts: "250" (250 evenly spread steps, as DiT
        samples), "10,15,20" (equal sections with that many steps each), "ddim50" (DDIM's fixed stride), int or list.
    Returns: set of kept indices in [0, num_timesteps).
    """
    _check_count(num_timesteps)
    if isinstance(section_counts, str) and section_counts.startswith("ddim"):
        wanted = int(section_counts[len("ddim") :])
        for stride in range(1, num_timesteps + 1):
            if len(range(0, num_timesteps, stride)) == wanted:
                return set(range(0, num_timesteps, stride))
        raise ValueError(f"cannot take exactly {wanted} of {num_timesteps} steps with a fixed stride")
    if isinstance(section_counts, str):
        section_counts = [int(c) for c in section_counts.split(",")]
    elif isinstance(section_counts, int):
        section_counts = [section_counts]
    size, extra = divmod(num_timesteps, len(section_counts))
    kept, start = set(), 0
    for i, count in enumerate(section_counts):
        length = size + (1 if i < extra else 0)
        if not 1 <= count <= length:
            raise ValueError(
                f"respacing {section_counts} asks for {count} steps of a section of {length} "
                f"(the process has {num_timesteps} steps)"
            )
        stride = (length - 1) / (count - 1) if count > 1 else 1.0
        kept.update(start + round(j * stride) for j in range(count))
        start += length
    return kept


def loss_per_quarter(loss: torch.Tensor, t: torch.Tensor, num_timesteps: int) -> dict[str, float]:
    """Mean loss in each quarter of the timestep range, for logging (IDDPM Fig. 2: the loss differs a lot by t).
    Args: loss: (N,) per-example loss; t: (N,) timesteps; num_timesteps: size of the range.
    Returns: {"q0": ..., "q1": ..., "q2": ..., "q3": ...}, q0 covering t < num_timesteps / 4; nan when empty.
    """
    if loss.ndim != 1 or loss.shape != t.shape:
        raise ValueError(f"loss and t must both be (N,), got {tuple(loss.shape)} and {tuple(t.shape)}")
    quarter, loss = (t.long() * 4) // num_timesteps, loss.detach().float()  # (N,)
    return {f"q{q}": (loss[quarter == q].mean().item() if (quarter == q).any() else float("nan")) for q in range(4)}


# ----------------------------------------------------------------------------- the process
class GaussianDiffusion:
    """A discrete Gaussian diffusion process: its schedule, training loss and samplers (ADM names)."""

    def __init__(self, betas, learn_sigma: bool = True, loss_type: str | None = None, timestep_map=None, device=None):
        """betas: (num_timesteps,) in (0, 1]; learn_sigma: the model outputs 2C channels, eps and v (IDDPM Eq. 15);
        loss_type: "mse" (L_simple) or "hybrid" (L_simple + L_vlb, IDDPM §3.1), default "hybrid" if learn_sigma;
        timestep_map: (num_timesteps,) the t the model sees (set by SpacedDiffusion); device: where tensors live."""
        betas = torch.as_tensor(betas, dtype=torch.float64).detach().cpu()
        if betas.ndim != 1 or len(betas) == 0 or not ((betas > 0) & (betas <= 1)).all():
            raise ValueError("betas must be a non-empty 1-D sequence of values in (0, 1]")
        loss_type = loss_type or ("hybrid" if learn_sigma else "mse")
        if loss_type not in ("mse", "hybrid"):
            raise ValueError(f"loss_type must be 'mse' or 'hybrid', got {loss_type!r}")
        if loss_type == "hybrid" and not learn_sigma:
            raise ValueError("loss_type='hybrid' trains a learned variance, so it needs learn_sigma=True")
        self.num_timesteps, self.learn_sigma, self.loss_type = len(betas), learn_sigma, loss_type
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        timestep_map = torch.arange(len(betas)) if timestep_map is None else torch.as_tensor(timestep_map)
        if timestep_map.shape != betas.shape:
            raise ValueError(f"timestep_map must have shape {tuple(betas.shape)}, got {tuple(timestep_map.shape)}")
        self.timestep_map = timestep_map.long().to(self.device)
        alphas_cumprod = compute_alphas_cumprod(betas)  # float64 here, float32 on the device below
        coef1, coef2, variance, log_variance = _posterior_schedule(betas, alphas_cumprod)
        schedule = dict(
            betas=betas,
            alphas_cumprod=alphas_cumprod,
            alphas_cumprod_prev=_alphas_cumprod_prev(alphas_cumprod),
            sqrt_alphas_cumprod=alphas_cumprod.sqrt(),
            sqrt_one_minus_alphas_cumprod=(1.0 - alphas_cumprod).sqrt(),
            posterior_variance=variance,
            posterior_log_variance_clipped=log_variance,
            posterior_mean_coef1=coef1,
            posterior_mean_coef2=coef2,
        )
        for name, value in schedule.items():
            setattr(self, name, value.to(device=self.device, dtype=torch.float32))
        # The pure functions get float64 copies (float32 on MPS, which has no float64): in float32,
        # 1 - abar near t = 0 keeps only ~3 digits, which would leak into the posterior coefficients.
        precise = torch.float32 if self.device.type == "mps" else torch.float64
        self._betas64, self._alphas_cumprod64 = (v.to(self.device, precise) for v in (betas, alphas_cumprod))

    def _scale_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """(N,) indices into this (possibly respaced) process -> (N,) timesteps of the original process."""
        return self.timestep_map.to(t.device)[t]

    def _randn(self, shape, device, generator=None, dtype=torch.float32) -> torch.Tensor:
        """N(0, I) noise drawn on the generator's device (reproducible), then moved to `device`."""
        return draw(torch.randn, tuple(shape), generator=generator, device=device, dtype=dtype)

    def sample_timesteps(self, batch_size: int, device=None, generator=None) -> torch.Tensor:
        """t ~ Uniform{0, ..., num_timesteps - 1} (DDPM Algorithm 1): (batch_size,) int64 on `device`."""
        device = torch.device(device) if device is not None else self.device
        return draw(torch.randint, 0, self.num_timesteps, (batch_size,), generator=generator, device=device)

    def q_mean_variance(self, x_start, t):
        """q(x_t | x_0) = N(sqrt(abar_t) x_0, 1 - abar_t) (DDPM Eq. 4): mean (N, ...), variance, log_variance."""
        _check_t(t, x_start, self.num_timesteps)
        variance = _extract(1.0 - self._alphas_cumprod64, t, x_start)
        return _extract(self.sqrt_alphas_cumprod, t, x_start) * x_start, variance, torch.log(variance)

    def q_sample(self, x_start, t, noise=None):
        """x_t for x_start: (N, ...) at t: (N,) (DDPM Eq. 4); noise: (N, ...), drawn when None."""
        return q_sample(x_start, t, torch.randn_like(x_start) if noise is None else noise, self._alphas_cumprod64)

    def q_posterior_mean_variance(self, x_start, x_t, t):
        """q(x_{t-1} | x_t, x_0) (DDPM Eqs. 6-7): mean (N, ...), variance and log_variance_clipped (N, 1, ..)."""
        return q_posterior_mean_variance(x_start, x_t, t, self._betas64, self._alphas_cumprod64)

    def _check_output(self, model_output, x) -> None:
        expected = (x.shape[0], 2 * x.shape[1] if self.learn_sigma else x.shape[1], *x.shape[2:])
        if tuple(model_output.shape) != expected:
            raise ValueError(
                f"the model returned {tuple(model_output.shape)}; with learn_sigma={self.learn_sigma} "
                f"and x of shape {tuple(x.shape)} it must return {expected}"
            )

    def _p_from_output(self, model_output, x, t, clip_denoised: bool) -> dict:
        """model_output: (N, C or 2C, H, W) at x: (N, C, H, W) -> the dict of p_mean_variance."""
        self._check_output(model_output, x)
        model_output = model_output.to(x.dtype)
        if self.learn_sigma:
            eps, v = model_output.chunk(2, dim=1)  # (N, C, H, W) each
            # Log variance between the posterior's and beta_t's. IDDPM's Eq. 15 weighs log beta_t by v;
            # the ADM code (DiT's) weighs it by (v + 1) / 2, so v = -1 is the posterior's, v = +1 beta_t's.
            # v is not clamped: values outside [-1, 1] extrapolate beyond the two.
            min_log = _extract(self.posterior_log_variance_clipped, t, x)
            max_log = _extract(torch.log(self.betas), t, x)
            frac = (v + 1) / 2
            log_variance = frac * max_log + (1 - frac) * min_log  # (N, C, H, W)
        else:
            eps = model_output
            # Fixed sigma_t^2 = beta_t (DDPM §3.2, ADM "fixed large"); t = 0 takes the posterior's t = 1 value.
            fixed = torch.cat([self.posterior_variance[1:2], self.betas[1:]]) if self.num_timesteps > 1 else self.betas
            log_variance = _extract(torch.log(fixed), t, x)  # (N, 1, 1, 1)
        pred_xstart = predict_xstart_from_eps(x, t, eps, self._alphas_cumprod64)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean, _, _ = q_posterior_mean_variance(pred_xstart, x, t, self._betas64, self._alphas_cumprod64)
        return dict(
            mean=mean, variance=torch.exp(log_variance), log_variance=log_variance, pred_xstart=pred_xstart, eps=eps
        )

    def p_mean_variance(self, model, x, t, clip_denoised: bool = True, model_kwargs=None) -> dict:
        """p_theta(x_{t-1} | x_t) (DDPM Eq. 1): mean from DDPM Eq. 7 at the predicted x_0, variance IDDPM Eq. 15.

        Args: model(x, t, **model_kwargs) -> (N, C or 2C, H, W), called with the original timesteps;
            x: (N, C, H, W) x_t; t: (N,); clip_denoised: clamp the predicted x_0 to [-1, 1].
        Returns: dict of mean (N, C, H, W); variance and log_variance ((N, C, H, W) learned, else (N, 1, 1, 1));
            pred_xstart (N, C, H, W); eps (N, C, H, W).
        """
        _check_t(t, x, self.num_timesteps)
        return self._p_from_output(model(x, self._scale_timesteps(t), **(model_kwargs or {})), x, t, clip_denoised)

    def training_losses(self, model, x_start, t, model_kwargs=None, noise=None) -> dict:
        """Losses for x_start: (N, C, H, W) at t: (N,), noise: (N, C, H, W) (drawn when None).

        Returns: dict of (N,) tensors: "mse" (L_simple, DDPM Eq. 14); with loss_type "hybrid" also "vb", L_vlb in
            bits per dim (DDPM Eq. 5; the decoder NLL at t = 0) with the mean detached so it trains only the
            variance (IDDPM §3.1), scaled by num_timesteps / 1000 as ADM; "loss" = mse (+ vb: lambda = 1, as DiT).
        """
        noise = torch.randn_like(x_start) if noise is None else noise
        x_t = q_sample(x_start, t, noise, self._alphas_cumprod64)
        model_output = model(x_t, self._scale_timesteps(t), **(model_kwargs or {}))
        self._check_output(model_output, x_start)
        channels = x_start.shape[1]
        terms = {"mse": epsilon_mse_loss(model_output[:, :channels], noise)}
        terms["loss"] = terms["mse"]
        if self.loss_type == "hybrid":
            frozen = torch.cat([model_output[:, :channels].detach(), model_output[:, channels:]], dim=1)  # stop-grad
            terms["vb"] = self._vb_terms_bpd(frozen, x_start, x_t, t) * (self.num_timesteps / 1000.0)
            terms["loss"] = terms["mse"] + terms["vb"]
        return terms

    def _vb_terms_bpd(self, model_output, x_start, x_t, t) -> torch.Tensor:
        """(N,) L_{t-1} of DDPM Eq. 5 in bits/dim: KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)); -log p(x_0|x_1) at 0."""
        true_mean, _, true_log_var = q_posterior_mean_variance(x_start, x_t, t, self._betas64, self._alphas_cumprod64)
        out = self._p_from_output(model_output, x_t, t, clip_denoised=False)
        kl = normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"]).flatten(1).mean(1)
        nll = -discretized_gaussian_log_likelihood(x_start, out["mean"], 0.5 * out["log_variance"]).flatten(1).mean(1)
        return torch.where(t == 0, nll, kl) / math.log(2.0)

    def p_sample(self, model, x, t, clip_denoised: bool = True, model_kwargs=None, generator=None) -> dict:
        """One ancestral step x_t -> x_{t-1} (DDPM Algorithm 2): dict(sample, pred_xstart), each (N, C, H, W)."""
        out = self.p_mean_variance(model, x, t, clip_denoised, model_kwargs)
        noise = self._randn(x.shape, x.device, generator, x.dtype)
        return dict(sample=ddpm_step(out["mean"], out["log_variance"], t, noise), pred_xstart=out["pred_xstart"])

    def ddim_sample(
        self, model, x, t, eta: float = 0.0, clip_denoised: bool = True, model_kwargs=None, generator=None
    ) -> dict:
        """One DDIM step x_t -> x_{t-1} of this process (DDIM Eq. 12): dict(sample, pred_xstart), each (N, C, H, W)"""
        out = self.p_mean_variance(model, x, t, clip_denoised, model_kwargs)
        # The eps that agrees with the (possibly clipped) x_0, as ADM does.
        eps = (x - _extract(self.sqrt_alphas_cumprod, t, x) * out["pred_xstart"]) / _extract(
            self.sqrt_one_minus_alphas_cumprod, t, x
        )
        noise = self._randn(x.shape, x.device, generator, x.dtype) if eta > 0 else None
        sample = ddim_step(x, eps, t, t - 1, self._alphas_cumprod64, eta, noise)
        return dict(sample=sample, pred_xstart=out["pred_xstart"])

    def sample_loop_progressive(
        self,
        model,
        shape,
        noise=None,
        model_kwargs=None,
        device=None,
        progress=False,
        generator=None,
        clip_denoised: bool = True,
        sampler: str = "ddpm",
        eta: float = 0.0,
    ):
        """Yield dict(sample, pred_xstart) after each step from t = num_timesteps - 1 down to 0.

        Args: shape: (N, C, H, W); noise: (N, C, H, W) x_T, drawn when None; sampler: "ddpm" or "ddim".
        """
        if sampler not in ("ddpm", "ddim"):
            raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {sampler!r}")
        if noise is not None and tuple(noise.shape) != tuple(shape):
            raise ValueError(f"noise has shape {tuple(noise.shape)} but shape {tuple(shape)} was asked for")
        device = torch.device(device) if device is not None else self.device
        x = noise.to(device) if noise is not None else self._randn(shape, device, generator)
        for i in tqdm(range(self.num_timesteps - 1, -1, -1), disable=not progress, desc=sampler):
            t = torch.full((x.shape[0],), i, device=device, dtype=torch.long)
            loop = _LOOP_TIMESTEPS.set(True)  # t comes from range() above: no check that reads it back
            try:
                with torch.no_grad():
                    if sampler == "ddpm":
                        out = self.p_sample(model, x, t, clip_denoised, model_kwargs, generator)
                    else:
                        out = self.ddim_sample(model, x, t, eta, clip_denoised, model_kwargs, generator)
            finally:
                _LOOP_TIMESTEPS.reset(loop)  # before the yield: the caller's code between steps is checked as usual
            yield out
            x = out["sample"]

    def p_sample_loop(
        self,
        model,
        shape,
        noise=None,
        model_kwargs=None,
        device=None,
        progress=False,
        generator=None,
        clip_denoised: bool = True,
    ) -> torch.Tensor:
        """Ancestral sampling from x_T ~ N(0, I) (DDPM Algorithm 2): shape (N, C, H, W) -> x_0 (N, C, H, W)."""
        for out in self.sample_loop_progressive(  # noqa: B007 - only the last step's output is kept
            model, shape, noise, model_kwargs, device, progress, generator, clip_denoised
        ):
            pass
        return out["sample"]

    def ddim_sample_loop(
        self,
        model,
        shape,
        noise=None,
        model_kwargs=None,
        device=None,
        progress=False,
        generator=None,
        clip_denoised: bool = True,
        eta: float = 0.0,
    ) -> torch.Tensor:
        """DDIM sampling (DDIM Eq. 12) over this process's steps (respace it, e.g. "ddim50") -> x_0 (N, C, H, W)."""
        for out in self.sample_loop_progressive(  # noqa: B007 - only the last step's output is kept
            model, shape, noise, model_kwargs, device, progress, generator, clip_denoised, "ddim", eta
        ):
            pass
        return out["sample"]


class SpacedDiffusion(GaussianDiffusion):
    """A process that keeps some steps of a base process, with the same abar at those steps (IDDPM §4)."""

    def __init__(self, use_timesteps, betas, **kwargs):
        """use_timesteps: base-process indices to keep (see space_timesteps); betas: (num_timesteps,) of the base."""
        base = compute_alphas_cumprod(torch.as_tensor(betas, dtype=torch.float64))
        kept = sorted(int(i) for i in use_timesteps)
        if not kept or kept[0] < 0 or kept[-1] >= len(base):
            raise ValueError(f"use_timesteps must be non-empty indices in [0, {len(base)})")
        # beta'_i = 1 - abar[k_i] / abar[k_{i-1}]: the cumulative product then equals abar at every kept step.
        previous = torch.cat([torch.ones(1, dtype=torch.float64), base[kept[:-1]]])
        self.use_timesteps, self.original_num_steps = set(kept), len(base)
        super().__init__(1.0 - base[kept] / previous, timestep_map=kept, **kwargs)


def create_diffusion(
    timestep_respacing=None,
    noise_schedule: str = "linear",
    learn_sigma: bool = True,
    diffusion_steps: int = 1000,
    device=None,
    loss_type: str | None = None,
) -> GaussianDiffusion:
    """DiT's set-up: 1000 linear steps, learned sigma, hybrid loss.
    Args: timestep_respacing: None or "" for all steps, else as space_timesteps ("250", "ddim50", 100);
        noise_schedule: "linear" or "cosine"; loss_type: None picks "hybrid" if learn_sigma else "mse".
    """
    schedules = {"linear": linear_beta_schedule, "cosine": cosine_beta_schedule}
    if noise_schedule not in schedules:
        raise ValueError(f"noise_schedule must be one of {tuple(schedules)}, got {noise_schedule!r}")
    betas = schedules[noise_schedule](diffusion_steps)
    kwargs = dict(learn_sigma=learn_sigma, loss_type=loss_type, device=device)
    if timestep_respacing is None or timestep_respacing == "":
        return GaussianDiffusion(betas, **kwargs)
    return SpacedDiffusion(space_timesteps(diffusion_steps, timestep_respacing), betas, **kwargs)
