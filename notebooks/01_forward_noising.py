# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Forward noising: how diffusion destroys an image
#
# **Paper:** DiT §3.1, *Diffusion formulation* (Peebles & Xie, ICCV 2023). DiT takes the forward
# process unchanged from DDPM (Ho et al. 2020, §2, Eq. 4), with the linear schedule of 1000 steps
# (DiT §4, *Diffusion*). The cosine schedule we compare it with is from Improved DDPM
# (Nichol & Dhariwal 2021, §3.2).
#
# **Learning objectives.** After this notebook you can
#
# 1. write down the forward process $q(x_t \mid x_{t-1})$ and a noise schedule $\beta_t$ (linear and cosine);
# 2. compute $\bar\alpha_t$ and the signal-to-noise ratio, and read their curves;
# 3. jump straight from a clean image $x_0$ to a noisy $x_t$ with the closed form $q(x_t \mid x_0)$,
#    the function `q_sample` that every DiT training step calls;
# 4. explain why $x_t$ at the last step is, for all practical purposes, a standard Gaussian, which
#    is what lets sampling start from pure noise.
#
# **Code:** `minidit/diffusion.py` (`linear_beta_schedule`, `cosine_beta_schedule`,
# `compute_alphas_cumprod`, `q_sample`, `snr`, `normal_kl`).
# **Exercises:** ex01 (schedule and `alphas_cumprod`), ex02 (`q_sample`).

# %% [markdown]
# ## Parameters
#
# One cell holds every size. CI runs each notebook with `MINIDIT_QUICK=1`: the same code on
# smaller numbers, so that it finishes in seconds.

# %%
import os

QUICK = os.environ.get("MINIDIT_QUICK", "0") == "1"
NUM_TIMESTEPS = 1000  # DiT §4: 1000 diffusion steps
MC_SAMPLES = 2_000 if QUICK else 100_000  # Monte Carlo samples for checking the closed form
SEED = 0

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch

from minidit import diffusion
from minidit.data import CLASS_NAMES, load_fashion_mnist, to_model_range

torch.manual_seed(SEED)
print(f"quick mode: {QUICK}")

# %% [markdown]
# ## 1. A Markov chain that adds a little noise at a time
#
# DDPM defines a *fixed* (nothing is learned) forward process. At each of the
# $\texttt{num\_timesteps}$ steps it shrinks the image a little and adds a little Gaussian noise:
#
# $$q(x_t \mid x_{t-1}) = \mathcal{N}\!\left(x_t;\ \sqrt{1-\beta_t}\,x_{t-1},\ \beta_t I\right),
# \qquad x_t = \sqrt{1-\beta_t}\,x_{t-1} + \sqrt{\beta_t}\,\varepsilon_t,\quad \varepsilon_t \sim \mathcal N(0, I).$$
#
# The factor $\sqrt{1-\beta_t}$ is what keeps the variance in check: if $x_{t-1}$ has unit
# variance, so has $x_t$, since $(1-\beta_t) + \beta_t = 1$. The sequence $\beta_1, \dots, \beta_{\texttt{num\_timesteps}}$
# is the **noise schedule**. Two common choices:
#
# * **linear** (DDPM, and DiT): $\beta_t$ rises linearly from $10^{-4}$ to $0.02$ over 1000 steps;
# * **cosine** (Improved DDPM §3.2): chosen so that $\bar\alpha_t$ (next section) follows
#   $f(t)/f(0)$ with $f(t) = \cos^2\!\left(\frac{t/\texttt{num\_timesteps} + s}{1+s}\cdot\frac{\pi}{2}\right)$, $s = 0.008$,
#   and $\beta_t = 1 - \bar\alpha_t/\bar\alpha_{t-1}$ clipped at 0.999.
#
# *Indexing.* The paper counts $t = 1, \dots, \texttt{num\_timesteps}$; the code (like ADM and the
# official DiT) counts `t = 0, ..., num_timesteps - 1`. Code index `t` is paper step $t+1$.

