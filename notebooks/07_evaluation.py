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
# # 07 · Evaluation beyond FID: what each number measures, and when it misleads
#
# **Paper:** DiT §4, *Evaluation metrics*: FID-50K is the headline number of every scaling plot;
# Table 2 adds sFID, Inception Score, precision and recall, all computed with the evaluation
# suite of ADM (Dhariwal & Nichol 2021) on Inception-v3 features. Behind them: FID (Heusel et al.
# 2017), sFID (Nash et al. 2021), IS (Salimans et al. 2016), improved precision and recall
# (Kynkäänniemi et al. 2019); and two the paper does not use: KID (Bińkowski et al. 2018),
# density and coverage (Naeem et al. 2020).
#
# **Learning objectives.** After this notebook you can
#
# 1. say what FID, sFID, IS, KID, precision/recall, density/coverage, class accuracy and
#    per-class FID measure, and write their equations;
# 2. read a real-vs-real *floor* and explain why no metric reaches its ideal value on real data;
# 3. tell low fidelity from low diversity, in a case where FID alone cannot;
# 4. explain why FID depends on the number of samples and KID does not;
# 5. draw the guidance trade-off (FID vs IS, precision vs recall) for a small DiT.
#
# **Code:** `minidit/evaluation/evaluator.py` (the feature network), `minidit/evaluation/metrics.py` (every metric),
# `minidit/evaluation/evaluate.py` (`python -m minidit.evaluate`).
# **Exercise:** ex16 (optional), the Fréchet distance.

# %% [markdown]
# ## Parameters
#
# `MINIDIT_QUICK=1` (CI) uses 500 images per set and a tiny DiT trained for 30 steps, so its
# numbers are noisy and its guidance curve is a smoke test; the full run uses 5,000 images and a longer training.

# %%
import os

from minidit.device import get_device

