"""Pick the fastest available torch device: CUDA, then Apple's MPS, then the CPU."""

from __future__ import annotations

import torch

_KNOWN = ("cuda", "mps", "cpu")


def get_device(prefer: str | torch.device | None = None) -> torch.device:
    """Return the device to run on.

    Args:
        prefer: None picks cuda > mps > cpu; otherwise a device string such as "cpu" or "cuda:1"
            that must be available on this machine.
    """
    if prefer is not None:
        try:
            device = torch.device(prefer)
        except RuntimeError:  # torch's own message lists twenty device types minidit does not run on
            raise ValueError(f"unknown device {prefer!r}; expected one of {_KNOWN} (e.g. 'cuda:1')") from None
        if device.type not in _KNOWN:
            raise ValueError(f"unknown device type {device.type!r}; expected one of {_KNOWN}")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for, but torch sees no CUDA GPU here")
        if device.type == "mps" and not _mps_available():
            raise ValueError("device 'mps' was asked for, but this torch has no MPS backend available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
