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
# # 02 · The loss and the reverse process: learning to denoise
#
# **Paper:** DiT §3.1, *Diffusion formulation*: the reverse process
# $p_\theta(x_{t-1}\mid x_t) = \mathcal N(\mu_\theta(x_t), \Sigma_\theta(x_t))$, trained with
# $\mathcal L_{\text{simple}}$ for the noise prediction and the full bound for $\Sigma_\theta$; DiT §4,
# *Diffusion* (250 sampling steps). Behind it: DDPM (Ho et al. 2020) Eqs. 5–7, 11–14 and
# Algorithms 1–2; Improved DDPM (Nichol & Dhariwal 2021) §3.1 (learned variance, hybrid loss)
# and §4 (respacing); DDIM (Song et al. 2021) Eq. 12.
#
# **Learning objectives.** After this notebook you can
#
# 1. write the posterior $q(x_{t-1}\mid x_t, x_0)$ and take one reverse step with it;
# 2. explain why a network that predicts the noise $\varepsilon$ is enough, and why the plain MSE
#    $\mathcal L_{\text{simple}}$ stands in for the likelihood bound;
# 3. train a tiny DiT on Fashion-MNIST on a CPU and sample from it with DDPM;
# 4. sample with fewer steps: respacing, and DDIM;
# 5. explain DiT's last diffusion detail: the learned covariance $\Sigma_\theta$ and the hybrid loss.
#
# **Code:** `minidit/diffusion.py` (`q_posterior_mean_variance`, `predict_xstart_from_eps`,
# `epsilon_mse_loss`, `ddpm_step`, `ddim_step`, `GaussianDiffusion`, `SpacedDiffusion`,
# `create_diffusion`), `minidit/sample.py` (`sample`).
# **Exercises:** ex03 (ε-MSE loss), ex04 (posterior + DDPM step), ex13 (DDIM step).

# %% [markdown]
# ## Parameters
#
# The full run trains for `TRAIN_STEPS` steps or `MAX_MINUTES` minutes, whichever comes first
# (minutes on a laptop CPU, about one on a GPU); `MINIDIT_QUICK=1` (CI) trains for a few seconds,
# so its samples are still noise: the code path is what is being tested.

# %%
import os

from minidit.device import get_device

QUICK = os.environ.get("MINIDIT_QUICK", "0") == "1"
MODEL = "DiT-T/4"  # depth 4, D = 128, p = 4: 64 tokens, 1.3M parameters
TRAIN_STEPS = 40 if QUICK else 3000
MAX_MINUTES = 15  # stop training earlier on a slow machine (a GPU does 3000 steps in about a minute)
BATCH = 32 if QUICK else 128
LR = 1e-3  # DiT uses 1e-4 for much larger models; a tiny model trains faster with a larger step
SAMPLE_STEPS = 20 if QUICK else 250  # DDPM steps for the sample grid (DiT samples with 250)
PER_CLASS = 2 if QUICK else 8  # samples per class in the grid
QUICK_NOTE = "\nquick mode: a few training steps, so these samples are noise" if QUICK else ""
SEED = 0
DEVICE = get_device()  # cuda > mps > cpu (CI: cpu); get_device("cpu") forces the CPU

# %%
import copy
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from tqdm.auto import tqdm

from minidit import diffusion as gd
from minidit.data import CLASS_NAMES, load_fashion_mnist, sample_batch, to_model_range
from minidit.ema import ema_decay_with_warmup, update_ema
from minidit.model import create_model
from minidit.sample import sample

torch.manual_seed(SEED)
print(f"quick mode: {QUICK}, device: {DEVICE}")


