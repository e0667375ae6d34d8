"""A training run on disk and across processes: its folder, resumable state, history and process group.

minidit.train's loop uses these: a run folder holds one run (`claim_out_dir` refuses another unless it
resumes or overwrites it), state.pt carries the random-number state to continue bit for bit, history.json
is cut back to the step a resumed run continues from, and under torchrun every rank agrees on the budget.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from minidit import checkpoint as _checkpoint
from minidit.model import model_config


@dataclass
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False


def world_from_env() -> World:
    return World(
        int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
    )


def check_batch_split(global_batch_size: int, world_size: int) -> int:
    """The per-rank batch; ValueError when the global batch does not split evenly."""
    if global_batch_size % world_size:
        raise ValueError(
            f"global batch size {global_batch_size} is not divisible by the {world_size} processes "
            f"(world size); use a multiple of {world_size}"
        )
    return global_batch_size // world_size


def rng_state(generator: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "data": generator.get_state(), "data_device": generator.device.type}
    if generator.device.type == "cuda":  # this process's GPU only (get_rng_state_all would wake up every GPU)
        state["cuda"] = torch.cuda.get_rng_state(generator.device)
    return state


def restore_rng(rng: dict, generator: torch.Generator, fallback_seed: int, log: Callable) -> None:
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and generator.device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], generator.device)
    if rng.get("data_device") == generator.device.type:
        generator.set_state(rng["data"])
    else:
        generator.manual_seed(fallback_seed)
        log(
            f"the checkpoint's data generator was on {rng.get('data_device')}, this run is on "
            f"{generator.device.type}: batches continue from a new seed (same model, not bit-for-bit)"
        )


class RunFolderError(ValueError):
    """out_dir cannot take this run (it holds another run, is a file, or is not writable)."""


def run_files(out_dir: str | os.PathLike) -> list[pathlib.Path]:
    """The files of a run that out_dir holds: state.pt, history.json, checkpoints/*.safetensors, samples/*.png."""
    out_dir = pathlib.Path(out_dir)
    found = [out_dir / name for name in ("state.pt", "history.json") if (out_dir / name).is_file()]
    for folder, pattern in (("checkpoints", "*.safetensors"), ("samples", "*.png")):
        found += sorted((out_dir / folder).glob(pattern))
    return found


def claim_out_dir(cfg, is_main: bool = True, log: Callable = print) -> None:
    """Make sure cfg.out_dir can take this run, before any work; RunFolderError with the fix if not.

    A folder that holds a run (`run_files`) is refused unless cfg.resume (continue it from its
    state.pt) or cfg.overwrite (its run files are deleted first, by the main process; other files
    in the folder are left alone). Stale temporary files of killed saves are deleted.
    """
    out_dir = pathlib.Path(cfg.out_dir)
    try:
        _checkpoint.writable_folder(out_dir, "--out-dir")
    except ValueError as err:
        raise RunFolderError(str(err)) from None
    found = run_files(out_dir)
    if is_main:
        removed = _checkpoint.remove_stale_tmp(out_dir, out_dir / "checkpoints", out_dir / "samples")
        if removed:
            log(
                f"deleted {len(removed)} temporary file(s) left by an interrupted save: "
                f"{', '.join(p.name for p in removed)}"
            )
    if not found:
        return
    names = ", ".join(str(p.relative_to(out_dir)) for p in found[:4]) + (", ..." if len(found) > 4 else "")
    if cfg.overwrite:
        if is_main:
            for path in found + [out_dir / "config.json"]:
                path.unlink(missing_ok=True)
            for folder in (out_dir / "checkpoints", out_dir / "samples"):
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
            log(f"--overwrite: deleted the earlier run in {out_dir} ({len(found)} files: {names})")
    elif cfg.resume and not (out_dir / "state.pt").is_file():
        raise RunFolderError(
            f"cannot resume {out_dir}: it holds files of a run ({names}) but no state.pt to "
            "continue from. Pass --overwrite to start afresh there, or use a new --out-dir"
        )
    elif not cfg.resume:
        raise RunFolderError(
            f"{out_dir} already holds a run ({names}). Pass --resume to continue it, a new "
            "--out-dir to keep it, or --overwrite to delete it and start afresh"
        )


def check_resume_config(saved: dict, cfg, path, keys: tuple[str, ...]) -> None:
    """RunFolderError unless the run in `path` was started with the same values of `keys` as cfg."""
    diffs = [f"{k}: {saved.get(k)!r} -> {getattr(cfg, k)!r}" for k in keys if saved.get(k) != getattr(cfg, k)]
    if diffs:
        raise RunFolderError(
            f"cannot resume {path}: the run was started with a different config "
            f"({'; '.join(diffs)}). Use a new --out-dir, or --overwrite to start afresh there"
        )


def new_history(cfg, model, device, world_size: int, amp_dtype, compiled: bool) -> dict:
    return {
        "config": dataclasses.asdict(cfg),
        "model_config": model_config(model),
        "num_params": sum(p.numel() for p in model.parameters()),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        "torch_version": torch.__version__,
        "world_size": world_size,
        "precision": "bf16" if amp_dtype is not None else "fp32",
        "compiled": compiled,
        "compile_scope": None,  # what torch.compile wraps, on 1 process or N: FastStep's, once it is built
        "step": [],
        "loss": [],
        "loss_per_quarter": {f"q{i}": [] for i in range(4)},
        "img_per_s": [],
        "wall_time": [],
        "checkpoints": [],
        "samples": [],
        "state": None,
        "final_step": 0,
        "stopped_by_budget": False,
        "skipped_steps": [],
        "first_step_seconds": None,
    }


def load_history(path: pathlib.Path, step: int) -> dict | None:
    """history.json cut back to `step` (it may have logged past the last checkpoint before a crash)."""
    try:
        history = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    keep = [i for i, s in enumerate(history["step"]) if s <= step]
    for key in ("step", "loss", "img_per_s", "wall_time"):
        history[key] = [history[key][i] for i in keep]
    for q in history["loss_per_quarter"]:
        history["loss_per_quarter"][q] = [history["loss_per_quarter"][q][i] for i in keep]
    for key in ("checkpoints", "samples"):
        history[key] = [p for p in history[key] if int(pathlib.Path(p).stem) <= step]
    history["skipped_steps"] = [s for s in history.get("skipped_steps", []) if s <= step]
    return history


def gather(t: torch.Tensor, world_size: int) -> torch.Tensor:
    if world_size == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(world_size)]
    dist.all_gather(parts, t)
    return torch.cat(parts)


def out_of_time(deadline: float, step: int, log_every: int, world_size: int, device) -> bool:
    """Past the wall-clock budget? Under DDP all ranks agree, at logging steps only (one all-reduce)."""
    if world_size == 1:
        return time.monotonic() >= deadline
    if step % log_every:
        return False
    flag = torch.tensor([float(time.monotonic() >= deadline)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())
