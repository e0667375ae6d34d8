"""Train a class-conditional DiT on Fashion-MNIST, fast, on one GPU or many (DiT §4 "Training").

The recipe is the paper's: AdamW, lr 1e-4, no weight decay, batch 256, EMA 0.9999, horizontal
flips, the hybrid loss of Improved DDPM (L_simple + L_vlb) when sigma is learned. One default
differs on purpose: the EMA decay is ramped up to 0.9999 (`ema_warmup`, minidit.ema), so a run of
any length samples from a useful average; `--ema-warmup none` is the paper's constant decay. What makes the
step fast (`minidit.tools.bench` measures each piece against the official recipe):

* the data is one uint8 tensor on the GPU; a batch, its timesteps, noise and label dropout are
  drawn there from one torch.Generator -- no DataLoader, no host round trip;
* bf16 autocast (weights and optimiser stay fp32), `scaled_dot_product_attention` in the blocks;
* torch.compile of the model and the diffusion loss together (`compile_scope="loss"`), under DDP too;
  for small steps on one GPU (DiT-S/4, S/8) replayed as CUDA graphs (`compile_mode="auto"`, the default;
  `minidit.step.resolve_compile_mode`), since their many short kernels would leave the GPU waiting for launches;
* fused AdamW and a one-call foreach EMA (`minidit.ema.update_ema`);
* the MLP's GELU recomputed in the backward pass (`recompute_gelu`, on by default): for DiT-S/2 at
  batch 256 on an H100, 10.1 instead of 12.2 GiB peak memory for about 2% of the speed;
* no host sync inside the loop: losses stay on the GPU and are read every `log_every` steps.

    python -m minidit.train --model DiT-S/2 --steps 20000 --out-dir runs/s2
    python -m minidit.train --preset cpu                       # a minute on a laptop CPU
    torchrun --nproc_per_node=8 -m minidit.train --model DiT-B/2 --out-dir runs/b2
    python -m minidit.train --out-dir runs/s2 --resume --max-minutes 9   # continue, in chunks

A run folder belongs to one run: without --resume, a folder that already holds a run is refused
(--overwrite deletes that run's files first). A loss or weight that turns NaN/inf stops the run
with an error naming the step, before anything non-finite is saved (--skip-nonfinite skips such
steps instead, at the cost of one host sync per step). Stale temporary files of a killed save are
deleted on the next start; every saved file carries a checksum that is verified on load.

Python API (notebook 08): `history = train(TrainConfig(...), data=None)`. Files in out_dir:
config.json, history.json, state.pt (resumable), checkpoints/NNNNNNN.safetensors (raw + EMA
weights, config in the metadata), samples/NNNNNNN.png (EMA sample grids, one row per class).

Under torchrun (DDP): every rank draws the same global batch from the same seed and keeps its own
slice of rows, so N processes see exactly the batches one process would; the EMA, checkpoints,
sample grids and history are written by rank 0. The step is compiled as on one GPU, model and loss
together (`FastStep`); `--compile-scope model` compiles the model only, as DDP runs did before.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import pathlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from minidit import checkpoint as _checkpoint
from minidit import diffusion as _diffusion
from minidit import ema as _ema
from minidit.blocks import BLOCKS, set_recompute_gelu
from minidit.cli import ArgumentParser, use_course_env
from minidit.data import FashionMNIST, LatentDataset, load_fashion_mnist
from minidit.device import get_device
from minidit.model import DiT_models, create_model
from minidit.runs import (
    RunFolderError,
    World,
    check_batch_split,
    check_resume_config,
    claim_out_dir,
    gather,
    load_history,
    new_history,
    out_of_time,
    restore_rng,
    rng_state,
    world_from_env,
)
from minidit.sample import sample, save_image_grid
from minidit.step import FastStep, dit_loss, draw_batch, make_optimizer, resolve_compile_mode, resolve_precision

PRECISIONS = ("bf16", "fp32")
# "reduce-overhead" adds CUDA graphs: the forward and backward replay as two graphs, one launch each (what small
# models need, whose kernels are shorter than their launches); FastStep copies the loss out of the graph's memory,
# which the next replay overwrites.
COMPILE_MODES = ("auto", "default", "max-autotune-no-cudagraphs", "reduce-overhead")
COMPILE_SCOPES = ("loss", "model")
# Changing one of these between a checkpoint and its resumption would not continue the same run.
RESUME_MUST_MATCH = (
    "model",
    "block",
    "learn_sigma",
    "class_dropout_prob",
    "num_classes",
    "diffusion_steps",
    "noise_schedule",
    "global_batch_size",
    "lr",
    "weight_decay",
    "ema_decay",
    "ema_warmup",
    "seed",
    "flip",
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (the CLI flags are these fields)."""

    model: str = "DiT-S/2"
    block: str = "adaLN-Zero"
    learn_sigma: bool = True
    class_dropout_prob: float = 0.1
    num_classes: int = 10
    diffusion_steps: int = 1000
    noise_schedule: str = "linear"
    global_batch_size: int = 256
    steps: int = 10_000
    lr: float = 1e-4
    weight_decay: float = 0.0
    ema_decay: float = 0.9999
    ema_warmup: str = _ema.DEFAULT_WARMUP  # "none": the paper's constant decay
    seed: int = 0
    flip: bool = True
    precision: str = "bf16"
    compile: bool = True
    compile_mode: str = "auto"
    compile_scope: str = "loss"
    recompute_gelu: bool = True
    data_dir: str | None = None
    out_dir: str = "runs/dit"
    log_every: int = 100
    ckpt_every: int = 5000
    sample_every: int = 0
    sample_steps: int = 50
    sample_cfg_scale: float = 4.0
    resume: bool = False
    overwrite: bool = False
    skip_nonfinite: bool = False
    max_minutes: float | None = None
    device: str | None = None
    progress: bool = True

    def __post_init__(self):

        choices = {
            "model": list(DiT_models),
            "block": list(BLOCKS),
            "precision": PRECISIONS,
            "compile_mode": COMPILE_MODES,
            "compile_scope": COMPILE_SCOPES,
            "ema_warmup": _ema.WARMUPS,
            "noise_schedule": ("linear", "cosine"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; expected one of {list(allowed)}")
        for name in ("global_batch_size", "steps", "log_every", "num_classes", "diffusion_steps", "sample_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("ckpt_every", "sample_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 = off), got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay <= 1.0:
            raise ValueError(f"ema_decay must be in [0, 1], got {self.ema_decay}")
        if not 0.0 <= self.class_dropout_prob < 1.0:
            raise ValueError(f"class_dropout_prob must be in [0, 1), got {self.class_dropout_prob}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"need lr > 0 and weight_decay >= 0, got lr={self.lr}, weight_decay={self.weight_decay}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes must be > 0 (or None for no limit), got {self.max_minutes}")
        if self.resume and self.overwrite:
            raise ValueError(
                "resume and overwrite exclude each other: --resume continues the run in out_dir, --overwrite deletes it"
            )


# Named starting points; CLI flags override them (--preset cpu --steps 100).
PRESETS: dict[str, TrainConfig] = {
    "cpu": TrainConfig(
        model="DiT-T/4",
        global_batch_size=64,
        steps=300,
        log_every=25,
        ckpt_every=0,
        sample_every=300,
        sample_steps=25,
        precision="fp32",
        compile=False,
        out_dir="runs/cpu",
    ),
    "s2": TrainConfig(model="DiT-S/2", steps=20_000, ckpt_every=5000, sample_every=5000, out_dir="runs/s2"),
}


# ----------------------------------------------------------------------------- errors of the loop


class NonFiniteError(RuntimeError):
    """Training produced a NaN/inf loss or weight; nothing non-finite was saved."""


def _weights_finite(model: torch.nn.Module) -> torch.Tensor:
    """A 0-d bool on the model's device: are all parameters finite? (no host sync by itself)

    The EMA is not checked: it averages the weights, so it is finite while they have been.
    """
    return torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()


# ----------------------------------------------------------------------------- train


@dataclass(frozen=True)
class Task:
    """What `train` trains: the model it builds, the batch it draws each step and the loss on that batch.

    build_model(cfg, channels, image_size) -> the model; draw_batch(data, generator, cfg, diffusion, rank,
    world_size) -> this rank's batch, its timesteps t at batch[2]; objective: FastStep's (model_fn,
    diffusion, *batch) -> (N,). The default is DiT's class-conditional task; minidit.superres plugs in its
    image-conditioned model, batch and losses.
    """

    build_model: Callable
    draw_batch: Callable
    objective: Callable


def _build_dit(cfg: TrainConfig, channels: int, image_size: int) -> torch.nn.Module:
    return create_model(
        cfg.model,
        input_size=image_size,
        in_channels=channels,
        num_classes=cfg.num_classes,
        learn_sigma=cfg.learn_sigma,
        class_dropout_prob=cfg.class_dropout_prob,
        block=cfg.block,
    )


def _draw_dit_batch(data, generator, cfg: TrainConfig, diffusion, rank: int, world_size: int):
    return draw_batch(
        data,
        generator,
        cfg.global_batch_size,
        diffusion,
        flip=cfg.flip,
        class_dropout_prob=cfg.class_dropout_prob,
        rank=rank,
        world_size=world_size,
    )


DIT = Task(_build_dit, _draw_dit_batch, dit_loss)


def train(
    cfg: TrainConfig,
    data: FashionMNIST | LatentDataset | None = None,
    task: Task = DIT,
    *,
    budget_from_first_step: bool = False,
    return_models: bool = False,
):
    """Train as `cfg` says; returns the history (also written to out_dir/history.json).

    cfg: a TrainConfig. data: a FashionMNIST (images (N, C, H, W) uint8, labels (N,)), or a LatentDataset
    of float latents (DiT then works in the autoencoder's latent space, notebook 10); None loads the
    training split from cfg.data_dir (see minidit.data.find_data_dir). Under torchrun the
    process group is set up here (NCCL on CUDA, gloo on CPU). History keys: step, loss,
    loss_per_quarter {q0..q3}, img_per_s, wall_time (s), checkpoints (weight files), samples
    (PNG grids), state (resumable file), final_step, stopped_by_budget, first_step_seconds (the first
    step of this call: it compiles), plus device and config.

    task: what is trained (default DiT's). budget_from_first_step: cfg.max_minutes counts from the end of
    the first step, so compiling is not charged to it. return_models: return (history, model, EMA).
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    world = world_from_env()
    check_batch_split(cfg.global_batch_size, world.world_size)
    claim_out_dir(cfg, is_main=world.rank == 0, log=lambda message: print(f"minidit.train: {message}"))
    if world.world_size > 1 and not dist.is_initialized():
        device = get_device(cfg.device)
        if device.type == "cuda":
            torch.cuda.set_device(world.local_rank)  # one GPU per process, before NCCL starts
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        world.owns_group = True
    try:
        history, model, ema = _train(cfg, data, world, task, budget_from_first_step)
        return (history, model, ema) if return_models else history
    finally:
        if world.owns_group:
            dist.destroy_process_group()


def check_data(data: FashionMNIST | LatentDataset, cfg: TrainConfig) -> None:
    """TypeError / ValueError unless `data` is a FashionMNIST (or LatentDataset) of square images with labels
    < cfg.num_classes."""
    if not isinstance(data, (FashionMNIST, LatentDataset)):
        raise TypeError(f"data must be a minidit.data.FashionMNIST or LatentDataset, got {type(data).__name__}")
    if isinstance(data, LatentDataset) and cfg.sample_every:
        raise ValueError(
            "sample grids show images, and latents need the autoencoder's decoder first: "
            "train on latents with sample_every=0 (minidit.latent decodes the samples)"
        )
    _, _, height, width = data.images.shape
    if height != width:
        raise ValueError(f"images must be square, got {height}x{width}")
    if len(data) and int(data.labels.max()) >= cfg.num_classes:
        raise ValueError(f"labels go up to {int(data.labels.max())} but num_classes is {cfg.num_classes}")


def _train(
    cfg: TrainConfig, data: FashionMNIST | LatentDataset | None, world: World, task: Task, budget_from_first_step: bool
) -> tuple[dict, torch.nn.Module, torch.nn.Module | None]:
    is_main = world.rank == 0
    start_time = time.monotonic()
    device = get_device(cfg.device)
    if device.type == "cuda":
        index = world.local_rank if world.world_size > 1 else device.index
        device = torch.device("cuda", torch.cuda.current_device() if index is None else index)
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls that remain use TF32, as official DiT
        torch.backends.cudnn.allow_tf32 = True

    bar = None

    def log(message: str) -> None:
        if is_main:
            (bar.write if bar is not None else print)(f"minidit.train: {message}", file=sys.stdout)

    amp_dtype, use_compile, fallback = resolve_precision(cfg, device)
    if fallback:
        log(fallback)

    # data on the device: one uint8 tensor of images, or one float tensor of latents
    if data is None:
        data = load_fashion_mnist("train", root=cfg.data_dir)
    check_data(data, cfg)
    _, channels, height, width = data.images.shape
    data = data.to(device)

    # model, EMA, diffusion, optimiser
    torch.manual_seed(cfg.seed)
    model = task.build_model(cfg, channels, height).to(device)
    if cfg.recompute_gelu:
        set_recompute_gelu(model, True)
    model.train()
    ema = copy.deepcopy(model).requires_grad_(False).eval() if is_main else None
    diffusion = _diffusion.create_diffusion(
        None, cfg.noise_schedule, cfg.learn_sigma, cfg.diffusion_steps, device=device
    )
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)

    out_dir = pathlib.Path(cfg.out_dir)
    state_path, history_path = out_dir / "state.pt", out_dir / "history.json"
    step, pending_loss, pending_t = 0, [], []
    history = new_history(cfg, model, device, world.world_size, amp_dtype, use_compile)
    if cfg.resume and state_path.is_file():
        try:
            state = _checkpoint.load_state(state_path, model=model, ema=ema, optimizer=optimizer, map_location="cpu")
        except _checkpoint.ChecksumError as err:
            raise _checkpoint.ChecksumError(
                f"{err}. A damaged state cannot be resumed: sample from the intact "
                "weights, or start afresh with --overwrite or a new --out-dir"
            ) from None
        check_resume_config(state["config"], cfg, state_path, RESUME_MUST_MATCH)
        step = state["step"]
        restore_rng(state["rng"], generator, cfg.seed + step, log)
        pending_loss = [state["extra"]["pending_loss"].to(device)] if len(state["extra"]["pending_loss"]) else []
        pending_t = [state["extra"]["pending_t"].to(device)] if pending_loss else []
        history = load_history(history_path, step) or history
        if pending_loss and history["world_size"] != world.world_size:  # another per-rank batch: steps unsplittable
            pending_loss, pending_t = [], []
            log(
                f"the world size changed ({history['world_size']} -> {world.world_size}): the first loss logged "
                "after resuming averages only the steps run now"
            )
        history.update(
            device=str(device),
            world_size=world.world_size,
            compiled=use_compile,
            precision="bf16" if amp_dtype is not None else "fp32",
            config=dataclasses.asdict(cfg),
        )
        history.update(state=str(state_path), final_step=step)  # the last finite state, until the next save
        log(f"resumed {state_path} at step {step}")
    elif cfg.resume:
        log(f"--resume: no {state_path} yet, starting a new run")
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        _checkpoint.atomic_write_json(out_dir / "config.json", dataclasses.asdict(cfg))
    young = _ema.young_ema_message(_ema.ema_stats(cfg.steps, cfg.ema_decay, cfg.ema_warmup))
    if is_main and young:
        log(f"warning: after all {cfg.steps} steps, {young}")

    train_model = model
    if world.world_size > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    compile_mode = resolve_compile_mode(
        cfg.compile_mode, model, cfg.global_batch_size // world.world_size, world.world_size, device
    )
    if use_compile and cfg.compile_mode == "auto":
        log(f"compile mode auto -> {compile_mode}")
    stepper = FastStep(
        train_model,
        diffusion,
        optimizer,
        amp_dtype=amp_dtype,
        compile=use_compile,
        compile_mode=compile_mode,
        compile_scope=cfg.compile_scope,
        ema=ema,
        log=log,
        skip_nonfinite=cfg.skip_nonfinite,
        objective=task.objective,
    )
    history["compile_scope"] = stepper.compile_scope if stepper.compiled else None
    history["compile_mode"] = compile_mode if stepper.compiled else None
    per_rank = cfg.global_batch_size // world.world_size

    def diverged(what: str) -> NonFiniteError:
        saved = (
            f"{state_path} and the checkpoints still hold the last finite state (step {history['final_step']})"
            if history["state"]
            else "nothing had been saved yet"
        )
        return NonFiniteError(
            f"training diverged: {what}. Nothing non-finite was saved; {saved}. Lower --lr (now "
            f"{cfg.lr:g}), or pass --skip-nonfinite to skip such steps"
        )

    def check_finite(losses: torch.Tensor | None = None) -> torch.Tensor | None:
        """Raise NonFiniteError on NaN/inf weights, or losses unless they were skipped; one host sync.

        losses: (world * k * n,) of the last k steps, gathered (at logging steps); None: this
        rank's pending losses, only to name the step when the weights are bad (at saves). With
        skip_nonfinite the stepper skipped the steps whose loss is not finite: they are recorded
        and the (k,) mask of the steps to keep is returned.
        """
        gathered = losses is not None
        if not gathered:
            losses = torch.cat(pending_loss) if pending_loss else torch.zeros(0, device=device)
        ranks = world.world_size if gathered else 1
        flags = torch.cat(
            [
                _weights_finite(model)[None],  # (1 + k,)
                torch.isfinite(losses.view(ranks, -1, per_rank)).all(2).all(0),
            ]
        ).cpu()
        k = len(flags) - 1
        bad = [step - k + 1 + i for i in torch.nonzero(~flags[1:]).flatten().tolist()]
        where = f"the loss turned NaN/inf at step {bad[0]}" if bad else "the weights hold NaN/inf"
        if not flags[0]:
            raise diverged(f"{where} (found after step {step})")
        if not bad or not gathered:
            return None
        if not cfg.skip_nonfinite:
            raise diverged(f"{where} (found at the logging step {step})")
        if len(bad) == k:
            raise diverged(f"every step from {bad[0]} to {step} had a NaN/inf loss and was skipped")
        history["skipped_steps"].extend(bad)
        log(f"skipped {len(bad)} step(s) with a NaN/inf loss or gradient: {bad[:10]}")
        return flags[1:].to(losses.device)

    def save() -> None:
        check_finite()  # every rank holds the same weights, so every rank raises alike
        if not is_main:
            return
        weights = out_dir / "checkpoints" / f"{step:07d}.safetensors"
        meta = {
            "train": dataclasses.asdict(cfg),
            "step": step,
            **_ema.ema_stats(step, cfg.ema_decay, cfg.ema_warmup),
        }  # how much the EMA has averaged
        _checkpoint.save_weights(weights, model, ema, meta)
        if str(weights) not in history["checkpoints"]:
            history["checkpoints"].append(str(weights))
        extra = {
            "pending_loss": torch.cat(pending_loss).cpu() if pending_loss else torch.zeros(0),
            "pending_t": torch.cat(pending_t).cpu() if pending_t else torch.zeros(0, dtype=torch.long),
        }
        _checkpoint.save_state(
            state_path,
            model=model,
            ema=ema,
            optimizer=optimizer,
            step=step,
            rng=rng_state(generator),
            config=dataclasses.asdict(cfg),
            extra=extra,
        )
        history.update(state=str(state_path), final_step=step)
        _checkpoint.atomic_write_json(history_path, history)

    def sample_grid() -> None:
        check_finite()  # a grid of a diverged model would be black, not an error
        if not is_main:
            return

        per_class = 8
        labels = torch.arange(cfg.num_classes, device=device).repeat_interleave(per_class)  # (10 * 8,)
        g = torch.Generator(device=device).manual_seed(cfg.seed)  # the same noise for every grid
        scale = cfg.sample_cfg_scale if cfg.class_dropout_prob > 0 else 1.0
        images = sample(ema, diffusion, labels, cfg_scale=scale, sampler="ddim", steps=cfg.sample_steps, generator=g)
        path = save_image_grid(images, out_dir / "samples" / f"{step:07d}.png", nrow=per_class)
        history["samples"].append(str(path))

    wall_offset = history["wall_time"][-1] if history["wall_time"] else 0.0
    budget = None if cfg.max_minutes is None else 60 * cfg.max_minutes
    deadline = None if budget is None or budget_from_first_step else start_time + budget
    first_step = step
    last_log_time, last_log_step = time.monotonic(), step
    bar = _progress_bar(cfg, step, enabled=cfg.progress and is_main)
    stop = False
    try:
        while step < cfg.steps and not stop:
            batch = task.draw_batch(data, generator, cfg, diffusion, world.rank, world.world_size)
            decay = _ema.ema_decay_with_warmup(step, cfg.ema_decay, cfg.ema_warmup)
            loss = stepper(batch, decay)  # (n,) on the device: no host sync here
            if history["compiled"] and not stepper.compiled:  # torch.compile failed: the step fell back to eager
                history.update(compiled=False, compile_scope=None, compile_mode=None)
            pending_loss.append(loss)
            pending_t.append(batch[2])
            step += 1
            bar.update(1)
            if step == first_step + 1:  # the first step compiles: timed on its own
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                history["first_step_seconds"] = time.monotonic() - last_log_time
                if budget is not None and budget_from_first_step:
                    deadline = time.monotonic() + budget
            if deadline is not None:
                stop = out_of_time(deadline, step, cfg.log_every, world.world_size, device)
            if step % cfg.log_every == 0 or step == cfg.steps or stop:
                losses = gather(torch.cat(pending_loss), world.world_size)  # (k * B,)
                ts = gather(torch.cat(pending_t), world.world_size)
                keep = check_finite(losses)
                if keep is not None:  # drop the skipped steps' losses: (world, k, n) -> kept steps only
                    losses = losses.view(world.world_size, -1, per_rank)[:, keep].reshape(-1)
                    ts = ts.view(world.world_size, -1, per_rank)[:, keep].reshape(-1)
                quarters = _diffusion.loss_per_quarter(losses, ts, diffusion.num_timesteps)
                now = time.monotonic()
                img_per_s = (step - last_log_step) * cfg.global_batch_size / max(now - last_log_time, 1e-9)
                history["step"].append(step)
                history["loss"].append(losses.mean().item())
                for q, value in quarters.items():
                    history["loss_per_quarter"][q].append(value)
                history["img_per_s"].append(img_per_s)
                history["wall_time"].append(wall_offset + now - start_time)
                bar.set_postfix(loss=f"{history['loss'][-1]:.4f}", img_s=f"{img_per_s:,.0f}")
                pending_loss, pending_t = [], []
                last_log_time, last_log_step = now, step
            if cfg.sample_every and (step % cfg.sample_every == 0 or step == cfg.steps):
                sample_grid()
            if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < cfg.steps and not stop:
                save()
    finally:
        bar.close()
    history["stopped_by_budget"] = stop and step < cfg.steps
    if stop and step < cfg.steps:
        log(
            f"stopped at step {step} of {cfg.steps}: the {cfg.max_minutes}-minute budget is spent "
            "(run again with --resume to continue)"
        )
        young = _ema.young_ema_message(_ema.ema_stats(step, cfg.ema_decay, cfg.ema_warmup))
        if young:
            log(f"warning: {young}")
    save()
    if world.world_size > 1:
        dist.barrier()
    return history, model, ema


def _progress_bar(cfg: TrainConfig, step: int, enabled: bool):
    return tqdm(
        total=cfg.steps,
        initial=step,
        disable=not enabled,
        unit="step",
        dynamic_ncols=True,
        desc=f"{cfg.model} {cfg.block}",
    )


# ----------------------------------------------------------------------------- command line

_HELP = {
    "model": "DiT config, e.g. DiT-S/2 (DiT-T/2, DiT-T/4 are tiny CPU configs)",
    "block": "conditioning block (DiT §3.2)",
    "global_batch_size": "images per step, summed over all processes",
    "ema_warmup": "'ema_warmup' ramps the EMA decay as min(decay, (1+step)/(10+step)), safe for any run length; "
    "'none' is the paper's constant decay",
    "precision": "bf16 autocast or fp32 (CUDA only; CPU/MPS always use fp32)",
    "compile_mode": "torch.compile's mode: 'reduce-overhead' replays the step as CUDA graphs (1.9x faster for DiT-S/4, "
    "3.5x for DiT-S/8 on an H200, about 1%% for DiT-S/2); 'auto' uses them on one GPU for small steps (forward "
    "below minidit.step.AUTO_GRAPHS_MAX_GMACS per step); 'max-autotune-no-cudagraphs' tunes matmuls",
    "compile_scope": "what torch.compile wraps: the model and the loss ('loss', also under DDP) or the model only",
    "recompute_gelu": "recompute the MLP's GELU in the backward pass instead of keeping its output (less "
    "activation memory under torch.compile, same maths; minidit.blocks.Mlp)",
    "out_dir": "where config.json, history.json, state.pt, checkpoints/ and samples/ go",
    "ckpt_every": "save weights + resumable state every k steps (0: only at the end)",
    "sample_every": "write an EMA sample grid every k steps (0: never)",
    "sample_steps": "DDIM steps for the sample grids",
    "resume": "continue from out_dir/state.pt when it exists",
    "overwrite": "delete the run already in out_dir (state, history, checkpoints, samples) and start afresh",
    "skip_nonfinite": "skip (do not apply) steps whose loss or gradients are NaN/inf, instead of stopping the run; "
    "costs one host sync per step",
    "max_minutes": "wall-clock budget: stop, save and exit after this many minutes",
    "data_dir": "folder with the Fashion-MNIST .gz files (default: see minidit.data.find_data_dir)",
}


def build_parser() -> ArgumentParser:
    """One flag per TrainConfig field (--global-batch-size, --no-flip, ...), plus --preset."""
    parser = ArgumentParser(prog="python -m minidit.train", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--preset", choices=sorted(PRESETS), help="start from a named config; flags override it")
    defaults = TrainConfig.__dataclass_fields__
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        default = defaults[field.name].default
        text = f"{_HELP[field.name]} " if field.name in _HELP else ""
        kwargs = dict(dest=field.name, default=argparse.SUPPRESS, help=f"{text}(default: {default})")
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if field.name in ("max_minutes",):
            kind = float
        elif field.name in ("data_dir", "device", "out_dir"):
            kind = str
        else:
            kind = type(default)
        parser.add_argument(flag, type=kind, **kwargs)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The preset (or the defaults) with the flags that were given on top."""
    flags = {k: v for k, v in vars(args).items() if k != "preset"}
    return dataclasses.replace(PRESETS[args.preset], **flags) if args.preset else TrainConfig(**flags)


def main(argv: list[str] | None = None) -> int:
    """python -m minidit.train ...; errors in the flags exit with status 2 and a message."""
    parser = build_parser()
    args = parser.parse_args(argv)
    source = use_course_env()
    try:  # everything a user can get wrong, checked before any work
        cfg = config_from_args(args)
        check_batch_split(cfg.global_batch_size, world_from_env().world_size)
        get_device(cfg.device)
        claim_out_dir(cfg, is_main=False)  # checks only; train() clears for --overwrite
        data = load_fashion_mnist("train", root=cfg.data_dir)
        check_data(data, cfg)
    except (ValueError, OSError) as err:  # bad flags, a taken or unwritable --out-dir, missing or damaged data
        parser.error(str(err))
    if source != "minidit" and world_from_env().rank == 0:
        print(f"minidit.train: running the {source!r} implementation of the exercises (MINIDIT_IMPL)")
    try:
        history = train(cfg, data)
    except (_checkpoint.CheckpointError, RunFolderError) as err:  # a damaged or different run to resume
        parser.error(str(err))
    except NonFiniteError as err:
        parser.fail(str(err))
    if world_from_env().rank == 0:
        last = history["loss"][-1] if history["loss"] else math.nan
        print(f"minidit.train: step {history['final_step']}, loss {last:.4f}, weights {history['checkpoints'][-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
