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
# # 08 · Train DiT-S/2, re-run the paper's block ablation, and scale it
#
# **Paper:** DiT §4 *Experimental setup* (the training recipe), §5 and **Figure 5** (the four
# conditioning blocks), **Figures 2 and 8** (FID against Gflops), Table 4 (DiT-S/2 and the other
# configs) (Peebles & Xie, ICCV 2023).
#
# **Learning objectives.** After this notebook you can
#
# 1. train a class-conditional DiT with the paper's model and loss and read its training curves: the loss
#    in each quarter of the timestep range, EMA sample grids, and sample metrics against training steps —
#    and see what a larger learning rate and the EMA's warm-up change;
# 2. see what classifier-free guidance does to samples and to fidelity / diversity metrics
#    (scales 1, 1.5 and 4);
# 3. run a controlled ablation (same model size, data, steps, seeds and evaluation) at a budget where the
#    models use the label, and decide — with two seeds and bootstrap intervals — whether a gap is real or
#    noise, and compare it honestly with the paper's Figure 5;
# 4. relate sample quality to forward Gflops, the paper's measure of model compute.
#
# **Code:** `minidit/train.py` (the training loop), `minidit/sample.py` (DDPM sampling, guidance),
# `minidit/evaluation/metrics.py` (FID and friends, notebook 07), `minidit/tools/experiments.py` (this notebook's runs:
# specs, resumable records, tables). **Exercise:** ex14 (the EMA update).

# %% [markdown]
# ## How this notebook runs
#
# Training these models takes a GPU; reading the results does not. The notebook therefore runs in
# three ways, all through the same code:
#
# | how | command | what happens |
# |---|---|---|
# | read (default) | open it in Jupyter, or `python notebooks/08_train_dit_and_ablation.py` | every figure and table is drawn from the committed files in `notebooks/results/08_train_dit_and_ablation/`; nothing is trained |
# | train a part (GPU) | `MINIDIT_QUICK=0 MINIDIT_PART=A python notebooks/08_train_dit_and_ablation.py` | trains and evaluates part A (or B, C), writes its records and figures, then draws everything |
# | quick (CI, any CPU) | `MINIDIT_QUICK=1 python notebooks/08_train_dit_and_ablation.py` | the same code with tiny models and a few steps, into a temporary folder (the committed results are never touched) |
# | several runs at once (GPU) | `python -m minidit.tools.experiments B --only <run name> ...`, one process per run, then `MINIDIT_SAVE_FIGURES=1 python notebooks/08_train_dit_and_ablation.py` | each process trains and evaluates its runs; the notebook then redraws and saves the figures from the records |
# | one GPU sitting (how the committed H200 results were made) | `bash notebooks/results/run_on_gpu.sh 08-sitting`, then `08-wait` until it is done | part A and the four lanes of part B (one per block, seeds in turn) as concurrent processes on one GPU |
#
# Every part is **resumable**: a run's record (`results/.../run_<name>.json`) is rewritten after
# training and after each evaluation, and training continues from its last checkpoint. Each call
# has a wall-clock budget (`MINIDIT_BUDGET_MIN`); when it is spent the part stops cleanly, and
# running the same command again continues it. `MINIDIT_DRY_RUN=1` prints the plan and an H100
# time estimate without training.

# %% [markdown]
# ## Parameters

# %%
import json
import os
import pathlib
import sys
import tempfile

QUICK = os.environ.get("MINIDIT_QUICK", "0") == "1"
PART = os.environ.get("MINIDIT_PART", "").strip().upper()  # parts to train now: "A", "B", "C", "ABC"; "" = read only
DRY_RUN = os.environ.get("MINIDIT_DRY_RUN", "0") == "1"  # print the plan and time estimate, train nothing
BUDGET_MINUTES = float(os.environ["MINIDIT_BUDGET_MIN"]) if os.environ.get("MINIDIT_BUDGET_MIN") else None
COMPILE = {"1": True, "0": False}.get(os.environ.get("MINIDIT_COMPILE", ""))  # None: each part's default
if PART in ("ALL", ""):
    PART = "ABC" if (QUICK or PART == "ALL") else ""

# %%
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import torch

from minidit.tools import experiments
from minidit.data import CLASS_NAMES

if QUICK:  # a fresh temporary folder: quick mode never overwrites the committed results
    torch.set_num_threads(1)  # the tiny quick-mode models run faster on one thread than on two shared ones
    RESULTS_DIR = pathlib.Path(tempfile.mkdtemp(prefix="minidit08_")) / "results"
    RUNS_DIR = RESULTS_DIR.parent / "runs"
else:
    RESULTS_DIR = pathlib.Path(os.environ.get("MINIDIT_RESULTS_DIR") or experiments.default_results_dir())
    RUNS_DIR = pathlib.Path(os.environ.get("MINIDIT_RUNS_DIR") or experiments.default_runs_dir())
if PART and not (QUICK or DRY_RUN or torch.cuda.is_available()):
    print(f"MINIDIT_PART={PART} trains full-size models and needs a CUDA GPU; this machine has none, so the "
          "notebook only reads the saved results (MINIDIT_QUICK=1 runs the tiny CPU version).")
    PART = ""
