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
# # 09 · Beyond class labels: a DiT that super-resolves degraded images
#
# **Papers:** DiT (Peebles & Xie, ICCV 2023) conditions on a class label through adaLN-Zero (§3.2).
# Here the condition is a whole image: a degraded, low-resolution (LR) photo of a piece of clothing.
# The recipe for feeding it is SR3's (Saharia et al. 2021, *Image Super-Resolution via Iterative
# Refinement*): upsample the LR image and concatenate it to the noisy image as extra channels. The
# degradations follow the "classical" model that Real-ESRGAN (Wang et al. 2021) randomises; SSIM is
# Wang et al. (2004); the trade-off we end on is Blau & Michaeli (CVPR 2018), *The
# Perception-Distortion Tradeoff*.
#
# **Learning objectives.** After this notebook you can
#
# 1. build a "real-world" degradation (blur, downsampling, noise, JPEG) with random strengths, and say
#    why random strengths make the model *blind* to the exact degradation;
# 2. compute PSNR and SSIM, and show with a one-pixel shift why neither measures how real an image looks;
# 3. condition the *same* DiT blocks on an image in three ways — channel concatenation (SR3), LR tokens
#    in context, LR tokens through cross-attention — and say what each one costs;
# 4. train a diffusion SR model and a regression baseline (the same network, a single forward pass,
#    L2 loss), and read their outputs: a sharp, varied guess versus a blurry average;
# 5. explain the perception–distortion trade-off, including why a perfect posterior sample has exactly
#    twice the mean squared error of the best blurry estimate (about 3 dB of PSNR).
#
# **Code:** `minidit/superres/`: `degrade.py` (the degradations), `model.py` (`SRDiT`), `distortion.py`
# (`psnr`, `ssim`), `experiment.py` (`train_sr`, `sample_sr`, `evaluate_sr`, and the GPU run
# `python -m minidit.superres`).
# **Exercise:** ex15 (conditioning on an image: `concat_low_res`, `low_res_pos_embed`).

# %% [markdown]
# ## Parameters
#
# `MINIDIT_QUICK=1` (CI) trains a tiny DiT for a few hundred steps on the CPU: the same code path as the
# GPU run, with numbers that only show the mechanics. The GPU run's results, when they have been committed
# to `notebooks/results/09_super_resolution/`, are shown in section 7.

# %%
import os

QUICK = os.environ.get("MINIDIT_QUICK", "0") == "1"
SEED = 0
DEGRADATION = "x4"  # 32x32 -> 8x8 with random blur, resize filter, noise and JPEG (minidit.superres.degrade.DEGRADATIONS)
SAMPLES_PER_INPUT = 3  # diffusion samples per LR input, to see the diversity
NUM_EVAL = 64 if QUICK else 500  # test images to super-resolve in the live run below
SAMPLE_STEPS = 20 if QUICK else 100  # respaced DDPM steps

# %%
import json
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from minidit import course
from minidit.superres import degrade as dg
from minidit.superres import distortion
from minidit.superres import experiment as sr
from minidit.superres import model as srm
from minidit.data import load_fashion_mnist, to_model_range
from minidit.device import get_device

if QUICK:
    torch.set_num_threads(1)  # tiny models run faster on one thread than on two shared ones
DEVICE = get_device()
RESULTS = course.repo_root() / "notebooks" / "results" / "09_super_resolution"
torch.manual_seed(SEED)
test = load_fashion_mnist("test")
print(f"quick mode: {QUICK}; device: {DEVICE}; saved GPU results: {RESULTS if RESULTS.is_dir() else 'none yet'}")