def show_images(images, nrow, title, row_labels=None, size=1.0, titles=None):
    """images: (N, 1, H, W) in [-1, 1] -> a grid with nrow images per row (optional per-image titles)."""
    n = images.shape[0]
    rows = math.ceil(n / nrow)
    fig, axes = plt.subplots(rows, nrow, figsize=(size * nrow + (1.2 if row_labels else 0.2), size * rows + 0.5),
                             squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if k < n:
            ax.imshow(images[k, 0].clamp(-1, 1).cpu().numpy(), cmap="gray", vmin=-1, vmax=1)
        else:
            ax.axis("off")
        if titles and k < len(titles):
            ax.set_title(titles[k], fontsize=9)
        if row_labels and k % nrow == 0:
            ax.set_ylabel(row_labels[k // nrow], rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title)
    plt.tight_layout()
    plt.show()


# %% [markdown]
# ## 1. Running the chain backwards: the posterior $q(x_{t-1}\mid x_t, x_0)$
#
# Notebook 01 destroyed an image step by step. To generate, we must go the other way: start from
# $x_{\text{last}}\sim\mathcal N(0, I)$ and draw $x_{t-1}$ given $x_t$ again and again. The true
# reverse step $q(x_{t-1}\mid x_t)$ depends on the whole data distribution and is unknown, but
# **if we also knew $x_0$** it is a Gaussian we can write down (Bayes' rule on three Gaussians,
# DDPM Eqs. 6–7):
#
# $$q(x_{t-1}\mid x_t, x_0) = \mathcal N\big(x_{t-1};\ \tilde\mu_t(x_t, x_0),\ \tilde\beta_t I\big),\qquad
# \tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t}\,x_0 + \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}\,x_t,\qquad
# \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\,\beta_t .$$
#
# The mean is a weighted average of "where we came from" ($x_0$) and "where we are" ($x_t$). We
# compute the two coefficients and $\tilde\beta_t$ by hand at $t = 100$ and check them against
# `q_posterior_mean_variance`.

# %%
diffusion = gd.create_diffusion(device=DEVICE)  # DiT's set-up: 1000 linear steps, learned sigma, hybrid loss
betas, alphas_cumprod = gd.linear_beta_schedule(1000), gd.compute_alphas_cumprod(gd.linear_beta_schedule(1000))

data_test = load_fashion_mnist("test")
x0 = to_model_range(data_test.images[:1])  # (1, 1, 32, 32): an ankle boot
noise = torch.randn_like(x0)
t = torch.tensor([100])
x_t = gd.q_sample(x0, t, noise, alphas_cumprod.float())

abar, abar_prev, beta = alphas_cumprod[100], alphas_cumprod[99], betas[100]
coef_x0 = abar_prev.sqrt() * beta / (1 - abar)
coef_xt = (1 - beta).sqrt() * (1 - abar_prev) / (1 - abar)
var_by_hand = (1 - abar_prev) / (1 - abar) * beta
mean, var, log_var = gd.q_posterior_mean_variance(x0, x_t, t, betas, alphas_cumprod)
torch.testing.assert_close(mean, (coef_x0 * x0 + coef_xt * x_t).float(), atol=1e-5, rtol=1e-5)
torch.testing.assert_close(var.flatten()[0].double(), var_by_hand, atol=1e-7, rtol=1e-5)
print(f"t = 100: mean = {coef_x0:.4f} * x_0 + {coef_xt:.4f} * x_t,  variance = {var_by_hand:.5f}  (beta_t = {beta:.5f})")

# %% [markdown]
# One reverse step with the true $x_0$. The posterior mean removes a sliver of the noise that is
# in $x_t$ (last panel: $x_t - \tilde\mu_t$, magnified 30 times, is the noise $\varepsilon$ we mixed
# in), and $x_{t-1}$ adds back fresh noise of variance $\tilde\beta_t$, a little less than was
# removed. A single step changes little; a thousand of them undo the whole forward process.

# %%
x_prev = gd.ddpm_step(mean, log_var, t, torch.randn_like(x0))
panels = torch.cat([x0, x_t, mean, x_prev, 30 * (x_t - mean)])
show_images(panels, 5, "one posterior step at t = 100", size=2.2,
            titles=["$x_0$", "$x_t$", r"mean $\tilde\mu_t(x_t, x_0)$", "a sample $x_{t-1}$", r"$30\,(x_t - \tilde\mu_t)$"])
corr = np.corrcoef((x_t - mean).flatten().numpy(), noise.flatten().numpy())[0, 1]
print(f"correlation of (x_t - mean) with the noise eps: {corr:.3f}")

# %% [markdown]
# **Two natural variances.** $\tilde\beta_t$ (the posterior's) and $\beta_t$ (the forward step's)
# are the smallest and largest sensible choices for the reverse variance (DDPM §3.2). They differ
# only near $t = 0$ (Improved DDPM, Figure 1), which is why DDPM could fix either one; section 7
# comes back to this.

# %%
posterior_variance = diffusion.posterior_variance.double().cpu()
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(np.arange(1, 1000), (posterior_variance[1:] / betas[1:]).numpy())
ax.set_xscale("log")
ax.set_xlabel("timestep t (log scale)")
ax.set_ylabel(r"$\tilde\beta_t / \beta_t$")
ax.set_title("posterior variance vs forward variance")
ax.grid(alpha=0.3, which="both")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 2. What the network predicts: the noise
#
# At sampling time we do not know $x_0$, so a network estimates it. DDPM's choice (Eq. 11):
# predict the **noise** $\varepsilon_\theta(x_t, t)$ that was mixed in. Solving
# $x_t = \sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\varepsilon$ for $x_0$ gives an estimate
#
# $$\hat x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\,\varepsilon_\theta(x_t, t)}{\sqrt{\bar\alpha_t}}
# \quad(\texttt{predict\_xstart\_from\_eps}),\qquad \mu_\theta(x_t) = \tilde\mu_t(x_t, \hat x_0).$$
#
# So one network output gives the reverse mean. With the *true* noise, $\hat x_0$ is exactly $x_0$:

# %%
x0_hat = gd.predict_xstart_from_eps(x_t, t, noise, alphas_cumprod.float())
print(f"max |x0_hat - x0| with the true noise: {(x0_hat - x0).abs().max():.2e}")

# %% [markdown]
# ## 3. The loss: $\mathcal L_{\text{simple}}$ as the practical stand-in for the bound
#
# Diffusion models are trained on the variational bound on $-\log p_\theta(x_0)$ (DDPM Eq. 5):
#
# $$\mathcal L_{\text{vlb}} = \underbrace{D_{\mathrm{KL}}(q(x_{\text{last}}\mid x_0)\,\|\,p(x_{\text{last}}))}_{\approx 0,\ \text{notebook 01}}
#  + \sum_{t>1} \underbrace{D_{\mathrm{KL}}(q(x_{t-1}\mid x_t, x_0)\,\|\,p_\theta(x_{t-1}\mid x_t))}_{L_{t-1}}
#  - \log p_\theta(x_0\mid x_1).$$
#
# Each $L_{t-1}$ is a KL between two Gaussians. With a fixed variance $\sigma_t^2$ and the
# $\varepsilon$-parametrisation it is a *weighted* squared error on the noise (DDPM Eq. 12):
#
# $$L_{t-1} = \frac{\beta_t^2}{2\sigma_t^2\,\alpha_t\,(1-\bar\alpha_t)}\,\big\lVert\varepsilon - \varepsilon_\theta(x_t, t)\big\rVert^2 + \text{const}.$$
#
# DDPM found that **dropping the weight** trains better samples (DDPM §3.4, Eq. 14), and DiT
# does the same for its noise prediction:
#
# $$\mathcal L_{\text{simple}} = \mathbb E_{t,\,x_0,\,\varepsilon}\,\big\lVert\varepsilon - \varepsilon_\theta(\sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\varepsilon,\ t)\big\rVert^2 .$$
#
# Why is that a good idea? Relative to its average, the bound puts a huge weight on the first
# few steps (left of the plot; the numbers are printed below), where removing a trace of noise
# hardly changes the picture, and about half its average weight on the middle of the range. $\mathcal L_{\text{simple}}$ weighs all $t$ equally, and so spends relatively
# more effort on the larger-$t$ steps that decide the shapes ("the network can focus on more
# difficult denoising tasks", DDPM §3.4).

# %%
alphas = 1 - betas
weight = betas**2 / (2 * betas * alphas * (1 - alphas_cumprod))  # DDPM Eq. 12 with sigma_t^2 = beta_t
weight = weight / weight.mean()  # relative to its average, to compare with L_simple's weight of 1
print(f"bound's relative weight: t = 0: {weight[0]:.0f}, t = 10: {weight[10]:.1f}, t = 500: {weight[500]:.2f}")
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.semilogy(np.arange(1000), weight.numpy(), label=r"bound: weight on $\|\varepsilon-\varepsilon_\theta\|^2$ / its mean")
ax.semilogy(np.arange(1000), np.full(1000, 1.0), label=r"$\mathcal{L}_{simple}$: weight 1 everywhere")
ax.set_xlabel("timestep t")
ax.set_ylabel("weight (log)")
ax.set_title("How the bound and L_simple weigh the timesteps")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()

# %% [markdown]
# `epsilon_mse_loss` computes the per-example squared error, averaged over the pixels. A network
# that outputs 0 scores about 1 (the variance of $\varepsilon$), a perfect one 0:

# %%
eps = torch.randn(8, 1, 32, 32)
print("per-example loss of predicting 0:", gd.epsilon_mse_loss(torch.zeros_like(eps), eps).numpy().round(3))
print("perfect prediction:", gd.epsilon_mse_loss(eps, eps).max().item())
torch.testing.assert_close(gd.epsilon_mse_loss(torch.zeros_like(eps), eps), (eps**2).mean(dim=(1, 2, 3)))

# %% [markdown]
# ## 4. Training a tiny DiT on the CPU
#
# DDPM's Algorithm 1, with a DiT as $\varepsilon_\theta$: draw images and labels, a uniform $t$
# for each, noise them in one jump, predict the noise, step the optimiser. Two details from DiT:
# labels are dropped 10 % of the time (the model is in training mode, so `y_embedder` does it;
# notebook 06 needs this), and we sample from an exponential moving average (EMA) of the weights
# (`update_ema`; with a warm-up, since the run is short). The loss is `training_losses`: the
# $\mathcal L_{\text{simple}}$ above plus a bound term that trains the variance (section 7).

# %%
data = load_fashion_mnist("train").to(DEVICE)  # 60,000 images as one uint8 tensor
torch.manual_seed(SEED)
model = create_model(MODEL, input_size=32, in_channels=1, num_classes=10).to(DEVICE)  # learn_sigma: 2 output channels
ema = copy.deepcopy(model).requires_grad_(False).eval()
optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
generator = torch.Generator().manual_seed(SEED)
print(f"{MODEL}: {sum(p.numel() for p in model.parameters()):,} parameters, {TRAIN_STEPS} steps of {BATCH} images")

history = {"step": [], "mse": [], "vb": [], "t": []}
model.train()
deadline = time.monotonic() + 60 * MAX_MINUTES
for step in tqdm(range(TRAIN_STEPS), desc="training", mininterval=2):
    if time.monotonic() > deadline:
        print(f"stopping at step {step}: the {MAX_MINUTES}-minute budget is spent")
        break
    x_start, y = sample_batch(data, BATCH, generator=generator, flip=True)  # (B, 1, 32, 32) in [-1, 1], (B,)
    t = diffusion.sample_timesteps(BATCH, generator=generator)  # (B,) uniform in [0, 1000)
    losses = diffusion.training_losses(model, x_start, t, model_kwargs={"y": y})  # dict of (B,) tensors
    loss = losses["loss"].mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    update_ema(ema, model, ema_decay_with_warmup(step, 0.999, "ema_warmup"))
    history["step"].append(step)
    history["mse"].append(losses["mse"].detach())
    history["vb"].append(losses["vb"].detach())
    history["t"].append(t)
steps_done = len(history["step"])
print(f"{steps_done} steps; last loss: mse {losses['mse'].mean():.4f}, vb {losses['vb'].mean():.4f}")

# %% [markdown]
# The loss curve (left, smoothed) and the loss by timestep (right, over the last quarter of
# training): small $t$ is nearly impossible (the noise is tiny and the image almost fully
# visible, so guessing the noise exactly is hard), large $t$ is easy ($x_t \approx \varepsilon$).
# Note that this is the reverse of how *useful* each step is for the picture: section 3's point.

# %%
mse = torch.stack(history["mse"]).cpu()  # (steps, B)
ts = torch.stack(history["t"]).cpu()  # (steps, B)
window = max(1, steps_done // 50)
smooth = np.convolve(mse.mean(1).numpy(), np.ones(window) / window, mode="valid")
last = slice(3 * steps_done // 4, None)
bins = torch.linspace(0, 1000, 11)
which = torch.bucketize(ts[last].flatten(), bins[1:-1])
per_bin = [mse[last].flatten()[which == b].mean().item() for b in range(10)]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
axes[0].plot(np.arange(len(smooth)) + window // 2, smooth)
axes[0].set_xlabel("training step")
axes[0].set_ylabel(r"$\mathcal{L}_{simple}$ (MSE on $\varepsilon$)")
axes[0].set_title(f"training loss (moving average over {window} steps)")
axes[0].grid(alpha=0.3)
axes[1].bar((bins[:-1] + 50).numpy(), per_bin, width=90)
axes[1].set_xlabel("timestep t")
axes[1].set_ylabel("MSE")
axes[1].set_title("loss by timestep (last quarter of training)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 5. Sampling with DDPM (Algorithm 2)
#
# Start from $x_{\text{last}}\sim\mathcal N(0, I)$; at each step the network gives $\hat x_0$ (clipped
# to $[-1, 1]$) and with it $\mu_\theta$ and $\Sigma_\theta$; draw
# $x_{t-1} = \mu_\theta + \Sigma_\theta^{1/2} z$ (no noise at the last step, `ddpm_step`). We use
# `sample_loop_progressive`, which yields every step, to watch one sample form: top row $x_t$,
# bottom row the model's current guess $\hat x_0$. The big shapes are decided early, the details
# late.

# %%
spaced = gd.create_diffusion("100" if not QUICK else "20", device=DEVICE)  # fewer steps, see section 6
keep = sorted(set(np.linspace(0, spaced.num_timesteps - 1, 8).round().astype(int).tolist()))
frames, preds, frame_t = [], [], []
g = torch.Generator().manual_seed(1)
labels = torch.tensor([9], device=DEVICE)  # ankle boot
for i, out in enumerate(spaced.sample_loop_progressive(ema, (1, 1, 32, 32), model_kwargs={"y": labels}, generator=g)):
    if i in keep:
        frames.append(out["sample"].cpu())
        preds.append(out["pred_xstart"].cpu())
        frame_t.append(int(spaced.timestep_map[spaced.num_timesteps - 1 - i]))
fig, axes = plt.subplots(2, len(frames), figsize=(1.5 * len(frames), 3.4))
for j in range(len(frames)):
    for row, images in enumerate((frames, preds)):
        axes[row, j].imshow(images[j][0, 0].clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
        axes[row, j].set_xticks([])
        axes[row, j].set_yticks([])
    axes[0, j].set_title(f"t = {frame_t[j]}", fontsize=9)
axes[0, 0].set_ylabel(r"$x_{t-1}$")
axes[1, 0].set_ylabel(r"$\hat x_0$")
fig.suptitle("a DDPM trajectory, class 'Ankle boot'" + QUICK_NOTE)
plt.tight_layout()
plt.show()

# %% [markdown]
# Now a grid, one row per class, with `minidit.sample.sample` (the sampler notebooks 06 and 08 use
# too) and DiT's 250 respaced DDPM steps, without guidance. After the full run the shapes of most
# classes can be told apart (in quick mode the model has barely started: expect noise); DiT-S/2,
# trained for longer on a GPU (notebook 08), does much better.

# %%
labels = torch.arange(10).repeat_interleave(PER_CLASS)
images = sample(ema, diffusion, labels, sampler="ddpm", steps=SAMPLE_STEPS, generator=torch.Generator().manual_seed(2),
                progress=True)
show_images(images, PER_CLASS, f"{MODEL} after {steps_done} steps: DDPM, {SAMPLE_STEPS} steps (EMA weights)" + QUICK_NOTE,
            row_labels=list(CLASS_NAMES))

# %% [markdown]
# "Recognisable" as a number: the course's Fashion-MNIST classifier (`minidit.evaluation.evaluator`, the
# network notebook 07 uses for FID) labels each sample, and we count how often it names the class
# we asked for (chance: 10 %).

# %%
from minidit.evaluation.evaluator import accuracy, evaluator_info, load_evaluator

evaluator = load_evaluator(DEVICE)
print(f"evaluator accuracy on our samples: {accuracy(evaluator, images, labels.to(DEVICE)):.0%} "
      f"(on real test images: {evaluator_info()['test_accuracy']:.0%})")

# %% [markdown]
# ## 6. Fewer steps: respacing and DDIM
#
# **Respacing** (Improved DDPM §4). Keep only a subset $S$ of the 1000 steps, evenly spread
# (`space_timesteps(1000, "250")`), and define a new, shorter process with the *same*
# $\bar\alpha$ at the kept steps: $\beta'_i = 1 - \bar\alpha_{s_i}/\bar\alpha_{s_{i-1}}$. The
# network still sees the original timesteps (`timestep_map`), so the same weights work. The
# learned variance adapts to the larger steps automatically (its bounds are computed from the
# new $\beta'$).
#
# **DDIM** (Song et al. 2021, Eq. 12) replaces the random step by a deterministic one that keeps
# the same marginals $q(x_t\mid x_0)$:
#
# $$x_{t_{\text{prev}}} = \sqrt{\bar\alpha_{t_{\text{prev}}}}\;\hat x_0 + \sqrt{1-\bar\alpha_{t_{\text{prev}}}}\;\varepsilon_\theta(x_t, t)
# \qquad(\eta = 0).$$
#
# It moves $x_t$ along the line between the predicted image and the predicted noise, and works
# well with a few dozen steps. First, the kept steps and the spaced process:

# %%
kept = sorted(gd.space_timesteps(1000, "10"))
spaced10 = gd.create_diffusion("10")
print("10 evenly spread steps:", kept)
print("alphas_cumprod kept == original at those steps:",
      torch.allclose(spaced10.alphas_cumprod.double(), alphas_cumprod[kept].float().double(), atol=1e-6))
print("respaced betas:", spaced10.betas.numpy().round(4))
print("DDIM with 10 steps keeps:", sorted(gd.space_timesteps(1000, "ddim10")))

# %% [markdown]
# A DDIM step by hand, checked against `ddim_step`:

# %%
x_t = torch.randn(2, 1, 32, 32)
eps_pred = torch.randn(2, 1, 32, 32)
t_now, t_prev = torch.tensor([700, 700]), torch.tensor([600, 600])
x0_pred = (x_t - (1 - alphas_cumprod[700]).sqrt() * eps_pred) / alphas_cumprod[700].sqrt()
by_hand = alphas_cumprod[600].sqrt() * x0_pred + (1 - alphas_cumprod[600]).sqrt() * eps_pred
torch.testing.assert_close(gd.ddim_step(x_t, eps_pred, t_now, t_prev, alphas_cumprod), by_hand.float(), atol=1e-5, rtol=1e-5)
print("ddim_step matches the formula")

# %% [markdown]
# The same starting noise, one image per class, sampled with different samplers and numbers of
# steps. DDPM degrades as the steps get few; DDIM holds up much better.

# %%
settings = [("ddpm", 250), ("ddpm", 50), ("ddpm", 10), ("ddim", 50), ("ddim", 10)]
if QUICK:
    settings = [("ddpm", 10), ("ddim", 10)]
labels = torch.arange(10)
start = torch.randn(10, 1, 32, 32, generator=torch.Generator().manual_seed(3))
rows = []
for sampler, steps in settings:
    rows.append(sample(ema, diffusion, labels, sampler=sampler, steps=steps, noise=start,
                       generator=torch.Generator().manual_seed(4)))
show_images(torch.cat(rows), 10, "same x_T, different samplers (columns: classes 0-9)" + QUICK_NOTE,
            row_labels=[f"{s.upper()} {n}" for s, n in settings])

# %% [markdown]
# ## 7. DiT's last detail: the learned covariance and the hybrid loss
#
# DDPM fixes $\Sigma_\theta = \sigma_t^2 I$. Improved DDPM (§3.1), and DiT after it, **learn** it:
# the network outputs a second set of $C$ channels, a number $v$ per pixel, and the variance
# interpolates between the two natural choices of section 1 in the log domain. IDDPM Eq. 15 writes
# it as $\exp(v\log\beta_t + (1-v)\log\tilde\beta_t)$; the ADM code that DiT uses (and minidit)
# substitutes $\tfrac{v+1}{2}$ for $v$, so that $v = -1$ gives $\tilde\beta_t$ and $v = +1$ gives $\beta_t$:
#
# $$\Sigma_\theta(x_t, t) = \exp\!\big(\tfrac{v+1}{2}\,\log\beta_t + \big(1-\tfrac{v+1}{2}\big)\log\tilde\beta_t\big).$$
#
# Nothing bounds $v$ to $[-1, 1]$: it is the raw output of a linear layer, and a value outside that
# range extrapolates beyond the two choices (IDDPM leaves $v$ unconstrained too). The measurement
# below shows where the trained model puts it.
#
# $\mathcal L_{\text{simple}}$ does not depend on $\Sigma_\theta$, so the variance is trained with the
# bound: the **hybrid loss** $\mathcal L_{\text{hybrid}} = \mathcal L_{\text{simple}} + \lambda\,\mathcal L_{\text{vlb}}$,
# where in $\mathcal L_{\text{vlb}}$ the mean is treated as a constant (stop-gradient), so the bound
# trains *only* the variance and $\mathcal L_{\text{simple}}$ *only* the mean. IDDPM uses
# $\lambda = 0.001$ on the bound summed over all 1000 terms; per sampled term, as in the code
# (`training_losses`: "vb", in bits per dimension), that is a weight of $0.001\times1000 = 1$.
# DiT §3.1: "we train $\varepsilon_\theta$ with $\mathcal L_{\text{simple}}$, and $\Sigma_\theta$ with the full $\mathcal L$".
#
# What did our model learn? For a batch of noised test images at each $t$, the interpolation
# $\tfrac{v+1}{2}$ per pixel (0 means $\tilde\beta_t$, 1 means $\beta_t$): its mean, the band from its
# 1st to its 99th percentile, and how many pixels fall outside $[0, 1]$:

# %%
x_test = to_model_range(data_test.images[:64]).to(DEVICE)  # (64, 1, 32, 32)
y_test = data_test.labels[:64].to(DEVICE)
t_grid = [0, 1, 2, 5, 10, 20, 50, 100, 200, 400, 700, 999]
frac, low, high, outside = [], [], [], []
with torch.no_grad():
    for tv in t_grid:
        tt = torch.full((64,), tv, dtype=torch.long, device=DEVICE)
        out = ema(gd.q_sample(x_test, tt, torch.randn_like(x_test), alphas_cumprod.float()), tt, y_test)  # (64, 2, 32, 32)
        f = ((out[:, 1:] + 1) / 2).flatten().float().cpu()  # (64 * 32 * 32,) one interpolation per pixel
        frac.append(f.mean().item())
        low.append(f.quantile(0.01).item())
        high.append(f.quantile(0.99).item())
        outside.append(((f < 0) | (f > 1)).float().mean().item())
worst = int(np.argmax(outside))
print(f"pixels with v outside [-1, 1]: at most {outside[worst]:.1%} (at t = {t_grid[worst]})")
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.semilogx(np.array(t_grid) + 1, frac, "o-", label="mean")
ax.fill_between(np.array(t_grid) + 1, low, high, alpha=0.25, label="1st-99th percentile")
for edge in (0, 1):
    ax.axhline(edge, color="k", lw=0.8, ls="--")
ax.legend(fontsize=8)
ax.set_xlabel("timestep t + 1 (log scale)")
ax.set_ylabel(r"mean of $(v+1)/2$")
ax.set_title(r"learned variance: 0 = $\tilde\beta_t$ (posterior), 1 = $\beta_t$")
ax.grid(alpha=0.3, which="both")
plt.tight_layout()
plt.show()

# %% [markdown]
# Where $\beta_t$ and $\tilde\beta_t$ are nearly equal (most $t$) the choice hardly matters and the
# gradient on $v$ is small; where they differ (small $t$, and every step of a heavily respaced
# process) the bound pulls $v$ to the better variance. IDDPM shows that this is what lets a
# learned-variance model sample with far fewer steps at little cost in quality: our DDPM rows
# above use it.
#
# ## 8. Your implementation
#
# **ex03** (`epsilon_mse_loss`), **ex04** (`q_posterior_mean_variance`, `ddpm_step`) and **ex13**
# (`ddim_step`) re-implement the functions of this notebook. `course.compare` checks each against
# minidit on random inputs; once ex04 and ex13 run, the cell after draws samples from the model we
# just trained with *your* sampler code inside `GaussianDiffusion`.

# %%
from minidit import course

results = {ex_id: course.compare(ex_id) for ex_id in ("ex03", "ex04", "ex13")}

# %%
yours = {"ex04": all(isinstance(v, float) for v in results["ex04"].values()),
         "ex13": isinstance(results["ex13"].get("ddim_step"), float)}
labels = torch.arange(10)
for ex_id, sampler in (("ex04", "ddpm"), ("ex13", "ddim")):
    if not yours[ex_id]:
        print(f"{ex_id} is not finished yet: your {sampler.upper()} samples will appear here.")
        continue
    with course.use("student", ex_id):
        mine = sample(ema, diffusion, labels, sampler=sampler, steps=10 if QUICK else 50, noise=start,
                      generator=torch.Generator().manual_seed(4))
    show_images(mine, 10, f"{sampler.upper()} with your {ex_id} code" + QUICK_NOTE)

# %% [markdown]
# ## Summary
#
# * Given $x_0$, the reverse step is the Gaussian posterior $q(x_{t-1}\mid x_t, x_0)$ with mean
#   $\tilde\mu_t$ and variance $\tilde\beta_t$. A network that predicts the noise gives
#   $\hat x_0$, and $\mu_\theta = \tilde\mu_t(x_t, \hat x_0)$.
# * The bound is a sum of weighted noise-prediction errors; $\mathcal L_{\text{simple}}$ drops the
#   weights and trains better samples. DiT trains $\varepsilon_\theta$ with it.
# * DDPM sampling runs all steps with noise; respacing keeps a subset with the same
#   $\bar\alpha$; DDIM takes deterministic steps and needs few of them.
# * DiT learns $\Sigma_\theta$ as an interpolation between $\beta_t$ and $\tilde\beta_t$, trained by
#   the bound term of the hybrid loss with the mean frozen (Improved DDPM).
#
# **Exercises:** `exercises/ex03_*.py` (ε-MSE loss), `exercises/ex04_*.py` (posterior and DDPM
# step), `exercises/ex13_*.py` (DDIM step): `pytest exercises -k ex03` and so on.
#
# **Next:** notebook 03 opens the network: how DiT turns images, timesteps and labels into tokens.
