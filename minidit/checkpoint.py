"""Checkpoints: weights as safetensors, a resumable training state, atomic writes.

Two kinds of file, both written to a temporary file in the same folder and then renamed with
`os.replace` (atomic on POSIX and Windows), so a crash or a full disk in the middle of a save never
destroys the previous good checkpoint:

* weights (`save_weights` / `load_weights`): a `.safetensors` file with the raw model under
  `model.<name>` and the EMA under `ema.<name>`, and a JSON config in the metadata (the model's
  `model_config` plus whatever the caller adds, e.g. the training config). Safe to share: loading
  it runs no pickled code.
* a resumable state (`save_state` / `load_state`): model, EMA, optimiser, step, RNG states (incl.
  the data generator) and the config, with `torch.save`, loaded back with `weights_only=True`.

Both carry a sha256 over their contents (weights: the tensors' bytes, in the safetensors
metadata; state: every tensor and value, stored inside the file), checked on every load: torch does
not check its zip CRCs and safetensors has no checksum, so without it a flipped byte would load
silently. A corrupt, truncated, tampered or mismatched file raises a `CheckpointError` (a ValueError)
that names the file, the problem and, for a checksum mismatch, the newest intact checkpoint beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import pickle
import re
import warnings
from collections.abc import Callable
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from minidit.ema import unwrap_model
from minidit.model import model_config, model_from_config

WEIGHTS_FORMAT = "minidit-weights-v1"
STATE_FORMAT = "minidit-state-v1"
DIGEST_KEY = "sha256"  # weights: a metadata entry; state: a top-level key of the saved dict
_TMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")  # what atomic_write leaves after a kill


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, foreign, damaged or not fitting the model."""


class ChecksumError(CheckpointError):
    """A checkpoint whose contents no longer match the checksum written with it."""


def atomic_write(path: str | os.PathLike, write: Callable[[pathlib.Path], None]) -> pathlib.Path:
    """Call write(tmp) on a temporary path next to `path`, then rename it to `path`.

    If write raises (or the process dies), `path` keeps its old content and the temporary file is
    removed (or, after a kill, left behind as `.<name>.<pid>.tmp`, which nothing reads and
    `remove_stale_tmp` deletes on the next start).
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:  # flush to disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def remove_stale_tmp(*folders: str | os.PathLike) -> list[pathlib.Path]:
    """Delete the `.<name>.<pid>.tmp` files that killed saves left in `folders`; returns what was removed.

    A file whose pid is a live process other than this one is kept: that process may be writing it.
    """
    removed = []
    for folder in map(pathlib.Path, folders):
        if not folder.is_dir():
            continue
        for tmp in folder.glob(".*.tmp"):
            match = _TMP_NAME.match(tmp.name)
            if match is None or not tmp.is_file():
                continue
            pid = int(match["pid"])
            if pid != os.getpid() and _pid_alive(pid):
                continue
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, someone else's; otherwise we cannot tell, so keep the file
        return True
    return True


def writable_target(path: str | os.PathLike, what: str = "output") -> pathlib.Path:
    """Check, before any work, that a file can be written at `path`; ValueError saying why not.

    The path must not be a folder, its nearest existing ancestor must be a writable folder, and
    nothing on the way may be a file (atomic_write creates missing folders).
    """
    path = pathlib.Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is an existing folder; give a file path instead")
    return _writable_folder(path.parent, what, path)


def writable_folder(folder: str | os.PathLike, what: str = "output folder") -> pathlib.Path:
    """Check, before any work, that `folder` is (or can be created as) a writable folder; ValueError if not."""
    folder = pathlib.Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{what} {folder} is a file, not a folder; pick another path")
    return _writable_folder(folder, what, folder)


def _writable_folder(folder: pathlib.Path, what: str, target: pathlib.Path) -> pathlib.Path:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{what} {target}: {existing} is a file, so no folder can be made there")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {target}: no permission to write in {existing}; pick a folder you can write to")
    return target


def atomic_write_json(path: str | os.PathLike, obj: Any) -> pathlib.Path:
    """Write obj as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, allow_nan=True) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def _model_config(model: nn.Module) -> dict:

    return model_config(unwrap_model(model))


def build_model(model_config: dict) -> nn.Module:
    """A freshly initialised DiT from the dict `minidit.model.model_config` returned."""

    return model_from_config(model_config)


