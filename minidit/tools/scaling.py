"""How DiT training scales over GPUs: images per second on 1 and N GPUs, and the same loss curve.

Data parallelism (DDP) splits every global batch over N processes, one per GPU, and averages the
gradients, so the model sees the same data and takes the same optimiser steps as on one GPU -- only
each step's work is shared. This tool measures the two things that follow, with `minidit.train`
launched by `torch.distributed.run` (torchrun), for each model in --models:

    1x<model>                        1 process,   batch b,   --speed-steps  the 1-GPU images/s
    Nx<model>                        N processes, batch N*b, --curve-steps  the N-GPU images/s and a loss curve
    1x<model>-sameglobal             1 process,   batch N*b, --curve-steps  the reference loss curve
    1x<model>-modelscope             1 process,   batch b,   --speed-steps  control: 1-GPU images/s, loss eager
    1x<model>-sameglobal-modelscope  1 process,   batch N*b, --curve-steps  control: the reference with other kernels

b is the per-GPU batch (--per-gpu-batch). The speed of a run is the median images/s over its logging
intervals, leaving out the first (which holds torch.compile's compilation).

The compile scope. Every run but the controls compiles the model and the diffusion loss together
(`--compile-scope loss`, minidit.train's default, under DDP as on one process), so 1x<model> and
Nx<model> run the same step. The two -modelscope controls compile the model only and run the loss
eagerly (`--compile-scope model`, what minidit.train did under DDP before the whole step was
compiled there); they are made for the curve models (--no-controls skips them; without --compile
they would repeat the plain runs and are skipped too):

* scaling efficiency = img/s(N) / (N * img/s(1)): 1.0 is N GPUs doing N times the work of one.
  With the same step on both sides, what it loses is the cost of N processes: the gradient
  all-reduce that the backward pass does not hide, the processes waiting for each other, DDP's
  bookkeeping. img/s(1, modelscope) / img/s(1) is the price of compiling the model alone, which
  N-process runs paid before (DiT-S/2 on an H100: 0.78).
* the loss curves of Nx<model> and 1x<model>-sameglobal see the same images, timesteps and noise by
  construction: every rank draws the same global batch from the same seed and keeps its slice
  (`minidit.step.draw_batch`). What differs is where rounding falls (other kernels, other sums); in
  bf16 such differences grow along a trajectory. 1x<model>-sameglobal-modelscope measures how much
  changing the kernels alone moves the curve -- the floor -- and the verdict in the JSON compares the
  N-process difference with that measured floor. The reference runs are the expensive ones (N times
  the work on one GPU), so they are made for the first model only unless --curve-models says otherwise.

On a machine with 2 GPUs (a few minutes per model with the defaults):

    python -m minidit.tools.scaling --gpus 2 --parallel-single
    python -m minidit.tools.scaling --gpus 2 --only 2xDiT-B/2     # one run, e.g. within a time limit

--parallel-single starts the 1-process runs at the same time, each pinned to its own GPU with
CUDA_VISIBLE_DEVICES (they share the CPU and the host, not a GPU); the N-process runs then run one
at a time, alone on the machine. A run already recorded as successful with the same settings is
skipped, so the command can be repeated until every run is done. Results go to --out (JSON) and a
figure to scaling.png beside it; every run's output to <runs-dir>/<run>.log. On a machine without
CUDA (or with --device cpu) the N processes are CPU processes talking through gloo: too slow to say
anything about speed, but the loss curves must agree all the same, which tests/test_scaling.py
checks with DiT-T/4 in seconds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pathlib
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from minidit.checkpoint import atomic_write, atomic_write_json, writable_target
from minidit.cli import ArgumentParser
from minidit.data import find_data_dir
from minidit.model import DiT_models

DEFAULT_OUT = pathlib.Path("notebooks") / "results" / "multi_gpu" / "scaling.json"
DEFAULT_RUNS_DIR = pathlib.Path("runs") / "scaling"
# NVLink multicast (NVLS) stays off: the lent multi-GPU machines do not support it.
NO_MULTICAST_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
# minidit.train flags that every run of the tool passes and that are not settings of a study.
FIXED_TRAIN_FLAGS = {"ckpt_every": 0, "sample_every": 0, "progress": False, "ema_warmup": "ema_warmup"}
# Without a measured floor, an fp32 run without TF32 (the CPU) must match one process to rounding:
# tests/test_scaling.py's run of 2 gloo processes against 1 (DiT-T/4, 6 steps) gave 1.2e-7 relative,
# about one float32 rounding; 1e-4 (what that test asserts) leaves room for longer runs and other CPUs.
FP32_CURVE_TOLERANCE = 1e-4
ORDER_OF_MAGNITUDE = 10  # "same order as the floor": less than 10 times it
LOG_TAIL_LINES = 20
SAMEGLOBAL, MODELSCOPE = "-sameglobal", "-modelscope"


@dataclass(frozen=True)
class Run:
    """One torchrun launch of minidit.train."""

    name: str  # "1xDiT-S/2", "2xDiT-S/2", "1xDiT-S/2-sameglobal", "1xDiT-S/2-modelscope", ...
    model: str
    processes: int
    global_batch: int
    steps: int
    role: str  # "speed", "curve", "reference", "speed-modelscope" or "reference-modelscope"
    compile_scope: str = "loss"  # what torch.compile wraps (minidit.train --compile-scope), on 1 or N processes

    @property
    def slug(self) -> str:
        """The name as a file name: '/' -> '_'."""
        return self.name.replace("/", "_")


def plan_runs(
    models: list[str],
    curve_models: list[str],
    gpus: int,
    per_gpu_batch: int,
    speed_steps: int,
    curve_steps: int,
    controls: bool = True,
) -> list[Run]:
    """The runs of a scaling study, in the order a one-at-a-time study makes them."""
    runs, b = [], per_gpu_batch
    for model in models:
        control = controls and model in curve_models
        runs.append(Run(f"1x{model}", model, 1, b, speed_steps, "speed"))
        if control:
            runs.append(Run(f"1x{model}{MODELSCOPE}", model, 1, b, speed_steps, "speed-modelscope", "model"))
        runs.append(Run(f"{gpus}x{model}", model, gpus, gpus * b, curve_steps, "curve"))
        if model in curve_models:
            runs.append(Run(f"1x{model}{SAMEGLOBAL}", model, 1, gpus * b, curve_steps, "reference"))
        if control:
            runs.append(
                Run(
                    f"1x{model}{SAMEGLOBAL}{MODELSCOPE}",
                    model,
                    1,
                    gpus * b,
                    curve_steps,
                    "reference-modelscope",
                    "model",
                )
            )
    return runs


def run_settings(run: Run, args: argparse.Namespace) -> dict:
    """What must be equal for an earlier result of this run to count (paths and the machine excluded)."""
    return {
        "model": run.model,
        "processes": run.processes,
        "global_batch": run.global_batch,
        "steps": run.steps,
        "log_every": args.log_every,
        "seed": args.seed,
        "precision": args.precision,
        "compile": args.compile,
        "device": args.device,
        "compile_scope": run.compile_scope,
    }


def recorded_settings(record: dict) -> dict:
    """A record's settings; those written before compile_scope was one get the scope they ran with:
    minidit.train's default "loss" on 1 process, "model" on N (forced under DDP then), so an old
    N-process record does not count as a run of today's plan."""
    settings = dict(record.get("settings") or {})
    if "compile_scope" not in settings and "processes" in settings:
        settings["compile_scope"] = "loss" if settings["processes"] == 1 else "model"
    return settings