HOW_TO_RUN = "MINIDIT_QUICK=0 MINIDIT_PART={part} python notebooks/08_train_dit_and_ablation.py"
# figures are written by a run that also wrote the results, or on request after runs made outside the notebook
# (`python -m minidit.tools.experiments B --only ...` on several GPUs at once): MINIDIT_SAVE_FIGURES=1
SAVE_FIGURES = (bool(PART) and not DRY_RUN) or os.environ.get("MINIDIT_SAVE_FIGURES") == "1"
print(f"quick mode: {QUICK}; training parts: {PART or 'none (reading saved results)'}; results: {RESULTS_DIR}")


def show(fig, name: str) -> None:
    """Show a figure; after a training run, also save it as results/fig_<name>.png (for the README)."""
    if SAVE_FIGURES:
        experiments.write_figure(fig, RESULTS_DIR, name)
    plt.show()
    plt.close(fig)


# %% [markdown]
# ## The plan
#
# Each part is a list of runs. The table gives each run's forward Gflops (one 32×32 Fashion-MNIST
# image), its steps and a rough H100 estimate of training and evaluation time (sampling costs as much
# as a good share of training: 5,000 samples × 100 DDPM steps are 500,000 forward passes). Runs
# already finished in the results folder are marked `done`.

# %%
PARTS = ("A", "A_paper_lr", "B", "C")  # A_paper_lr: part A's comparison run at the paper's learning rate
for part in PARTS:
    print(experiments.plan(part, QUICK, RESULTS_DIR), end="\n\n")

# %% [markdown]
# ## Training (only when `MINIDIT_PART` is set)
#
# `experiments.run_part` trains each run with `minidit.train.train` (checkpoints every `eval_every`
# steps), then samples every checkpoint's EMA weights with DDPM (100 respaced steps in part A, 50 in
# B and C) and scores the samples with `minidit.evaluation.metrics` against Fashion-MNIST train images, beside
# the real-vs-real floor (test images against the same reference). In read mode this cell does nothing.

# %%
for part in PART:
    if DRY_RUN:
        continue  # the plan above is the dry run
    experiments.run_part(part, quick=QUICK, results_dir=RESULTS_DIR, runs_dir=RUNS_DIR,
                         budget_minutes=BUDGET_MINUTES, compile=COMPILE, progress=not QUICK and sys.stderr.isatty())

# %%
SPECS = experiments.part_specs(QUICK)
RECORDS = {part: experiments.load_part(part, QUICK, RESULTS_DIR) for part in PARTS}


def part_info(part: str) -> str:
    """Device, torch version and wall time of a part, from its results file."""
    path = RESULTS_DIR / f"part_{part}.json"
    if not path.is_file():
        return f"part {part}: no results yet"
    import json

    summary = json.loads(path.read_text())
    last = summary["sessions"][-1]
    state = "complete" if summary["complete"] else f"{len(summary['done'])}/{len(summary['runs'])} runs done"
    elapsed, summed = experiments.elapsed_seconds(summary), summary["wall_time_s"]
    overlap = f" ({summed / 60:.1f} min summed over processes that ran at once)" if summed > elapsed + 1 else ""
    return (f"part {part}: {state}; {last['device_name']}, torch {last['torch_version']}; wall time "
            f"{elapsed / 60:.1f} min{overlap} in {len(summary['sessions'])} call(s)")


for part in PARTS:
    print(part_info(part))

# %% [markdown]
# ---
# ## Part A · DiT-S/2 on Fashion-MNIST
#
# The paper's model and objective (DiT §4): DiT-S/2 with adaLN-Zero blocks, a learned $\Sigma$ and the
# hybrid loss of Improved DDPM ($L_\text{simple} + L_\text{vlb}$), AdamW without weight decay, batch 256,
# horizontal flips, label dropout 0.1 for classifier-free guidance, samples drawn from an EMA of the
# weights. What we change, and why:
#
# * **data**: Fashion-MNIST at 32×32 pixels and one channel, no VAE. DiT-S/2 then sees
#   $(32/2)^2 = 256$ tokens, exactly as on ImageNet's 32×32×4 latents;
# * **learning rate**: $3\times10^{-4}$ instead of the paper's constant $10^{-4}$. The paper's rate is
#   `minidit.train`'s default and stays one flag away; section A.0 puts the two curves side by side
#   (the $10^{-4}$ run is the first landing's 4,000-step run, kept as `A_paper_lr`);
# * **length**: 10,000 steps instead of 400K, so the EMA decay ramps up — now `minidit.train`'s default,
#   `ema_warmup`: $\min(0.9999, \frac{1+k}{10+k})$ at step $k$. With the paper's fixed 0.9999 the EMA of
#   a run of $n$ steps still holds $0.9999^n$ of the random initial weights (48% after 7,420 steps):
#   its samples are noise. Every weights file records the EMA's updates, its averaging window and
#   that share (`minidit.ema.ema_stats`), and `minidit.sample` warns when the share is above 10%;
# * **sampling**: the final numbers use the sampler a user runs, `python -m minidit.sample` (DDPM with
#   250 respaced steps, compiled); the curve points use 100 steps (with a learned $\Sigma$, Improved DDPM
#   §4 shows few steps cost little) on 1,000 samples, as the $10^{-4}$ run did, so the curves compare;
# * **metrics**: the Fashion-MNIST evaluator of notebook 07 instead of Inception-v3, 5,000 samples
#   without guidance and 10,000 with guidance 1.5 for the final numbers (fewer than the paper's 50,000:
#   FID is biased upwards at small N, which is why the real-vs-real floor is always computed at the same N).

