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

A corrupt, truncated or mismatched file raises a ValueError that names the file and the problem.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from minidit.ema import unwrap_model

WEIGHTS_FORMAT = "minidit-weights-v1"
STATE_FORMAT = "minidit-state-v1"


def atomic_write(path: str | os.PathLike, write: Callable[[pathlib.Path], None]) -> pathlib.Path:
    """Call write(tmp) on a temporary path next to `path`, then rename it to `path`.

    If write raises (or the process dies), `path` keeps its old content and the temporary file is
    removed (or, after a kill, left behind as `.<name>.<pid>.tmp`, which nothing reads).
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


def atomic_write_json(path: str | os.PathLike, obj: Any) -> pathlib.Path:
    """Write obj as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, allow_nan=True) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def _model_config(model: nn.Module) -> dict:
    from minidit.model import model_config

    return model_config(unwrap_model(model))


def build_model(model_config: dict) -> nn.Module:
    """A freshly initialised DiT from the dict `minidit.model.model_config` returned."""
    from minidit.model import model_from_config

    return model_from_config(model_config)


def _load_into(module: nn.Module, state_dict: dict, path: pathlib.Path, what: str) -> None:
    try:
        unwrap_model(module).load_state_dict(state_dict, strict=True)
    except RuntimeError as err:  # missing / unexpected keys or wrong shapes
        raise ValueError(f"checkpoint {path}: the {what} does not match this model ({err})") from None


# ----------------------------------------------------------------------------- weights


def save_weights(path: str | os.PathLike, model: nn.Module, ema: nn.Module | None = None,
                 config: dict | None = None) -> pathlib.Path:
    """Save the raw model (and the EMA) as safetensors, with the config as JSON metadata.

    config: JSON-able; `model_config` (what `load_weights` rebuilds the model from) is added from
    the model when absent. Tensors are copied to the CPU; the file is written atomically.
    """
    config = dict(config or {})
    config.setdefault("model_config", _model_config(model))
    tensors = {}
    for prefix, module in (("model", model), ("ema", ema)):
        if module is not None:  # copies: safetensors refuses tensors that share memory
            tensors.update({f"{prefix}.{k}": v.detach().to("cpu", copy=True).contiguous()
                            for k, v in unwrap_model(module).state_dict().items()})
    metadata = {"format": WEIGHTS_FORMAT, "config": json.dumps(config), "has_ema": str(ema is not None)}

    from safetensors.torch import save_file

    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def read_weights_config(path: str | os.PathLike) -> dict:
    """The config stored in a weights file's metadata (reads the header only)."""
    path = _existing(path)
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as err:
        raise ValueError(f"{path} is not a readable safetensors file (corrupt or truncated?): {err}") from None
    if metadata.get("format") != WEIGHTS_FORMAT or "config" not in metadata:
        raise ValueError(f"{path} is a safetensors file but not a minidit weights file (no {WEIGHTS_FORMAT} metadata)")
    return json.loads(metadata["config"])


def load_weights(path: str | os.PathLike, device: str | torch.device = "cpu"
                 ) -> tuple[nn.Module, nn.Module | None, dict]:
    """Load a weights file -> (model, ema or None, config), both models in eval mode on `device`."""
    config = read_weights_config(path)
    path = pathlib.Path(path)
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device=str(device))
    except Exception as err:
        raise ValueError(f"{path} could not be read (corrupt or truncated?): {err}") from None
    parts: dict[str, dict] = {"model": {}, "ema": {}}
    for key, value in tensors.items():
        prefix, _, name = key.partition(".")
        if prefix not in parts:
            raise ValueError(f"{path}: unexpected tensor {key!r} (expected 'model.*' or 'ema.*')")
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
        raise ValueError(f"{path} holds no model weights")
    return models[0], models[1], config


# ----------------------------------------------------------------------------- resumable state


def save_state(path: str | os.PathLike, *, model: nn.Module, optimizer: torch.optim.Optimizer, step: int,
               ema: nn.Module | None = None, rng: dict | None = None, config: dict | None = None,
               extra: dict | None = None) -> pathlib.Path:
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
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: str | os.PathLike, *, model: nn.Module | None = None, ema: nn.Module | None = None,
               optimizer: torch.optim.Optimizer | None = None, map_location: str | torch.device = "cpu") -> dict:
    """Read a state file and load it into the modules / optimiser given; returns the whole dict.

    Raises ValueError when the file is corrupt, not a minidit state, or does not fit the model.
    """
    path = _existing(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, bad pickle, ...
        raise ValueError(f"checkpoint {path} could not be read (corrupt or truncated?): {err}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a minidit training state (expected format {STATE_FORMAT!r})")
    if model is not None:
        expected = _model_config(model)
        if state["model_config"] != expected:
            raise ValueError(
                f"checkpoint {path} was written for model {state['model_config']}, "
                f"but this run builds {expected}"
            )
        _load_into(model, state["model"], path, "model")
    if ema is not None:
        if state["ema"] is None:
            raise ValueError(f"checkpoint {path} has no EMA weights")
        _load_into(ema, state["ema"], path, "EMA")
    if optimizer is not None:
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, RuntimeError) as err:
            raise ValueError(f"checkpoint {path}: the optimiser state does not fit this model ({err})") from None
    return state


def _existing(path: str | os.PathLike) -> pathlib.Path:
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path
