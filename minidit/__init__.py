"""minidit: a small, paper-faithful Diffusion Transformer (Peebles & Xie, ICCV 2023) for teaching.

The core, read module by module in the order of the notebooks:

    data.py        Fashion-MNIST as one uint8 tensor, padded to 32x32
    diffusion.py   forward noising, losses, reverse process, samplers      (notebooks 01-02)
    embeddings.py  patchify, 2D sin-cos positions, timestep/label embeddings (notebook 03)
    blocks.py      the four conditioning blocks of DiT §3.2                 (notebook 04)
    model.py       DiT, the 12 configs, classifier-free guidance           (notebooks 05-06)
    flops.py       the paper's Gflops column, analytically;  official.py: loading the official weights
    ema.py         the EMA of the weights;  step.py: one fast training step (notebook 08)
    train.py       the training loop (runs.py: its folder, resumable state and processes)
    sample.py      sampling: DDPM / DDIM, guidance, PNG grids and .npz files
    latent.py      a KL autoencoder and the latent space DiT diffuses in   (notebook 10)
    checkpoint.py, device.py, cli.py   files written safely, devices and autocast, the command lines

Beside it, each in its folder, and importing only the core (tests/test_layering.py):

    evaluation/    FID and the metrics beyond it, the evaluator network    (notebook 07)
    superres/      DiT conditioned on an image                             (notebook 09)
    course/        the exercise switch, grading and its sandbox
    tools/         benchmark, scaling and experiment runners (the README's numbers); never imported by the rest

Names are imported lazily, so `import minidit` stays quick.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "get_device": "minidit.device",
    "load_fashion_mnist": "minidit.data",
    "CLASS_NAMES": "minidit.data",
    "create_diffusion": "minidit.diffusion",
    "GaussianDiffusion": "minidit.diffusion",
    "DiT": "minidit.model",
    "DiT_models": "minidit.model",
    "create_model": "minidit.model",
    "dit_gflops": "minidit.flops",
    "load_official_dit": "minidit.official",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(_EXPORTS[name])
        return module if module.__name__.endswith("." + name) else getattr(module, name)
    raise AttributeError(f"module 'minidit' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
