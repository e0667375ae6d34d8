"""Notebook 08's experiments: train, evaluate and record DiT runs, resumably, within a wall-clock budget.

Three parts, each a list of runs (DiT §4):

    A  DiT-S/2, adaLN-Zero, learned sigma: the paper's model and objective on Fashion-MNIST, evaluated
       over training and at the end with the sampler a user runs (minidit.sample: DDPM-250) at
       classifier-free guidance scales 1 and 1.5 (DiT §3.1, Table 2). Learning rate 3e-4 instead of the
       paper's 1e-4 (the notebook shows both curves; the 1e-4 run is kept as `A_paper_lr`).
    B  the conditioning-block ablation of DiT Figure 5 (§5) at small scale: in-context, cross-attention,
       adaLN and adaLN-Zero, same model size, data, steps, seeds and evaluation, at a budget where the
       models use the label; bootstrap intervals of FID over samples (paired across blocks).
    C  a small scaling study in the spirit of DiT Figures 2 and 8: S/8, S/4, S/2, B/4, B's steps.

A run is a `RunSpec`: one `minidit.train.TrainConfig` plus an evaluation schedule. Its record,
<results>/run_<name>.json, is rewritten atomically after every stage (training, each evaluation),
and training resumes from <runs>/<name>/state.pt, so a part stopped by its budget continues where
it stopped when the same command runs again. Checkpoints are large and stay in the (git-ignored)
runs folder; records and PNG grids are small and are committed for notebook 08 to re-render.
Samples are scored by `evaluate_samples` (minidit.evaluation.metrics, with the real-vs-real floor beside them).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import functools
import json
import os
import pathlib
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from minidit.checkpoint import atomic_write, atomic_write_json
from minidit.course import repo_root
from minidit.data import load_fashion_mnist
from minidit.device import get_device
from minidit.evaluation import metrics
from minidit.evaluation.evaluate import draw_samples
from minidit.evaluation.metrics import paired_interval
from minidit.flops import dit_gflops
from minidit.model import SIZES
from minidit.sample import load_model_for_sampling, sample, save_image_grid
from minidit.train import TrainConfig, train

EXPERIMENT = "08_train_dit_and_ablation"
BLOCK_ORDER = ("adaLN-Zero", "adaLN", "cross-attention", "in-context")  # the paper's ranking, best first
EVAL_SEED = 1234  # every model is sampled from the same x_T and labels (common random numbers)
GRID_PER_CLASS = 8

# DiT §5 and Figure 5: DiT-XL/2 on ImageNet 256x256, FID-50K after 400K steps, no guidance; Gflops of each block.
PAPER_FIG5 = {
    "adaLN-Zero": {"fid": 19.47, "gflops": 118.6},
    "adaLN": {"fid": 25.21, "gflops": 118.6},
    "cross-attention": {"fid": 26.14, "gflops": 137.6},
    "in-context": {"fid": 35.24, "gflops": 119.4},
}
# The GPU rates behind `estimate_seconds` are read from the bench record of the H100 that ran the parts
# (`python -m minidit.tools.bench --variants all`, DiT-S/2, batch 256): see `measured_rates`.
BENCH_RECORD = (
    pathlib.Path(__file__).resolve().parents[2] / "notebooks" / "results" / "bench" / "bench_h100_ladder.json"
)
# Floor of one training step of a depth-12 model, set by kernel launches and host syncs rather than
# arithmetic. Eager: measured on the H100 (DiT-S/4 and S/8 ran at ~3,900 img/s = 65 ms a step, slower
# than the compiled S/2 with 4x the compute; notebooks/results/08_train_dit_and_ablation/run_S4_*.json).
_MIN_STEP_S = {True: 0.006, False: 0.065}
_MIN_SAMPLE_STEP_S = 0.005  # the compiled sampler (minidit.sample): a floor per batch and step
# A call of the GPU machine runs at most 10 minutes; a run's checkpoints and state (hundreds of MB) stay on its
# disk only while the machine is held, so a run must finish within one sitting of consecutive calls.
SITTING_MINUTES = 25.0
_COMPILE_S, _EVAL_OVERHEAD_S, _STARTUP_S = 45.0, 2.0, 20.0


# ----------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class RunSpec:
    """One training run and how it is evaluated (DDPM with `sampling_steps` respaced steps)."""

    model: str
    block: str = "adaLN-Zero"
    seed: int = 0
    steps: int = 2000
    batch_size: int = 256
    eval_every: int = 500  # curve points (and checkpoints) every k steps
    curve_samples: int = 1000
    final_samples: int = 5000
    cfg_scales: tuple[float, ...] = (1.0,)  # final evaluations; 1.0 = no guidance
    guided_samples: int = 2000  # samples per final evaluation with guidance
    sampling_steps: int = 100  # DDPM steps of the curve points (and of the final ones unless set below)
    grid_every: int = 0  # EMA sample grids written during training (minidit.train's sample_every)
    compile: bool = False
    ema_warmup: str = "ema_warmup"
    sample_batch: int = 2500
    per_class_fid: bool = False  # in the final evaluation without guidance
    kid_subsets: int = 100
    # Fields added later; at their defaults they stay out of `identity`, so older records still match.
    lr: float = 1e-4
    curve_cfg_scales: tuple[float, ...] = (1.0,)  # guidance scales evaluated at every curve point
    final_sampling_steps: int | None = None  # DDPM steps of the final evaluations (None: sampling_steps)
    bootstrap: int = 0  # bootstrap resamples of the final samples (FID and class accuracy intervals)
    grid_scales: tuple[float, ...] = ()  # extra guidance scales of the final sample grids

    def __post_init__(self):
        if self.steps % self.eval_every:
            raise ValueError(f"steps ({self.steps}) must be a multiple of eval_every ({self.eval_every})")
        if not self.curve_samples <= self.final_samples:
            raise ValueError("curve_samples must be <= final_samples (the curve's last point is a subset)")
        if 1.0 not in self.curve_cfg_scales:
            raise ValueError("curve_cfg_scales must include 1.0 (the unguided curve)")

    @property
    def name(self) -> str:
        short = self.model.removeprefix("DiT-").replace("/", "")
        lr = "" if self.lr == 1e-4 else f"_lr{self.lr:g}"
        return f"{short}_{self.block}_seed{self.seed}_{self.steps}steps{lr}"

    @property
    def final_steps(self) -> int:
        return self.sampling_steps if self.final_sampling_steps is None else self.final_sampling_steps

    @property
    def eval_steps(self) -> list[int]:
        return list(range(self.eval_every, self.steps + 1, self.eval_every))

    def identity(self) -> dict:
        """What a finished result depends on (compile and the sampling batch do not change the maths)."""
        d = dataclasses.asdict(self)
        skip = {"compile", "sample_batch"}
        skip |= {k for k in _LATER_FIELDS if d[k] == RunSpec.__dataclass_fields__[k].default}
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if k not in skip}

    def train_config(self, out_dir, max_minutes: float | None, device: torch.device, progress: bool = True):

        cuda = device.type == "cuda"
        return TrainConfig(
            model=self.model,
            block=self.block,
            learn_sigma=True,
            global_batch_size=self.batch_size,
            steps=self.steps,
            lr=self.lr,
            ema_warmup=self.ema_warmup,
            seed=self.seed,
            precision="bf16" if cuda else "fp32",
            compile=self.compile and cuda,
            out_dir=str(out_dir),
            log_every=max(1, min(100, self.eval_every // 5)),
            ckpt_every=self.eval_every,
            sample_every=self.grid_every,
            sample_steps=50,
            sample_cfg_scale=1.0,
            resume=True,
            max_minutes=max_minutes,
            device=str(device),
            progress=progress,
        )


_LATER_FIELDS = ("lr", "curve_cfg_scales", "final_sampling_steps", "bootstrap", "grid_scales")


@dataclass(frozen=True)
class PartSpec:
    part: str
    title: str
    runs: tuple[RunSpec, ...]
    budget_minutes: float  # default wall-clock budget of one call (training + evaluation)


def part_specs(quick: bool = False) -> dict[str, PartSpec]:
    """The three parts; quick=True: the same code path with tiny CPU sizes (CI, a few seconds a run).

    A runs the paper's model and loss at lr 3e-4; `A_paper_lr` is the paper's 1e-4 for comparison.
    B and C share one budget (their S/4 adaLN-Zero seed 0 run is the same spec, trained once): long
    enough that the models use the label (the first ablation stopped at 1,200 steps, where none did).
    """
    if quick:
        common = dict(
            steps=4,
            batch_size=16,
            eval_every=2,
            curve_samples=60,
            final_samples=60,
            guided_samples=60,
            sampling_steps=8,
            sample_batch=60,
            kid_subsets=10,
            lr=3e-4,
            cfg_scales=(1.0, 1.5),
            bootstrap=20,
        )
        a = RunSpec(
            "DiT-T/4",
            **{**common, "steps": 6, "eval_every": 3, "bootstrap": 0},
            grid_every=3,
            per_class_fid=True,
            curve_cfg_scales=(1.0, 1.5),
            final_sampling_steps=10,
            grid_scales=(4.0,),
        )
        a_paper = RunSpec(
            "DiT-T/4", **{**common, "steps": 6, "eval_every": 3, "bootstrap": 0, "lr": 1e-4, "cfg_scales": (1.0,)}
        )
        ablation_model, scaling_models = "DiT-T/4", ("DiT-T/4", "DiT-T/2")
        budgets = (20.0, 20.0, 20.0)  # CPU speed varies a lot; quick mode should finish, not stop
    else:
        # A: the paper's sampler for the final numbers (DDPM-250, as `python -m minidit.sample`); the curve points
        # use DDPM-100 on 1,000 samples, as the first landing's 1e-4 run did, so the two curves compare.
        a = RunSpec(
            "DiT-S/2",
            steps=10_000,
            lr=3e-4,
            eval_every=2000,
            curve_samples=1000,
            final_samples=5000,
            cfg_scales=(1.0, 1.5),
            guided_samples=10_000,
            sampling_steps=100,
            final_sampling_steps=250,
            curve_cfg_scales=(1.0, 1.5),
            grid_every=2000,
            compile=True,
            per_class_fid=True,
            sample_batch=5000,
            grid_scales=(4.0,),
        )
        # the first landing's Part A (H100): the paper's lr 1e-4 for 4,000 steps, kept as the comparison curve
        a_paper = RunSpec(
            "DiT-S/2",
            steps=4000,
            eval_every=1000,
            curve_samples=1000,
            final_samples=5000,
            cfg_scales=(1.0, 1.5, 4.0),
            guided_samples=2000,
            grid_every=1000,
            compile=True,
            per_class_fid=True,
        )
        # B and C sample with 50 DDPM steps: with a learned sigma that costs little FID (Improved DDPM §4, Fig. 8)
        common = dict(
            steps=4000,
            batch_size=256,
            eval_every=1000,
            curve_samples=2500,
            final_samples=5000,
            sampling_steps=50,
            lr=3e-4,
            cfg_scales=(1.0, 1.5),
            guided_samples=5000,
            bootstrap=200,
        )
        ablation_model, scaling_models = "DiT-S/4", ("DiT-S/8", "DiT-S/4", "DiT-S/2", "DiT-B/4")
        budgets = (9.0, 9.0, 9.0)  # minutes per call (a call may run 10)
    b = tuple(
        RunSpec(ablation_model, block=blk, seed=s, compile=not quick, **common) for s in (0, 1) for blk in BLOCK_ORDER
    )
    # the S/4 run is B's adaLN-Zero seed 0 (same spec, same record: trained once)
    c = tuple(RunSpec(m, **common, compile=not quick) for m in scaling_models)
    return {
        "A": PartSpec("A", f"{a.model} (adaLN-Zero, learned sigma) on Fashion-MNIST, lr {a.lr:g}", (a,), budgets[0]),
        "A_paper_lr": PartSpec(
            "A_paper_lr", f"{a_paper.model} at the paper's lr {a_paper.lr:g}", (a_paper,), budgets[0]
        ),
        "B": PartSpec("B", f"conditioning-block ablation, {ablation_model}, 2 seeds", b, budgets[1]),
        "C": PartSpec("C", "scaling: " + ", ".join(scaling_models), c, budgets[2]),
    }


def default_results_dir() -> pathlib.Path:

    return repo_root() / "notebooks" / "results" / EXPERIMENT


def default_runs_dir() -> pathlib.Path:

    return repo_root() / "runs" / EXPERIMENT


def gflops(spec: RunSpec, paper_setting: bool = False) -> float:
    """Forward Gflops of one sample: ours (1-channel 32x32 pixels) or the paper's (4-channel 32x32 latents)."""

    return dit_gflops(spec.model, input_size=32, block=spec.block, in_channels=4 if paper_setting else 1)


