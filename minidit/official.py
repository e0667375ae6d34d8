"""Loading the released facebookresearch/DiT weights into a minidit DiT (same function, same keys).

The official ``DiT`` and minidit's ``DiT(block="adaLN-Zero")`` have the same modules under the same
names (``x_embedder.proj``, ``t_embedder.mlp.0/2``, ``y_embedder.embedding_table``, ``pos_embed``,
``blocks.{i}.attn.qkv`` / ``attn.proj`` / ``mlp.fc1`` / ``mlp.fc2`` / ``adaLN_modulation.1``,
``final_layer.linear`` / ``final_layer.adaLN_modulation.1``), so a state dict moves across as is.

    model = load_official_dit("DiT-XL-2-256x256.pt")             # 256x256 images = 32x32 latents
    model = load_official_dit("DiT-XL-2-512x512.pt", input_size=64)

The model works on Stable Diffusion VAE latents (4 channels, 8x smaller than the image). Sampling
the released DiT-XL/2 (optional; needs a GPU, about 2.7 GB of weights, and the `diffusers` package
for the VAE, which minidit does not depend on):

    1. download https://dl.fbaipublicfiles.com/DiT/models/DiT-XL-2-256x256.pt
    2. model = load_official_dit(path).to(device)
    3. diffusion = minidit.create_diffusion("250")
       fn = lambda x, t, y: model.forward_with_cfg(x, t, y, 4.0)   # guided_channels=3: as the official samples
       latents = diffusion.p_sample_loop(fn, (n, 4, 32, 32), model_kwargs={"y": labels}, device=device,
                                         clip_denoised=False)   # latents are not in [-1, 1]: no clipping
    4. vae = diffusers.AutoencoderKL.from_pretrained("stabilityai/sd-vae-ft-ema");
       images = vae.decode(latents / 0.18215).sample   # in [-1, 1]

Notebook 10 (10_latent_diffusion) builds this pipeline at Fashion-MNIST scale -- a KL autoencoder of the
SD VAE's design, its scale factor (0.18215 is 1 / std of the SD VAE's latents), DiT trained on the latents
-- and explains each step: why the latents are scaled, why they are not clipped.
"""

from __future__ import annotations

import argparse
import os
import pickle

import torch
from safetensors.torch import load_file

from minidit.model import DiT, DiT_models, create_model

_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel / torch.compile wrappers


def _load_file(path: str | os.PathLike) -> dict:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"no checkpoint at {path!r}")
    if path.endswith(".safetensors"):
        return load_file(path)
    try:
        # weights_only: only tensors and plain containers are unpickled, no code runs. The official
        # training checkpoints also hold an argparse.Namespace ("args"), which is allowed as data.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path!r} holds pickled objects other than tensors; refusing to unpickle it (weights_only=True). "
            f"Extract its state dict where you trust the file. Original error: {err}"
        ) from err


def _extract_state_dict(obj) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict):
        raise TypeError(f"expected a state dict (dict of tensors), got {type(obj).__name__}")
    for key in ("ema", "model", "state_dict"):  # official training checkpoints: sample with "ema"
        if key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    state_dict = {}
    for key, value in obj.items():
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state dict entry {key!r} is a {type(value).__name__}, not a tensor")
        state_dict[key] = value
    return state_dict


def load_official_dit(
    path_or_state_dict,
    model: str = "DiT-XL/2",
    input_size: int = 32,
    in_channels: int = 4,
    num_classes: int = 1000,
) -> DiT:
    """A minidit DiT computing the same function as the official model whose weights are given.

    path_or_state_dict: a .pt file (read with torch.load(weights_only=True)), a .safetensors file,
    or a state dict; an official training checkpoint's "ema" weights are used if present.
    model: the config name; input_size: latent size (image size / 8); learned sigma and label
    dropout (the null class row) are read from the weights. Returns the model in eval mode on CPU.
    Raises ValueError naming missing/unexpected keys or mismatched shapes.
    """
    obj = path_or_state_dict if isinstance(path_or_state_dict, dict) else _load_file(path_or_state_dict)
    state_dict = _extract_state_dict(obj)

    if model not in DiT_models:
        raise ValueError(f"unknown model {model!r}; expected one of {list(DiT_models)}")
    # Learned sigma and the null label are visible in the weights' shapes.
    learn_sigma, class_dropout_prob = True, 0.1
    final = state_dict.get("final_layer.linear.weight")
    table = state_dict.get("y_embedder.embedding_table.weight")
    p = DiT_models[model].preset["patch_size"]
    if final is not None and final.shape[0] == p * p * in_channels:
        learn_sigma = False
    if table is not None and table.shape[0] == num_classes:
        class_dropout_prob = 0.0

    with torch.device("meta"):  # no memory and no initialisation: every tensor comes from the weights
        net = create_model(
            model,
            input_size=input_size,
            in_channels=in_channels,
            num_classes=num_classes,
            learn_sigma=learn_sigma,
            class_dropout_prob=class_dropout_prob,
            block="adaLN-Zero",
        )
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"state dict does not match {model} (input_size={input_size}, in_channels={in_channels}, "
            f"num_classes={num_classes}): missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
            f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}"
        )
    wrong = [
        f"{k}: expected {tuple(v.shape)}, got {tuple(state_dict[k].shape)}"
        for k, v in expected.items()
        if state_dict[k].shape != v.shape
    ]
    if wrong:
        hint = ""
        if any(k.startswith("pos_embed") for k in wrong):
            hint = " (pos_embed's token count is (input_size / p)^2: is input_size right? 256 px -> 32, 512 px -> 64)"
        raise ValueError(f"shape mismatch for {model}: " + "; ".join(wrong[:8]) + hint)
    copy = isinstance(path_or_state_dict, dict)  # never share memory with the caller's tensors
    weights = {k: v.detach().to(torch.float32, copy=copy) for k, v in state_dict.items()}
    net.load_state_dict(weights, strict=True, assign=True)
    return net.eval()