# %%
betas_linear = diffusion.linear_beta_schedule(NUM_TIMESTEPS)
betas_cosine = diffusion.cosine_beta_schedule(NUM_TIMESTEPS)
print("linear:", betas_linear.dtype, tuple(betas_linear.shape),
      f"beta[0] = {betas_linear[0]:.2e}, beta[-1] = {betas_linear[-1]:.2e}")
print("cosine:", betas_cosine.dtype, tuple(betas_cosine.shape),
      f"beta[0] = {betas_cosine[0]:.2e}, beta[-1] = {betas_cosine[-1]:.2e}")

# %% [markdown]
# The cosine schedule adds much less noise at the start and then a great deal at the very end
# (the last $\beta$ is clipped at 0.999). On a log scale:

# %%
steps = np.arange(NUM_TIMESTEPS)
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.semilogy(steps, betas_linear.numpy(), label="linear (DDPM, DiT)")
ax.semilogy(steps, betas_cosine.numpy(), label="cosine (Improved DDPM)")
ax.set_xlabel("timestep t (code index)")
ax.set_ylabel(r"$\beta_t$ (log scale)")
ax.set_title("Noise added at each step")
ax.legend()
ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 2. Jumping to any step in one go: $\bar\alpha_t$ and $q(x_t \mid x_0)$
#
# Write $\alpha_t = 1 - \beta_t$. Unrolling two steps,
#
# $$x_t = \sqrt{\alpha_t}\,x_{t-1} + \sqrt{1-\alpha_t}\,\varepsilon_t
#       = \sqrt{\alpha_t\alpha_{t-1}}\,x_{t-2} + \underbrace{\sqrt{\alpha_t(1-\alpha_{t-1})}\,\varepsilon_{t-1} + \sqrt{1-\alpha_t}\,\varepsilon_t}_{\text{Gaussian, variance } 1 - \alpha_t\alpha_{t-1}},$$
#
# because independent Gaussians add their variances. Repeating down to $x_0$ gives the closed form
# (DDPM Eq. 4), with $\bar\alpha_t = \prod_{s \le t} \alpha_s$ (`alphas_cumprod` in the code):
#
# $$q(x_t \mid x_0) = \mathcal N\!\left(x_t;\ \sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t) I\right)
# \quad\Longleftrightarrow\quad
# x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon,\qquad \varepsilon\sim\mathcal N(0, I).$$
#
# This is why training is cheap: to make a training example at step $t$ we never run the chain,
# we draw one $\varepsilon$ and mix. Let us compute $\bar\alpha_t$ by hand and check it against
# the package.

# %%
alphas_cumprod_by_hand = torch.cumprod(1.0 - betas_linear, dim=0)
alphas_cumprod = diffusion.compute_alphas_cumprod(betas_linear)
alphas_cumprod_cosine = diffusion.compute_alphas_cumprod(betas_cosine)
torch.testing.assert_close(alphas_cumprod_by_hand, alphas_cumprod)
print(f"alphas_cumprod[0]   = {alphas_cumprod[0]:.6f}   (almost the clean image)")
print(f"alphas_cumprod[499] = {alphas_cumprod[499]:.6f}")
print(f"alphas_cumprod[999] = {alphas_cumprod[-1]:.2e} (almost no signal left)")

# %% [markdown]
# **Check the closed form against the chain.** We take one pixel with value $x_0 = 0.8$, copy it
# `MC_SAMPLES` times, and run the chain step by step. At a few steps we compare the empirical mean
# and standard deviation with $\sqrt{\bar\alpha_t}\,x_0$ and $\sqrt{1-\bar\alpha_t}$.