# ----------------------------------------------------------------------------- budget estimate


def estimate_seconds(spec: RunSpec) -> dict[str, float]:
    """A rough estimate of one run on the bench's GPU: training, evaluation (sampling + metrics), checkpoint writes."""

    macs = gflops(spec) * 1e9
    train_rate = measured_rates()["train_macs_per_s"][spec.compile]
    step_s = max(spec.batch_size * 3 * macs / train_rate, _MIN_STEP_S[spec.compile])
    train = spec.steps * step_s + (_COMPILE_S if spec.compile else 0.0)
    work = eval_work(spec)
    evaluate = sum(_sampling_seconds(spec, num, scale, steps) for _, num, scale, _, steps in work)
    evaluate += len(work) * _EVAL_OVERHEAD_S
    size = SIZES[spec.model.removeprefix("DiT-").split("/")[0]]
    params = 12 * size["depth"] * size["hidden_size"] ** 2
    ckpt = len(spec.eval_steps) * params * 4 * 6 / 1.5e9  # raw + EMA weights, model + EMA + 2 Adam moments
    return {"train": train, "eval": evaluate, "ckpt": ckpt, "total": train + evaluate + ckpt}


@functools.cache
def measured_rates(record: pathlib.Path = BENCH_RECORD) -> dict:
    """minidit's measured speed on the GPU of a bench record, in multiply-accumulates per second.

    train_macs_per_s {compiled: rate}: the "fast" and "fast-eager" training variants (a training image
    costs 3 forward passes); sample_macs_per_s: the compiled DDPM sampler without guidance.
    """
    bench = json.loads(pathlib.Path(record).read_text())
    train = {r["variant"]: r for r in bench["training"]}
    rate = {
        compiled: train[v]["img_per_s"] * 3 * train[v]["gmacs_forward"] * 1e9
        for compiled, v in ((True, "fast"), (False, "fast-eager"))
    }
    ddpm = next(r for r in bench["sampling"] if r["sampler"].startswith("ddpm") and r["cfg_scale"] == 1.0)
    gmacs = next(r["gmacs_forward"] for r in bench["training"] if r["model"] == ddpm["model"])
    sample = ddpm["img_per_s"] * ddpm["forward_passes_per_image"] * gmacs * 1e9
    return {"device_name": bench["device_name"], "train_macs_per_s": rate, "sample_macs_per_s": sample}