# %%
def floor_of(record: dict, metric: str) -> float:
    """The real-vs-real floor at the curve's sample count (NaN before the first evaluation)."""
    n = record["spec"]["curve_samples"]
    e = next((e for e in record["evals"] if e["num_samples"] == n and e["cfg_scale"] == 1.0), None)
    return float("nan") if e is None else e["floor"][metric]


def show_grid(ax, path, title: str = "", labels: bool = True) -> None:
    """A saved sample grid (one row per class), with the class names on its rows when `labels`."""
    picture = plt.imread(path)
    ax.imshow(picture, cmap="gray", vmin=0, vmax=1)
    rows = len(CLASS_NAMES)
    pitch = (picture.shape[0] - 2) / rows  # each row: an image and 2 pixels of padding
    ax.set_yticks([2 + pitch * (r + 0.5) - 1 for r in range(rows)], CLASS_NAMES if labels else [], fontsize=6)
    ax.set_xticks([])
    ax.set_title(title, fontsize=9)


A = next(iter(RECORDS["A"].values()), None)
if A is None:
    print(f"Part A has no results yet. On a GPU: {HOW_TO_RUN.format(part='A')}")
else:
    hist = A["history"]
    print(f"{A['name']}: {A['trained_steps']:,} steps at batch {A['spec']['batch_size']}, "
          f"{hist['num_params'] / 1e6:.1f}M parameters, {A['gflops']:.2f} Gflops per image")
    print(f"{hist['device_name']}, torch {hist['torch_version']}, {hist['precision']}, compiled: {hist['compiled']}; "
          f"median {np.median(hist['img_per_s'][1:] or hist['img_per_s']):,.0f} img/s; training {hist['wall_time'][-1]:.0f} s, "
          f"evaluation {A['eval_time_s']:.0f} s")

# %% [markdown]
# ### A.0 The learning rate: the paper's $10^{-4}$ against $3\times10^{-4}$
#
# Same model, data, batch, seed, EMA warm-up and curve evaluation (1,000 samples, DDPM-100, no
# guidance); only the learning rate differs. The $10^{-4}$ run stopped at 4,000 steps (and ran on an
# H100, the $3\times10^{-4}$ run on an H200: the maths is the same, the time axis is in steps).

# %%
A_PAPER = next(iter(RECORDS["A_paper_lr"].values()), None)
if A is not None and A_PAPER is not None:
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for record, color in ((A_PAPER, "C7"), (A, "C0")):
        label = f"lr {record['history']['config']['lr']:g}"
        axes[0].plot(record["history"]["step"], record["history"]["loss"], color=color, lw=1, label=label)
        for ax, key in zip(axes[1:], ("fid", "class_accuracy")):
            steps, values = experiments.curve(record, key)
            ax.plot(steps, values, "o-", color=color, label=label)
    axes[0].set(xlabel="training step", ylabel="hybrid loss", yscale="log", title="training loss")
    axes[1].set(xlabel="training step", ylabel="FID (1,000 samples)", yscale="log", title="FID, no guidance")
    axes[2].set(xlabel="training step", ylim=(0, 1), title="class accuracy, no guidance")
    axes[2].axhline(floor_of(A, "class_accuracy"), color="gray", ls="--", lw=1, label="real images")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    show(fig, "A_learning_rate")
    for record in (A_PAPER, A):
        steps, acc = experiments.curve(record, "class_accuracy")
        _, fid = experiments.curve(record, "fid")
        at = {s: (f, a) for s, f, a in zip(steps, fid, acc)}
        if 4000 in at:
            print(f"lr {record['history']['config']['lr']:g}: at step 4,000 FID {at[4000][0]:.2f}, "
                  f"class accuracy {at[4000][1]:.1%} (1,000 samples, no guidance)")

# %% [markdown]
# ### A.1 The loss, in total and per quarter of the timestep range
#
# `minidit.train` logs the mean loss of every 100 steps and the same mean split by the quarter of
# $[0, 1000)$ that $t$ fell in (`diffusion.loss_per_quarter`). The quarters are not equally hard:
# at large $t$, $x_t$ is almost pure noise, so predicting $\varepsilon$ is nearly copying the input;
# at small $t$ the noise is a faint layer on top of the image and must be separated from it, and the
# $L_\text{vlb}$ terms are largest there (Improved DDPM §3.3, Fig. 2). Watch which quarter keeps improving
# longest.

