"""Notebook 09's experiment: train a diffusion SR model and a regression baseline, score both.

How to judge SR: PSNR and SSIM (minidit.superres.distortion) measure distortion -- the regression
baseline (the same DiT trained with L2 to output x_0 in one step) wins them by predicting the blurry
posterior mean; FID and precision/recall measure how real the outputs look -- diffusion samples win
those. Blau & Michaeli (2018) prove the two cannot both be optimal: the perception-distortion trade-off.

    python -m minidit.superres --out notebooks/results/09_super_resolution --minutes 8   # one GPU
    python -m minidit.superres --quick --out /tmp/sr                                     # CPU, 1-2 min
"""

from __future__ import annotations

import dataclasses
import pathlib
import platform
import sys
import tempfile
import time
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from minidit import blocks as _blocks
from minidit import ema as _ema
from minidit.checkpoint import atomic_write, atomic_write_json, writable_folder
from minidit.cli import ArgumentParser, use_course_env
from minidit.data import load_fashion_mnist, sample_batch, to_model_range
from minidit.device import draw, get_device
from minidit.diffusion import create_diffusion
from minidit.evaluation import metrics
from minidit.model import DiT_models
from minidit.sample import sample
from minidit.superres import degrade as _degrade
from minidit.superres.degrade import get_degradation, upsample
from minidit.superres.distortion import psnr, ssim
from minidit.superres.model import CONDITIONINGS, SRDiT, create_sr_model
from minidit.train import Task, TrainConfig, train


def regression_predict(
    model, low_res: torch.Tensor, y: torch.Tensor | None = None, size: int | None = None
) -> torch.Tensor:
    """The regression baseline: the same network maps the LR image to x_0 in one step.

    The noisy-image input is empty (zeros) and t = 0; the output is a residual over bicubic upsampling,
    x_0 = upsample(low_res) + model(...), trained with plain L2 (SR3's regression baseline, same network).
    model: an SRDiT built with learn_sigma=False (or any callable model(x, t, low_res=, y=));
    low_res: (N, C, h, w); size: output side H (default model.input_size).
    Returns (N, C, H, W) float32 (not clamped: the L2 loss sees the raw prediction).
    """
    n, c = low_res.shape[:2]
    size = size or model.input_size
    x = torch.zeros(n, c, size, size, device=low_res.device, dtype=low_res.dtype)
    t = torch.zeros(n, dtype=torch.long, device=low_res.device)
    return upsample(low_res, size) + model(x, t, low_res=low_res, y=y)[:, :c].float()  # (N, C, H, W)


@torch.no_grad()
def sample_sr(
    model: nn.Module,
    diffusion,
    low_res: torch.Tensor,
    num_samples: int = 1,
    sampler: str = "ddpm",
    steps: int | None = 100,
    y: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    amp: bool | None = None,
) -> torch.Tensor:
    """Draw num_samples high-res images per LR input by running the reverse process conditioned on it.

    minidit.sample.sample does the sampling (compiled, bf16 on CUDA), with the LR image as a model input.
    model: an SRDiT; diffusion: the full process it was trained with (respaced here to `steps`); low_res:
    (N, C, h, w); y: (N,) labels or None (the null label); amp: bf16 autocast (default on CUDA).
    Returns (N, num_samples, C, H, W) in [-1, 1].
    """
    lr = low_res.repeat_interleave(num_samples, dim=0)  # (N*k, C, h, w)
    if y is None:
        labels = torch.full((len(lr),), model.num_classes, dtype=torch.long, device=lr.device)  # the null label
    else:
        labels = y.repeat_interleave(num_samples, dim=0)  # (N*k,)
    x = sample(
        model,
        diffusion,
        labels,
        sampler=sampler,
        steps=steps,
        generator=generator,
        amp=amp,
        model_kwargs={"low_res": lr},
    )  # (N*k, C, H, W)
    return rearrange(x, "(n k) c h w -> n k c h w", k=num_samples)  # (N, k, C, H, W)


# --------------------------------------------------------------------------------------------------
# training: minidit.train's fast step, with an SR batch and an SR objective
# --------------------------------------------------------------------------------------------------