# %%
x0_pixel = 0.8
x = torch.full((MC_SAMPLES,), x0_pixel, dtype=torch.float64)
checkpoints = {0, 49, 199, 499, 999}
print(f"{'t':>4} | {'chain mean':>10} {'closed form':>11} | {'chain std':>9} {'closed form':>11}")
for t in range(NUM_TIMESTEPS):
    x = torch.sqrt(1 - betas_linear[t]) * x + torch.sqrt(betas_linear[t]) * torch.randn_like(x)
    if t in checkpoints:
        mean_cf = alphas_cumprod[t].sqrt() * x0_pixel
        std_cf = (1 - alphas_cumprod[t]).sqrt()
        print(f"{t:>4} | {x.mean():>10.4f} {mean_cf:>11.4f} | {x.std():>9.4f} {std_cf:>11.4f}")
print(f"Monte Carlo error of the mean at the last step: about {1 / MC_SAMPLES**0.5:.4f}")

# %% [markdown]
# The two agree up to Monte Carlo error: the chain's mean is off by about
# $\text{std}/\sqrt{\texttt{MC\_SAMPLES}}$ (the last line printed above).
#
# ### How much signal is left? Signal and noise coefficients, and the SNR
#
# The signal coefficient $\sqrt{\bar\alpha_t}$ and the noise coefficient $\sqrt{1-\bar\alpha_t}$
# always satisfy $(\sqrt{\bar\alpha_t})^2 + (\sqrt{1-\bar\alpha_t})^2 = 1$. Their ratio of powers is
# the **signal-to-noise ratio**
#
# $$\mathrm{SNR}(t) = \frac{\bar\alpha_t}{1-\bar\alpha_t},$$
#
# the single number that says how hard it is to see $x_0$ through $x_t$ (`diffusion.snr`).
# Left: the two coefficients. Right: $\log \mathrm{SNR}$, which falls by about 20 nats over the
# 1000 steps.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for ac, name, style in [(alphas_cumprod, "linear", "-"), (alphas_cumprod_cosine, "cosine", "--")]:
    axes[0].plot(steps, ac.sqrt().numpy(), "C0" + style, label=rf"signal $\sqrt{{\bar\alpha_t}}$ ({name})")
    axes[0].plot(steps, (1 - ac).sqrt().numpy(), "C3" + style, label=rf"noise $\sqrt{{1-\bar\alpha_t}}$ ({name})")
    axes[1].plot(steps, diffusion.snr(ac).log().numpy(), style, label=name)
axes[0].set_xlabel("timestep t")
axes[0].set_ylabel("coefficient")
axes[0].set_title(r"$x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$")
axes[0].legend(fontsize=8)
axes[1].axhline(0, color="gray", lw=0.8)
axes[1].set_xlabel("timestep t")
axes[1].set_ylabel(r"$\log\,\mathrm{SNR}(t)$")
axes[1].set_title("log signal-to-noise ratio (0 = equal power)")
axes[1].legend()
for ax in axes:
    ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()

for ac, name in [(alphas_cumprod, "linear"), (alphas_cumprod_cosine, "cosine")]:
    t_half = int((ac.sqrt() < 0.5).nonzero()[0])
    t_snr1 = int((diffusion.snr(ac) < 1).nonzero()[0])
    print(f"{name:>6}: signal below half amplitude from t = {t_half}, SNR below 1 from t = {t_snr1}")

# %% [markdown]
# Read the curves: with the **linear** schedule the SNR crosses 1 (log SNR = 0) about a quarter
# of the way in and the signal is below half its amplitude before step 400 (printout above); the
# last few hundred steps are almost pure noise. The **cosine** schedule spends its steps more
# evenly (its log SNR falls almost linearly in the middle), which Improved DDPM found better for
# small $32\times32$ pixel images. DiT models $32\times32\times4$ *latents* and keeps the linear schedule; in this
# course we keep DiT's choice on $32\times32$ Fashion-MNIST, and `create_diffusion` takes
# `noise_schedule="cosine"` if you want to try the other.
#
# ## 3. Seeing it: one Fashion-MNIST image per class, noised
#
# `load_fashion_mnist` gives uint8 images zero-padded to $32\times32$ (so that patch sizes 2, 4
# and 8 all divide the side, notebook 03); `to_model_range` maps them to $[-1, 1]$, the range
# the diffusion model works in. We take the first test image of each class.