# %%
if A is not None:
    hist = A["history"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    axes[0].plot(hist["step"], hist["loss"], color="k")
    axes[0].set(xlabel="training step", ylabel="hybrid loss", yscale="log", title="loss (mean of each log interval)")
    for q, values in hist["loss_per_quarter"].items():
        i = int(q[1])
        axes[1].plot(hist["step"], values, label=f"t in [{250 * i}, {250 * (i + 1)})")
    axes[1].set(xlabel="training step", yscale="log", title="loss per quarter of the timestep range")
    axes[1].legend(fontsize=8)
    show(fig, "A_loss")

# %% [markdown]
# ### A.2 EMA samples over training
#
# `minidit.train` draws a grid from the EMA weights every `eval_every` steps: one row per class,
# always from the same noise, with DDIM (50 steps) and **no guidance**, so the rows show what the
# model has learned, not what guidance adds.

# %%
def train_grids(record: dict) -> list[tuple[int, pathlib.Path]]:
    items = [(int(k.split("_")[1]), RESULTS_DIR / v) for k, v in record["grids"].items() if k.startswith("train_")]
    return sorted(items)


if A is not None and train_grids(A):
    grids = train_grids(A)
    fig, axes = plt.subplots(1, len(grids), figsize=(2.6 * len(grids), 3.6))
    for i, (ax, (step, path)) in enumerate(zip(np.atleast_1d(axes), grids)):
        show_grid(ax, path, f"step {step:,}", labels=i == 0)
    fig.suptitle("EMA samples during training (DDIM-50, no guidance)", fontsize=9)
    show(fig, "A_grids_over_training")

# %% [markdown]
# ### A.3 Sample metrics against training steps
#
# FID and sFID fall as the samples approach the data; precision (samples inside the real manifold:
# fidelity) and recall (real images inside the samples' manifold: diversity) rise; class accuracy asks
# whether a sample drawn for class $y$ is classified as $y$. The dashed lines are the real-vs-real floor
# at the same number of samples: the best any generator can score with this evaluator and this N. Each
# point is evaluated without guidance and with guidance 1.5, so you can see where returns diminish.

# %%
CURVE_METRICS = [("fid", "FID"), ("sfid", "sFID"), ("precision", "precision"), ("recall", "recall"),
                 ("class_accuracy", "class accuracy"), ("coverage", "coverage")]


if A is not None and A["evals"]:
    fig, axes = plt.subplots(2, 3, figsize=(11, 5.6))
    axes = axes.ravel()
    for ax, (key, label) in zip(axes, CURVE_METRICS):
        for scale, color in zip(A["spec"].get("curve_cfg_scales", [1.0]), ("C0", "C1")):
            steps, values = experiments.curve(A, key, cfg_scale=scale)
            ax.plot(steps, values, "o-", color=color, label=f"guidance {scale:g}")
        ax.axhline(floor_of(A, key), color="gray", ls="--", lw=1, label="real floor")
        ax.set(title=label, xlabel="step")
        if key in ("fid", "sfid"):
            ax.set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"EMA samples, {A['spec']['curve_samples']:,} per point, DDPM-{A['spec']['sampling_steps']}",
                 fontsize=9)
    fig.tight_layout()
    show(fig, "A_metrics_vs_steps")

# %% [markdown]
# ### A.4 Classifier-free guidance: scales 1, 1.5 and 4
#
# The same starting noise $x_T$ and labels for every scale, so only the guidance differs
# (`DiT.forward_with_cfg`, notebook 06). DiT reports its best FID at scale 1.5 and shows its pictures at
# scale 4 (DiT §3.1, Table 2, Figure 1).

# %%
if A is not None and any(k.startswith("final_cfg") for k in A["grids"]):
    scales = sorted((float(k.removeprefix("final_cfg")), RESULTS_DIR / v) for k, v in A["grids"].items()
                    if k.startswith("final_cfg"))
    fig, axes = plt.subplots(1, len(scales), figsize=(3.6 * len(scales), 4.4))
    for i, (ax, (scale, path)) in enumerate(zip(axes, scales)):
        show_grid(ax, path, f"guidance scale {scale:g}", labels=i == 0)
    spec = A["spec"]
    steps = spec.get("final_sampling_steps") or spec["sampling_steps"]
    fig.suptitle(f"{spec['model']} after {spec['steps']:,} steps (EMA, DDPM {steps} steps)")
    show(fig, "A_final_grids")

# %% [markdown]
# ### A.5 The final metric table, beside the real-vs-real floor
#
# Without guidance, 5,000 samples; with guidance 1.5, 10,000 (the goal is stated for 10,000);
# both drawn with `minidit.sample`'s DDPM-250, exactly what `python -m minidit.sample --num 10000` runs.
# Each floor column is at the sample count of the columns it serves. Look at how guidance trades
# diversity (recall, coverage) for fidelity (precision, class accuracy), and what that does to FID.

# %%
TABLE_METRICS = ["fid", "sfid", "inception_score", "kid", "precision", "recall", "density", "coverage",
                 "class_accuracy"]


def final_table(record: dict) -> str:
    columns, values, floors = [("metric", "metric", "")], {}, {}
    for scale in record["spec"]["cfg_scales"]:
        e = experiments.final_eval(record, scale)
        if e is None:
            continue
        values[f"cfg {scale:g} (N={e['num_samples']:,})"] = e["metrics"]
        floors[f"real floor (N={e['num_samples']:,})"] = e["floor"]
    values.update(floors)
    columns += [(name, name, ".4g") for name in values]
    rows = [{"metric": m, **{name: v.get(m) for name, v in values.items()}} for m in TABLE_METRICS]
    return experiments.format_table(rows, columns)