def settings_match(record: dict | None, run: Run, args: argparse.Namespace) -> bool:
    return record is not None and recorded_settings(record) == run_settings(run, args)


# ----------------------------------------------------------------------------- launching


def train_command(run: Run, args: argparse.Namespace) -> list[str]:
    """torchrun ... -m minidit.train ... for one run."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={run.processes}",
        "-m",
        "minidit.train",
        "--model",
        run.model,
        "--global-batch-size",
        str(run.global_batch),
        "--steps",
        str(run.steps),
        "--log-every",
        str(args.log_every),
        "--seed",
        str(args.seed),
        "--out-dir",
        str(pathlib.Path(args.runs_dir) / run.slug),
    ]
    for field, value in FIXED_TRAIN_FLAGS.items():
        flag = "--" + field.replace("_", "-")
        command += [flag if value else "--no-" + flag[2:]] if isinstance(value, bool) else [flag, str(value)]
    command += [
        "--precision",
        args.precision,
        "--compile" if args.compile else "--no-compile",
        "--compile-scope",
        run.compile_scope,
        "--device",
        args.device,
    ]
    if args.data_dir is not None:
        command += ["--data-dir", str(args.data_dir)]
    return command


def child_env(threads: int, gpu: int | None = None) -> dict[str, str]:
    """os.environ with NVLink multicast off, a thread count, and (gpu given) one visible GPU."""
    env = dict(os.environ)
    for key, value in NO_MULTICAST_ENV.items():
        env.setdefault(key, value)
    env.setdefault("OMP_NUM_THREADS", str(threads))
    env["PYTHONUNBUFFERED"] = "1"  # the log file fills as the run goes
    root = str(pathlib.Path(__file__).resolve().parents[2])  # the workers import this very minidit
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    return env


def median_img_per_s(img_per_s: list[float]) -> float | None:
    """Median over the logging intervals after the first (the first one includes compilation)."""
    timed = img_per_s[1:]
    return statistics.median(timed) if timed else None


def _log_tail(path: pathlib.Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def history_fields(history: dict, processes: int) -> dict:
    """The fields a record takes from a run's history.json: speed, loss curve, machine."""
    img_per_s = median_img_per_s(history["img_per_s"])
    return dict(
        img_per_s=img_per_s,
        img_per_s_per_gpu=None if img_per_s is None else img_per_s / processes,
        train_time_s=history["wall_time"][-1] if history["wall_time"] else None,
        world_size=history["world_size"],
        compiled=history["compiled"],
        precision=history["precision"],
        compile_scope=history.get("compile_scope"),  # the scope the run used; None: not compiled (or fell back)
        device_name=history["device_name"],
        torch_version=history["torch_version"],
        num_params=history["num_params"],
        step=history["step"],
        loss=history["loss"],
        img_per_s_intervals=history["img_per_s"],
    )