# %%
data = load_fashion_mnist("test")
first_of_class = [int((data.labels == k).nonzero()[0]) for k in range(10)]
x_start = to_model_range(data.images[first_of_class])  # (10, 1, 32, 32)
print(x_start.shape, x_start.dtype, f"range [{x_start.min():.0f}, {x_start.max():.0f}]")

# %% [markdown]
# Now `q_sample` for a row of timesteps. Each row uses **one** noise image $\varepsilon$ for all
# its columns, so you watch the same noise take over as $\sqrt{\bar\alpha_t}$ shrinks.

# %%
show_t = [0, 50, 100, 200, 300, 400, 600, 999]


def noise_grid(x_start, alphas_cumprod, show_t, generator_seed=SEED):
    """(K, 1, H, W) images -> (K, len(show_t), H, W) noised with one shared noise per row."""
    g = torch.Generator().manual_seed(generator_seed)
    noise = torch.randn(x_start.shape, generator=g)  # (K, 1, H, W)
    rows = []
    for t in show_t:
        t_batch = torch.full((x_start.shape[0],), t, dtype=torch.long)  # (K,)
        rows.append(diffusion.q_sample(x_start, t_batch, noise, alphas_cumprod))
    return torch.stack(rows, dim=1)[:, :, 0]  # (K, len(show_t), H, W)