OBJECTIVES = ("diffusion", "regression")
TRAIN_SHARE = 0.82  # of run_experiment's budget; the rest is kept for the evaluation
OBJECTIVE_SHARES = {"diffusion": 0.75, "regression": 0.25}  # of the training time: regression converges faster


@dataclass(frozen=True)
class SRConfig:
    """One SR training run (both objectives use it); CLI flags of `python -m minidit.superres` set it."""

    model: str = "DiT-S/2"
    block: str = "adaLN-Zero"
    cond: str = "concat"
    degradation: str = "x4"
    learn_sigma: bool = True
    class_cond: bool = False  # False: y is always the null label (the LR image is the only condition)
    batch_size: int = 256
    steps: int = 200_000  # an upper bound; a time budget usually ends the run first
    lr: float = 2e-4  # short runs: 2x DiT's 1e-4
    ema_decay: float = 0.999  # a run of a few thousand steps: the paper's 0.9999 would still be mostly init
    ema_warmup: str = "ema_warmup"
    seed: int = 0
    flip: bool = True
    precision: str = "bf16"  # CUDA only; elsewhere fp32
    compile: bool = True  # CUDA only
    log_every: int = 100
    device: str | None = None

    def __post_init__(self):
        choices = {
            "model": list(DiT_models),
            "block": list(_blocks.BLOCKS),
            "cond": CONDITIONINGS,
            "precision": ("bf16", "fp32"),
            "ema_warmup": _ema.WARMUPS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; expected one of {list(allowed)}")
        get_degradation(self.degradation)
        for name in ("batch_size", "steps", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or not 0 <= self.ema_decay <= 1:
            raise ValueError(f"need lr > 0 and ema_decay in [0, 1], got lr={self.lr}, ema_decay={self.ema_decay}")


PRESETS = {
    "gpu": {},
    # CPU quick mode: the same code path with a tiny model (notebook 09 in CI, tests).
    "cpu": dict(
        model="DiT-T/4",
        batch_size=32,
        steps=150,
        lr=1e-3,
        ema_decay=0.99,
        precision="fp32",
        compile=False,
        log_every=25,
    ),
}


def build_sr_model(cfg: SRConfig, objective: str = "diffusion", image_size: int = 32, channels: int = 1) -> SRDiT:
    """The SRDiT a config trains: the regression baseline has no learned variance (it outputs x_0 only)."""
    scale = get_degradation(cfg.degradation).scale
    return create_sr_model(
        cfg.model,
        cfg.cond,
        lr_size=image_size // scale,
        input_size=image_size,
        in_channels=channels,
        block=cfg.block,
        learn_sigma=cfg.learn_sigma and objective == "diffusion",
    )


def draw_sr_batch(
    data,
    generator: torch.Generator,
    batch_size: int,
    diffusion,
    degradation,
    flip: bool = True,
    class_cond: bool = False,
):
    """(x, low_res, t, noise, y): x (N, C, H, W) in [-1, 1], low_res = degrade(x) with fresh random strengths,
    t (N,), noise (N, C, H, W), y (N,) labels or None -- all from one generator, on the data's device."""
    x, y = sample_batch(data, batch_size, generator, flip)  # (N, C, H, W), (N,)
    low_res = _degrade.degrade(x, degradation, generator)  # (N, C, h, w)
    t = diffusion.sample_timesteps(batch_size, x.device, generator)  # (N,)
    noise = draw(torch.randn, x.shape, generator=generator, device=x.device)  # (N, C, H, W)
    return x, low_res, t, noise, (y if class_cond else None)


def sr_objective(objective: str):
    """The loss of one `draw_sr_batch` batch, for FastStep: (model_fn, diffusion, *batch) -> (N,) per example.

    "diffusion": DiT's L_simple (+ L_vlb), conditioned on low_res; "regression": plain L2 on x_0, in one step.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")

    def diffusion_loss(model_fn, diffusion, x, low_res, t, noise, y):
        kwargs = {"low_res": low_res, "y": y}
        return diffusion.training_losses(model_fn, x, t, model_kwargs=kwargs, noise=noise)["loss"]  # (N,)

    def regression_loss(model_fn, diffusion, x, low_res, t, noise, y):
        return (regression_predict(model_fn, low_res, y, x.shape[-1]) - x).pow(2).flatten(1).mean(1)  # (N,)

    return diffusion_loss if objective == "diffusion" else regression_loss


def train_sr(
    cfg: SRConfig, objective: str = "diffusion", data=None, max_seconds: float | None = None, log=print
) -> dict:
    """Train an SRDiT with the diffusion loss or the L2 regression loss, for cfg.steps or max_seconds.

    minidit.train.train runs it: its loop and step, with this task's model, batch (`draw_sr_batch`) and
    loss (`sr_objective`); its run files go to a temporary folder. max_seconds counts from the end of the
    first step: that step compiles (torch.compile, about a minute for DiT-S/2 on an H100) and is timed on
    its own as warmup_seconds. Charged to the budget, it once left the regression baseline a single step of
    its 0.9 minutes. data: a minidit.data.FashionMNIST (None loads the training split). Returns dict(model,
    ema, diffusion, history) -- history: minidit.train's (step, loss, wall_time, img_per_s lists, final_step,
    ...) plus objective, warmup_seconds, budget_seconds, train_seconds (the whole call).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    start = time.monotonic()
    data = data if data is not None else load_fashion_mnist("train")

    def draw(data, generator, train_cfg, diffusion, rank, world_size):
        if world_size > 1:
            raise ValueError("super-resolution trains in one process")
        return draw_sr_batch(data, generator, cfg.batch_size, diffusion, cfg.degradation, cfg.flip, cfg.class_cond)

    task = Task(
        build_model=lambda train_cfg, channels, size: build_sr_model(cfg, objective, size, channels),
        draw_batch=draw,
        objective=sr_objective(objective),
    )
    with tempfile.TemporaryDirectory(prefix="minidit-sr-") as run_dir:  # weights and state: not kept
        train_cfg = TrainConfig(
            model=cfg.model,
            block=cfg.block,
            learn_sigma=cfg.learn_sigma and objective == "diffusion",
            global_batch_size=cfg.batch_size,
            steps=cfg.steps,
            lr=cfg.lr,
            ema_decay=cfg.ema_decay,
            ema_warmup=cfg.ema_warmup,
            seed=cfg.seed + OBJECTIVES.index(objective),
            flip=cfg.flip,
            precision=cfg.precision,
            compile=cfg.compile,
            log_every=cfg.log_every,
            ckpt_every=0,
            sample_every=0,
            out_dir=run_dir,
            max_minutes=None if max_seconds is None else max_seconds / 60,
            device=cfg.device,
            progress=False,
        )
        history, model, ema = train(train_cfg, data, task, budget_from_first_step=True, return_models=True)
    history.update(
        objective=objective,
        config=dataclasses.asdict(cfg),
        budget_seconds=max_seconds,
        warmup_seconds=history["first_step_seconds"],
        train_seconds=time.monotonic() - start,
    )
    for key in ("checkpoints", "samples", "state"):  # files of the temporary folder, gone now
        history.pop(key, None)
    device = next(model.parameters()).device
    diffusion = create_diffusion(None, learn_sigma=model.learn_sigma, device=device)
    log(
        f"minidit.superres: {objective}: {history['final_step']} steps in {history['train_seconds']:.0f} s (first "
        f"step, compiled {history['compiled']}: {history['warmup_seconds']:.0f} s), loss {history['loss'][-1]:.4f}, "
        f"{history['img_per_s'][-1]:,.0f} img/s"
    )
    return {"model": model, "ema": ema, "diffusion": diffusion, "history": history}


# --------------------------------------------------------------------------------------------------
# evaluation: distortion (PSNR, SSIM) next to perception (FID, precision/recall)
# --------------------------------------------------------------------------------------------------


def _perceptual_metrics(outputs: dict[str, torch.Tensor], reference: torch.Tensor, log=print) -> dict:
    """FID and precision/recall of each method's images vs real images, with minidit's evaluator (if present)."""
    try:
        device = reference.device
        ref = metrics.compute_features(reference, device=device)["pool"]
        out = {}
        for name, images in outputs.items():
            fake = metrics.compute_features(images, device=device)["pool"]
            out[name] = {"fid": metrics.fid_from_features(ref, fake), **metrics.precision_recall(ref, fake, k=3)}
        return out
    except Exception as err:  # no evaluator weights yet, or too few images: distortion metrics still stand
        log(f"minidit.superres: FID / precision-recall skipped ({type(err).__name__}: {str(err)[:200]})")
        return {}


@torch.no_grad()
def evaluate_sr(
    diffusion_model: SRDiT,
    regression_model: SRDiT,
    diffusion,
    hr: torch.Tensor,
    degradation="x4",
    num_samples: int = 3,
    sampler: str = "ddpm",
    steps: int | None = 100,
    batch_size: int = 500,
    seed: int = 0,
    reference: torch.Tensor | None = None,
    deadline: float | None = None,
    log=print,
) -> dict:
    """Super-resolve degraded test images with bicubic, regression and diffusion; score them.

    hr: (N, C, H, W) ground-truth images in [-1, 1] (on the models' device); degraded with a CPU generator
    seeded `seed`, so every device sees the same LR inputs. reference: real images for FID/precision/recall
    (default hr). deadline: time.monotonic() after which no new batch starts (the rest is dropped).
    Returns dict(metrics={method: {psnr, ssim, fid?, precision?, recall?}}, diversity, num_eval, outputs
    {low_res, bicubic, regression, diffusion (N, k, C, H, W), ground_truth}).
    """
    lr_all = _degrade.degrade(hr.cpu(), degradation, generator=torch.Generator().manual_seed(seed)).to(hr.device)
    g = torch.Generator(device=hr.device).manual_seed(seed + 1)
    parts: dict[str, list] = {k: [] for k in ("low_res", "bicubic", "regression", "diffusion", "ground_truth")}
    done = 0
    for start in range(0, len(hr), batch_size):
        if deadline is not None and start > 0 and time.monotonic() > deadline:
            log(f"minidit.superres: time budget reached, evaluating on {start} of {len(hr)} test images")
            break
        lr, gt = lr_all[start : start + batch_size], hr[start : start + batch_size]
        with torch.autocast(hr.device.type, dtype=torch.bfloat16, enabled=hr.device.type == "cuda"):
            reg = regression_predict(regression_model.eval(), lr)
        parts["low_res"].append(lr)
        parts["bicubic"].append(upsample(lr, hr.shape[-1]))
        parts["regression"].append(reg.float().clamp(-1, 1))
        parts["diffusion"].append(sample_sr(diffusion_model, diffusion, lr, num_samples, sampler, steps, generator=g))
        parts["ground_truth"].append(gt)
        done = start + len(gt)
    out = {k: torch.cat(v) for k, v in parts.items()}
    gt, samples = out["ground_truth"], out["diffusion"]  # (N, C, H, W), (N, k, C, H, W)
    flat = rearrange(samples, "n k c h w -> (n k) c h w")
    gt_k = gt.repeat_interleave(num_samples, dim=0)
    candidates = {
        "bicubic": out["bicubic"],
        "regression": out["regression"],
        "diffusion": samples[:, 0],
        f"diffusion mean of {num_samples}": samples.mean(1),
    }
    table = {}
    for name, images in candidates.items():
        table[name] = {"psnr": psnr(images, gt).mean().item(), "ssim": ssim(images, gt).mean().item()}
    # A diffusion sample's distortion, averaged over all k samples of every input (not just the first).
    table["diffusion"] = {"psnr": psnr(flat, gt_k).mean().item(), "ssim": ssim(flat, gt_k).mean().item()}
    table["ground truth"] = {"psnr": None, "ssim": 1.0}  # PSNR is infinite (None keeps the JSON strict)
    perceptual = _perceptual_metrics({**candidates, "ground truth": gt}, gt if reference is None else reference, log)
    for name, values in perceptual.items():
        table[name].update(values)
    diversity = samples.std(1).mean().item() if num_samples > 1 else 0.0  # per-pixel std over the k samples
    notes = (
        f"diffusion: PSNR/SSIM averaged over all {num_samples} samples per input; FID and precision/recall "
        "from the first sample per input, so every method is scored on the same number of images"
    )
    return {
        "metrics": table,
        "diversity_pixel_std": diversity,
        "num_eval": done,
        "num_samples": num_samples,
        "sampler": sampler,
        "sample_steps": steps,
        "notes": notes,
        "outputs": out,
    }


# --------------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------------


def plot_before_after(outputs: dict, rows: int = 6, num_samples: int = 3):
    """LR input (nearest, to show its pixels) | bicubic | regression | k diffusion samples | ground truth."""
    import matplotlib.pyplot as plt  # heavy: only the figures need it

    rows = min(rows, len(outputs["ground_truth"]))
    k = min(num_samples, outputs["diffusion"].shape[1])
    size = outputs["ground_truth"].shape[-1]
    columns = [
        ("LR input", upsample(outputs["low_res"][:rows], size, mode="nearest")),
        ("bicubic", outputs["bicubic"][:rows]),
        ("regression (L2)", outputs["regression"][:rows]),
    ]
    columns += [(f"diffusion #{i + 1}", outputs["diffusion"][:rows, i]) for i in range(k)]
    columns += [("ground truth", outputs["ground_truth"][:rows])]
    fig, axes = plt.subplots(rows, len(columns), figsize=(1.3 * len(columns), 1.3 * rows + 0.3), squeeze=False)
    for j, (title, images) in enumerate(columns):
        for i in range(rows):
            ax = axes[i, j]
            ax.imshow(images[i, 0].float().cpu().numpy(), cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def plot_perception_distortion(table: dict):
    """Distortion (PSNR, higher = closer to the truth) against perception (FID, lower = more realistic)."""
    import matplotlib.pyplot as plt  # heavy: only the figures need it

    points = {k: v for k, v in table.items() if "fid" in v and v["psnr"] is not None}
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    names = [k for k in table if k != "ground truth"]
    ax[0].barh(names, [table[k]["psnr"] for k in names], color="tab:blue")
    ax[0].set_xlabel("PSNR (dB), higher = less distortion")
    ax[0].invert_yaxis()
    if points:
        for name, v in points.items():
            ax[1].scatter(v["psnr"], v["fid"], s=40)
            ax[1].annotate(name, (v["psnr"], v["fid"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
        if "ground truth" in table and "fid" in table["ground truth"]:
            ax[1].axhline(table["ground truth"]["fid"], color="gray", ls="--", lw=1, label="ground truth (FID floor)")
            ax[1].legend(fontsize=8)
        ax[1].set_xlabel("PSNR (dB)  -> less distortion")
        ax[1].set_ylabel("FID  (lower = more realistic)")
        ax[1].set_title("perception-distortion trade-off (Blau & Michaeli 2018)", fontsize=9, pad=10)
        ax[1].margins(0.15)
    else:
        ax[1].text(0.5, 0.5, "FID unavailable\n(no evaluator weights)", ha="center", va="center")
        ax[1].set_axis_off()
    fig.tight_layout()
    return fig


def save_figure(fig, path) -> pathlib.Path:
    """Write a matplotlib figure as PNG atomically (temp file in the same folder, then rename)."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))


# --------------------------------------------------------------------------------------------------
# the experiment: python -m minidit.superres
# --------------------------------------------------------------------------------------------------


def run_experiment(
    cfg: SRConfig,
    out_dir=None,
    minutes: float = 8.0,
    num_eval: int = 2000,
    num_samples: int = 3,
    sampler: str = "ddpm",
    sample_steps: int = 100,
    num_reference: int | None = None,
    command: str | None = None,
    log=print,
) -> dict:
    """Train the diffusion SR model and the regression baseline within `minutes` (training and evaluation:
    ~18% is kept for the evaluation), evaluate `num_eval` test images, and write results.json and the figures
    to out_dir (if given). Each model's first step (torch.compile's warm-up, ~1 min on a GPU) is not charged
    to the budget: it comes on top, and results.json records it per model with the steps trained.
    FID/precision/recall use `num_reference` other test images (default: all the rest) as the real
    distribution. Returns the summary written to results.json, plus "outputs" (the image tensors)."""
    start = time.monotonic()
    budget = 60 * minutes
    train_budget = TRAIN_SHARE * budget
    device = get_device(cfg.device)
    data, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    if not 1 <= num_eval < len(test):
        raise ValueError(f"num_eval must be in [1, {len(test) - 1}] (the rest are the FID reference), got {num_eval}")
    # Disjoint test images: num_eval to super-resolve, the others (up to num_reference) as the real distribution.
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(cfg.seed))
    hr = to_model_range(test.images[order[:num_eval]]).to(device)
    ref_idx = order[num_eval:] if num_reference is None else order[num_eval : num_eval + num_reference]
    reference = to_model_range(test.images[ref_idx]).to(device)  # the real distribution for FID, P/R
    out_dir = None if out_dir is None else pathlib.Path(out_dir)
    summary = {
        "command": command or "minidit.superres.run_experiment",
        "device": str(device),
        "device_name": (
            torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or device.type
        ),
        "torch_version": torch.__version__,
        "minutes_budget": minutes,
        "config": dataclasses.asdict(cfg),
        "degradation": dataclasses.asdict(get_degradation(cfg.degradation)),
        "fid_reference": f"{len(reference)} other Fashion-MNIST test images, minidit evaluator pool features",
        "status": "training",
    }
    runs = {}
    for objective, share in OBJECTIVE_SHARES.items():
        log(
            f"minidit.superres: training the {objective} model for up to {share * train_budget / 60:.1f} min "
            "after its first (compiling) step"
        )
        runs[objective] = train_sr(cfg, objective, data, max_seconds=share * train_budget, log=log)
    histories = {k: r["history"] for k, r in runs.items()}
    warmup = sum(h["warmup_seconds"] for h in histories.values())
    summary.update(
        status="evaluating",
        train=histories,
        steps_trained={k: h["final_step"] for k, h in histories.items()},
        warmup_seconds={k: h["warmup_seconds"] for k, h in histories.items()},
    )
    if out_dir is not None:  # a record of the training even if the evaluation is cut short
        atomic_write_json(out_dir / "results.json", summary)
    eval_start = time.monotonic()
    result = evaluate_sr(
        runs["diffusion"]["ema"],
        runs["regression"]["ema"],
        runs["diffusion"]["diffusion"],
        hr,
        cfg.degradation,
        num_samples,
        sampler,
        sample_steps,
        seed=cfg.seed,
        reference=reference,
        deadline=start + budget + warmup,
        log=log,
    )
    outputs = result.pop("outputs")
    result["notes"] += (
        "; warmup_seconds: each model's first step (torch.compile and CUDA warm-up), timed apart "
        "and not charged to its training budget"
    )
    summary.update(result, status="done")
    summary["wall_seconds"] = {
        **{f"train_{k}": h["train_seconds"] for k, h in histories.items()},  # warm-up included
        "evaluate": time.monotonic() - eval_start,
        "total": time.monotonic() - start,
    }
    if out_dir is not None:
        summary["figures"] = []
        try:
            import matplotlib.pyplot as plt  # heavy: only the figures need it

            figures = {
                "before_after.png": plot_before_after(outputs, 8, num_samples),
                "perception_distortion.png": plot_perception_distortion(summary["metrics"]),
            }
            for name, fig in figures.items():
                save_figure(fig, out_dir / name)
                plt.close(fig)
                summary["figures"].append(name)
        except Exception as err:  # the numbers matter more than the pictures: never lose them to a plot
            log(f"minidit.superres: figures failed ({type(err).__name__}: {err})")
        atomic_write_json(out_dir / "results.json", summary)
        log(f"minidit.superres: wrote {out_dir / 'results.json'} and {', '.join(summary['figures']) or 'no figures'}")
    summary["outputs"] = outputs
    return summary


def format_table(table: dict) -> str:
    """The metrics table as aligned text."""
    lines = [f"{'method':<22} {'PSNR':>7} {'SSIM':>6} {'FID':>8} {'prec':>5} {'recall':>6}"]
    for name, v in table.items():
        fid = f"{v['fid']:8.2f}" if "fid" in v else f"{'-':>8}"
        pr = f"{v['precision']:5.2f} {v['recall']:6.2f}" if "precision" in v else f"{'-':>5} {'-':>6}"
        psnr_text = f"{v['psnr']:7.2f}" if v["psnr"] is not None else f"{'inf':>7}"
        lines.append(f"{name:<22} {psnr_text} {v['ssim']:6.3f} {fid} {pr}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """python -m minidit.superres --out DIR [--minutes 8] [--quick] [--model DiT-S/2] [--cond concat] ..."""

    parser = ArgumentParser(prog="python -m minidit.superres", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for results.json and the figures")
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="wall-clock budget of training and evaluation (default 8; quick 5); each model's "
        "first step (torch.compile, ~1 min on a GPU) comes on top",
    )
    parser.add_argument("--quick", action="store_true", help="CPU-sized: tiny model, few steps, 64 test images")
    parser.add_argument("--model", default=None, help="DiT config for both models (default DiT-S/2; quick DiT-T/4)")
    parser.add_argument("--block", default="adaLN-Zero", choices=sorted(_blocks.BLOCKS))
    parser.add_argument("--cond", default="concat", choices=CONDITIONINGS)
    parser.add_argument(
        "--degradation", default="x4", help="preset of minidit.superres.degrade (x4, x2, x4-bicubic, ...)"
    )
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument(
        "--num-eval", type=int, default=None, help="test images to super-resolve (default 2000; quick 64)"
    )
    parser.add_argument(
        "--num-reference",
        type=int,
        default=None,
        help="other real test images for FID / precision-recall (default: all the rest; quick 1000)",
    )
    parser.add_argument("--samples-per-input", type=int, default=3)
    parser.add_argument("--sampler", default="ddpm", choices=("ddpm", "ddim"))
    parser.add_argument("--sample-steps", type=int, default=None, help="respaced steps (default 100; quick 20)")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--precision", default=None, choices=("bf16", "fp32"))
    parser.add_argument("--device", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    use_course_env()  # MINIDIT_IMPL=student runs your ex15 (and other exercises) here
    values = dict(PRESETS["cpu" if args.quick else "gpu"])
    for key in ("model", "batch_size", "lr", "precision", "device"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    values.update(block=args.block, cond=args.cond, degradation=args.degradation, seed=args.seed)
    if args.no_compile:
        values["compile"] = False
    try:  # everything a user can get wrong, before the training
        cfg = SRConfig(**values)
        for name in ("samples_per_input", "num_eval", "sample_steps", "num_reference"):
            value = getattr(args, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if args.minutes is not None and args.minutes <= 0:
            raise ValueError(f"--minutes must be > 0, got {args.minutes}")
        writable_folder(args.out, "--out")
        get_device(cfg.device)
        load_fashion_mnist("train")
        load_fashion_mnist("test")
    except (ValueError, OSError) as err:
        parser.error(str(err))
    minutes = args.minutes if args.minutes is not None else (5.0 if args.quick else 8.0)
    num_eval = args.num_eval or (64 if args.quick else 2000)
    steps = args.sample_steps or (20 if args.quick else 100)
    command = "python -m minidit.superres " + " ".join(sys.argv[1:] if argv is None else argv)
    num_reference = args.num_reference or (1000 if args.quick else None)
    summary = run_experiment(
        cfg, args.out, minutes, num_eval, args.samples_per_input, args.sampler, steps, num_reference, command
    )
    print(format_table(summary["metrics"]))
    print(
        f"diversity (pixel std over {args.samples_per_input} samples): {summary['diversity_pixel_std']:.4f}; "
        f"wall {summary['wall_seconds']['total']:.0f} s on {summary['device_name']}"
    )
    print(
        "steps trained: "
        + ", ".join(
            f"{k} {n} (first step {summary['warmup_seconds'][k]:.0f} s)" for k, n in summary["steps_trained"].items()
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