def _record(run: Run, args: argparse.Namespace, **fields) -> dict:
    """The fields every record has (what the run was and its settings), then `fields`."""
    return {
        "name": run.name,
        "model": run.model,
        "role": run.role,
        "processes": run.processes,
        "per_gpu_batch": run.global_batch // run.processes,
        "global_batch": run.global_batch,
        "steps": run.steps,
        "settings": run_settings(run, args),
        **fields,
    }


def run_record(
    run: Run, args: argparse.Namespace, exit_code: int, wall_s: float, log_path: pathlib.Path, gpu: int | None
) -> dict:
    """The results entry of a finished run, from its exit code and out_dir/history.json."""
    record = _record(run, args, exit_code=exit_code, wall_time_s=wall_s, log=str(log_path), pinned_gpu=gpu)
    history_path = pathlib.Path(args.runs_dir) / run.slug / "history.json"
    if exit_code == 0 and not history_path.is_file():
        record["exit_code"], record["error"] = -1, f"the run exited with 0 but wrote no {history_path}"
    if record["exit_code"] != 0:
        record["log_tail"] = _log_tail(log_path)
        return record
    record.update(history_fields(json.loads(history_path.read_text()), run.processes))
    return record


def launch(run: Run, args: argparse.Namespace, threads: int, gpu: int | None) -> tuple[subprocess.Popen, pathlib.Path]:
    """Start one run in the background, its output going to <runs_dir>/<run>.log."""
    (pathlib.Path(args.runs_dir) / run.slug / "history.json").unlink(missing_ok=True)  # no stale history
    log_path = pathlib.Path(args.runs_dir) / f"{run.slug}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    where = "" if gpu is None else f" on GPU {gpu}"
    print(
        f"minidit.tools.scaling: start {run.name}: {run.processes} process(es), global batch {run.global_batch}, "
        f"{run.steps} steps, compile scope {run.compile_scope}{where} (log {log_path})",
        flush=True,
    )
    with open(log_path, "w") as log:  # the child keeps its own handle
        proc = subprocess.Popen(
            train_command(run, args), stdout=log, stderr=subprocess.STDOUT, env=child_env(threads, gpu)
        )
    return proc, log_path