def show_grid(grid, row_labels, col_labels, title):
    k, m = grid.shape[:2]
    fig, axes = plt.subplots(k, m, figsize=(1.15 * m + 1.2, 1.15 * k + 0.5), squeeze=False)
    for i in range(k):
        for j in range(m):
            ax = axes[i, j]
            ax.imshow(grid[i, j].clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(col_labels[j], fontsize=8)
            if j == 0:
                ax.set_ylabel(row_labels[i], fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle(title)
    plt.tight_layout()
    plt.show()


grid = noise_grid(x_start, alphas_cumprod.float(), show_t)
col_labels = [f"t={t}\n" + rf"$\sqrt{{\bar\alpha}}$={alphas_cumprod[t].sqrt():.2f}" for t in show_t]
show_grid(grid, CLASS_NAMES, col_labels, "q(x_t | x_0), linear schedule (pixels clipped to [-1, 1] for display)")

# %% [markdown]
# Fine detail goes first: by $t = 200$ the print on the pullover is gone, by $t = 400$ only the
# large bright shapes (trousers, dress, bag) can be guessed, and by $t = 600$ nothing can. The same images under the **cosine** schedule, for three classes:

# %%
grid_cos = noise_grid(x_start[[1, 5, 8]], alphas_cumprod_cosine.float(), show_t)
col_labels_cos = [f"t={t}\n" + rf"$\sqrt{{\bar\alpha}}$={alphas_cumprod_cosine[t].sqrt():.2f}" for t in show_t]
show_grid(grid_cos, [CLASS_NAMES[k] for k in (1, 5, 8)], col_labels_cos, "q(x_t | x_0), cosine schedule")

# %% [markdown]
# The cosine schedule keeps the shapes visible for longer: fewer of its steps are wasted on images
# that are already noise.
#
# ## 4. Why $x_t$ at the last step is pure noise
#
# At the last step the linear schedule leaves $\sqrt{\bar\alpha} \approx 0.0064$: a pixel of value
# $1$ contributes $0.006$ next to noise of standard deviation $\approx 1$. So $q(x_{\text{last}} \mid x_0)$
# is almost exactly $\mathcal N(0, I)$ whatever $x_0$ was, and sampling may *start* from
# $\mathcal N(0, I)$ without knowing anything about the data.
#
# How close is "almost"? The diffusion bound has a term for exactly this, the **prior term**
# $L_{\text{last}} = D_{\mathrm{KL}}\!\left(q(x_{\text{last}} \mid x_0)\,\|\,\mathcal N(0, I)\right)$
# (DDPM Eq. 5; Improved DDPM calls it $L_T$). Per pixel, between two Gaussians,
#
# $$D_{\mathrm{KL}}\!\left(\mathcal N(\sqrt{\bar\alpha_t}x_0,\ 1-\bar\alpha_t)\,\|\,\mathcal N(0,1)\right)
#   = \tfrac12\left(\bar\alpha_t x_0^2 + (1-\bar\alpha_t) - 1 - \log(1-\bar\alpha_t)\right).$$
#
# `diffusion.normal_kl` computes it (in nats). It depends on $x_0$ only through $x_0^2$, so we can
# average over the data exactly by plugging in the root-mean-square pixel value. We plot it
# for every $t$, in bits per pixel.

# %%
x_train_rms = to_model_range(data.images[:2000]).pow(2).mean().sqrt()
fig, ax = plt.subplots(figsize=(6, 3.5))
for ac, name in [(alphas_cumprod, "linear"), (alphas_cumprod_cosine, "cosine")]:
    kl_nats = diffusion.normal_kl(ac.sqrt() * x_train_rms, torch.log(1 - ac), torch.zeros_like(ac), torch.zeros_like(ac))
    kl_bits = kl_nats / np.log(2.0)
    ax.semilogy(steps, kl_bits.numpy(), label=f"{name}: last step {kl_bits[-1]:.1e} bits/pixel")
ax.set_xlabel("timestep t")
ax.set_ylabel(r"KL$(q(x_t|x_0)\,\|\,\mathcal{N}(0,I))$ [bits/pixel]")
ax.set_title("How far x_t is from pure noise (averaged over images)")
ax.legend()
ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()

# %% [markdown]
# At the last step both schedules are within $10^{-4}$ bits per pixel of $\mathcal N(0, I)$:
# no sampler could tell $x_{\text{last}}$ from pure noise, so the prior term is a constant that
# training can ignore.
#
# The same in a picture: the histogram of all pixel values of $x_t$ (2000 test images) against the
# standard normal density. At $t=0$ you see the data (a spike at $-1$, the black background, and
# a spread of greys); by the last step the histogram *is* the bell curve.

# %%
x_many = to_model_range(data.images[:2000])  # (2000, 1, 32, 32)
noise = torch.randn_like(x_many)
grid_x = np.linspace(-4, 4, 200)
fig, axes = plt.subplots(1, 4, figsize=(13, 2.8), sharey=True)
for ax, t in zip(axes, [0, 100, 300, 999]):
    t_batch = torch.full((x_many.shape[0],), t, dtype=torch.long)
    x_t = diffusion.q_sample(x_many, t_batch, noise, alphas_cumprod.float())
    ax.hist(x_t.flatten().numpy(), bins=100, range=(-4, 4), density=True, color="C0", alpha=0.7)
    ax.plot(grid_x, np.exp(-grid_x**2 / 2) / np.sqrt(2 * np.pi), "k", lw=1.2, label="N(0, 1)")
    ax.set_title(f"t = {t}: mean {x_t.mean():.2f}, std {x_t.std():.2f}", fontsize=9)
    ax.set_xlabel("pixel value of x_t")
    ax.set_ylim(0, 1.0)
axes[0].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# One more way to see it: how much does $x_t$ still *correlate* with $x_0$? For the closed form,
# $\mathrm{corr}(x_t, x_0)$ over pixels is about $\sqrt{\bar\alpha_t}\,\sigma_{x_0} / \sqrt{\bar\alpha_t\sigma_{x_0}^2 + 1 - \bar\alpha_t}$,
# where $\sigma_{x_0}$ is the standard deviation of the data's pixels: the covariance of $x_t$ with
# $x_0$ is $\sqrt{\bar\alpha_t}\,\sigma_{x_0}^2$ (the noise is independent of $x_0$) and the variance of
# $x_t$ is $\bar\alpha_t\sigma_{x_0}^2 + 1 - \bar\alpha_t$. We measure it on the samples we just drew
# and print the formula's value beside it.

# %%
sigma_x0 = x_many.std().item()
print(f"sigma_x0 = {sigma_x0:.3f}")
for t in [0, 100, 300, 600, 999]:
    t_batch = torch.full((x_many.shape[0],), t, dtype=torch.long)
    x_t = diffusion.q_sample(x_many, t_batch, noise, alphas_cumprod.float())
    corr = np.corrcoef(x_t.flatten().numpy(), x_many.flatten().numpy())[0, 1]
    a = alphas_cumprod[t].item()
    formula = a**0.5 * sigma_x0 / (a * sigma_x0**2 + 1 - a) ** 0.5
    print(f"t = {t:>3}: corr(x_t, x_0) measured {corr:.4f}, formula {formula:.4f}")

# %% [markdown]
# Measured and predicted agree to about $10^{-3}$ at every $t$ (the gap is the sampling noise of
# one draw). The correlation is below 0.5 by $t = 300$ and about 0.1 at $t = 600$.
#
# ## 5. Your implementation
#
# Exercises **ex01** (`linear_beta_schedule`, `cosine_beta_schedule`, `compute_alphas_cumprod`)
# and **ex02** (`q_sample`) ask you to write the functions this notebook used. The course switch
# (`minidit/course/__init__.py`) runs your version from `exercises/` against minidit's on random inputs
# and reports the largest difference, or says "not started" while the stub still raises
# `NotImplementedError`.

# %%
from minidit import course

results = {ex_id: course.compare(ex_id) for ex_id in ("ex01", "ex02")}

# %% [markdown]
# Once your `q_sample` runs, the course switch routes every call of `diffusion.q_sample` to it
# (`course.use("student", "ex02")`; `MINIDIT_IMPL=student` does it for a whole program), and the
# grid of section 3 is drawn with your code. It should look exactly like the one above.

# %%
if isinstance(results["ex02"].get("q_sample"), float):
    with course.use("student", "ex02"):
        yours = noise_grid(x_start[:3], alphas_cumprod.float(), show_t)
    print(f"max |your grid - minidit's grid| = {(yours - grid[:3]).abs().max():.2e}")
    show_grid(yours, CLASS_NAMES[:3], col_labels, "q(x_t | x_0) with your q_sample")
else:
    print("ex02 is not started yet: write q_sample in exercises/ex02_q_sample.py, then re-run this cell.")

# %% [markdown]
# ## Summary
#
# * The forward process adds Gaussian noise by a fixed schedule $\beta_t$; DiT uses the linear
#   schedule from $10^{-4}$ to $0.02$ over 1000 steps.
# * $\bar\alpha_t = \prod_{s\le t}(1-\beta_s)$ gives the closed form
#   $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$, so a training example at
#   any $t$ costs one draw of noise.
# * $\mathrm{SNR}(t) = \bar\alpha_t/(1-\bar\alpha_t)$ falls from about $10^4$ to $4\cdot10^{-5}$;
#   by the last step $x_t$ is within $10^{-4}$ bits/pixel of $\mathcal N(0, I)$, so sampling can
#   start from pure noise.
#
# **Exercises:** `exercises/ex01_*.py` (noise schedules and `alphas_cumprod`) and
# `exercises/ex02_*.py` (`q_sample`); check them with `pytest exercises -k ex01` and
# `pytest exercises -k ex02`.
#
# **Next:** notebook 02 learns to run this process backwards.
