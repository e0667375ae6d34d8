"""Sample images from a trained DiT: DDPM with respaced steps, DDIM, classifier-free guidance.

DiT samples with 250 respaced DDPM steps (IDDPM §4.1) and, for its best FID, classifier-free
guidance at scale 1.5 (DiT §3.1, Table 2); its figures use scale 4.0. DDIM (Song et al. 2021,
Eq. 12) with 50 steps is the fast alternative.

    python -m minidit.sample --ckpt runs/s2/checkpoints/0020000.safetensors --out grid.png
    python -m minidit.sample --ckpt runs/s2 --cfg-scale 1.5 --num 10000 --npz samples.npz   # for minidit.evaluate

`--ckpt` takes a weights file or a run folder (its newest checkpoint). The grid has one row per
class; the .npz holds `images` (N, 1, 32, 32) uint8 and `labels` (N,) int64.

On CUDA every entry point (this CLI, minidit.evaluate, training's sample grids, the experiments, super-
resolution) samples through `sample`: batches of 500, a bf16 copy of the model, compiled; the diffusion
maths between model calls stays fp32 and never waits for the GPU. `python -m minidit.tools.bench` times
exactly this call.
"""

from __future__ import annotations

import argparse
import copy
import math
import pathlib
import sys
import time
import warnings

import numpy as np
import PIL.Image
import torch
from torch import nn

from minidit import diffusion as _diffusion
from minidit import ema as _ema
from minidit.checkpoint import atomic_write, load_weights, read_weights_config, writable_target
from minidit.cli import ArgumentParser, use_course_env
from minidit.data import from_model_range
from minidit.device import autocast, get_device
from minidit.ema import unwrap_model

SAMPLERS = ("ddpm", "ddim")


def respace(diffusion: _diffusion.GaussianDiffusion, sampler: str = "ddpm", steps: int | None = 250, device=None):
    """The process `sample` runs: `diffusion` with only `steps` of its steps kept (IDDPM §4.1), on `device`.

    DDPM keeps evenly spread steps ("250"), DDIM a fixed stride ("ddim50"). steps=None uses
    `diffusion` as it is (it may already be respaced).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    device = diffusion.device if device is None else torch.device(device)
    spaced = getattr(diffusion, "original_num_steps", None) is not None
    kwargs = dict(learn_sigma=diffusion.learn_sigma, loss_type=diffusion.loss_type, device=device)
    betas = diffusion.betas.double().cpu()
    if steps is None or (steps == diffusion.num_timesteps and not spaced):
        if diffusion.device == device:
            return diffusion
        return _diffusion.GaussianDiffusion(betas, timestep_map=diffusion.timestep_map.cpu(), **kwargs)
    if spaced:
        raise ValueError(
            f"this diffusion is already respaced to {diffusion.num_timesteps} steps; "
            "pass the full process (create_diffusion()) or steps=None"
        )
    section = f"ddim{steps}" if sampler == "ddim" else str(steps)
    return _diffusion.SpacedDiffusion(_diffusion.space_timesteps(diffusion.num_timesteps, section), betas, **kwargs)


def _denoise(net: nn.Module, x, t, y, **model_kwargs):
    """The model's conditional output at (x_t, t) for labels y (and model_kwargs): (N, C_out, H, W)."""
    return net(x, t, y=y, **model_kwargs)


def _denoise_guided(net: nn.Module, x, t, y, cfg_scale, guided_channels: int | None):
    """The classifier-free guided output (`DiT.forward_with_cfg`): (N, C_out, H, W)."""
    return net.forward_with_cfg(x, t, y, cfg_scale, guided_channels)


