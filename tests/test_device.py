"""Tests of minidit.device.get_device: the order cuda > mps > cpu and clear errors for unavailable devices."""

from __future__ import annotations

import pytest
import torch

import minidit.device as device_mod
from minidit.device import get_device


@pytest.fixture
def fake_backends(monkeypatch):
    """Pretend which accelerators exist, without touching real hardware."""

    def set_available(cuda: bool, mps: bool):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(device_mod, "_mps_available", lambda: mps)

    return set_available


@pytest.mark.parametrize("cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_preference_order(fake_backends, cuda, mps, expected):
    fake_backends(cuda, mps)
    assert get_device() == torch.device(expected)


def test_prefer_overrides_the_order(fake_backends):
    fake_backends(True, True)
    assert get_device("cpu") == torch.device("cpu")
    assert get_device(torch.device("cuda:1")) == torch.device("cuda:1")


def test_unavailable_or_unknown_devices_are_errors(fake_backends):
    fake_backends(False, False)
    with pytest.raises(ValueError, match="cuda"):
        get_device("cuda")
    with pytest.raises(ValueError, match="mps"):
        get_device("mps")
    with pytest.raises((ValueError, RuntimeError)):
        get_device("tpu")
    with pytest.raises(ValueError, match="unknown device type"):
        get_device("meta")


def test_real_machine_gives_a_usable_device():
    dev = get_device()
    assert torch.zeros(2, device=dev).sum().item() == 0