def _sampling_seconds(spec: RunSpec, num: int, cfg_scale: float, steps: int | None = None) -> float:
    """Estimated seconds to draw `num` samples (a guided step runs the model on a doubled batch)."""
    passes = num * (2 if cfg_scale != 1.0 else 1)
    batches = -(-num // spec.sample_batch)
    per_step = max(passes * gflops(spec) * 1e9 / measured_rates()["sample_macs_per_s"], batches * _MIN_SAMPLE_STEP_S)
    return (spec.sampling_steps if steps is None else steps) * per_step


def plan(part: str, quick: bool = False, results_dir=None) -> str:
    """A table of the part's runs with a time estimate (`measured_rates`); runs already done cost nothing."""
    spec = part_specs(quick)[part]
    results_dir = pathlib.Path(results_dir) if results_dir else default_results_dir()
    lines = [
        f"Part {part}: {spec.title}  (budget {spec.budget_minutes} min per call)",
        f"{'run':<44}{'Gflops':>8}{'steps':>7}{'train s':>9}{'eval s':>8}{'total s':>9}  status",
    ]
    total = _STARTUP_S
    for run in spec.runs:
        est = estimate_seconds(run)
        record = load_record(results_dir, run)
        status = "new" if record is None else record["status"]
        if status != "done":
            total += est["total"]
        lines.append(
            f"{run.name:<44}{gflops(run):>8.2f}{run.steps:>7}{est['train']:>9.0f}{est['eval']:>8.0f}"
            f"{est['total']:>9.0f}  {status}"
        )
    lines.append(
        f"estimated time left for part {part} on an {measured_rates()['device_name']}: {total / 60:.1f} min "
        f"(rates of {BENCH_RECORD.name}; each run's record holds its measured img/s)"
    )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- records


# One flat folder (the GPU script copies its files back one level deep): part_X.json, run_<name>.json,
# grid_<name>_<what>.png, fig_<name>.png.
def record_path(results_dir, spec: RunSpec) -> pathlib.Path:
    return pathlib.Path(results_dir) / f"run_{spec.name}.json"


def load_record(results_dir, spec: RunSpec) -> dict | None:
    """The run's record, or None; ValueError when it was made with a different spec."""
    path = record_path(results_dir, spec)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record.get("spec") != spec.identity():
        diffs = [k for k in spec.identity() if record.get("spec", {}).get(k) != spec.identity()[k]]
        raise ValueError(
            f"{path} was made by a different run spec (differs in {diffs}); move it away to start this run afresh"
        )
    return record


def _new_record(spec: RunSpec) -> dict:
    return {
        "name": spec.name,
        "spec": spec.identity(),
        "status": "new",
        "trained_steps": 0,
        "gflops": gflops(spec),
        "gflops_paper_setting": gflops(spec, paper_setting=True),
        "evals": [],
        "grids": {},
        "eval_time_s": 0.0,
    }


def find_eval(
    record: dict, step: int, num_samples: int, cfg_scale: float = 1.0, sampling_steps: int | None = None
) -> dict | None:
    """The evaluation of `num_samples` samples at training step `step` (and sampling_steps DDPM steps, if given)."""
    default_steps = record["spec"].get("sampling_steps")
    for e in record["evals"]:
        if e["step"] == step and e["num_samples"] == num_samples and e["cfg_scale"] == cfg_scale:
            if sampling_steps is None or e.get("sampling_steps", default_steps) == sampling_steps:
                return e
    return None


def n_final(spec: RunSpec, cfg_scale: float) -> int:
    """Samples of the final evaluation at this guidance scale."""
    return spec.final_samples if cfg_scale == 1.0 else spec.guided_samples


def eval_work(spec: RunSpec) -> list[tuple[int, int, float, tuple[int, ...], int]]:
    """What a run evaluates, in order: (step, samples drawn, cfg scale, subset sizes scored, DDPM steps).

    The final evaluations come first (what a part is for), then the curve; a curve point at the last step
    that the final samples can give (same DDPM steps) is scored on a subset of them instead of being drawn again.
    """
    shared = spec.final_steps == spec.sampling_steps
    work, covered = [], set()
    for scale in spec.cfg_scales:
        num = n_final(spec, scale)
        subsets = (num,)
        if shared and scale in spec.curve_cfg_scales and spec.curve_samples < num:
            subsets = (spec.curve_samples, num)
            covered.add(scale)
        elif shared and scale in spec.curve_cfg_scales:
            covered.add(scale)
        work.append((spec.steps, num, scale, subsets, spec.final_steps))
    for step in spec.eval_steps:
        for scale in spec.curve_cfg_scales:
            if step == spec.steps and scale in covered:
                continue
            work.append((step, spec.curve_samples, scale, (spec.curve_samples,), spec.sampling_steps))
    return work


def _history_summary(history: dict) -> dict:
    keys = (
        "step",
        "loss",
        "loss_per_quarter",
        "img_per_s",
        "wall_time",
        "final_step",
        "stopped_by_budget",
        "device_name",
        "torch_version",
        "precision",
        "compiled",
        "num_params",
        "model_config",
        "config",
    )
    return {k: history[k] for k in keys if k in history}


# ----------------------------------------------------------------------------- one run


_FLOORS: dict[tuple, dict] = {}


def evaluate_samples(
    images: torch.Tensor,
    labels: torch.Tensor,
    per_class: bool = False,
    kid_subsets: int = 100,
    seed: int = 0,
    bootstrap: int = 0,
) -> dict:
    """images (N, 1, 32, 32) in [-1, 1], labels (N,) -> {"samples": metrics, "real_floor": metrics}.

    What `minidit.evaluation.metrics.evaluation_report` computes (reference: N train images; floor: N test
    images against it), with the floor computed once per sample count and cached, and per-class FID (20 small
    eigendecompositions, slow on a CPU) only when asked for. bootstrap > 0 adds `metrics.bootstrap_fid`'s
    intervals and replicates (the same resampled indices for every run, so replicates of two runs pair up).
    """

    n = len(images)
    ref, ref_labels = metrics.real_features("train", n, seed)
    device = ref["pool"].device
    fake = metrics.compute_features(images, device=device)
    options = dict(kid_subsets=kid_subsets, seed=seed)
    key = (n, per_class, kid_subsets, seed, str(device))
    ref_labels = ref_labels if per_class else None  # per-class FID needs the reference's labels
    if key not in _FLOORS:
        test, test_labels = metrics.real_features("test", n, seed + 1)
        _FLOORS[key] = metrics.metrics_from_features(ref, test, ref_labels, test_labels, **options)
    samples = metrics.metrics_from_features(ref, fake, ref_labels, labels.to(device), **options)
    if bootstrap:
        samples.update(metrics.bootstrap_fid(ref["pool"], fake["pool"], fake["logits"], labels.to(device), bootstrap))
    return {"samples": samples, "real_floor": _FLOORS[key]}


def _generate(ckpt: pathlib.Path, spec: RunSpec, num: int, cfg_scale: float, steps: int, device):
    """Class-balanced EMA samples from a checkpoint -> (images (N, 1, 32, 32) in [-1, 1], labels (N,)).

    The sampler is `minidit.sample.sample`, the function `python -m minidit.sample` runs (compiled, bf16 on CUDA).
    """

    model, diffusion = load_model_for_sampling(ckpt, use_ema=True, device=device)
    return draw_samples(
        model,
        diffusion,
        num,
        cfg_scale=cfg_scale,
        sampler="ddpm",
        steps=steps,
        batch_size=spec.sample_batch,
        seed=EVAL_SEED,
    )


def _final_grids(ckpt: pathlib.Path, spec: RunSpec, out: pathlib.Path, device) -> dict[str, str]:
    """One grid per guidance scale, one row per class, all from the same x_T (so only the guidance differs)."""

    model, diffusion = load_model_for_sampling(ckpt, use_ema=True, device=device)
    labels = torch.arange(model.num_classes, device=device).repeat_interleave(GRID_PER_CLASS)  # (10 * 8,)
    shape = (len(labels), model.in_channels, model.input_size, model.input_size)
    grids = {}
    for scale in sorted({1.0, *spec.cfg_scales, *spec.grid_scales}):
        g = torch.Generator(device=device).manual_seed(EVAL_SEED)
        noise = torch.randn(shape, generator=g, device=device)  # (N, C, H, W) x_T
        images = sample(model, diffusion, labels, cfg_scale=scale, steps=spec.final_steps, noise=noise, generator=g)
        grids[f"{scale:g}"] = str(
            save_image_grid(images, out / f"grid_{spec.name}_final_cfg{scale:g}.png", nrow=GRID_PER_CLASS)
        )
    return grids


def run_one(
    spec: RunSpec,
    results_dir,
    runs_dir,
    data,
    deadline: float,
    device=None,
    evaluate: Callable[..., dict] = evaluate_samples,
    log: Callable = print,
    progress: bool = True,
) -> dict:
    """Train (or resume) one run, then evaluate its checkpoints, writing the record after each stage.

    deadline: time.monotonic() value after which nothing new starts; training gets what is left minus an
    estimate of the evaluation. Returns the record; record["status"] is "done" once everything is in.
    """

    device = get_device(device)
    results_dir, run_dir = pathlib.Path(results_dir), pathlib.Path(runs_dir) / spec.name
    path = record_path(results_dir, spec)
    record = load_record(results_dir, spec) or _new_record(spec)
    if record["status"] == "done":
        log(f"{spec.name}: done already, skipped")
        return record
    state = run_dir / "state.pt"
    if record["trained_steps"] > 0 and not state.is_file():
        log(
            f"{spec.name}: the record says {record['trained_steps']} steps, but {state} is gone "
            "(a fresh machine?); training this run again from step 0"
        )
        record = _new_record(spec)

    def save(status: str) -> None:
        record["status"] = status
        atomic_write_json(path, record)

    def seconds_left() -> float:
        return deadline - time.monotonic()

    if record["trained_steps"] < spec.steps:
        est = estimate_seconds(spec)
        minutes = (seconds_left() - est["eval"] - est["ckpt"]) / 60
        if minutes < 0.25:
            log(f"{spec.name}: not enough budget left to train ({seconds_left():.0f} s); run the part again")
            return record
        history = train(spec.train_config(run_dir, minutes, device, progress), data=data)
        record.update(history=_history_summary(history), trained_steps=history["final_step"])
        for png in history.get("samples", []):  # EMA grids over training, copied next to the record
            target = results_dir / f"grid_{spec.name}_train_{pathlib.Path(png).name}"
            atomic_write(target, lambda tmp, src=png: shutil.copyfile(src, tmp))
            record["grids"][f"train_{int(pathlib.Path(png).stem)}"] = str(target.relative_to(results_dir))
        save("training" if record["trained_steps"] < spec.steps else "trained")
        rates = sorted(history["img_per_s"][1:] or history["img_per_s"])  # the first interval includes compiling
        log(
            f"{spec.name}: at step {record['trained_steps']} of {spec.steps} after {history['wall_time'][-1]:.0f} s "
            f"of training, {rates[len(rates) // 2] if rates else float('nan'):,.0f} img/s (median)"
        )
        if record["trained_steps"] < spec.steps:
            log(f"{spec.name}: stopped at step {record['trained_steps']} of {spec.steps} by the budget")
            return record
        if device.type == "cuda":
            torch._dynamo.reset()
            torch.cuda.empty_cache()

    for step, num, scale, subsets, steps in eval_work(spec):
        if all(find_eval(record, step, n, scale, steps) for n in subsets):
            continue
        if seconds_left() < _sampling_seconds(spec, num, scale, steps) + _EVAL_OVERHEAD_S:
            log(f"{spec.name}: budget spent before evaluating step {step} (cfg {scale:g}); run the part again")
            return record
        start = time.monotonic()
        ckpt = run_dir / "checkpoints" / f"{step:07d}.safetensors"
        images, labels = _generate(ckpt, spec, num, scale, steps, device)
        sample_s = time.monotonic() - start
        final = step == spec.steps and n_final(spec, scale) == num
        for n in subsets:
            if find_eval(record, step, n, scale, steps):
                continue
            per_class = spec.per_class_fid and final and scale == 1.0 and n == num
            extra = {"bootstrap": spec.bootstrap} if spec.bootstrap and final and n == num else {}
            report = evaluate(images[:n], labels[:n], per_class=per_class, kid_subsets=spec.kid_subsets, **extra)
            record["evals"].append(
                {
                    "step": step,
                    "num_samples": n,
                    "cfg_scale": scale,
                    "sampling_steps": steps,
                    "metrics": report["samples"],
                    "floor": report["real_floor"],
                    "sample_time_s": round(sample_s, 2),
                    "time_s": round(time.monotonic() - start, 2),
                }
            )
            log(
                f"{spec.name}: step {step}, {n} samples, cfg {scale:g}, DDPM-{steps}: "
                f"FID {report['samples']['fid']:.2f}"
                f", class accuracy {report['samples'].get('class_accuracy', float('nan')):.1%} "
                f"(real floor {report['real_floor']['fid']:.2f})"
            )
            save(record["status"])  # each score is kept at once: an interrupted evaluation resumes after it
        record["eval_time_s"] = round(record["eval_time_s"] + time.monotonic() - start, 2)
        save(record["status"])
    if len(spec.cfg_scales) > 1 or spec.grid_scales:
        final = run_dir / "checkpoints" / f"{spec.steps:07d}.safetensors"
        grids = _final_grids(final, spec, results_dir, device)
        for scale, png in grids.items():
            record["grids"][f"final_cfg{scale}"] = str(pathlib.Path(png).relative_to(results_dir))
    save("done")
    log(f"{spec.name}: done (train {record['history']['wall_time'][-1]:.0f} s, eval {record['eval_time_s']:.0f} s)")
    return record


# ----------------------------------------------------------------------------- one part


def run_part(
    part: str,
    quick: bool = False,
    results_dir=None,
    runs_dir=None,
    budget_minutes: float | None = None,
    device=None,
    data=None,
    compile: bool | None = None,
    evaluate: Callable = evaluate_samples,
    log: Callable = print,
    progress: bool = True,
    only: Sequence[str] | None = None,
) -> dict:
    """Run (or continue) every run of a part within the budget; writes <results>/part_<X>.json and returns it.

    only: run names (`RunSpec.name`) to run now, the others untouched -- so several processes (one per GPU,
    or several small eager runs sharing one GPU) can work on one part at once. The part's summary file is
    updated under a lock and counts every finished run of the part, whoever ran it.
    """
    specs = part_specs(quick)
    if part not in specs:
        raise ValueError(f"unknown part {part!r}; expected one of {sorted(specs)}")
    spec = specs[part]
    runs = list(spec.runs)
    if only:
        names = [r.name for r in spec.runs]
        unknown = [n for n in only if n not in names]
        if unknown:
            raise ValueError(f"part {part} has no run(s) {unknown}; its runs are {names}")
        runs = [r for r in spec.runs if r.name in only]
    started, wall_start = time.monotonic(), datetime.datetime.now(datetime.timezone.utc)
    budget = spec.budget_minutes if budget_minutes is None else budget_minutes
    if not budget > 0:
        raise ValueError(f"budget_minutes must be > 0 (minutes for this call), got {budget}")
    deadline = started + 60 * budget
    results_dir = pathlib.Path(results_dir) if results_dir else default_results_dir()
    runs_dir = pathlib.Path(runs_dir) if runs_dir else default_runs_dir()
    device = get_device(device)
    if data is None:
        data = load_fashion_mnist("train")
    data = data.to(device)
    log(plan(part, quick, results_dir))
    records = []
    for run in runs:
        if compile is not None:
            run = dataclasses.replace(run, compile=compile)
        records.append(run_one(run, results_dir, runs_dir, data, deadline, device, evaluate, log, progress))
        if records[-1]["status"] != "done":
            break
    summary_path = results_dir / f"part_{part}.json"
    with _locked(results_dir / f".part_{part}.lock"):
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {"part": part, "sessions": []}
        done = [r.name for r in spec.runs if (load_record(results_dir, r) or {}).get("status") == "done"]
        summary.update(
            title=spec.title,
            quick=quick,
            runs=[r.name for r in spec.runs],
            done=done,
            complete=len(done) == len(spec.runs),
        )
        command = f"MINIDIT_QUICK={int(quick)} MINIDIT_PART={part} python notebooks/{EXPERIMENT}.py"
        if only:
            command = f"python -m minidit.tools.experiments {part} --only {' '.join(only)}" + (
                " --quick" if quick else ""
            )
        summary["sessions"].append(
            {
                "started": wall_start.isoformat(timespec="seconds"),
                "wall_time_s": round(time.monotonic() - started, 1),
                "budget_minutes": budget,
                "device": str(device),
                "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
                "torch_version": torch.__version__,
                "python": sys.version.split()[0],
                "command": command,
                "runs": [r["name"] for r in records],
                "env": {k: v for k, v in os.environ.items() if k.startswith("MINIDIT_") or k == "CUDA_VISIBLE_DEVICES"},
            }
        )
        summary["wall_time_s"] = round(sum(s["wall_time_s"] for s in summary["sessions"]), 1)
        atomic_write_json(summary_path, summary)
    state = "complete" if summary["complete"] else "NOT complete: run the same command again to continue"
    seconds = summary["sessions"][-1]["wall_time_s"]
    log(f"part {part}: {len(done)}/{len(spec.runs)} runs done ({len(records)} worked on in {seconds:.0f} s); {state}")
    return summary


@contextlib.contextmanager
def _locked(path: pathlib.Path):
    """An exclusive lock on `path` (POSIX flock) for a read-modify-write by one of several processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            import fcntl  # Unix only: the lock of concurrent runs
        except ImportError:  # Windows: one process at a time is the user's job
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------- reading results


def elapsed_seconds(summary: dict) -> float:
    """Wall-clock time a part took: the union of its sessions' [start, start + wall time] intervals.

    summary["wall_time_s"] adds the sessions up, which counts twice the time of processes that ran at
    the same time (`run_part(..., only=...)` on several GPUs); this counts it once.
    """
    spans = []
    for session in summary["sessions"]:
        start = datetime.datetime.fromisoformat(session["started"]).timestamp()
        spans.append((start, start + session["wall_time_s"]))
    total, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def load_part(part: str, quick: bool = False, results_dir=None) -> dict[str, dict]:
    """{run name: record} for the part's runs that have a record (possibly unfinished)."""
    results_dir = pathlib.Path(results_dir) if results_dir else default_results_dir()
    out = {}
    for run in part_specs(quick)[part].runs:
        record = load_record(results_dir, run)
        if record is not None:
            out[run.name] = record
    return out


def curve(record: dict, metric: str = "fid", cfg_scale: float = 1.0) -> tuple[list[int], list[float]]:
    """The metric against training steps (curve_samples samples, the curve's DDPM steps)."""
    spec = record["spec"]
    n, steps = spec["curve_samples"], spec["sampling_steps"]
    points = sorted(
        (e["step"], e["metrics"][metric])
        for e in record["evals"]
        if e["num_samples"] == n and e["cfg_scale"] == cfg_scale and e.get("sampling_steps", steps) == steps
    )
    return [p[0] for p in points], [p[1] for p in points]


def final_eval(record: dict, cfg_scale: float = 1.0) -> dict | None:
    """The evaluation at the last step: final_samples without guidance, guided_samples with."""
    spec = record["spec"]
    n = spec["final_samples"] if cfg_scale == 1.0 else spec["guided_samples"]
    steps = spec.get("final_sampling_steps") or spec["sampling_steps"]
    return find_eval(record, spec["steps"], n, cfg_scale, steps)


def ablation_rows(records: dict[str, dict], blocks=BLOCK_ORDER) -> list[dict]:
    """One row per block: Gflops, params, final metrics averaged over seeds, each seed's FID and its bootstrap
    interval, class accuracy without and with guidance (and as a share of the evaluator's on real images),
    and the paper's numbers."""
    rows = []
    for block in blocks:
        done = sorted(
            (r for r in records.values() if r["spec"]["block"] == block and final_eval(r) is not None),
            key=lambda r: r["spec"]["seed"],
        )
        if not done:
            continue
        finals = [final_eval(r) for r in done]
        mean = {
            k: sum(f["metrics"][k] for f in finals) / len(finals)
            for k in ("fid", "precision", "recall", "class_accuracy")
        }
        row = {
            "block": block,
            "gflops": done[0]["gflops"],
            "params": done[0]["history"]["num_params"],
            **mean,
            "fid_seeds": [f["metrics"]["fid"] for f in finals],
            "seeds": [r["spec"]["seed"] for r in done],
            "fid_ci_seeds": [f["metrics"].get("fid_ci") for f in finals],
            "class_accuracy_of_real": mean["class_accuracy"] / _mean(f["floor"]["class_accuracy"] for f in finals),
            "paper_fid": PAPER_FIG5[block]["fid"],
            "paper_gflops": PAPER_FIG5[block]["gflops"],
        }
        guided = [final_eval(r, 1.5) for r in done]
        if all(g is not None for g in guided):
            row["class_accuracy_cfg1.5"] = _mean(g["metrics"]["class_accuracy"] for g in guided)
            row["fid_cfg1.5"] = _mean(g["metrics"]["fid"] for g in guided)
        rows.append(row)
    return rows


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def paired_fid_intervals(records: dict[str, dict], better: str, worse: str) -> list[list[float] | None]:
    """Per seed: the 95% paired-bootstrap interval of FID(worse) - FID(better) (None without replicates).

    Both runs of a seed were sampled from the same x_T and labels and resampled with the same indices
    (`metrics.bootstrap_fid`), so replicate-wise differences give the interval of the difference. It
    measures the noise of drawing samples only, not of training: seeds measure that.
    """

    out = []
    by_seed = {}
    for r in records.values():
        if r["spec"]["block"] in (better, worse) and final_eval(r) is not None:
            by_seed.setdefault(r["spec"]["seed"], {})[r["spec"]["block"]] = final_eval(r)["metrics"]
    for seed in sorted(by_seed):
        pair = by_seed[seed]
        if better in pair and worse in pair and "fid_boot" in pair[better] and "fid_boot" in pair[worse]:
            out.append(paired_interval(pair[worse]["fid_boot"], pair[better]["fid_boot"]))
        else:
            out.append(None)
    return out


def ablation_summary(rows: list[dict], records: dict[str, dict]) -> str:
    """Plain sentences from the measured numbers: the ordering, the paper's, and which gaps hold.

    A gap between neighbours in the ranking is called resolved only when (1) every seed's paired bootstrap
    interval of the FID difference excludes 0 (sampling noise) and (2) the seed ranges do not overlap
    (training noise); with two seeds, (2) is a coarse test, so it is reported as it is.
    """
    if len(rows) < 2:
        return "Part B: not enough finished runs to compare blocks yet."
    finished = [r for r in records.values() if final_eval(r) is not None]
    spec, floor = finished[0]["spec"], final_eval(finished[0])["floor"]
    ranked = sorted(rows, key=lambda r: r["fid"])
    seeds = max(len(r["fid_seeds"]) for r in rows)
    lines = [
        f"After {spec['steps']:,} steps of {spec['model']} at batch {spec['batch_size']} "
        f"(FID of {spec['final_samples']:,} samples, no guidance, real-vs-real floor {floor['fid']:.2f}; "
        f"the evaluator classifies {floor['class_accuracy']:.1%} of real test images correctly), "
        f"mean over {seeds} seed(s) [range]:"
    ]
    for r in ranked:
        acc = f"class accuracy {r['class_accuracy']:.1%} ({r['class_accuracy_of_real']:.0%} of real)"
        if "class_accuracy_cfg1.5" in r:
            acc += f", {r['class_accuracy_cfg1.5']:.1%} at guidance 1.5"
        lines.append(
            f"  {r['block']:<16} FID {r['fid']:6.2f} [{min(r['fid_seeds']):.2f}-{max(r['fid_seeds']):.2f}]"
            f"   {acc}   (paper, XL/2 at 400K steps: FID {r['paper_fid']:.2f})"
        )
    measured = [r["block"] for r in ranked]
    paper = [b for b in BLOCK_ORDER if b in measured]
    lines.append("Measured order: " + " < ".join(measured) + ".  Paper's order: " + " < ".join(paper) + ".")
    if measured == paper:
        lines.append("The paper's ordering reproduces at this scale.")
    else:
        lines.append("The paper's ordering does NOT reproduce at this scale.")
    for better, worse in zip(ranked, ranked[1:]):
        separated = max(better["fid_seeds"]) < min(worse["fid_seeds"])
        verdict = "seed ranges do not overlap" if separated else "seed ranges overlap: within seed noise"
        intervals = paired_fid_intervals(records, better["block"], worse["block"])
        shown = [f"[{ci[0]:.2f}, {ci[1]:.2f}]" for ci in intervals if ci is not None]
        if shown:
            excluded = all(ci is not None and ci[0] > 0 for ci in intervals)
            verdict += (
                f"; paired bootstrap 95% interval of the gap per seed {', '.join(shown)}"
                f"{' (all exclude 0)' if excluded else ' (not all exclude 0)'}"
            )
        lines.append(f"  {better['block']} vs {worse['block']}: gap {worse['fid'] - better['fid']:.2f} FID; {verdict}")
    if seeds < 2:
        lines.append("Only one seed per block so far: no gap can be told from training noise yet.")
    return "\n".join(lines)


def scaling_rows(records: dict[str, dict]) -> list[dict]:
    """One row per model of part C, by Gflops: Gflops (ours and the paper's setting), params, final metrics.

    With bootstrap replicates, `fid_ci` is the 95% interval of the model's FID over samples and `gap_ci` the
    paired interval of FID(previous row) - FID(this row): every run drew the same x_T and labels and was
    resampled with the same indices, so a gap whose interval excludes 0 is not sample noise (seeds measure
    training noise; part C has one seed per model).
    """
    rows = []
    for r in records.values():
        f = final_eval(r)
        if f is None:
            continue
        guided = final_eval(r, 1.5)
        m = f["metrics"]
        rows.append(
            {
                "model": r["spec"]["model"],
                "gflops": r["gflops"],
                "params": r["history"]["num_params"],
                "gflops_paper_setting": r["gflops_paper_setting"],
                **{k: m[k] for k in ("fid", "precision", "recall", "class_accuracy")},
                "class_accuracy_cfg1.5": None if guided is None else guided["metrics"]["class_accuracy"],
                "fid_ci": m.get("fid_ci"),
                "_boot": m.get("fid_boot"),
            }
        )
    rows.sort(key=lambda row: row["gflops"])
    for prev, row in zip([None] + rows, rows):
        both = prev is not None and prev["_boot"] is not None and row["_boot"] is not None
        row["gap_ci"] = paired_interval(prev["_boot"], row["_boot"]) if both else None
    for row in rows:
        del row["_boot"]
    return rows


def format_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """rows -> a Markdown table; columns: (key, header, format spec)."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = [
        "| " + " | ".join(format(row[k], f) if row.get(k) is not None else "—" for k, _, f in columns) + " |"
        for row in rows
    ]
    return "\n".join([head, rule, *body])


def goals_summary(record: dict) -> str:
    """Part A's goals, measured: class accuracy >= 90% of the evaluator's on real test images (issue [10] asks it at
    guidance 1.5, on 10,000 samples), and FID within 3x the real-vs-real floor, at each guidance scale."""
    lines = []
    for scale in record["spec"]["cfg_scales"]:
        e = final_eval(record, scale)
        if e is None:
            continue
        m, f = e["metrics"], e["floor"]
        acc_ratio, fid_ratio = m["class_accuracy"] / f["class_accuracy"], m["fid"] / max(f["fid"], 1e-12)
        steps = e.get("sampling_steps", record["spec"]["sampling_steps"])
        lines.append(
            f"cfg {scale:g} ({e['num_samples']:,} samples, DDPM-{steps}): class accuracy {m['class_accuracy']:.1%} = "
            f"{acc_ratio:.0%} of the evaluator's {f['class_accuracy']:.1%} on real test images (goal >= 90%: "
            f"{'met' if acc_ratio >= 0.9 else 'not met'}); FID {m['fid']:.2f} = {fid_ratio:.1f}x the floor "
            f"{f['fid']:.2f} (goal <= 3x: {'met' if fid_ratio <= 3 else 'not met'})"
        )
    return "\n".join(lines) or "Part A has no final evaluation yet."


def readme_tables(results_dir=None) -> str:
    """The Markdown tables the README quotes for parts A, B and C, made from the records (`python -m
    minidit.tools.experiments tables`); tests/test_readme_results.py checks the README holds them."""
    out = []
    a = load_part("A", results_dir=results_dir)
    for record in a.values():
        rows = []
        for scale in record["spec"]["cfg_scales"]:
            e = final_eval(record, scale)
            if e is not None:
                m, f = e["metrics"], e["floor"]
                rows.append(
                    {
                        "scale": f"{scale:g}",
                        "n": f"{e['num_samples']:,}",
                        "fid": m["fid"],
                        "floor": f["fid"],
                        "precision": m["precision"],
                        "recall": m["recall"],
                        "acc": m["class_accuracy"],
                        "real": f["class_accuracy"],
                    }
                )
        out.append(
            format_table(
                rows,
                [
                    ("scale", "guidance", ""),
                    ("n", "samples", ""),
                    ("fid", "FID", ".2f"),
                    ("floor", "real floor", ".2f"),
                    ("precision", "precision", ".2f"),
                    ("recall", "recall", ".2f"),
                    ("acc", "class accuracy", ".1%"),
                    ("real", "on real images", ".1%"),
                ],
            )
        )
    rows = ablation_rows(load_part("B", results_dir=results_dir))
    for row in rows:
        row["fid_each_seed"] = " / ".join(f"{v:.1f}" for v in row["fid_seeds"])
        row["ci_each_seed"] = " / ".join(
            "—" if ci is None else f"{ci[0]:.1f}–{ci[1]:.1f}" for ci in row["fid_ci_seeds"]
        )
    if rows:
        out.append(
            format_table(
                rows,
                [
                    ("block", "block", ""),
                    ("gflops", "Gflops", ".2f"),
                    ("fid", "FID (mean)", ".1f"),
                    ("fid_each_seed", "FID per seed", ""),
                    ("ci_each_seed", "bootstrap 95% per seed", ""),
                    ("class_accuracy", "class acc. (cfg 1)", ".1%"),
                    ("class_accuracy_cfg1.5", "class acc. (cfg 1.5)", ".1%"),
                    ("paper_fid", "paper FID (XL/2, 400K)", ".2f"),
                ],
            )
        )
    rows = scaling_rows(load_part("C", results_dir=results_dir))
    for row in rows:
        row["params_m"] = f"{row['params'] / 1e6:.1f}"
        row["ci"] = "—" if row["fid_ci"] is None else f"{row['fid_ci'][0]:.2f}–{row['fid_ci'][1]:.2f}"
        row["gap"] = "—" if row["gap_ci"] is None else f"{row['gap_ci'][0]:.2f} to {row['gap_ci'][1]:.2f}"
    if rows:
        out.append(
            format_table(
                rows,
                [
                    ("model", "model", ""),
                    ("gflops", "Gflops", ".2f"),
                    ("params_m", "params (M)", ""),
                    ("fid", "FID", ".2f"),
                    ("ci", "bootstrap 95%", ""),
                    ("gap", "FID gain over the row above, 95%", ""),
                    ("precision", "precision", ".2f"),
                    ("recall", "recall", ".2f"),
                    ("class_accuracy", "class acc. (cfg 1)", ".1%"),
                    ("class_accuracy_cfg1.5", "class acc. (cfg 1.5)", ".1%"),
                ],
            )
        )
    return "\n\n".join(out)


def write_figure(fig, results_dir, name: str) -> pathlib.Path:
    """Save a matplotlib figure as <results>/fig_<name>.png, atomically."""
    path = pathlib.Path(results_dir) / f"fig_{name}.png"
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))


# ----------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """python -m minidit.tools.experiments PART [--only NAME ...] [--budget MIN] [--quick] [--plan]

    Runs (or continues) a part without the notebook; --only lets several processes share a part.
    Notebook 08 draws the figures from the records afterwards (MINIDIT_SAVE_FIGURES=1 also saves them).
    """
    parser = argparse.ArgumentParser(
        prog="python -m minidit.tools.experiments", description=main.__doc__.split("\n")[0]
    )
    parser.add_argument(
        "part",
        choices=(*part_specs(), "tables"),
        help="a part to run, or 'tables': print the README's Markdown tables from the records",
    )
    parser.add_argument("--only", nargs="+", default=None, help="run names to work on (default: all of the part)")
    parser.add_argument("--budget", type=float, default=None, help="minutes for this call (default: the part's)")
    parser.add_argument("--quick", action="store_true", help="tiny CPU sizes (tests)")
    parser.add_argument("--plan", action="store_true", help="print the runs, their state and estimates; train nothing")
    parser.add_argument("--pending", action="store_true", help="print the names of the runs not done, one a line")
    parser.add_argument("--results-dir", default=None)
    parser.add_argument("--runs-dir", default=None)
    args = parser.parse_args(argv)
    if args.part == "tables":
        print(readme_tables(args.results_dir))
        return 0
    if args.plan:
        print(plan(args.part, args.quick, args.results_dir))
        return 0
    if args.pending:
        records = load_part(args.part, args.quick, args.results_dir)
        for run in part_specs(args.quick)[args.part].runs:
            if records.get(run.name, {}).get("status") != "done":
                print(run.name)
        return 0
    try:
        summary = run_part(
            args.part,
            quick=args.quick,
            results_dir=args.results_dir,
            runs_dir=args.runs_dir,
            budget_minutes=args.budget,
            only=args.only,
            progress=False,
        )
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    return 0 if all(n in summary["done"] for n in (args.only or summary["runs"])) else 1


if __name__ == "__main__":
    sys.exit(main())