def _load_into(module: nn.Module, state_dict: dict, path: pathlib.Path, what: str) -> None:
    try:
        unwrap_model(module).load_state_dict(state_dict, strict=True)
    except RuntimeError as err:  # missing / unexpected keys or wrong shapes
        raise CheckpointError(f"checkpoint {path}: the {what} does not match this model ({err})") from None


# ----------------------------------------------------------------------------- checksums


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    """The raw bytes of t (any dtype, incl. bf16), without a copy when t is a contiguous CPU tensor."""
    return memoryview(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy())


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors' names, dtypes, shapes and bytes, in name order (what a weights file carries)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def _update_digest(h, obj) -> None:
    """Feed a nested state (dicts, lists, tensors, plain values) into h, in a fixed order."""
    if isinstance(obj, torch.Tensor):
        h.update(f"T{obj.dtype}{tuple(obj.shape)}:".encode())
        h.update(_tensor_bytes(obj))
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}:".encode())
        for key in sorted(obj, key=repr):
            h.update(f"{key!r}=".encode())
            _update_digest(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}:".encode())
        for item in obj:
            _update_digest(h, item)
    else:
        h.update(f"V{type(obj).__name__}:{obj!r};".encode())


def state_digest(state: dict) -> str:
    """sha256 over every tensor and value of a state dict except its own digest entry."""
    h = hashlib.sha256()
    _update_digest(h, {k: v for k, v in state.items() if k != DIGEST_KEY})
    return h.hexdigest()


def _newest_intact_hint(path: pathlib.Path) -> str:
    good = newest_intact_weights(path)
    return (
        f"the newest intact checkpoint beside it is {good}"
        if good is not None
        else "no intact checkpoint was found beside it"
    )


def _checksum_failed(path: pathlib.Path) -> ChecksumError:
    return ChecksumError(
        f"{path} failed its checksum: its contents changed after it was written (disk, copy or "
        f"transfer damage), so it cannot be trusted; {_newest_intact_hint(path)}"
    )


def _unreadable(path: pathlib.Path, err: Exception, what: str = "could not be read") -> CheckpointError:
    return CheckpointError(f"{path} {what} (corrupt or truncated?): {err}; {_newest_intact_hint(path)}")


def _no_digest_warning(path: pathlib.Path) -> None:
    warnings.warn(f"{path} carries no checksum (written by an older minidit), so it cannot be verified", stacklevel=3)


def verify_weights(path: str | os.PathLike) -> bool | None:
    """True if a weights file matches its checksum, False if not (or it is unreadable), None if it has none."""

    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            expected = (f.metadata() or {}).get(DIGEST_KEY)
            if expected is None:
                return None
            return tensors_digest({k: f.get_tensor(k) for k in f.keys()}) == expected
    except Exception:  # unreadable: not intact
        return False


def newest_intact_weights(path: str | os.PathLike) -> pathlib.Path | None:
    """The newest verified *.safetensors beside `path` (its folder or that folder's checkpoints/), else None."""
    path = pathlib.Path(path)
    folders = (path.parent, path.parent / "checkpoints")
    candidates = sorted(
        {f for d in folders if d.is_dir() for f in d.glob("*.safetensors") if f != path},
        key=lambda f: (int(f.stem) if f.stem.isdigit() else -1, f.stat().st_mtime),
        reverse=True,
    )
    return next((f for f in candidates if verify_weights(f)), None)


# ----------------------------------------------------------------------------- weights


def save_weights(
    path: str | os.PathLike, model: nn.Module, ema: nn.Module | None = None, config: dict | None = None
) -> pathlib.Path:
    """Save the raw model (and the EMA) as safetensors, with the config as JSON metadata.

    config: JSON-able; `model_config` (what `load_weights` rebuilds the model from) is added from
    the model when absent. Tensors are copied to the CPU; the file is written atomically.
    """
    config = dict(config or {})
    config.setdefault("model_config", _model_config(model))
    tensors = {}
    for prefix, module in (("model", model), ("ema", ema)):
        if module is not None:  # copies: safetensors refuses tensors that share memory
            tensors.update(
                {
                    f"{prefix}.{k}": v.detach().to("cpu", copy=True).contiguous()
                    for k, v in unwrap_model(module).state_dict().items()
                }
            )
    metadata = {
        "format": WEIGHTS_FORMAT,
        "config": json.dumps(config),
        "has_ema": str(ema is not None),
        DIGEST_KEY: tensors_digest(tensors),
    }

    return atomic_write(path, lambda tmp: safetensors.torch.save_file(tensors, str(tmp), metadata=metadata))