if A is not None:
    print(final_table(A))
    print()
    print(experiments.goals_summary(A))

# %% [markdown]
# Which classes are hard? FID per class (final samples without guidance, each class against the real
# images of that class). Shirt, T-shirt/top, pullover and coat are one another's nearest neighbours in
# Fashion-MNIST (classifiers confuse them most), so compare each bar with its real-vs-real floor.

# %%
final_a = experiments.final_eval(A) if A is not None else None
if final_a is not None and "per_class_fid" in final_a["metrics"]:
    fig, ax = plt.subplots(figsize=(8, 3))
    names = list(final_a["metrics"]["per_class_fid"])
    ax.bar(np.arange(len(names)) - 0.2, [final_a["metrics"]["per_class_fid"][c] for c in names], 0.4, label="samples")
    if "per_class_fid" in final_a["floor"]:
        ax.bar(np.arange(len(names)) + 0.2, [final_a["floor"]["per_class_fid"][c] for c in names], 0.4,
               color="gray", label="real floor")
    ax.set_xticks(np.arange(len(names)), names, rotation=30, fontsize=8)
    ax.set(ylabel="FID of the class")
    ax.legend()
    show(fig, "A_per_class_fid")

# %% [markdown]
# ---
# ## Part B · The conditioning-block ablation (DiT Figure 5), small
#
# Notebook 04 built the four ways of feeding $t$ and $y$ to the transformer (DiT §3.2):
# **in-context** (two extra tokens), **cross-attention** (an extra attention layer over the two
# embeddings), **adaLN** (LayerNorm scale and shift regressed from $c = t_\text{emb} + y_\text{emb}$) and
# **adaLN-Zero** (adaLN plus a per-channel residual gate, all initialised to zero so that every block
# starts as the identity). The paper trains all four as DiT-XL/2 for 400K steps and reports, without
# guidance (DiT §5, Figure 5): FID-50K **19.47** for adaLN-Zero, **25.21** for adaLN, **26.14** for
# cross-attention and **35.24** for in-context, at **118.6 / 118.6 / 137.6 / 119.4** Gflops.
#
# Here: the same four blocks in a DiT-S/4 (12 blocks, width 384, 64 tokens: the budget allows eight
# runs of a model a quarter of DiT-S/2's cost, not of DiT-S/2 itself), identical data, 4,000 steps,
# batch, learning rate ($3\times10^{-4}$, as part A), seeds and evaluation (5,000 samples, DDPM with 50
# respaced steps, the same $x_T$ and labels for every model — common random numbers), and **two seeds**
# per block. Seed $s$ fixes the initial weights and the order of the batches, so the spread between the
# two seeds measures how much FID moves for reasons that have nothing to do with the block (training
# noise). A **bootstrap** over the 5,000 samples (200 resamples, the same resampled indices for every
# run) measures the other noise, that of drawing samples; because the indices are shared, the
# difference of two runs' replicates is a *paired* interval for the gap between them.
#
# The budget is chosen so that the models **use the label**: an ablation of conditioning mechanisms
# before any of them conditions measures only how fast each learns the unconditional distribution
# (the first version of this notebook stopped at 1,200 steps, where every block's class accuracy was
# at chance). The table reports class accuracy without guidance and with guidance 1.5 beside FID.
#
# **Cost: small models are bound by kernel launches.** DiT-S/4 does 4.3× less arithmetic per image than
# DiT-S/2, but a compiled training step still launches hundreds of short kernels, and below a few
# milliseconds of GPU work per step the CPU's launching is what the GPU waits for. Three ways around it,
# measured on one H200 at batch 256 (`bash notebooks/results/run_on_gpu.sh bench-small`, printed here from
# its JSON): the compiled step alone; the same step replayed as **CUDA graphs** (`torch.compile`'s
# `reduce-overhead` mode, `minidit.train --compile-mode reduce-overhead`: the forward and the backward
# each become one launch); and four compiled processes sharing the GPU (how the committed part B ran).

# %%
SMALL_BENCH = experiments.default_results_dir().parent / "bench" / "bench_h200_small.json"  # committed, in every mode
if SMALL_BENCH.is_file():
    small = json.loads(SMALL_BENCH.read_text())
    print(f"{small['device_name']}, torch {small['torch_version']}, batch {small['settings']['batch']}")
    for row in small["training"]:
        if "img_per_s" in row:
            print(f"  {row['model']}  {row['variant']:<27} {row['img_per_s']:>8,.0f} img/s  "
                  f"{row['step_ms_median']:6.2f} ms/step")
    conc = small.get("concurrent")
    if conc:
        print(f"  {conc['processes']} x {'/'.join(conc['models'])} {'/'.join(conc['variants'])} as concurrent processes: "
              f"{conc['img_per_s_total']:,.0f} img/s in all (each {', '.join(f'{v:,.0f}' for v in conc['img_per_s_each'])}; "
              f"timed windows overlap {100 * conc['overlap_share']:.0f}%)")
else:
    print(f"no small-model benchmark in {SMALL_BENCH}")