QUICK = os.environ.get("MINIDIT_QUICK", "0") == "1"
N_EVAL = 500 if QUICK else 5_000  # images per set (reference, floor, each corruption)
POOL = 2_000 if QUICK else 10_000  # test images with features, to pick subsets from
BIAS_SIZES = [100, 250, 500] if QUICK else [100, 250, 500, 1_000, 2_500, 5_000]
REPEATS = 3 if QUICK else 5  # independent draws per sample size
NOISE_LEVELS = [0.0, 0.05, 0.1, 0.2, 0.4]  # std of added Gaussian noise, in [-1, 1] units
BLUR_LEVELS = [0.0, 0.5, 0.8, 1.2, 2.0]  # std of the Gaussian blur, in pixels
KID_SUBSETS = 10 if QUICK else 100
MODEL = "DiT-T/4"  # depth 4, D = 128, p = 4: 64 tokens
TRAIN_STEPS = 30 if QUICK else 3_000
BATCH = 16 if QUICK else 128
LR = 1e-3  # a tiny model trains faster with a larger step than DiT's 1e-4
GUIDANCE_SCALES = [1.0, 2.0, 4.0] if QUICK else [1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
N_GUIDANCE = 50 if QUICK else 2_000  # samples per guidance scale
SAMPLE_STEPS = 10 if QUICK else 50  # DDIM steps
SEED = 0
DEVICE = get_device()

# %%
import json
import pathlib
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import torch

from minidit import course
from minidit.evaluation import metrics
from minidit.data import CLASS_NAMES, load_fashion_mnist, to_model_range
from minidit.superres.degrade import gaussian_blur
from minidit.evaluation.evaluate import draw_samples
from minidit.evaluation.evaluator import evaluator_info, load_evaluator
from minidit.sample import load_model_for_sampling
from minidit.train import TrainConfig, train

torch.manual_seed(SEED)
print(f"quick mode: {QUICK}, device: {DEVICE}")

# %% [markdown]
# ## 1. An evaluator that fits the data
#
# Every metric below compares generated and real images *in the feature space of a classifier*.
# DiT uses Inception-v3 trained on ImageNet; on 32×32 grayscale clothing its features say little,
# and its weights are not available offline. `minidit.evaluation.evaluator` is a small VGG-style CNN trained on
# Fashion-MNIST (by `python -m minidit.evaluation.evaluator train`, seeded) that offers the same three views:
#
# | view | shape | Inception-v3 counterpart | used by |
# |---|---|---|---|
# | `pool` | (N, 256) | `pool_3`, 2048-d | FID, KID, precision/recall, density/coverage, per-class FID |
# | `spatial` | (N, 512) = 8 channels × 8 × 8 | first 7 channels of `mixed_6/conv`, 17 × 17 | sFID |
# | `logits` | (N, 10) | 1008 ImageNet logits | IS, class accuracy |
#
# Its weights are committed with their sha256, which `load_evaluator` checks, and with the record the
# training script wrote (test accuracy, device, torch version).

# %%
evaluator = load_evaluator(DEVICE)
record = evaluator_info()
print(f"evaluator: test accuracy {record['test_accuracy']:.2%}, trained {record['epochs']} epochs on "
      f"{record['device']} (torch {record['torch']}), sha256 {record['sha256'][:12]}...")
if record.get("provisional"):
    print("note: these are provisional weights; the GPU-trained ones replace them (see minidit/evaluation/evaluator.py)")

train_split, test_split = load_fashion_mnist("train"), load_fashion_mnist("test")
demo = to_model_range(test_split.images[:8])
views = metrics.compute_features(demo, evaluator)
print({name: tuple(v.shape) for name, v in views.items()})
fig, axes = plt.subplots(1, 8, figsize=(12, 2))
for ax, image, label, logit in zip(axes, demo, test_split.labels[:8], views["logits"]):
    guess = int(logit.argmax())
    ax.imshow(image[0], cmap="gray", vmin=-1, vmax=1)
    ax.set_title(f"{CLASS_NAMES[guess]}", fontsize=8, color="black" if guess == label else "red")
    ax.axis("off")
plt.suptitle("test images and the evaluator's guesses (red: wrong)", fontsize=10)
plt.show()

# %% [markdown]
# ## 2. What each metric measures
#
# Write $r_1..r_N$ for the features of real images and $g_1..g_M$ for those of generated ones.
#
# **FID** fits a Gaussian to each set and takes the Fréchet (2-Wasserstein) distance between them:
# $$\mathrm{FID} = \lVert \mu_r - \mu_g \rVert^2 + \operatorname{tr}\!\big(\Sigma_r + \Sigma_g - 2\,(\Sigma_r \Sigma_g)^{1/2}\big).$$
# One number for fidelity *and* diversity together: lower is better, 0 only for identical statistics.
# **sFID** is the same formula on the spatial features, so it also sees *where* things are.
#
# **Inception Score** looks at the generated images alone, through the classifier's $p(y \mid x)$:
# $$\mathrm{IS} = \exp\Big(\mathbb E_{x}\, \mathrm{KL}\big(p(y \mid x)\,\Vert\, p(y)\big)\Big), \qquad p(y) = \mathbb E_x\, p(y \mid x),$$
# high when each image is classified confidently and all classes appear: between 1 and 10 here.
#
# **KID** is the squared maximum mean discrepancy with the kernel $k(a, b) = (a^\top b / d + 1)^3$,
# estimated without bias (the $i = j$ terms left out) and averaged over random subsets:
# $$\mathrm{KID} = \tfrac{1}{m(m-1)}\textstyle\sum_{i \ne j} k(r_i, r_j) + \tfrac{1}{m(m-1)}\sum_{i \ne j} k(g_i, g_j) - \tfrac{2}{m^2}\sum_{i, j} k(r_i, g_j).$$
#
# **Precision and recall** estimate each set's support as a union of balls: around each point, a
# ball reaching its $k$-th nearest neighbour ($k = 3$), of radius $\mathrm{NND}_k$:
# $$\text{precision} = \tfrac{1}{M}\textstyle\sum_j \mathbb 1\big[\exists i:\ \lVert g_j - r_i \rVert \le \mathrm{NND}_k(r_i)\big], \qquad
#   \text{recall} = \tfrac{1}{N}\sum_i \mathbb 1\big[\exists j:\ \lVert r_i - g_j \rVert \le \mathrm{NND}_k(g_j)\big].$$
# Precision is *fidelity* (are the fakes where real images are?), recall is *diversity* (do the
# fakes reach everywhere real images are?).
#
# **Density and coverage** use balls around real points only ($k = 5$), which makes them robust to
# outliers among the fakes:
# $$\text{density} = \tfrac{1}{kM}\textstyle\sum_j \sum_i \mathbb 1\big[g_j \in B(r_i, \mathrm{NND}_k(r_i))\big], \qquad
#   \text{coverage} = \tfrac{1}{N}\sum_i \mathbb 1\big[\exists j:\ g_j \in B(r_i, \mathrm{NND}_k(r_i))\big].$$
# For identical distributions density is 1 on average (above 1 when the fakes crowd into dense
# regions) and coverage is $1 - 2^{-k} \approx 0.97$.
#
# **Class accuracy** asks whether a sample generated for class $y_j$ is classified as $y_j$;
# **per-class FID** computes FID between the samples of one class and the real images of that class.
#
# A picture of the balls, in 2-D: real points from $\mathcal N(0, I)$, fakes shifted and shrunk.
# The package's precision is re-derived here in three lines and checked against it.

# %%
g = torch.Generator().manual_seed(SEED)
real_2d = torch.randn(150, 2, generator=g, dtype=torch.float64)
fake_2d = 0.5 * torch.randn(150, 2, generator=g, dtype=torch.float64) + torch.tensor([1.5, 0.0], dtype=torch.float64)

radii = torch.cdist(real_2d, real_2d).topk(4, largest=False).values[:, 3]  # k = 3; the 0th is the point itself
inside = (torch.cdist(fake_2d, real_2d) <= radii).any(1)  # (M,): fake j inside some real ball
pr = metrics.precision_recall(real_2d, fake_2d, k=3, device="cpu")
assert abs(float(inside.double().mean()) - pr["precision"]) < 1e-12
print(pr, metrics.density_coverage(real_2d, fake_2d, k=5, device="cpu"))

fig, ax = plt.subplots(figsize=(6, 5))
for centre, r in zip(real_2d, radii):
    ax.add_patch(plt.Circle(centre.tolist(), float(r), color="tab:blue", alpha=0.08))
ax.scatter(*real_2d.T, s=8, c="tab:blue", label="real")
ax.scatter(*fake_2d[inside].T, s=10, c="tab:green", label="fake, inside the real manifold")
ax.scatter(*fake_2d[~inside].T, s=10, c="tab:red", label="fake, outside")
ax.set_aspect("equal")
ax.legend(fontsize=8, loc="lower left")
ax.set_title(f"precision {pr['precision']:.2f}, recall {pr['recall']:.2f}")
plt.show()

# %% [markdown]
# FID's formula can be checked in one dimension, where $(\sigma_r^2 \sigma_g^2)^{1/2} = \sigma_r\sigma_g$
# and it reduces to $(\mu_r - \mu_g)^2 + (\sigma_r - \sigma_g)^2$:

# %%
fd = metrics.frechet_distance(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([-0.5]), torch.tensor([[0.25]]))
print(f"Fréchet distance {fd:.6f}, closed form {(1.0 + 0.5) ** 2 + (2.0 - 0.5) ** 2:.6f}")

# %% [markdown]
# ## 3. The real-vs-real floor
#
# Before scoring a model, score *real* images: a reference of train images against the same number
# of test images. No generator can beat real data, so these numbers are the floor the model's
# numbers should be read against; they are not the ideal values (FID 0, recall 1), because of
# finite samples and the small shift between the splits. Every report of `minidit.evaluation.metrics`
# carries this floor beside the model's numbers.

# %%
g = torch.Generator().manual_seed(SEED)
ref_idx = torch.randperm(len(train_split), generator=g)[: max(N_EVAL, 2 * max(BIAS_SIZES))]
pool_idx = torch.randperm(len(test_split), generator=g)[:POOL]
ref_x, ref_y = to_model_range(train_split.images[ref_idx]), train_split.labels[ref_idx]
pool_x, pool_y = to_model_range(test_split.images[pool_idx]), test_split.labels[pool_idx]
ref_all = metrics.compute_features(ref_x, evaluator)
pool_all = metrics.compute_features(pool_x, evaluator)
ref = {k: v[:N_EVAL] for k, v in ref_all.items()}


def score(x=None, y=None, feats=None):
    """Every metric for images x (or their features) with labels y, against the train reference."""
    feats = metrics.compute_features(x, evaluator) if feats is None else feats
    return metrics.metrics_from_features(ref, feats, ref_y[:N_EVAL], y, kid_subsets=KID_SUBSETS)


ROWS = ["fid", "sfid", "kid", "inception_score", "precision", "recall", "density", "coverage",
        "class_accuracy", "per_class_fid_mean"]


def show(columns: dict):
    print(f"{'':20}" + "".join(f"{name:>16}" for name in columns))
    for row in ROWS:
        print(f"{row:20}" + "".join(f"{col[row]:>16.3f}" for col in columns.values()))


floor = score(feats={k: v[:N_EVAL] for k, v in pool_all.items()}, y=pool_y[:N_EVAL])
show({"real floor": floor})

# %% [markdown]
# ## 4. Every metric gets worse as images get worse
#
# Corrupt real test images with Gaussian noise or blur (`minidit.superres.degrade.gaussian_blur`), more and
# more, and score them. A metric worth using must get monotonically worse; the tests in
# `tests/test_metrics.py` check exactly this.

# %%
test_x, test_y = pool_x[:N_EVAL], pool_y[:N_EVAL]
noise = torch.randn(test_x.shape, generator=torch.Generator().manual_seed(1))
corruptions = {
    "noise": [(s, (test_x + s * noise).clamp(-1, 1)) for s in NOISE_LEVELS],
    "blur": [(s, gaussian_blur(test_x, s).clamp(-1, 1) if s > 0 else test_x) for s in BLUR_LEVELS],
}
fig, axes = plt.subplots(2, len(NOISE_LEVELS), figsize=(10, 4.4))
for row, (name, levels) in zip(axes, corruptions.items()):
    for ax, (s, images) in zip(row, levels):
        ax.imshow(images[0, 0], cmap="gray", vmin=-1, vmax=1)
        ax.set_title(f"{name} σ = {s:g}", fontsize=9)
        ax.axis("off")
plt.show()

curves = {name: [floor if s == 0 else score(images, test_y) for s, images in levels]
          for name, levels in corruptions.items()}
fig, axes = plt.subplots(2, 5, figsize=(15, 6))
for ax, key in zip(axes.flat, ROWS):
    for name, levels in corruptions.items():
        ax.plot([s for s, _ in levels], [c[key] for c in curves[name]], "o-", label=name)
    ax.set_title(key, fontsize=10)
    ax.set_xlabel("σ")
axes[0, 0].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 5. When FID and precision/recall disagree
#
# FID folds fidelity and diversity into one number, so two very different failures can get the
# same FID. Three sets of real test images, each failing in one way:
#
# * **mode dropping**: only 5 of the 10 classes, every image a perfect real image;
# * **low fidelity**: all classes, blurred, with the blur tuned (by bisection) until its FID
#   matches the mode-dropped set's;
# * **only typical images**: for each class, the images nearest to that class's mean feature,
#   the kind of set that truncation or strong guidance produces.

# %%
dropped = torch.nonzero(pool_y < 5).squeeze(1)[:N_EVAL]  # five classes, distinct real images
mode_dropped = score(pool_x[dropped], pool_y[dropped])

low, high, tried = 0.2, 4.0, {}  # bisection on the blur std until FID matches
for _ in range(6):
    sigma = (low + high) / 2
    tried[sigma] = score(gaussian_blur(test_x, sigma).clamp(-1, 1), test_y)
    low, high = (sigma, high) if tried[sigma]["fid"] < mode_dropped["fid"] else (low, sigma)
sigma = min(tried, key=lambda s: abs(tried[s]["fid"] - mode_dropped["fid"]))
blurred = tried[sigma]

per_class = N_EVAL // len(CLASS_NAMES)
typical = []
for c in range(len(CLASS_NAMES)):
    members = torch.nonzero(pool_y == c).squeeze(1)
    feats = pool_all["pool"][members]
    typical.append(members[(feats - feats.mean(0)).norm(dim=1).argsort()[:per_class]])
typical = torch.cat(typical)
typical_only = score(pool_x[typical], pool_y[typical])

show({"real floor": floor, "5 classes": mode_dropped, f"blur σ={sigma:.2f}": blurred, "typical only": typical_only})
print("per-class FID of the mode-dropped set:",
      {name: round(v, 2) for name, v in mode_dropped["per_class_fid"].items()})

# %% [markdown]
# The mode-dropped and the blurred set have (nearly) the same FID, but precision and recall tell
# them apart at once: dropping modes keeps **precision** at the floor (every image is a real one)
# and halves **recall** and **coverage**; blurring lowers **precision** and **density** (the images
# leave the real manifold) together with recall.
#
# The typical-only set is the mirror image of blurring, and the most dangerous case: precision
# and density go *up* (density above 1: the images crowd into the densest regions), recall and
# coverage go down, and FID barely leaves the floor, because most of the feature variance lies
# *between* classes, which this set keeps. IS even rises above the real data's: it rewards
# confident, class-typical images and cannot see diversity *within* a class. Class accuracy and
# per-class FID see nothing wrong with mode dropping either (a dropped class has no samples, so its
# per-class FID is undefined: NaN): read them only beside recall or coverage.

# %% [markdown]
# ## 6. FID depends on the number of samples; KID does not
#
# The plug-in covariance estimates make FID *biased*: with $n$ samples it is, to first order,
# $\mathrm{FID}_\infty + c/n$, so even real data scores worse with fewer samples, and numbers
# computed with different $n$ cannot be compared (hence "FID-50K" in the paper). KID's estimator
# is unbiased: its mean does not move with $n$, only its spread. Fitting a line in $1/n$ and
# reading its intercept estimates $\mathrm{FID}_\infty$ (Chong & Forsyth 2020). Each point is the
# mean over a few independent draws of $n$ train and $n$ test images.

# %%
n_pool = min(POOL, 2 * max(BIAS_SIZES))
blurred_pool = metrics.compute_features(gaussian_blur(pool_x[:n_pool], 0.8).clamp(-1, 1), evaluator)
g = torch.Generator().manual_seed(SEED)
bias = {"real": [], "blur 0.8": [], "kid real": [], "kid blur 0.8": []}
for n in BIAS_SIZES:
    draws = {key: [] for key in bias}
    for _ in range(REPEATS):
        i = torch.randperm(len(ref_all["pool"]), generator=g)[:n]
        j = torch.randperm(n_pool, generator=g)[:n]
        for name, fake in (("real", pool_all), ("blur 0.8", blurred_pool)):
            draws[name].append(metrics.fid_from_features(ref_all["pool"][i], fake["pool"][j]))
            draws[f"kid {name}"].append(metrics.polynomial_mmd2_unbiased(ref_all["pool"][i], fake["pool"][j]))
    for key in bias:
        bias[key].append((np.mean(draws[key]), np.std(draws[key])))

inv_n = 1 / np.array(BIAS_SIZES)
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for name in ("real", "blur 0.8"):
    mean, std = np.array(bias[name]).T
    slope, intercept = np.polyfit(inv_n, mean, 1)
    axes[0].errorbar(inv_n, mean, yerr=std, fmt="o", label=f"{name}: FID∞ ≈ {intercept:.2f}")
    axes[0].plot([0, inv_n.max()], [intercept, intercept + slope * inv_n.max()], "--", color="gray")
    mean, std = np.array(bias[f"kid {name}"]).T
    axes[1].errorbar(BIAS_SIZES, mean, yerr=std, fmt="o-", label=name)
axes[0].set_xlabel("1 / n")
axes[0].set_ylabel("FID against n train images")
axes[0].legend()
axes[1].axhline(0, color="gray", lw=0.8)
axes[1].set_xscale("log")
axes[1].set_xlabel("n")
axes[1].set_ylabel("KID (mean ± std over draws)")
axes[1].legend()
plt.tight_layout()
plt.show()
print({name: [round(m, 3) for m, _ in values] for name, values in bias.items()})

# %% [markdown]
# ## 7. The guidance trade-off
#
# Classifier-free guidance (notebook 06) pushes samples towards what the model thinks is typical
# of their class: fidelity up, diversity down. DiT's Table 2 (ImageNet 256×256) shows it as FID falling from 9.62 to
# 2.27 at scale 1.5, with precision up and recall down. Here a tiny DiT is trained with
# `minidit.train.train` (the GPU trainer of notebook 08) and sampled at several scales from the same
# starting noise; `minidit.evaluation.evaluate.draw_samples` and `metrics.evaluation_report` are what
# `python -m minidit.evaluate --ckpt ... --cfg-scale 1 1.5 2 ...` runs.

# %%
run_dir = tempfile.mkdtemp(prefix="minidit_07_")
cfg = TrainConfig(model=MODEL, steps=TRAIN_STEPS, global_batch_size=BATCH, lr=LR, ema_decay=0.999,
                  ema_warmup="ema_warmup", precision="fp32", compile=False, out_dir=run_dir,
                  log_every=max(1, TRAIN_STEPS // 10), ckpt_every=0, sample_every=0, seed=SEED, device=str(DEVICE))
history = train(cfg, data=train_split)
ema, diffusion = load_model_for_sampling(history["checkpoints"][-1], device=DEVICE)
print(f"trained {history['final_step']} steps in {history['wall_time'][-1]:.0f} s on {history['device']}")

sweep, grids = [], []
for scale in GUIDANCE_SCALES:
    images, labels = draw_samples(ema, diffusion, N_GUIDANCE, scale, "ddim", SAMPLE_STEPS, seed=SEED)
    sweep.append(metrics.evaluation_report(images, labels, evaluator=evaluator, kid_subsets=KID_SUBSETS))
    grids.append((images[:10], labels[:10]))
show({f"scale {s:g}": r["samples"] for s, r in zip(GUIDANCE_SCALES, sweep)} | {"real floor": sweep[0]["real_floor"]})

fig, axes = plt.subplots(len(GUIDANCE_SCALES), 10, figsize=(10, 1.1 * len(GUIDANCE_SCALES)))
for i, (row, scale, (images, classes)) in enumerate(zip(np.atleast_2d(axes), GUIDANCE_SCALES, grids)):
    for ax, image, label in zip(row, images, classes.tolist()):
        ax.imshow(image[0], cmap="gray", vmin=-1, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        if i == 0:
            ax.set_title(CLASS_NAMES[label], fontsize=8)
    row[0].set_ylabel(f"s = {scale:g}", fontsize=9)
plt.suptitle("one sample per class at each guidance scale (same starting noise)"
             + ("\nquick mode: a few training steps, so these samples are noise" if QUICK else ""), fontsize=10)
plt.show()

# %% [markdown]
# The two trade-off plots: FID against IS, and precision against recall, one point per scale.
# Notebook 08's DiT-S/2, trained on a GPU, is scored by the command above into
# `notebooks/results/07_evaluation/guidance_sweep.json`; when that file is there, its curve is drawn
# too, with the device it ran on.


# %%
def trade_off_plots(axes, reports, scales, label):
    column = {key: [r["samples"][key] for r in reports] for key in ("fid", "inception_score", "precision", "recall")}
    axes[0].plot(column["inception_score"], column["fid"], "o-", label=label)
    axes[1].plot(column["recall"], column["precision"], "o-", label=label)
    for r, s in zip(reports, scales):
        axes[0].annotate(f"{s:g}", (r["samples"]["inception_score"], r["samples"]["fid"]), fontsize=8)
        axes[1].annotate(f"{s:g}", (r["samples"]["recall"], r["samples"]["precision"]), fontsize=8)
    axes[1].plot(reports[0]["real_floor"]["recall"], reports[0]["real_floor"]["precision"], "*", ms=12,
                 label=f"{label}: real floor")


fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
trade_off_plots(axes, sweep, GUIDANCE_SCALES, f"{MODEL}, {history['final_step']} steps (this machine)")
results_root = next((p for p in (pathlib.Path("results"), pathlib.Path("notebooks/results")) if p.is_dir()), None)
gpu_file = results_root / "07_evaluation" / "guidance_sweep.json" if results_root else None
if gpu_file is not None and gpu_file.is_file():
    gpu = json.loads(gpu_file.read_text())
    trade_off_plots(axes, gpu["reports"], gpu["cfg_scales"], f"GPU run ({gpu['reports'][0]['device']})")
    print(f"GPU sweep: {gpu['command']}")
else:
    print("no GPU sweep yet (notebooks/results/07_evaluation/guidance_sweep.json)")
# Notebook 08's Part A already scored its final DiT-S/2 at guidance 1, 1.5 and 4 on an H100: draw those
# three points too (different sample counts per scale: see notebook 08's table A.5).
part_a = results_root / "08_train_dit_and_ablation" / "run_S2_adaLN-Zero_seed0_4000steps.json" if results_root else None
if part_a is not None and part_a.is_file():
    record = json.loads(part_a.read_text())
    final = [e for e in record["evals"] if e["step"] == record["trained_steps"] and (e["cfg_scale"] != 1.0 or
                                                                                     e["num_samples"] >= 5000)]
    final.sort(key=lambda e: e["cfg_scale"])
    reports = [{"samples": e["metrics"], "real_floor": e["floor"]} for e in final]
    trade_off_plots(axes, reports, [e["cfg_scale"] for e in final],
                    f"DiT-S/2, {record['trained_steps']:,} steps (H100, notebook 08)")
axes[0].set_xlabel("Inception Score (higher: confident, all classes)")
axes[0].set_ylabel("FID (lower is better)")
axes[1].set_xlabel("recall (diversity)")
axes[1].set_ylabel("precision (fidelity)")
for ax in axes:
    ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# Reading the curves (of a well-trained model; the quick-mode model is still mostly noise): as the
# scale grows, IS and precision rise and recall falls; FID first improves, while guidance removes
# bad samples, then worsens, when the lost diversity starts to cost more than the gained fidelity.
# That turning point is why the paper picks 1.5 for its FID but shows samples at 4.0.

# %% [markdown]
# ## 8. Your turn: the Fréchet distance (optional exercise ex16)
#
# **ex16** re-implements `frechet_distance`, the heart of FID, with two symmetric eigen-decompositions
# instead of a general matrix square root. `course.compare` runs yours against minidit's; once it
# runs, `course.use("student", "ex16")` makes every FID in the package use your function.

# %%
result = course.compare("ex16")
if isinstance(result.get("frechet_distance"), float):
    with course.use("student", "ex16"):
        mine = metrics.fid_from_features(ref["pool"], blurred_pool["pool"][:N_EVAL])
    print(f"the same with minidit's: {metrics.fid_from_features(ref['pool'], blurred_pool['pool'][:N_EVAL]):.4f}")
    print(f"FID of blurred images with your frechet_distance: {mine:.4f}")

# %% [markdown]
# ## Summary
#
# * All metrics compare feature statistics of a classifier; ours is a small Fashion-MNIST CNN
#   with the same three views as ADM's Inception-v3 (pooled, spatial, logits).
# * **FID** (and sFID) measure fidelity and diversity together, in one number that cannot say
#   which went wrong; it is biased by the sample count, so compare FIDs only at equal $n$.
# * **Precision / density** measure fidelity, **recall / coverage** diversity; mode dropping and
#   low fidelity with the same FID are told apart by them at once.
# * **KID** is unbiased; **IS** and **class accuracy** ignore diversity within a class;
#   **per-class FID** cannot see dropped classes.
# * Always read a model's numbers beside the **real-vs-real floor** computed with the same $n$.
# * Guidance trades recall for precision; FID is best at a moderate scale.
#
# Score your own samples with `python -m minidit.evaluate --samples samples.npz` (or `--ckpt`), and
# try **ex16** (`pytest exercises -k ex16`), the Fréchet distance.
