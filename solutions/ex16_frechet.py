"""ex16 (optional): the Fréchet distance between two Gaussians, the heart of FID (about 25 minutes).

FID fits a Gaussian to the evaluator's features of real and of generated images and reports the
Fréchet (2-Wasserstein) distance between the two (Heusel et al. 2017, Eq. 6; DiT reports FID-50K):

    d^2 = ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))

sigma1 sigma2 is not symmetric, but it has the same eigenvalues as the symmetric positive
semi-definite M = s1 sigma2 s1 with s1 = sigma1^(1/2); so tr((sigma1 sigma2)^(1/2)) is the sum of
the square roots of M's eigenvalues, and two calls of np.linalg.eigh replace scipy's sqrtm.

Write frechet_distance, then check it:   pytest exercises -k ex16
Notebook: 07_evaluation.   minidit's version: minidit/evaluation/metrics.py
"""

from __future__ import annotations

import numpy as np


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """The squared Fréchet distance d^2 between N(mu1, sigma1) and N(mu2, sigma2) (FID's formula).

    Args:
        mu1, mu2: (D,) means (numpy arrays or CPU tensors).
        sigma1, sigma2: (D, D) symmetric positive semi-definite covariances.

    Returns:
        d^2 as a Python float (>= 0 up to round-off). FID is this number, not its square root.

    Hint: the square root of a symmetric PSD matrix from eigh: V diag(sqrt(max(w, 0))) V^T.
    Work in float64.
    """
    mu1, mu2, sigma1, sigma2 = (np.asarray(v, dtype=np.float64) for v in (mu1, mu2, sigma1, sigma2))
    diff = mu1 - mu2  # (D,)
    evals, evecs = np.linalg.eigh(sigma1)
    sqrt_sigma1 = (evecs * np.sqrt(np.clip(evals, 0, None))) @ evecs.T  # (D, D)
    m = sqrt_sigma1 @ sigma2 @ sqrt_sigma1  # (D, D), symmetric PSD
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)