# %% [markdown]
# CUDA graphs pay where launches dominate: DiT-S/4's step runs 1.9× faster (23,659 img/s against 12,700),
# DiT-S/8's 3.5× (36,776 against 10,608), while for DiT-S/2, whose kernels are long, they change the
# step by about 1% (`bench_h200_run1.json`). Four concurrent compiled processes together reach 21,898 img/s
# of DiT-S/4 (their timed windows overlapped for 65% of the longest, so this sum is approximate), less
# than one process with CUDA graphs: **the fastest way to train many small models on one GPU is CUDA
# graphs**, then concurrency on top if one process leaves the GPU idle. So `minidit.train`'s compile mode is
# `auto` by default: CUDA graphs on one GPU when the step's forward pass is below 1,000 GMAC (DiT-S/4 and S/8
# at batch 256), the plain compiled step for DiT-S/2 and under DDP; the whole loop (checkpoints, sample grids,
# resuming) ran so on the H200 (`bench/train_auto_s8_history.json`). The committed part B and C runs predate
# this: they ran as concurrent compiled processes without graphs, and rerunning them now would take graphs.

# %%
B = RECORDS["B"]
if not B:
    print(f"Part B has no results yet. On a GPU: {HOW_TO_RUN.format(part='B')}")
else:
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for record in B.values():
        spec = record["spec"]
        color = f"C{experiments.BLOCK_ORDER.index(spec['block'])}"
        style = "-" if spec["seed"] == 0 else "--"
        steps, fid = experiments.curve(record, "fid")
        axes[0].plot(steps, fid, style, marker="o", color=color, label=f"{spec['block']} (seed {spec['seed']})")
        steps, acc = experiments.curve(record, "class_accuracy")
        axes[1].plot(steps, acc, style, marker="o", color=color)
    first = next(iter(B.values()))
    if np.isfinite(floor_of(first, "fid")):
        axes[0].axhline(floor_of(first, "fid"), color="gray", ls=":", lw=1, label="real floor")
        axes[1].axhline(floor_of(first, "class_accuracy"), color="gray", ls=":", lw=1)
    axes[0].set(xlabel="training step", ylabel=f"FID ({first['spec']['curve_samples']:,} samples)", yscale="log",
                title="FID during training, no guidance")
    axes[0].legend(fontsize=7)
    axes[1].set(xlabel="training step", ylabel="class accuracy", ylim=(0, 1),
                title="class accuracy, no guidance (dotted: real images)")
    show(fig, "B_fid_vs_steps")

# %% [markdown]
# The table at the end of training: our Gflops (one-channel 32×32 images) and parameters, the mean over
# seeds of FID, precision, recall and class accuracy (without and with guidance 1.5), each seed's FID
# with its bootstrap interval, and the paper's XL/2 numbers.
# Gflops and parameters differ between the blocks: cross-attention adds an attention layer to each
# block (the paper's +16% Gflops); adaLN regresses 4 instead of 6 modulation vectors per block; and
# in-context and cross-attention have no modulation MLPs at all, so they hold fewer parameters although
# the transformer (depth, width, heads) is the same for all four.

# %%
B_ROWS = experiments.ablation_rows(B)
if B_ROWS:
    for row in B_ROWS:
        row["fid_each_seed"] = " / ".join(f"{v:.2f}" for v in row["fid_seeds"])
        row["ci_each_seed"] = " / ".join("—" if ci is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]"
                                         for ci in row["fid_ci_seeds"])
        row["params_m"] = row["params"] / 1e6
    print(experiments.format_table(B_ROWS, [
        ("block", "block", ""), ("gflops", "Gflops", ".3f"), ("params_m", "params (M)", ".2f"),
        ("fid", "FID (mean)", ".2f"), ("fid_each_seed", "FID per seed", ""),
        ("ci_each_seed", "bootstrap 95% per seed", ""), ("precision", "precision", ".3f"),
        ("recall", "recall", ".3f"), ("class_accuracy", "class acc.", ".3f"),
        ("class_accuracy_cfg1.5", "class acc. (cfg 1.5)", ".3f"),
        ("paper_gflops", "paper Gflops (XL/2)", ".1f"), ("paper_fid", "paper FID-50K (XL/2, 400K)", ".2f")]))

# %% [markdown]
# What the measurement says, in sentences generated from the records (so they always match the
# numbers above). Two tests per gap between neighbours in the ranking: do the seed ranges overlap
# (training noise), and does each seed's paired bootstrap interval of the gap exclude 0 (sampling
# noise)? The bootstrap intervals are narrow (±0.1–0.2 FID) next to the seed spread (up to 2.5 FID):
# here, *training* noise dominates, and with two seeds the seed test is coarse, not a confidence interval.

# %%
if B_ROWS:
    print(experiments.ablation_summary(B_ROWS, B))

# %% [markdown]
# ---
# ## Part C · Scaling: FID against Gflops (DiT Figures 2 and 8)
#
# The paper's central finding is that FID improves steadily with the forward Gflops of the model, no
# matter whether the Gflops come from a wider/deeper transformer (S → B → L → XL) or from more tokens
# (patch size 8 → 4 → 2), and that models with similar Gflops reach similar FID (Figure 8). Here four
# configs, the same steps, batch and evaluation as Part B (the S/4 run *is* Part B's adaLN-Zero seed 0
# run): S/8, S/4, S/2 (smaller patches: 4× the tokens each time) and B/4 (twice the width of S/4).
# Our Gflops are for one-channel images; the paper's setting (four-channel latents) is listed too.
# Every run has Part B's budget (4,000 steps at batch 256, lr $3\times10^{-4}$, seed 0) and evaluation
# (5,000 samples, DDPM-50, the same $x_T$ and labels, 200 bootstrap resamples with shared indices); the
# table's last interval is the paired bootstrap interval of the FID gained over the previous row.