def read_weights_config(path: str | os.PathLike) -> dict:
    """The config stored in a weights file's metadata (reads the header only)."""
    path = _existing(path)

    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as err:
        raise _unreadable(path, err, "is not a readable safetensors file") from None
    if metadata.get("format") != WEIGHTS_FORMAT or "config" not in metadata:
        raise CheckpointError(
            f"{path} is a safetensors file but not a minidit weights file (no {WEIGHTS_FORMAT} metadata)"
        )
    return json.loads(metadata["config"])


def load_weights(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[nn.Module, nn.Module | None, dict]:
    """Load a weights file -> (model, ema or None, config), both models in eval mode on `device`.

    The tensors are checked against the file's sha256 first (ChecksumError naming the newest intact
    checkpoint beside it on a mismatch).
    """
    config = read_weights_config(path)
    path = pathlib.Path(path)

    try:
        tensors = safetensors.torch.load_file(str(path), device="cpu")
        with safetensors.safe_open(str(path), framework="pt") as f:
            expected = (f.metadata() or {}).get(DIGEST_KEY)
    except Exception as err:
        raise _unreadable(path, err) from None
    if expected is None:
        _no_digest_warning(path)
    elif tensors_digest(tensors) != expected:
        raise _checksum_failed(path)
    parts: dict[str, dict] = {"model": {}, "ema": {}}
    for key, value in tensors.items():
        prefix, _, name = key.partition(".")
        if prefix not in parts:
            raise CheckpointError(f"{path}: unexpected tensor {key!r} (expected 'model.*' or 'ema.*')")
        parts[prefix][name] = value
    models = []
    for prefix in ("model", "ema"):
        if not parts[prefix]:
            models.append(None)
            continue
        module = build_model(config["model_config"]).to(device)
        _load_into(module, parts[prefix], path, f"{prefix} weights")
        models.append(module.eval())
    if models[0] is None:
        raise CheckpointError(f"{path} holds no model weights")
    return models[0], models[1], config


# ----------------------------------------------------------------------------- resumable state


def save_state(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    ema: nn.Module | None = None,
    rng: dict | None = None,
    config: dict | None = None,
    extra: dict | None = None,
) -> pathlib.Path:
    """Save everything a run needs to continue bit-for-bit, atomically (torch.save format).

    rng: RNG states as tensors (e.g. {"torch": torch.get_rng_state(), "data": generator.get_state()}).
    config: JSON-able training config, compared on resume. extra: more tensors / plain values.
    """
    state = {
        "format": STATE_FORMAT,
        "step": int(step),
        "model": unwrap_model(model).state_dict(),
        "ema": None if ema is None else unwrap_model(ema).state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": rng or {},
        "config": config or {},
        "model_config": _model_config(model),
        "extra": extra or {},
    }
    state[DIGEST_KEY] = state_digest(state)
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(
    path: str | os.PathLike,
    *,
    model: nn.Module | None = None,
    ema: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    map_location: str | torch.device = "cpu",
) -> dict:
    """Read a state file and load it into the modules / optimiser given; returns the whole dict.

    Raises CheckpointError (a ValueError) when the file is corrupt, fails its checksum, is not a
    minidit state, or does not fit the model (readability, format and checksum are checked before
    anything is loaded into the modules).
    """
    path = _existing(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        if found is None:
            raise _unreadable(path, err) from None
        raise CheckpointError(
            f"{path} was refused: it asks to run code or build objects ({found[1]}) that a minidit state never "
            "holds, so it is not one (or it was tampered with); nothing in it was run. Load only files you trust"
        ) from None
    except Exception as err:  # truncated zip, bad pickle, ...
        raise _unreadable(path, err) from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not a minidit training state (expected format {STATE_FORMAT!r})")
    if DIGEST_KEY not in state:
        _no_digest_warning(path)
    elif state_digest(state) != state[DIGEST_KEY]:
        raise _checksum_failed(path)
    if model is not None:
        expected = _model_config(model)
        if state["model_config"] != expected:
            raise CheckpointError(
                f"checkpoint {path} was written for model {state['model_config']}, but this run builds {expected}"
            )
        _load_into(model, state["model"], path, "model")
    if ema is not None:
        if state["ema"] is None:
            raise CheckpointError(f"checkpoint {path} has no EMA weights")
        _load_into(ema, state["ema"], path, "EMA")
    if optimizer is not None:
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, RuntimeError) as err:
            raise CheckpointError(f"checkpoint {path}: the optimiser state does not fit this model ({err})") from None
    return state


def _existing(path: str | os.PathLike) -> pathlib.Path:
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path