def execute(runs: list[Run], args: argparse.Namespace, slots: int, on_done: Callable[[dict], None]) -> None:
    """Make `runs`, at most `slots` at a time (on CUDA, slots > 1: each pinned to a free GPU).

    on_done(record) is called as each run ends, e.g. to rewrite the results file.
    """
    pending, active, free = list(runs), [], list(range(slots))
    threads = max(1, (os.cpu_count() or 1) // args.gpus)  # never more processes at once than --gpus
    try:
        while pending or active:
            while pending and free:
                run, slot = pending.pop(0), free.pop(0)
                gpu = slot if slots > 1 and args.device == "cuda" else None
                active.append((run, slot, gpu, time.monotonic(), *launch(run, args, threads, gpu)))
            time.sleep(0.2)
            for item in [a for a in active if a[4].poll() is not None]:
                active.remove(item)
                run, slot, gpu, start, proc, log_path = item
                free.append(slot)
                record = run_record(run, args, proc.returncode, time.monotonic() - start, log_path, gpu)
                if record["exit_code"] == 0:
                    speed = "-" if record["img_per_s"] is None else f"{record['img_per_s']:,.0f} img/s"
                    print(
                        f"minidit.tools.scaling: done  {run.name} in {record['wall_time_s']:.0f} s: {speed}, "
                        f"last loss {record['loss'][-1]:.4f}",
                        flush=True,
                    )
                else:
                    print(
                        f"minidit.tools.scaling: FAILED {run.name} (exit code {record['exit_code']}); last lines of "
                        f"{log_path}:\n{record.get('error') or record['log_tail']}",
                        flush=True,
                    )
                on_done(record)
    finally:  # interrupted (Ctrl-C, an error in on_done): no torchrun outlives the tool
        for *_, proc, _ in active:
            proc.terminate()
            proc.wait()


# ----------------------------------------------------------------------------- merging and importing


# ----------------------------------------------------------------------------- summaries


def compare_curves(steps_a: list[int], loss_a: list[float], steps_b: list[int], loss_b: list[float]) -> dict:
    """Loss curve a against reference b at their common logged steps: max / mean |a - b|, max |a - b| / |b|,
    and at how many of them a < b."""
    b_at = dict(zip(steps_b, loss_b))
    common = [(s, a, b_at[s]) for s, a in zip(steps_a, loss_a) if s in b_at]
    if not common:
        return {"steps": [], "max_abs_diff": None, "mean_abs_diff": None, "max_rel_diff": None, "n_below": None}
    diffs = [abs(a - b) for _, a, b in common]
    return {
        "steps": [s for s, _, _ in common],
        "max_abs_diff": max(diffs),
        "mean_abs_diff": sum(diffs) / len(diffs),
        "max_rel_diff": max(d / abs(b) if b else math.inf for d, (_, _, b) in zip(diffs, common)),
        "n_below": sum(a < b for _, a, b in common),
    }


def curve_verdict(
    model: str, gpus: int, global_batch: int, cmp: dict, precision: str, floor: dict | None = None
) -> str:
    """Sentences, from the measured numbers, on how the N-process curve compares with the 1-process one:
    against the floor (the 1-process curve with the model compiled alone vs the whole step) where it was
    measured."""
    if not cmp["steps"]:
        return f"{model}: the two loss curves share no logged step, so they cannot be compared."
    n = len(cmp["steps"])
    numbers = (
        f"{model}, global batch {global_batch}, {precision}, {n} logged steps up to step {cmp['steps'][-1]}: "
        f"the {gpus}-process loss curve differs from the 1-process curve by at most {cmp['max_rel_diff']:.2e} "
        f"relative ({cmp['max_abs_diff']:.2e} absolute, mean absolute {cmp['mean_abs_diff']:.2e}) and is "
        f"below it at {cmp['n_below']} of {n} steps"
    )
    checked = "The arithmetic of DDP itself is checked in fp32 on the CPU by tests/test_scaling.py."
    if floor and floor["steps"] and floor["max_rel_diff"]:
        ratio = cmp["max_rel_diff"] / floor["max_rel_diff"]
        numbers += (
            f". Changing only the compiled kernels on 1 process (compile scope 'model' instead of "
            f"'loss') moves that curve by at most {floor['max_rel_diff']:.2e} (mean absolute "
            f"{floor['mean_abs_diff']:.2e}, below it at {floor['n_below']} of {len(floor['steps'])} steps): "
            "the floor, measured, of what other kernels alone do to this trajectory"
        )
        if ratio <= 1:
            return (
                f"Within the floor: {numbers}. The {gpus}-process run is as close to the 1-process run as a "
                f"change of kernels alone makes two runs: the same training, rounded differently. This does not "
                f"show that the curves are equal in {precision}. {checked}"
            )
        if ratio < ORDER_OF_MAGNITUDE:
            return (
                f"Same order as the floor: {numbers}. The {gpus}-process difference is {ratio:.1f} times the "
                f"floor. A difference of this order is what rounding alone does to this curve, and the "
                f"{gpus}-process run changes more kernels ({global_batch // gpus} images per GPU instead of "
                f"{global_batch}, gradients summed over processes); but one floor run of one seed cannot show "
                f"whether the factor {ratio:.1f} is rounding too or a small real difference. {checked}"
            )
        return (
            f"Above the floor: {numbers}. The {gpus}-process difference is {ratio:.0f} times what other kernels "
            f"alone do: more than rounding explains here; look for a difference between the runs (seed, data, "
            f"flags, code) before trusting the {gpus}-process curve."
        )
    if precision == "fp32" and cmp["max_rel_diff"] <= FP32_CURVE_TOLERANCE:
        return (
            f"Same curve: {numbers}, within the {FP32_CURVE_TOLERANCE:g} of fp32 rounding; {gpus} data-parallel "
            f"processes train the same model as one process does, with the work of each step split {gpus} ways."
        )
    return (
        f"No measured floor: {numbers}. Without the 1-process control that compiles the model alone "
        f"(1x{model}{SAMEGLOBAL}{MODELSCOPE}: --compile, no --no-controls) nothing measured says how much rounding "
        "alone moves this curve."
    )


def used_scope(record: dict) -> str | None:
    """The compile scope a finished run used: its history's, or for a record older than that field, the
    planned one when it was compiled. None: not compiled (or torch.compile failed and it ran eagerly)."""
    if "compile_scope" in record:
        return record["compile_scope"]
    return recorded_settings(record).get("compile_scope") if record.get("compiled") else None


def scaling_reading(model: str, s: dict, unit: str = "GPU") -> str:
    """One sentence on a model's speed-up, whether both sides ran the same step, and what the control says."""
    n, units = s["gpus"], unit + ("es" if unit.endswith("s") else "s")
    text = (
        f"{model}: {s['img_per_s_n']:,.0f} img/s on {n} {units}, {s['speedup']:.2f}x the "
        f"{s['img_per_s_1']:,.0f} of one {unit} (scaling efficiency {s['scaling_efficiency']:.0%}"
    )
    scope_1, scope_n = s["compile_scope_1"], s["compile_scope_n"]
    if scope_1 != scope_n:
        text += (
            f"; the two ran different steps, compile scope {scope_1!r} on one {unit} and {scope_n!r} on {n}, "
            "so this efficiency mixes the cost of N processes with that of the compile scope)"
        )
    elif scope_1 is not None:
        text += f", the same compiled step on both: compile scope {scope_1!r})"
    else:
        text += ", neither compiled)"
    if s["img_per_s_1_model_scope"] is not None:
        text += (
            f". One {unit} compiling the model alone, the loss eager (as minidit.train did under DDP before "
            f"it compiled the whole step there), runs {s['img_per_s_1_model_scope']:,.0f} img/s, "
            f"{s['model_scope_factor']:.0%} of the whole compiled step"
        )
    return text + "."


def summarise(records: dict[str, dict], models: list[str], gpus: int, unit: str = "GPU") -> dict:
    """Speed-up and scaling efficiency per model; loss-curve agreement per curve model."""
    ok = {name: r for name, r in records.items() if r.get("exit_code") == 0}
    scaling, curves = {}, {}
    for model in models:
        one, many = ok.get(f"1x{model}"), ok.get(f"{gpus}x{model}")
        alone = ok.get(f"1x{model}{MODELSCOPE}")
        if one and many and one.get("img_per_s") and many.get("img_per_s"):
            s = {
                "gpus": gpus,
                "per_gpu_batch": one["per_gpu_batch"],
                "compile_scope_1": used_scope(one),
                "compile_scope_n": used_scope(many),
                "img_per_s_1": one["img_per_s"],
                "img_per_s_n": many["img_per_s"],
                "speedup": many["img_per_s"] / one["img_per_s"],
                "scaling_efficiency": many["img_per_s"] / (gpus * one["img_per_s"]),
                "img_per_s_1_model_scope": None,
                "model_scope_factor": None,
            }
            if alone and alone.get("img_per_s"):
                s.update(
                    img_per_s_1_model_scope=alone["img_per_s"], model_scope_factor=alone["img_per_s"] / one["img_per_s"]
                )
            s["reading"] = scaling_reading(model, s, unit)
            scaling[model] = s
        ref, control = ok.get(f"1x{model}{SAMEGLOBAL}"), ok.get(f"1x{model}{SAMEGLOBAL}{MODELSCOPE}")
        if many and ref:
            cmp = compare_curves(many["step"], many["loss"], ref["step"], ref["loss"])
            cmp["precision"] = many["precision"]
            cmp["floor"] = (
                compare_curves(control["step"], control["loss"], ref["step"], ref["loss"]) if control else None
            )
            cmp["verdict"] = curve_verdict(model, gpus, many["global_batch"], cmp, many["precision"], cmp["floor"])
            curves[model] = cmp
    return {"scaling": scaling, "loss_curves": curves}


DEFINITIONS = {
    "img_per_s_definition": "median images/s (global batch) over the logging intervals after the first",
    "scaling_efficiency_definition": "img/s on N GPUs / (N x img/s on 1 GPU); compile_scope_1, compile_scope_n: "
    "the compile scope each of the two used ('loss': model and loss compiled "
    "together); model_scope_factor: img/s of the 1-GPU run that compiles the model "
    "alone / img/s of the 1-GPU run",
    "loss_curves_definition": "N-process curve vs 1-process curve, same global batch; floor: 1-process curve with "
    "the model compiled alone vs the 1-process curve",
}


def plot(results: dict, path: pathlib.Path) -> pathlib.Path:
    """Loss curves and their differences (left), images/s per model (right); written atomically."""
    from matplotlib.figure import Figure  # no pyplot: works under any backend, draws with Agg

    gpus, records = results["gpus"], {r["name"]: r for r in results["runs"]}
    unit, units = ("GPU", "GPUs") if results["device"] == "cuda" else ("CPU process", "CPU processes")
    fig = Figure(figsize=(13, 7.5))
    axes = fig.subplot_mosaic([["loss", "speed"], ["diff", "speed"]])
    ax_loss, ax_diff, ax_speed = axes["loss"], axes["diff"], axes["speed"]

    def scoped(text: str, scope: str | None) -> str:  # "2 GPUs" -> "2 GPUs, scope 'loss'" when compiled
        return text if scope is None else f"{text}, scope '{scope}'"

    for model in results["loss_curves"]:
        ref, many = records[f"1x{model}{SAMEGLOBAL}"], records[f"{gpus}x{model}"]
        control = records.get(f"1x{model}{SAMEGLOBAL}{MODELSCOPE}")
        curves = [
            (ref, dict(lw=3, alpha=0.45, color="tab:blue"), scoped("1 process", used_scope(ref)) + " (reference)")
        ]
        if results["loss_curves"][model].get("floor"):
            curves.append(
                (control, dict(ls=":", lw=2, color="tab:green"), scoped("1 process", used_scope(control)) + " (floor)")
            )
        curves.append(
            (many, dict(ls="--", marker=".", color="tab:orange"), scoped(f"{gpus} processes", used_scope(many)))
        )
        at = dict(zip(ref["step"], ref["loss"]))
        for record, style, label in curves:
            ax_loss.plot(record["step"], record["loss"], **style, label=f"{model}, {label}")
            if record is not ref:
                steps = [s for s in record["step"] if s in at]
                rel = [100 * (a - at[s]) / at[s] for s, a in zip(record["step"], record["loss"]) if s in at]
                ax_diff.plot(steps, rel, **{k: v for k, v in style.items() if k != "alpha"}, label=f"{model}, {label}")
    batch = ", ".join(
        [
            f"global batch {gpus * results['per_gpu_batch']}",
            *dict.fromkeys(c["precision"] for c in results["loss_curves"].values()),
        ]
    )
    ax_loss.set(ylabel="training loss (log scale)", yscale="log", title=f"Loss curves, {batch}")
    ax_diff.axhline(0, color="tab:blue", lw=3, alpha=0.45, label="reference")
    ax_diff.set(
        xlabel="step", ylabel="difference from reference (%)", title="Relative difference from the 1-process reference"
    )
    for ax in (ax_loss, ax_diff):
        if results["loss_curves"]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no loss curves yet", ha="center", transform=ax.transAxes)
    models = list(results["scaling"])
    with_control = any(results["scaling"][m].get("img_per_s_1_model_scope") for m in models)
    width = 0.27 if with_control else 0.4
    for i, model in enumerate(models):
        s, first = results["scaling"][model], i == 0
        left, right = (i - width, i + width) if with_control else (i - width / 2, i + width / 2)
        bars = [(left, s["img_per_s_1"], "tab:blue", scoped(f"1 {unit}", s.get("compile_scope_1")))]
        if s.get("img_per_s_1_model_scope"):
            bars.append((i, s["img_per_s_1_model_scope"], "tab:green", f"1 {unit}, scope 'model' (loss eager)"))
        elif with_control:
            ax_speed.text(
                i,
                0,
                f" 1 {unit}, scope 'model': not measured",
                rotation=90,
                ha="center",
                va="bottom",
                fontsize=8,
                color="gray",
            )
        bars.append((right, s["img_per_s_n"], "tab:orange", scoped(f"{gpus} {units}", s.get("compile_scope_n"))))
        for x, value, color, label in bars:
            ax_speed.bar(x, value, width, color=color, label=label if first else None)
            ax_speed.text(x, value, f"{value:,.0f}", ha="center", va="bottom", fontsize=8)
        ax_speed.bar(
            right,
            gpus * s["img_per_s_1"],
            width,
            fill=False,
            ls=":",
            edgecolor="gray",
            label=f"ideal: {gpus} x 1 {unit}" if first else None,
        )
        text = f"{s['speedup']:.2f}x, {s['scaling_efficiency']:.0%} eff."
        top = max(s["img_per_s_n"], gpus * s["img_per_s_1"])
        ax_speed.annotate(text, (right, top), ha="center", va="bottom", fontsize=9)
    ax_speed.set_xticks(range(len(models)), models)
    ax_speed.set_xlim(-0.7, len(models) - 0.3)
    ax_speed.set(ylabel="training images / s", title=f"Throughput, {results['per_gpu_batch']} images per {unit}")
    if models:
        ax_speed.legend(fontsize=8, loc="upper right")
        ax_speed.margins(y=0.3)
    else:
        ax_speed.text(0.5, 0.5, "no speed measurements yet", ha="center", transform=ax_speed.transAxes)
    fig.suptitle(f"DiT data-parallel scaling on {results['device_name']} (torch {results['torch_version']})")
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def write_results(results: dict, records: dict[str, dict], models: list[str], out: pathlib.Path) -> pathlib.Path:
    """Fill in device_name and the summaries of `records`, write results to `out` and the figure beside it."""
    names = [rec["device_name"] for rec in records.values() if rec.get("device_name")]
    unit = "GPU" if results["device"] == "cuda" else "CPU process"
    results.update(
        device_name=names[0] if names else results["device"],
        **DEFINITIONS,
        **summarise(records, models, results["gpus"], unit),
    )
    atomic_write_json(out, results)
    return plot(results, out.parent / "scaling.png")


def _report(results: dict) -> None:
    for s in results["scaling"].values():
        print(f"minidit.tools.scaling: {s['reading']}")
    for cmp in results["loss_curves"].values():
        print(f"minidit.tools.scaling: {cmp['verdict']}")


# ----------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:

    parser = ArgumentParser(
        prog="python -m minidit.tools.scaling",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--models", default="DiT-S/2,DiT-B/2", help="comma-separated DiT configs")
    parser.add_argument(
        "--curve-models",
        default=None,
        help="models that get the 1-process reference loss curve at the N-GPU global batch (default: the first model)",
    )
    parser.add_argument(
        "--controls",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="for the curve "
        "models, the 1-process runs that compile the model alone (1x<model>-modelscope, "
        "1x<model>-sameglobal-modelscope); skipped without --compile",
    )
    parser.add_argument(
        "--gpus",
        type=int,
        default=None,
        help="N, the processes of the data-parallel runs (default: every visible GPU; on CPU: processes)",
    )
    parser.add_argument("--per-gpu-batch", type=int, default=256, help="images per process and step")
    parser.add_argument("--speed-steps", type=int, default=300, help="steps of the 1-process speed runs")
    parser.add_argument("--curve-steps", type=int, default=600, help="steps of the N-process and reference runs")
    parser.add_argument("--log-every", type=int, default=50, help="steps per logging (and timing) interval")
    parser.add_argument(
        "--parallel-single",
        action="store_true",
        help="run the 1-process runs at the same time, one per GPU, before the N-process runs",
    )
    parser.add_argument("--only", default=None, help="comma-separated run names to make now (e.g. 2xDiT-S/2)")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True, help="torch.compile")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default=None,
        help="cuda (NCCL) or cpu (gloo) (default: cuda when available)",
    )
    parser.add_argument("--data-dir", default=None, help="Fashion-MNIST folder (default: minidit.data.find_data_dir)")
    parser.add_argument("--runs-dir", default=str(DEFAULT_RUNS_DIR), help="out_dirs and logs of the runs")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="results JSON; scaling.png goes beside it")
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """Validate the flags (parser.error exits with status 2); fills in --device and --gpus."""
    models = [m for m in args.models.split(",") if m]
    curve_models = models[:1] if args.curve_models is None else [m for m in args.curve_models.split(",") if m]
    unknown = [m for m in models + curve_models if m not in DiT_models]
    if unknown or not models:
        parser.error(f"unknown model(s) {unknown or [args.models]}; expected some of {list(DiT_models)}")
    if not set(curve_models) <= set(models):
        parser.error(f"--curve-models {curve_models} must be among --models {models}")
    for flag in ("per_gpu_batch", "speed_steps", "curve_steps", "log_every"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    for flag in ("speed_steps", "curve_steps"):
        if getattr(args, flag) <= args.log_every:
            parser.error(
                f"--{flag.replace('_', '-')} {getattr(args, flag)} gives no timed interval after the first "
                f"(compilation) one; use more than --log-every {args.log_every} steps"
            )
    # device_count() does not create a CUDA context: the parent leaves the GPUs to the runs
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if args.device is None:
        args.device = "cuda" if visible else "cpu"
    if args.device == "cuda" and not visible:
        parser.error("--device cuda was asked for, but torch sees no CUDA GPU (on a CPU: --device cpu --gpus 2)")
    if args.gpus is None:
        if args.device == "cpu":
            parser.error("on the CPU, say how many gloo processes with --gpus N (N >= 2)")
        args.gpus = visible
    if args.gpus < 2:
        parser.error(f"a scaling study needs --gpus >= 2 (got {args.gpus}); torch sees {visible} GPU(s) here")
    if args.device == "cuda" and args.gpus > visible:
        parser.error(f"--gpus {args.gpus} asks for more GPUs than the {visible} torch sees here")
    return models, curve_models


def _read_results(parser: argparse.ArgumentParser, path: pathlib.Path) -> dict:
    try:
        results = json.loads(path.read_text())
        missing = [k for k in ("runs", "gpus", "per_gpu_batch", "device", "date", "command") if k not in results]
    except (ValueError, TypeError) as err:
        missing = [str(err)]
    if missing:
        parser.error(f"{path} exists but is not a results file of this tool (no {missing}); move it away or pass --out")
    return results


def main(argv: list[str] | None = None) -> int:
    """python -m minidit.tools.scaling ...; 0 when every selected run succeeded, 1 otherwise, 2 for bad flags."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command = "python -m minidit.tools.scaling " + shlex.join(argv if argv is not None else sys.argv[1:])
    models, curve_models = _check_args(parser, args)
    controls = args.controls and args.compile
    if args.controls and not args.compile:
        print("minidit.tools.scaling: no -modelscope controls: without --compile the compile scope changes nothing")
    runs = plan_runs(models, curve_models, args.gpus, args.per_gpu_batch, args.speed_steps, args.curve_steps, controls)
    only = None if args.only is None else [n for n in args.only.split(",") if n]
    if only is not None:
        unplanned = [n for n in only if n not in {r.name for r in runs}]
        if unplanned or not only:
            parser.error(f"--only: {unplanned or [args.only]} not among the planned runs {[r.name for r in runs]}")
    try:  # here rather than in N failed runs
        writable_target(args.out, "--out")
        find_data_dir(args.data_dir)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    out = pathlib.Path(args.out)
    records = {r["name"]: r for r in _read_results(parser, out)["runs"]} if out.is_file() else {}  # earlier calls

    done = [r for r in runs if settings_match(records.get(r.name), r, args) and records[r.name]["exit_code"] == 0]
    todo = [r for r in runs if r not in done and (only is None or r.name in only)]
    this_call = {
        "ran": [r.name for r in todo],
        "skipped_done": [r.name for r in done],
        "not_selected": [r.name for r in runs if r not in done and r not in todo],
    }
    for r in done:
        print(f"minidit.tools.scaling: skip {r.name} (done in an earlier call with the same settings)")
    results = {
        "device": args.device,
        "gpus": args.gpus,
        "gpu_count": torch.cuda.device_count() if args.device == "cuda" else 0,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "per_gpu_batch": args.per_gpu_batch,
        "this_call": this_call,
    }
    figure = out.parent / "scaling.png"

    def save(record: dict | None = None) -> None:
        if record is not None:
            records[record["name"]] = record
        planned = [records[r.name] for r in runs if r.name in records]
        extra = [rec for name, rec in records.items() if name not in {r.name for r in runs}]  # other plans' runs
        # a record made with other settings waits to be redone
        current = {r.name: records[r.name] for r in runs if settings_match(records.get(r.name), r, args)}
        results["runs"] = planned + extra
        write_results(results, current, models, out)

    save()
    single = [r for r in todo if r.processes == 1]
    if args.parallel_single and single:
        execute(single, args, slots=args.gpus, on_done=save)
        execute([r for r in todo if r.processes > 1], args, slots=1, on_done=save)
    else:
        execute(todo, args, slots=1, on_done=save)

    _report(results)
    failed = [name for name in this_call["ran"] if records[name]["exit_code"] != 0]
    print(f"minidit.tools.scaling: wrote {out} and {figure}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
