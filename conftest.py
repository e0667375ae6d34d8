"""Shared pytest set-up: the repository root on sys.path, small thread counts, data fixtures."""

from __future__ import annotations

import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

try:
    import torch

    # CI machines have 2 cores: more threads than cores only adds contention. On a machine that is
    # busy with other work, MINIDIT_TEST_THREADS=1 is much faster for these small tensors.
    torch.set_num_threads(int(os.environ.get("MINIDIT_TEST_THREADS", min(2, os.cpu_count() or 1))))
except ImportError:  # pragma: no cover - torch is a hard dependency
    torch = None


def _real_data_dir() -> pathlib.Path | None:
    try:
        from minidit.data import find_data_dir

        return find_data_dir()
    except Exception:
        return None


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> pathlib.Path:
    """The folder with the real Fashion-MNIST .gz files; skips the test when they are not installed."""
    path = _real_data_dir()
    if path is None:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    return path