# %%
C = RECORDS["C"]
C_ROWS = experiments.scaling_rows(C)
if not C_ROWS:
    print(f"Part C has no results yet. On a GPU: {HOW_TO_RUN.format(part='C')}")
else:
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, row in enumerate(C_ROWS):
        axes[0].scatter(row["gflops"], row["fid"], color=f"C{i}", s=40, zorder=3)
        axes[0].annotate(row["model"], (row["gflops"], row["fid"]), textcoords="offset points",
                         xytext=(-45, -4) if i % 2 else (6, 4), fontsize=8)  # alternate sides: B/4 and S/2 are close
    c_spec = next(iter(C.values()))["spec"]
    axes[0].set(xscale="log", xlabel="forward Gflops per image", ylabel=f"FID ({c_spec['final_samples']:,} samples)",
                title=f"FID after {c_spec['steps']:,} steps")
    axes[0].set_xticks([0.3, 1, 3, 10], ["0.3", "1", "3", "10"])
    axes[0].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    for i, row in enumerate(C_ROWS):
        record = next(r for r in C.values() if r["spec"]["model"] == row["model"])
        steps, fid = experiments.curve(record, "fid")
        spec = record["spec"]
        compute = [3 * record["gflops"] * spec["batch_size"] * s for s in steps]  # forward + backward (2x forward)
        axes[1].plot(compute, fid, "o-", color=f"C{i}", label=row["model"])
    axes[1].set(xscale="log", xlabel="training compute (Gflops x 3 x batch x steps)",
                ylabel=f"FID ({c_spec['curve_samples']:,} samples)",
                title="FID against training compute (cf. DiT Figure 9)")
    axes[1].legend(fontsize=8)
    show(fig, "C_fid_vs_gflops")
    for row in C_ROWS:
        row["params_m"] = row["params"] / 1e6
    print(experiments.format_table(C_ROWS, [
        ("model", "model", ""), ("gflops", "Gflops (ours)", ".3f"),
        ("gflops_paper_setting", "Gflops (paper setting)", ".2f"),
        ("params_m", "params (M)", ".2f"), ("fid", "FID", ".2f"), ("precision", "precision", ".3f"),
        ("recall", "recall", ".3f"), ("class_accuracy", "class acc.", ".3f"),
        ("class_accuracy_cfg1.5", "class acc. (cfg 1.5)", ".3f")]))
    for row in C_ROWS[1:]:
        if row["gap_ci"] is not None:
            print(f"{row['model']}: FID gain over the previous row, paired 95% interval "
                  f"[{row['gap_ci'][0]:.2f}, {row['gap_ci'][1]:.2f}]")

# %% [markdown]
# ---
# ## Conclusion
#
# The numbers this conclusion rests on, printed from the records:

# %%
for part in PARTS:
    print(part_info(part))
if A is not None:
    print("\nPart A:\n" + experiments.goals_summary(A))
if B_ROWS:
    print("\nPart B:\n" + experiments.ablation_summary(B_ROWS, B))
if C_ROWS:
    print("\nPart C: FID by Gflops: " + ", ".join(f"{r['model']} {r['gflops']:.2f} Gflops -> FID {r['fid']:.2f}"
                                               for r in C_ROWS))