def show_images(rows, titles=None, row_labels=None, size=1.5):
    """rows: lists of (1, H, W) images in [-1, 1]; titles: one per column (over the first row)."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(size * n_cols, size * n_rows + 0.6), squeeze=False)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            axes[i, j].imshow(image.squeeze().float().cpu(), cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
        for j in range(n_cols):
            axes[i, j].set_xticks([]), axes[i, j].set_yticks([])
            if i == 0 and titles is not None:
                axes[i, j].set_title(titles[j], fontsize=8)
        if row_labels:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=8)
    fig.tight_layout()
    return fig


# %% [markdown]
# ## 1. A "real-world" degradation
#
# Textbook super-resolution shrinks the high-resolution image $x$ with one fixed bicubic filter and asks
# the model to undo exactly that. Real low-resolution images are worse, and in unknown ways. The
# classical degradation model writes the LR image $y$ as
#
# $$y = \mathrm{JPEG}_q\!\left( (x \ast k_\sigma)\!\downarrow_s +\, n \right), \qquad n \sim \mathcal N(0, \sigma_n^2 I),$$
#
# a Gaussian blur $k_\sigma$, downsampling by $s$ (here $s = 4$: $32 \times 32 \to 8 \times 8$; area
# averaging or bicubic, chosen at random), additive noise and a JPEG-like quantisation of quality $q$.
# `minidit.superres.degrade.degrade` draws $\sigma$, the filter, $\sigma_n$ and $q$ **per image**, from a
# `torch.Generator`, batched on any device. A model trained on such pairs never knows which degradation
# produced its input: it must be *blind*. First, one image through the four stages:

# %%
x = to_model_range(test.images[:1])  # (1, 1, 32, 32) in [-1, 1]
blurred = dg.gaussian_blur(x, 1.0)
small = dg.downsample(blurred, 4, "area")  # (1, 1, 8, 8)
noisy = (small + 0.08 * torch.randn(small.shape, generator=torch.Generator().manual_seed(SEED))).clamp(-1, 1)
jpeg = dg.jpeg_like(noisy, 40)
stages = [x, blurred, small, noisy, jpeg, dg.upsample(jpeg, 32)]
titles = ["original 32x32", "blur sigma=1", "area 4x down", "noise 0.08", "JPEG q=40", "bicubic back to 32"]
fig = show_images([stages], titles, size=1.8)
plt.show()

# %% [markdown]
# Now the random pipeline: the same image, degraded eight times with eight draws of the strengths. The
# titles give the drawn blur $\sigma$ (in high-resolution pixels), the resize filter, the noise standard
# deviation (in $[-1, 1]$ units: 0.1 is about 13 grey levels) and the JPEG quality.

# %%
cfg_x4 = dg.get_degradation(DEGRADATION)
print(cfg_x4)
lr8, params = dg.degrade(x.repeat(8, 1, 1, 1), cfg_x4, generator=torch.Generator().manual_seed(SEED),
                         return_params=True)
titles = [f"s={b:.2f} {cfg_x4.down_modes[m][:4]}\nn={n:.3f} q={q:.0f}"
          for b, m, n, q in zip(*(params[k] for k in ("blur_sigma", "down_mode", "noise_sigma", "jpeg_quality")))]
fig = show_images([list(lr8), list(dg.upsample(lr8, 32))], titles, row_labels=["LR 8x8", "bicubic"], size=1.4)
plt.show()

# %% [markdown]
# ## 2. Measuring distortion: PSNR and SSIM
#
# Two numbers compare an output $\hat x$ with the ground truth $x$ pixel by pixel:
#
# * **PSNR** $= 10 \log_{10}\!\big(L^2 / \mathrm{MSE}(x, \hat x)\big)$ dB, with $L$ the data range
#   ($L = 2$ for images in $[-1, 1]$). An offset of every pixel by $\delta$ gives $20\log_{10}(L/\delta)$.
# * **SSIM** (Wang et al. 2004, Eq. 13) compares local means $\mu$, variances $\sigma^2$ and covariance
#   $\sigma_{x\hat x}$ in an $11 \times 11$ Gaussian window ($\sigma = 1.5$):
#   $\mathrm{SSIM} = \frac{(2\mu_x\mu_{\hat x} + C_1)(2\sigma_{x\hat x} + C_2)}{(\mu_x^2 + \mu_{\hat x}^2 + C_1)(\sigma_x^2 + \sigma_{\hat x}^2 + C_2)}$,
#   $C_1 = (0.01L)^2$, $C_2 = (0.03L)^2$, averaged over the windows. 1 means identical.
#
# `minidit.superres.distortion.psnr` and `ssim` are tested against these closed forms and against an independent
# numpy implementation (`tests/test_superres.py`). A check of two closed forms here:

# %%
offset = 0.1
print(f"PSNR of a constant offset {offset}: {distortion.psnr(x, x + offset).item():.3f} dB "
      f"(formula 20 log10(2 / {offset}) = {20 * np.log10(2 / offset):.3f})")
a, b = torch.full((1, 1, 16, 16), 0.3), torch.full((1, 1, 16, 16), -0.2)
c1 = (0.01 * 2) ** 2
formula = (2 * 0.3 * -0.2 + c1) / (0.3**2 + 0.2**2 + c1)
print(f"SSIM of two constant images: {distortion.ssim(a, b).item():.5f} (formula {formula:.5f})")

# %% [markdown]
# How hard is the random degradation compared with the textbook one (antialiased bicubic downsampling,
# as MATLAB's `imresize`)? Bicubic upsampling of 256 test images, scored against the originals:

# %%
hr256 = to_model_range(test.images[:256])
for name in ("x4-bicubic", "x4", "x2-bicubic", "x2"):
    lr = dg.degrade(hr256, name, generator=torch.Generator().manual_seed(SEED))
    up = dg.upsample(lr, 32)
    print(f"{name:<11} LR {tuple(lr.shape[-2:])}: bicubic PSNR {distortion.psnr(up, hr256).mean():5.2f} dB, "
          f"SSIM {distortion.ssim(up, hr256).mean():.3f}")

# %% [markdown]
# **What PSNR does not see.** Take an image and make two copies: one blurred, one shifted right by a
# single pixel. The shifted copy is a perfect, sharp piece of clothing; the blurred one is not. PSNR and
# SSIM still prefer the blur, because they compare pixels at the same place. Super-resolution inherits
# this: a model that hedges (outputs the average of all plausible answers) scores well and looks blurry.

# %%
sharp = to_model_range(test.images[3:4])
candidates = {"ground truth": sharp, "blurred (sigma 1)": dg.gaussian_blur(sharp, 1.0),
              "shifted 1 px": torch.roll(sharp, 1, dims=-1)}
titles = [f"{k}\nPSNR {distortion.psnr(v, sharp).item():.1f}  SSIM {distortion.ssim(v, sharp).item():.2f}" if k != "ground truth"
          else k for k, v in candidates.items()]
fig = show_images([list(candidates.values())], titles, size=2.2)
plt.show()

# %% [markdown]
# ## 3. Conditioning the same DiT on an image
#
# `SRDiT` (in `minidit/superres/model.py`) is a thin subclass of `minidit.model.DiT`: same patch embedding,
# timestep and label embedders, blocks and final layer. The label becomes optional (`y=None` is the
# null label of classifier-free guidance, so a label can still be given). The LR image enters in one of
# three ways:
#
# | `cond` | what changes | sequence the blocks see | condition passed to each block |
# |---|---|---|---|
# | `"concat"` (SR3) | `x_embedder` takes $2C$ channels: $[x_t, \mathrm{bicubic}(y)]$ | $T$ image tokens | as DiT: $c = t_\text{emb} + y_\text{emb}$ (adaLN-Zero) |
# | `"in-context"` | an `lr_embedder` (its own `PatchEmbed`) turns $y$ into $T_\text{LR}$ tokens, appended | $T + T_\text{LR}$ (dropped before the final layer) | as DiT |
# | `"cross-attention"` | the same LR tokens become keys/values | $T$ | $[t_\text{emb}, y_\text{emb}, \text{LR tokens}]$: $(N, 2 + T_\text{LR}, D)$ |
#
# The output is always the noise (and, with learned $\Sigma$, the variance interpolation) of the $C$
# image channels, so `minidit.diffusion` trains and samples `SRDiT` exactly as it does `DiT`. The hooks
# below record what the first block receives, for a DiT-S/2-sized model:

# %%
def first_block_inputs(model, low_res):
    seen = {}
    hook = model.blocks[0].register_forward_hook(lambda mod, args, out: seen.update(x=args[0].shape, c=(
        None if args[1] is None else tuple(args[1].shape))))
    with torch.no_grad():
        model(torch.zeros(1, 1, 32, 32), torch.tensor([500]), low_res)
    hook.remove()
    return seen


lr_example = dg.degrade(x, DEGRADATION, generator=torch.Generator().manual_seed(SEED))  # (1, 1, 8, 8)
for cond, block in [("concat", "adaLN-Zero"), ("in-context", "adaLN-Zero"), ("cross-attention", "cross-attention")]:
    model = srm.create_sr_model("DiT-S/2", cond, lr_size=8, block=block)
    seen = first_block_inputs(model, lr_example)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"{cond:<16} block {block:<16} x_embedder in_channels {model.x_embedder.proj.in_channels}, "
          f"block input {tuple(seen['x'])}, c {seen['c']}, {params / 1e6:.2f} M parameters")
del model

# %% [markdown]
# The LR tokens need positions. An $8 \times 8$ LR image with LR patch size 1 gives an $8 \times 8$ grid of
# tokens; the image tokens form a $16 \times 16$ grid (patch size 2). `low_res_pos_embed` puts LR token
# $i$ (along each axis) at the centre of the image tokens it covers, $(i + 0.5)\,s - 0.5$ with
# $s = 16 / 8$, using the same 2D sin-cos functions as `pos_embed` (DiT §3.2). Then the dot product of an
# LR token's position with every image token's position peaks exactly where that LR pixel lies:

# %%
from minidit.embeddings import get_2d_sincos_pos_embed

hr_pos = get_2d_sincos_pos_embed(384, 16)  # (256, 384): the image tokens of DiT-S/2 at 32x32
lr_pos = srm.low_res_pos_embed(384, 8, 16)  # (64, 384): the LR tokens (x4, LR patch size 1)
fig, axes = plt.subplots(1, 3, figsize=(9, 3))
for ax, (r, c) in zip(axes, [(0, 0), (3, 5), (7, 2)]):
    similarity = (hr_pos @ lr_pos[r * 8 + c]).reshape(16, 16)
    ax.imshow(similarity, cmap="viridis")
    ax.set_title(f"LR token (row {r}, col {c})\ncentre at ({2 * r + 0.5}, {2 * c + 0.5})", fontsize=8)
    ax.set_xticks([]), ax.set_yticks([])
fig.suptitle("dot product of an LR token's position with the 16x16 image tokens' positions", fontsize=9)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4. Two ways to train the same network
#
# * **Diffusion** (the DiT recipe with an extra input): $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$,
#   the model sees $(x_t, t, y_\text{LR})$ and predicts $\varepsilon$ (and $\Sigma$); loss $\mathcal L_\text{simple} + \mathcal L_\text{vlb}$
#   (Improved DDPM §3.1, as DiT). Sampling runs the reverse process from pure noise, conditioned on the
#   same LR image at every step — so different noise gives different, equally plausible outputs.
# * **Regression** (SR3's baseline: same network, one forward pass): the noisy-image channel is empty, $t = 0$,
#   and the output is added to the bicubic upsampling; the loss is plain L2 to $x_0$. The minimiser of
#   an L2 loss is the posterior mean $\mathbb E[x_0 \mid y]$: the average of every plausible answer.
#
# `run_experiment` trains both (diffusion first, then regression, with one shared time budget), then
# super-resolves `NUM_EVAL` test images with bicubic, regression and `SAMPLES_PER_INPUT` diffusion
# samples each, and scores them. It is the function behind `python -m minidit.superres`; on a CPU we run
# it with the tiny `cpu` preset (DiT-T/4, 150 steps in quick mode).

# %%
preset = "gpu" if DEVICE.type == "cuda" else "cpu"
overrides = {} if QUICK or preset == "gpu" else {"steps": 1500}  # full mode on a CPU: ~10x more steps
cfg = sr.SRConfig(**{**sr.PRESETS[preset], "degradation": DEGRADATION, "seed": SEED, **overrides})
minutes = 8.0 if preset == "gpu" else 60.0  # the CPU runs stop at cfg.steps, long before this
print(cfg)
t0 = time.time()
summary = sr.run_experiment(cfg, out_dir=None, minutes=minutes, num_eval=NUM_EVAL, num_samples=SAMPLES_PER_INPUT,
                            sample_steps=SAMPLE_STEPS, num_reference=1000 if QUICK else None,
                            command="notebooks/09_super_resolution.py")
print(f"done in {time.time() - t0:.0f} s")

# %%
fig, ax = plt.subplots(figsize=(6, 3))
for objective, history in summary["train"].items():
    ax.plot(history["step"], history["loss"], marker="o", label=f"{objective} ({history['final_step']} steps)")
ax.set_xlabel("step"), ax.set_ylabel("training loss"), ax.set_yscale("log"), ax.legend()
ax.set_title(f"{cfg.model}, {cfg.cond} conditioning, degradation {cfg.degradation}", fontsize=9)
plt.show()

# %% [markdown]
# ## 5. Before and after, and several samples per input
#
# Columns: the LR input (drawn with nearest-neighbour pixels), bicubic, the regression model, three
# diffusion samples for the same input, and the ground truth. (In quick mode the models have trained
# for seconds: expect blobs. Section 7 shows the GPU run.)

# %%
outputs = summary["outputs"]
fig = sr.plot_before_after(outputs, rows=6, num_samples=SAMPLES_PER_INPUT)
plt.show()

# %% [markdown]
# Where do the samples disagree? The per-pixel standard deviation across the samples of one input shows
# where the LR image leaves the answer open — edges, textures, small details — and where it does not
# (flat background).

# %%
samples = outputs["diffusion"]  # (N, k, 1, 32, 32)
spread = samples.std(dim=1)  # (N, 1, 32, 32)
rows = [[outputs["ground_truth"][i], samples[i, 0], spread[i] * 4 - 1] for i in range(4)]  # std 0..0.5 -> [-1, 1]
fig = show_images(rows, ["ground truth", "diffusion #1", "std over samples"], size=1.8)
plt.show()
print(f"mean per-pixel std over {SAMPLES_PER_INPUT} samples: {summary['diversity_pixel_std']:.3f} "
      "(0 for bicubic and regression: they always give the same answer)")

# %% [markdown]
# ## 6. Distortion versus perception
#
# Why should the diffusion model lose on PSNR? Let $\mu(y) = \mathbb E[x \mid y]$ be the posterior mean
# — what a perfect regression model outputs — and $\mathrm{MMSE} = \mathbb E\,\|x - \mu(y)\|^2$ its error,
# the smallest any estimator can reach. A perfect diffusion model outputs a sample $\hat x \sim p(x \mid y)$,
# drawn independently of the true $x$ given $y$. Both are then deviations from $\mu(y)$ with the same
# covariance, and independent, so
#
# $$\mathbb E\,\|x - \hat x\|^2 = \mathbb E\,\|x - \mu\|^2 + \mathbb E\,\|\hat x - \mu\|^2 = 2\,\mathrm{MMSE},$$
#
# a PSNR $10\log_{10} 2 \approx 3.01$ dB *below* the best regression — for a model that is *perfect* in
# the sense that its outputs are distributed exactly like real images given the input. The mean of $k$
# samples has error $(1 + 1/k)\,\mathrm{MMSE}$: it tends to the blurry posterior mean as $k$ grows.
# Blau & Michaeli (2018) prove the general statement: below some distortion, the distribution of the
# outputs *must* drift away from that of real images. No method can be best on both axes.
#
# So we measure both. PSNR and SSIM for distortion; for perception, FID and precision/recall (Kynkäänniemi
# et al. 2019) of each method's outputs against other real test images, in the feature space of minidit's
# Fashion-MNIST evaluator (notebook 07). Ground truth gives the floor FID for this many images.

# %%
table = summary["metrics"]
print(sr.format_table(table))
print(summary["notes"])
fig = sr.plot_perception_distortion(table)
plt.show()


def expected_gaps(table, k):
    """Measured PSNR gaps vs the ideal-posterior prediction: to the regression model (3.01 dB; 10 log10(1 + 1/k)),
    and -- needing no regression model -- from one sample to the mean of k (10 log10(2k / (k + 1)))."""
    reg, one, mean_k = table["regression"]["psnr"], table["diffusion"]["psnr"], table[f"diffusion mean of {k}"]["psnr"]
    print(f"diffusion sample vs regression: {one - reg:+.2f} dB (ideal: {-10 * np.log10(2):+.2f} dB)")
    print(f"mean of {k} samples vs regression: {mean_k - reg:+.2f} dB (ideal: {-10 * np.log10(1 + 1 / k):+.2f} dB)")
    print(f"mean of {k} samples vs one sample: {mean_k - one:+.2f} dB (ideal: {10 * np.log10(2 * k / (k + 1)):+.2f} dB)")


expected_gaps(table, SAMPLES_PER_INPUT)

# %% [markdown]
# ## 7. The GPU run
#
# The committed results come from
# `python -m minidit.superres --out notebooks/results/09_super_resolution --minutes 5.5` on one GPU. It
# trains DiT-S/2 with SR3 concatenation (bf16, `torch.compile`), first with the diffusion loss, then as the
# regression baseline, and evaluates 2,000 test images, three diffusion samples each (100 DDPM steps), with
# FID and precision/recall against the other 8,000 test images. Of the `--minutes` budget, 82%
# (`sr.TRAIN_SHARE`) is for training — 3/4 of that for the diffusion model, 1/4 for the regression model,
# which converges faster (`sr.OBJECTIVE_SHARES`) — and the rest is kept for the evaluation. Each model's
# first step compiles, which takes tens of seconds: `train_sr` times it apart as `warmup_seconds` and starts
# the model's budget after it, so the compile comes on top of the budget. `results.json` records the device,
# torch version, command, steps trained, wall times, training curves and metrics; the cell below prints them
# and shows the two figures the run wrote.

# %%
results_file = RESULTS / "results.json"
gpu = json.loads(results_file.read_text()) if results_file.is_file() else None
if gpu is None:
    print(f"No GPU results in {RESULTS} yet; make them with\n"
          "  python -m minidit.superres --out notebooks/results/09_super_resolution --minutes 5.5")
else:
    print(gpu["command"])
    print(f"{gpu['device_name']} ({gpu['device']}), torch {gpu['torch_version']}, status {gpu['status']}, "
          f"budget {gpu['minutes_budget']} min (training and evaluation)")
    for objective, history in gpu.get("train", {}).items():
        print(f"  {objective:<10} {history['final_step']:>6,} steps in {history['budget_seconds'] / 60:.1f} min "
              f"after a first (compiling) step of {history['warmup_seconds']:.0f} s; compiled {history['compiled']}, "
              f"{history['precision']}, {history['img_per_s'][-1]:,.0f} img/s at the end, "
              f"final loss {history['loss'][-1]:.4f}")
    if "metrics" in gpu:
        print(f"\n{gpu['num_eval']} test images, {gpu['num_samples']} samples each ({gpu['sampler']}, "
              f"{gpu['sample_steps']} steps); FID reference: {gpu['fid_reference']}\n")
        print(sr.format_table(gpu["metrics"]))
        print(gpu["notes"])
        expected_gaps(gpu["metrics"], gpu["num_samples"])
        print(f"mean per-pixel std over {gpu['num_samples']} samples: {gpu['diversity_pixel_std']:.3f}")
        print(f"wall time: {', '.join(f'{k} {v:.0f} s' for k, v in gpu['wall_seconds'].items())}")
    for name in gpu.get("figures", []):
        fig, ax = plt.subplots(figsize=(10, 10) if name.startswith("before") else (10, 4))
        ax.imshow(plt.imread(RESULTS / name))
        ax.set_axis_off()
        ax.set_title(name, fontsize=9)
        plt.show()

# %% [markdown]
# ### Reading the GPU run
#
# The reading below makes four claims about the table. This cell checks each of them against
# `results.json` and prints the ratios the reading quotes, so that a re-run which changes the picture
# answers "NO" here instead of leaving a stale sentence unnoticed:

# %%
if gpu is not None and "metrics" in gpu:
    m, k = gpu["metrics"], gpu["num_samples"]
    mean_k = f"diffusion mean of {k}"
    methods = [name for name in m if name != "ground truth"]
    higher_is_better = {"psnr": True, "ssim": True, "fid": False, "precision": True, "recall": True}

    def best(metric, names=methods):
        return (max if higher_is_better[metric] else min)(names, key=lambda name: m[name][metric])

    def between(metric, one, middle, other):
        low, high = sorted((m[one][metric], m[other][metric]))
        return low < m[middle][metric] < high

    claims = {
        "the regression model has the best PSNR and SSIM": best("psnr") == best("ssim") == "regression",
        "one diffusion sample has the best FID, precision and recall":
            all(best(metric) == "diffusion" for metric in ("fid", "precision", "recall")),
        "one diffusion sample beats bicubic on every metric":
            all(best(metric, ["bicubic", "diffusion"]) == "diffusion" for metric in higher_is_better),
        f"the {mean_k} lies between one sample and the regression model on every metric":
            all(between(metric, "diffusion", mean_k, "regression") for metric in higher_is_better),
    }
    for claim, holds in claims.items():
        print(f"{'yes' if holds else 'NO '}  {claim}")
    fid = {name: m[name]["fid"] for name in m}
    print(f"\nFID: regression {fid['regression'] / fid['diffusion']:.1f}x and bicubic "
          f"{fid['bicubic'] / fid['diffusion']:.0f}x that of one diffusion sample; ground-truth floor {fid['ground truth']:.2f}")
    print("steps trained: " + ", ".join(f"{name} {n:,} (first step {gpu['warmup_seconds'][name]:.0f} s)"
                                        for name, n in gpu["steps_trained"].items()))

# %% [markdown]
# What the committed run shows (one NVIDIA H100 80GB HBM3 — one of two GPUs in its host, the other busy
# with a separate job — torch 2.11; every number below is printed by the two cells above):
#
# * **Both models trained.** Of the 5.5-minute budget, the diffusion model trained 5,196 steps in its
#   3.4 minutes and the regression baseline 1,729 steps in its 1.1 minutes, both at about 6,550 img/s,
#   each after a first, compiling step (54 s and 39 s) that was not charged to its budget; the whole run,
#   evaluation included, took 7.2 minutes. These are short runs, not converged models.
# * **Distortion: the regression model wins.** It has the best PSNR (20.4 dB) and SSIM (0.67) of every
#   method. A single diffusion sample scores 16.9 dB and 0.51: 3.5 dB below the regression model — near
#   the 3.01 dB by which a perfect posterior sample trails the posterior mean (section 6) — and only
#   0.65 dB above bicubic (16.3 dB). Sharp detail that is plausible but not exactly where the truth's is
#   costs almost as much pixel error as bicubic's blur.
# * **Perception: diffusion wins.** One sample per input has FID 1.8 (the ground truth's floor is 0.12),
#   against 5.3 for the regression model (2.9 times as high) and 20.3 for bicubic (11 times); its
#   precision 0.85 and recall 0.77 compare with the ground truth's own 0.87 and 0.90. The regression
#   model's precision is not far behind (0.78), but its recall is 0.22: its outputs look like clothing to
#   the evaluator, yet averages cover little of the variety of real images — it gives one answer per
#   input, while the diffusion samples of one input differ by 0.10 per pixel on average. Bicubic's recall
#   is almost nil. In the figure, the regression column is clean but smooth (prints, straps and textures
#   are averaged away); the three samples are sharp and disagree in their details, sometimes even in the
#   garment's outline.
# * **The mean of three samples lies between the two on every metric.** Against one sample its PSNR rises
#   to 18.6 dB and its SSIM to 0.58, while its FID worsens to 2.9, its precision to 0.83 and its recall to
#   0.53: averaging moves the output toward the posterior mean, the regression model's answer. Its PSNR
#   gain over one sample (+1.66 dB) is about 0.1 dB short of the ideal of section 6 (+1.76 dB); both gaps to
#   the regression model are about 0.5 dB wider than ideal — neither model is ideal after a few minutes of
#   training, and PSNR is averaged per image, so section 6's identities hold only approximately.
#
# That is the perception–distortion trade-off (Blau & Michaeli, CVPR 2018): the method best on distortion
# (regression) is not the one best on perception (diffusion), and averaging samples trades one for the
# other along the line between them.

# %% [markdown]
# ## Summary
#
# * A DiT conditions on an image with no new kind of block: SR3 widens the patch embedding to take the
#   upsampled LR image as extra channels; alternatively the LR image's own patch tokens join the sequence
#   (in context) or the cross-attention keys — with positions aligned to the image-token grid.
# * Random blur, resize filter, noise and JPEG strengths make the model blind to the degradation.
# * PSNR and SSIM reward the posterior mean, which is blurry; a one-pixel shift of a perfect image costs
#   more PSNR than a blur. The regression baseline, which estimates that mean, wins them in the GPU run
#   (section 7) and looks smooth.
# * Diffusion samples are sharp and varied — several plausible answers per input — and score far better
#   on FID and precision/recall, at a PSNR cost that is about 3 dB even for a perfect posterior sampler.
#   Averaging samples buys part of the PSNR back and gives realism away, toward the regression answer: the
#   perception–distortion trade-off (Blau & Michaeli 2018), visible inside one model.
#
# **Exercise ex15 — conditioning on an image.** Implement `concat_low_res` (SR3's channel
# concatenation) and `low_res_pos_embed` (the LR tokens' positions) in
# `exercises/ex15_image_conditioning.py`, check them with `pytest exercises -k ex15`, compare them with
# minidit's below, and then train with your own code:
# `MINIDIT_IMPL=student python -m minidit.superres --quick --out /tmp/sr`.

# %%
result = course.compare("ex15")
if all(isinstance(v, float) for v in result.values()):
    with course.use("student", "ex15"):  # your functions inside SRDiT: build one and run a forward pass
        model = srm.create_sr_model("DiT-T/4", "in-context", lr_size=8)
        print("your SRDiT forward:", tuple(model(torch.zeros(2, 1, 32, 32), torch.tensor([1, 2]), lr8[:2]).shape))
