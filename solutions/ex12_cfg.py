"""ex12: label dropout and classifier-free guidance (about 30 minutes).

Classifier-free guidance (Ho & Salimans 2022; DiT §3.1) needs one network that predicts the noise
both with and without the label. Training gets the unconditional model for free by replacing
labels, at random with probability dropout_prob (DiT: 0.1), with a "null" label, index
num_classes, which has its own row in the embedding table. Sampling runs both predictions and
extrapolates from the unconditional one towards the conditional one:

    eps = eps_uncond + cfg_scale * (eps_cond - eps_uncond)        (Ho & Salimans Eq. 6)

DiT does both predictions in one forward pass over a doubled batch, and guides only the noise
channels: a learned-variance model's last C channels keep the conditional prediction.

Write the three functions, then check them:   pytest exercises -k ex12
Notebook: 06_classifier_free_guidance.   minidit's version: LabelEmbedder.token_drop in
minidit/embeddings.py; cfg_combine and DiT.forward_with_cfg in minidit/model.py
"""

from __future__ import annotations

import torch


def token_drop(labels: torch.Tensor, num_classes: int, dropout_prob: float,
               force_drop_ids: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace some labels by the null label num_classes (label dropout, DiT §3.1).

    Args:
        labels: (N,) long class labels in [0, num_classes).
        num_classes: the number of real classes; the null label is num_classes.
        dropout_prob: the probability that each label is dropped, independently.
        force_drop_ids: optional (N,); when given, exactly the rows with force_drop_ids == 1 are
            dropped and nothing is random (sampling with guidance uses this).
        generator: optional torch.Generator for the random draw (pass it to torch.rand).

    Returns:
        (N,) long, the labels with the dropped ones set to num_classes.

    Hint: torch.rand(N, generator=generator, device=labels.device) < dropout_prob, then torch.where.
    """
    if force_drop_ids is None:
        drop = torch.rand(labels.shape[0], device=labels.device, generator=generator) < dropout_prob  # (N,)
    else:
        drop = force_drop_ids == 1  # (N,)
    return torch.where(drop, torch.full_like(labels, num_classes), labels)


def cfg_combine(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    """The classifier-free guidance combination (Ho & Salimans 2022, Eq. 6).

    Args:
        eps_cond, eps_uncond: (N, C, H, W) noise predictions with and without the label.
        cfg_scale: s; 1 gives eps_cond, 0 gives eps_uncond, s > 1 pushes towards the label.

    Returns:
        (N, C, H, W) eps_uncond + cfg_scale * (eps_cond - eps_uncond).
    """
    return eps_uncond + cfg_scale * (eps_cond - eps_uncond)


def forward_with_cfg(model, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, cfg_scale: float,
                     guided_channels: int | None = None) -> torch.Tensor:
    """A guided prediction from one batched forward pass (DiT §3.1; minidit's DiT.forward_with_cfg).

    Args:
        model: a DiT; model(x, t, y, force_drop_ids=...) -> (M, C_out, H, W), and model.in_channels is C.
        x: (N, C, H, W) noisy images; t: (N,) timesteps; y: (N,) labels.
        cfg_scale: the guidance scale s.
        guided_channels: how many leading eps channels are guided; None means all C of them.

    Returns:
        (N, C_out, H, W): channels [0, guided) are cfg_combine(cond, uncond, cfg_scale); all the
        others (the unguided eps channels and, with learned sigma, the C variance channels) are the
        conditional prediction.

    Hint: run the model once on the doubled batch [x; x], [t; t], [y; y] with
    force_drop_ids = [0] * N + [1] * N, then .chunk(2) gives (cond, uncond).
    """
    n = x.shape[0]
    guided = model.in_channels if guided_channels is None else guided_channels
    drop = torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)]).to(y.device)  # (2N,)
    out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, y]), force_drop_ids=drop)  # (2N, C_out, H, W)
    cond, uncond = out.chunk(2, dim=0)  # (N, C_out, H, W) each
    eps = cfg_combine(cond[:, :guided], uncond[:, :guided], cfg_scale)  # (N, guided, H, W)
    return torch.cat([eps, cond[:, guided:]], dim=1)  # (N, C_out, H, W)