# %% [markdown]
# **Reading of the H200 runs** (NVIDIA H200, torch 2.11; one sitting of 23.6 minutes in which part A and
# the four lanes of part B ran as concurrent processes on the one GPU, so each run's img/s is lower than
# alone, and a second sitting for part C's S/2 and B/4 (together) and S/8 (alone); every number below is
# printed from the JSON records by the cells above):
#
# * **Part A reaches the goal.** DiT-S/2 at learning rate $3\times10^{-4}$, 10,000 steps (16.6 minutes of
#   training while sharing the GPU with part B): 10,000 samples at guidance 1.5 drawn by
#   `minidit.sample` (DDPM-250) are classified as the class they were drawn for **96.4%** of the time,
#   **103%** of the evaluator's 94.0% on real test images (the goal was 90%); without guidance 88.5%
#   (94% of real). FID 0.20 at guidance 1.5 and 0.38 without, against real-vs-real floors of 0.02 and
#   0.04 at the same N — still 9–11× the floor, so by FID the model is not yet a perfect copy of the data.
# * **Where returns diminish** (A.3, guidance 1.5, 1,000 samples): class accuracy 72.5% at 2,000 steps,
#   89.1% at 4,000, 94.2% at 6,000, then 95.3% and 96.3%; FID falls from 3.10 to 0.43 by 6,000 steps and
#   then only to 0.35. Two thirds of this run would have bought almost all of its quality.
# * **The learning rate** (A.0): at 4,000 steps the paper's $10^{-4}$ had FID 5.57 and class accuracy
#   45.9% (no guidance); $3\times10^{-4}$ had 1.77 and 77.0% — on this small data set the larger constant
#   rate converges much faster, with no sign of instability in the loss. The notebook uses $3\times10^{-4}$;
#   `minidit.train` keeps the paper's $10^{-4}$ as its default, one flag away (`--lr 3e-4`).
# * **Part B: adaLN-Zero wins clearly; the paper's order of the other three does not reproduce.**
#   After 4,000 steps of DiT-S/4 (8 runs, 2 seeds): adaLN-Zero FID 4.0 / 4.2 (seed 0 / 1), in-context
#   10.0 / 12.6, cross-attention 16.2 / 13.7, adaLN 16.1 / 15.5. The label is used: adaLN-Zero's samples
#   have class accuracy 70.1% without guidance, 74% of real (the bar was 70%), 82.7% with guidance 1.5;
#   the others trail (in-context 43.8%, cross-attention 31.2%, adaLN 24.1%). What the numbers support:
#   1. adaLN-Zero beats every other block by at least 6 FID on each seed: far outside both the seed spread and
#      the paired bootstrap intervals of the gap ([5.82, 6.14] and [8.24, 8.59] against in-context).
#      This is the paper's headline result of Figure 5, reproduced at small scale.
#   2. in-context comes second and beats cross-attention and adaLN on both seeds: the opposite of the
#      paper, where in-context is clearly last (35.24 against 25–26). Its seeds differ by 2.6 FID, so
#      the size of its lead is uncertain, not its direction on these two seeds.
#   3. cross-attention and adaLN are **not separated**: their seed ranges overlap and one seed's paired
#      interval contains 0 ([-0.11, 0.11]).
#   The bootstrap intervals (±0.1–0.2 FID) are much narrower than the seed spread (up to 2.5 FID):
#   drawing more samples would not help; more seeds would.
# * **What this scale cannot say.** The paper's gaps are at 400K steps of a 675M-parameter DiT-XL/2 on
#   ImageNet latents; ours after 4,000 steps of a 33M-parameter DiT-S/4 on 32×32 clothing, where three
#   of the four blocks still use the label only partly (26–47% of real). adaLN-Zero's lead is visible
#   from the first logged interval (mean loss 0.24 over the first 100 steps against 1.15–1.21 for the
#   others): its zero initialisation starts every block as the identity, the optimisation aid the paper
#   credits it with (§3.2), and a short run rewards a good start more than a 400K-step run does.
#   In-context's two extra tokens are 2 of 66 here but 2 of 258 in the paper. So: "adaLN-Zero is the best
#   block" is supported here as in the paper; the paper's ranking of the rest is neither confirmed nor
#   refuted at a budget where those blocks are still learning to condition.
# * **Part C: FID falls with Gflops, and Gflops predict it better than parameters.** At Part B's budget
#   (one seed each): DiT-S/8 (0.35 Gflops) FID 6.42, S/4 (1.41) 4.00, B/4 (5.56) 1.99, S/2 (6.05) 1.86;
#   each step up in Gflops lowers FID, every gap's paired bootstrap interval excludes 0, and class
#   accuracy without guidance rises from 62.8% to 77.9–80.8%. B/4 and S/2 have similar Gflops and
#   similar FID (gap 0.13, interval [0.06, 0.18]) although B/4 has four times the parameters (129.6M
#   against 32.6M): the paper's Figure 8 observation, at small scale. That gap is below Part B's seed
#   spread (0.2 FID for adaLN-Zero), so with one seed we cannot call either model better. The two
#   differ in kind: B/4 has the higher precision and class accuracy, S/2 the higher recall.
#   S/2 and B/4 trained as concurrent processes on one GPU (their img/s is not their speed alone).
# * **At equal training compute the smaller models are ahead here** (right panel): at about $10^6$ Gflops
#   S/8 has FID 6.5 where S/4 has 12.5, and at about $4\times10^6$ S/4 has 4.1 where B/4 and S/2 have 8.6
#   and 9.4. The paper's Figure 9 finds the opposite at 400K steps — larger DiTs use compute more
#   efficiently. Our curves end after 4,000 steps, far from convergence, where a small model's many cheap
#   steps still pay more than a large model's capacity; where the curves would cross is not measured.

# %% [markdown]
# ## Summary
#
# * The paper's recipe trains a DiT on one GPU in minutes; the loss per timestep quarter, EMA grids and
#   metric curves tell you what is being learned and when.
# * Guidance typically trades diversity for fidelity: precision and class accuracy rise with the scale,
#   recall and coverage fall, and FID has a best scale in between — check table A.5 for how far our run
#   follows that pattern.
# * An ablation is only as good as its controls: same size, data, steps, seeds and evaluation, at least
#   two seeds, and the real-vs-real floor at the same sample count.
# * Gflops, not parameters, is the paper's axis of scale: patch size changes compute without changing
#   the parameter count.
#
# **Exercise ex14 — the EMA update.** Every sample in this notebook comes from the EMA weights.
# Implement `update_ema` in `exercises/ex14_ema.py`, check it with `pytest exercises -k ex14`, compare
# it with minidit's below, and then train with your own EMA:
# `MINIDIT_IMPL=student python -m minidit.train --preset cpu`.

# %%
from minidit import course

course.compare("ex14")
