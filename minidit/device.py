"""Where tensors run: the fastest device (CUDA, then Apple's MPS, then the CPU), autocast, seeded draws."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

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


def autocast(device_type: str, amp_dtype: torch.dtype | None):
    """torch.autocast to amp_dtype (e.g. bf16: matmuls in bf16, weights stay fp32), or nothing for None."""
    return contextlib.nullcontext() if amp_dtype is None else torch.autocast(device_type, dtype=amp_dtype)


def is_compiling() -> bool:
    """True while torch.compile traces the code (a data-dependent check would break its graph there)."""
    return torch.compiler.is_compiling()


def draw(
    sampler: Callable[..., torch.Tensor], *args, generator: torch.Generator | None = None, device=None, **kwargs
) -> torch.Tensor:
    """sampler(*args) (torch.rand, randn, randint, ...) drawn on the generator's device, then moved to `device`.

    Drawing where the generator lives makes a seeded CPU generator give the same numbers on every device.
    """
    where = generator.device if generator is not None else device
    return sampler(*args, generator=generator, device=where, **kwargs).to(device)