# torch.compile of the two, made on first use. The model is an argument, not a constant, so one compiled
# graph serves every model of the same architecture (each checkpoint an evaluation loads); two functions
# keep the unguided and guided graphs in separate caches.
_COMPILED: dict[tuple[str, str], object] = {}
# reduce-overhead: each model call replays one CUDA graph; max-autotune-no-cudagraphs: Triton matmul templates
# tried against cuBLAS (minutes of compiling); max-autotune-triton: Triton matmuls only, so that every GELU, bias,
# gate and residual add is fused into the matmul before it (minutes of compiling)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune-triton")
_COMPILE_OPTIONS = {"max-autotune-triton": {"max_autotune": True, "max_autotune_gemm_backends": "TRITON"}}
DEFAULT_BATCH_SIZE = 500  # images per sample() call of the CLI, the evaluation and the bench
# sample() on CUDA samples a bf16 copy of the model (see sample's bf16_weights): on an H200, DiT-S/2 at batch 500,
# 3% less GPU time a step (notebooks/results/bench/bench_h200_sample_ladder.json); images as close to fp32 as
# autocast's (tests/test_sample.py)
BF16_WEIGHTS_DEFAULT = True


def denoiser(guided: bool, compile: bool, mode: str = "default"):
    """`_denoise` or `_denoise_guided`, compiled (CUDA: bf16 matmuls fused with their neighbours) or as is."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {COMPILE_MODES}, got {mode!r}")
    fn = _denoise_guided if guided else _denoise
    if not compile:
        return fn
    key = (fn.__name__, mode)
    if key not in _COMPILED:
        how = {"options": _COMPILE_OPTIONS[mode]} if mode in _COMPILE_OPTIONS else {"mode": mode}
        _COMPILED[key] = torch.compile(fn, dynamic=False, **how)
    return _COMPILED[key]


@torch.no_grad()
def sample(
    model: nn.Module,
    diffusion,
    labels,
    cfg_scale: float = 1.0,
    sampler: str = "ddpm",
    steps: int | None = 250,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    guided_channels: int | None = None,
    progress: bool = False,
    noise: torch.Tensor | None = None,
    amp: bool | None = None,
    compile: bool | None = None,
    clip_denoised: bool = True,
    compile_mode: str = "default",
    model_kwargs: dict | None = None,
    bf16_weights: bool | None = None,
) -> torch.Tensor:
    """Generate one image per label.

    model: a DiT (eval mode is used; the mode is restored after). diffusion: the full process the
    model was trained with (respaced here to `steps`). labels: (N,) class indices. cfg_scale: 1 =
    no guidance; otherwise `model.forward_with_cfg` (one doubled batch per step). sampler: "ddpm"
    (ancestral, DDPM Algorithm 2) or "ddim" (eta 0 = deterministic). generator: draws x_T and
    the per-step noise. noise: (N, C, H, W) x_T instead. amp: bf16 autocast for the model
    (default: on CUDA). compile: torch.compile the model's forward (default: on CUDA; the first
    call of a batch shape compiles, later ones reuse it; if compiling fails, sampling goes on
    eagerly); compile_mode "reduce-overhead" also replays each model call as a CUDA graph.
    clip_denoised: clamp each predicted x_0, and the result, to [-1, 1] (pixels); latents,
    which are not bounded, take False, as DiT's sampling does. model_kwargs: more inputs of the
    model, one per sample (minidit.superres: {"low_res": (N, C, h, w)}; unguided only).
    bf16_weights: sample a bf16 copy of the model (weights, position embedding and so the residual
    stream stored in bf16; autocast still runs norms and softmax in fp32): less memory traffic per
    step; None = BF16_WEIGHTS_DEFAULT when amp is on; the diffusion maths stays fp32 either way. Returns
    (N, C, H, W) float32; ValueError if the model produced NaN/inf.
    """
    net = unwrap_model(model)
    device = next(net.parameters()).device
    labels = torch.as_tensor(labels, device=device).long()
    if labels.ndim != 1:
        raise ValueError(f"labels must be (N,), got shape {tuple(labels.shape)}")
    if sampler == "ddpm" and eta != 0.0:
        raise ValueError("eta is a DDIM parameter; the DDPM sampler takes eta=0")
    process = respace(diffusion, sampler, steps, device)
    amp = device.type == "cuda" if amp is None else amp
    compile = device.type == "cuda" if compile is None else compile
    guided = cfg_scale != 1.0
    if guided and model_kwargs:
        raise ValueError("classifier-free guidance takes labels only, not model_kwargs")
    extra = ()
    if guided:  # as a tensor when compiled: one graph serves every guidance scale
        extra = (torch.tensor(float(cfg_scale), device=device) if compile else float(cfg_scale), guided_channels)
    fn = [denoiser(guided, compile, compile_mode)]
    graphs = compile and compile_mode == "reduce-overhead"
    bf16_weights = (BF16_WEIGHTS_DEFAULT and amp) if bf16_weights is None else bf16_weights
    if bf16_weights:  # a copy: the caller's model (a training run's EMA) keeps its fp32 weights
        net = copy.deepcopy(net).to(torch.bfloat16)

    def model_fn(x, t, y, **kw):
        with autocast(device.type, torch.bfloat16 if amp else None):
            try:
                if graphs:
                    torch.compiler.cudagraph_mark_step_begin()  # the last replay's output is used up
                out = fn[0](net, x, t, y, *extra, **kw)
                out = out.clone() if graphs else out  # the next replay overwrites the graph's output
            except Exception as err:  # a compiler failure must not cost the samples
                if not compile or isinstance(err, (torch.cuda.OutOfMemoryError, ValueError)):
                    raise
                print(
                    f"minidit.sample: torch.compile failed ({type(err).__name__}: {str(err)[:200]}); "
                    "sampling without it",
                    file=sys.stderr,
                )
                fn[0] = denoiser(guided, compile=False)
                out = fn[0](net, x, t, y, *extra, **kw)
        return out.float()

    channels = net.out_channels // 2 if net.learn_sigma else net.out_channels  # the image's, not the input's
    shape = (len(labels), channels, net.input_size, net.input_size)
    was_training = net.training
    net.eval()
    try:
        kwargs = dict(
            noise=noise,
            model_kwargs={"y": labels, **(model_kwargs or {})},
            device=device,
            progress=progress,
            generator=generator,
            clip_denoised=clip_denoised,
        )
        if sampler == "ddpm":
            x = process.p_sample_loop(model_fn, shape, **kwargs)
        else:
            x = process.ddim_sample_loop(model_fn, shape, eta=eta, **kwargs)
    finally:
        net.train(was_training)
    if not torch.isfinite(x).all():  # clamp and uint8 conversion would turn NaN into plausible black images
        raise ValueError("sampling produced NaN/inf values: the model's weights are not finite (a diverged run?)")
    return x.clamp(-1, 1) if clip_denoised else x  # (N, C, H, W)


def load_model_for_sampling(ckpt_path, use_ema: bool = True, device=None):
    """A weights file (or a run folder: its newest checkpoint) -> (model in eval mode, its diffusion process).

    use_ema: the EMA weights (what DiT samples from) or, False, the raw ones. The diffusion is the
    full process the model was trained with (schedule and steps from the checkpoint's config).
    """
    path = latest_checkpoint(ckpt_path)
    device = get_device(device)
    model, ema, config = load_weights(path, device=device)
    if use_ema and ema is None:
        raise ValueError(f"{path} has no EMA weights; pass use_ema=False (--raw) to sample the raw model")
    young = _ema.young_ema_message(checkpoint_ema_stats(config)) if use_ema else None
    if young:
        warnings.warn(f"{path}: {young}", YoungEMAWarning, stacklevel=2)
    train_cfg = config.get("train", {})
    diffusion = _diffusion.create_diffusion(
        None,
        train_cfg.get("noise_schedule", "linear"),
        model.learn_sigma,
        train_cfg.get("diffusion_steps", 1000),
        device=device,
    )
    return (ema if use_ema else model), diffusion


class YoungEMAWarning(UserWarning):
    """The EMA weights being sampled are still mostly their random initialisation."""


def checkpoint_ema_stats(config: dict) -> dict:
    """What the EMA of a weights file holds (`minidit.ema.ema_stats`), from its metadata.

    Files written before these fields existed are recomputed from their training config and step;
    {} when the file says too little (e.g. weights that did not come from minidit.train).
    """
    if "ema_init_share" in config:
        return {k: v for k, v in config.items() if k.startswith("ema_")}
    train_cfg = config.get("train") or {}
    if "step" not in config or "ema_decay" not in train_cfg:
        return {}
    return _ema.ema_stats(int(config["step"]), train_cfg["ema_decay"], train_cfg.get("ema_warmup", "none"))


def latest_checkpoint(path) -> pathlib.Path:
    """path itself when it is a file, else the newest checkpoints/*.safetensors of the run folder."""
    path = pathlib.Path(path)
    if path.is_dir():
        files = sorted((path / "checkpoints").glob("*.safetensors")) or sorted(path.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no .safetensors checkpoint in {path} or {path / 'checkpoints'}")
        return files[-1]
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path


def describe_checkpoint(path, use_ema: bool = True) -> str:
    """One line for the log: which weights file, its training step, EMA or raw weights."""
    step = read_weights_config(path).get("step")
    when = "step unknown" if step is None else f"step {step}"
    return f"{path} ({when}, {'EMA' if use_ema else 'raw'} weights)"


def check_sampling_args(args, parser: argparse.ArgumentParser) -> None:
    """parser.error for counts below 1 and for eta with DDPM (shared by the sample and evaluate CLIs)."""
    for name in ("per_class", "num", "num_samples", "batch_size", "steps"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if getattr(args, "eta", 0.0) != 0.0 and args.sampler == "ddpm":
        parser.error("--eta is a DDIM parameter; use it with --sampler ddim")


def load_for_cli(args, parser: argparse.ArgumentParser, use_ema: bool = True):
    """(model, diffusion) from args.ckpt, checked against args.sampler / steps / cfg scales; prints what it loaded.

    Every problem (missing or damaged file, a step count the process cannot take, guidance for a
    model without a null label) is a parser.error, raised before any sampling.
    """
    try:
        path = latest_checkpoint(args.ckpt)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", YoungEMAWarning)
            model, diffusion = load_model_for_sampling(path, use_ema=use_ema, device=args.device)
        respace(diffusion, args.sampler, args.steps)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    for w in caught:  # loud on the terminal, not a one-line Python warning
        if issubclass(w.category, YoungEMAWarning):
            print(f"{parser.prog}: WARNING: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    scales = args.cfg_scale if isinstance(args.cfg_scale, list) else [args.cfg_scale]
    if any(s != 1.0 for s in scales) and model.class_dropout_prob == 0:
        parser.error(
            f"{path} was trained without label dropout (no null label), so it cannot use classifier-free "
            "guidance; use --cfg-scale 1"
        )
    print(f"{parser.prog}: loaded {describe_checkpoint(path, use_ema)}")
    return model, diffusion


# ----------------------------------------------------------------------------- image files


def make_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2) -> np.ndarray:
    """images: (N, C, H, W) in [-1, 1], C = 1 or 3 -> one uint8 picture of rows of nrow images.

    Returns (H', W') for grey images, (H', W', 3) for RGB; `padding` black pixels between images.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 1 or 3, H, W), got {tuple(images.shape)}")
    n, c, h, w = images.shape
    pixels = from_model_range(images).cpu().numpy()  # (N, C, H, W) uint8
    rows = math.ceil(n / nrow)
    grid = np.zeros((c, rows * (h + padding) + padding, nrow * (w + padding) + padding), dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top : top + h, left : left + w] = pixels[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)  # (H', W') or (H', W', 3)


def save_image_grid(images: torch.Tensor, path, nrow: int = 8) -> pathlib.Path:
    """Write images (N, C, H, W) in [-1, 1] as one PNG grid (`make_grid`), atomically."""
    return atomic_write(path, lambda tmp: write_png(tmp, make_grid(images, nrow)))


def write_png(path, picture: np.ndarray) -> None:
    """A uint8 (H, W) grey or (H, W, 3) RGB picture -> a PNG file, pixel for pixel (Pillow, matplotlib's writer)."""
    if picture.dtype != np.uint8 or picture.ndim not in (2, 3) or (picture.ndim == 3 and picture.shape[2] != 3):
        raise ValueError(f"expected a uint8 (H, W) or (H, W, 3) array, got {picture.dtype} {picture.shape}")
    PIL.Image.fromarray(picture).save(path, format="png")


def save_npz(images: torch.Tensor, labels: torch.Tensor, path) -> pathlib.Path:
    """Write images (N, C, H, W) in [-1, 1] as uint8 `images` and labels (N,) as `labels`, atomically."""
    arrays = {"images": from_model_range(images).cpu().numpy(), "labels": labels.cpu().long().numpy()}

    def write(tmp: pathlib.Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a path
            np.savez(f, **arrays)

    return atomic_write(path, write)


# ----------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m minidit.sample",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--ckpt", required=True, help="weights .safetensors, or a run folder (newest checkpoint)")
    parser.add_argument("--out", default="samples.png", help="PNG grid to write")
    parser.add_argument("--npz", default=None, help="also write all samples to this .npz")
    parser.add_argument("--per-class", type=int, default=8, help="images per class (one grid row per class)")
    parser.add_argument("--num", type=int, default=None, help="total images instead, classes in turn")
    parser.add_argument("--cfg-scale", type=float, default=1.0, help="classifier-free guidance scale (1 = none)")
    parser.add_argument("--sampler", choices=SAMPLERS, default="ddpm")
    parser.add_argument("--steps", type=int, default=250, help="respaced sampling steps")
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM eta")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--raw", action="store_true", help="sample the raw weights instead of the EMA")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    use_course_env()
    check_sampling_args(args, parser)
    try:  # the outputs first: a bad path must not cost the sampling
        for flag, path in (("--out", args.out), ("--npz", args.npz)):
            if path is not None:
                writable_target(path, flag)
    except ValueError as err:
        parser.error(str(err))
    model, diffusion = load_for_cli(args, parser, use_ema=not args.raw)
    num_classes = model.num_classes
    if args.num is not None:
        labels = torch.arange(args.num) % num_classes  # (N,)
        nrow = min(num_classes, args.num)
    else:
        labels = torch.arange(num_classes).repeat_interleave(args.per_class)  # (K * classes,)
        nrow = args.per_class
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(args.seed)
    chunks, started = [], time.perf_counter()
    for start in range(0, len(labels), args.batch_size):
        chunks.append(
            sample(
                model,
                diffusion,
                labels[start : start + args.batch_size],
                cfg_scale=args.cfg_scale,
                sampler=args.sampler,
                steps=args.steps,
                eta=args.eta,
                generator=generator,
                progress=True,
            ).cpu()
        )
        if start == 0:
            first = time.perf_counter() - started  # .cpu() above waited for the GPU
    images = torch.cat(chunks)  # (N, C, H, W)
    seconds = time.perf_counter() - started
    print(
        f"minidit.sample: {len(images)} images in {seconds:.1f} s ({len(images) / seconds:.1f} img/s); the first "
        f"batch of {min(args.batch_size, len(images))}, compiling included, took {first:.1f} s"
    )
    grid = images[: nrow * min(num_classes, math.ceil(len(images) / nrow))]
    print(f"minidit.sample: wrote {save_image_grid(grid, args.out, nrow=nrow)}")
    if args.npz:
        print(f"minidit.sample: wrote {save_npz(images, labels, args.npz)} ({len(images)} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
