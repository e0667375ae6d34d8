"""Sample-quality metrics: the paper's suite and what it lacks, in a feature space that fits the data.

DiT reports FID-50K, sFID, Inception Score, precision and recall (DiT §4 "Evaluation metrics", Table 2),
all computed with ADM's evaluator on ImageNet Inception-v3 features. Here the same quantities are
computed on the features of a small Fashion-MNIST classifier (`minidit.evaluation.evaluator`):

    FID        Fréchet distance between Gaussians fitted to pooled features   (Heusel et al. 2017)
    sFID       the same on an intermediate *spatial* feature map              (Nash et al. 2021)
    IS         exp E_x KL(p(y|x) || p(y)) on the classifier's logits          (Salimans et al. 2016)
    KID        unbiased MMD^2 with a cubic polynomial kernel, over subsets    (Bińkowski et al. 2018)
    precision / recall   k-NN manifold estimates, k = 3                       (Kynkäänniemi et al. 2019)
    density / coverage   k-NN ball counts, k = 5                              (Naeem et al. 2020)
    class accuracy       does a sample generated for class y look like a y?
    per-class FID        FID of each class's samples against that class's real images

Feature-level functions take (N, D) tensors or arrays and know nothing about images, so they can be
checked on point clouds with known answers (tests/test_metrics.py). `compute_features` and
`evaluation_report` run the evaluator on images in [-1, 1] and always put the real-vs-real floor
(test split against the same train reference, same sample count) beside the model's numbers.
Distances and covariances are computed in float64: FID and k-NN radii are differences of large numbers.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from minidit.data import CLASS_NAMES, load_fashion_mnist, to_model_range
from minidit.device import get_device
from minidit.evaluation.evaluator import evaluator_info, load_evaluator

# ----------------------------------------------------------------------------- input checks


def _float64_device(device) -> torch.device:
    """Where float64 work can run: `device`, except Apple's MPS, which has no float64 (the CPU instead)."""
    device = torch.device(device)
    return torch.device("cpu") if device.type == "mps" else device


def _as_features(x, name: str, min_samples: int = 2, device=None) -> torch.Tensor:
    """x: (N, D) features as a tensor or array -> float64 tensor on `device` (default: x's), after checking it."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array of shape (N, D), got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (N, D), got {tuple(x.shape)}")
    if not (x.dtype.is_floating_point or x.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if x.shape[0] < min_samples:
        raise ValueError(f"{name} has {x.shape[0]} samples; this metric needs at least {min_samples}")
    x = x.to(device=_float64_device(device if device is not None else x.device), dtype=torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def check_labels(labels, n: int, num_classes: int, name: str = "labels") -> torch.Tensor:
    """labels: (n,) integer class indices in [0, num_classes) (tensor, array or list) -> int64 tensor; else ValueError.

    Float labels are refused rather than truncated (2.7 would silently become class 2).
    """
    if isinstance(labels, np.ndarray):
        labels = torch.from_numpy(labels)
    labels = torch.as_tensor(labels)
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(
            f"{name} must be integer class indices, got dtype {labels.dtype} (floats are not truncated "
            "silently; convert whole-number labels with .long() / .astype(int))"
        )
    if labels.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), one per sample, got {tuple(labels.shape)}")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"{name} must be class indices in [0, {num_classes - 1}], got values in "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )
    return labels.long()


def _same_dim(a: torch.Tensor, b: torch.Tensor, names=("real", "fake")) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{names[0]} and {names[1]} features differ in dimension: {a.shape[1]} vs {b.shape[1]}")


# ----------------------------------------------------------------------------- FID and sFID


def feature_statistics(features) -> tuple[torch.Tensor, torch.Tensor]:
    """features: (N, D) -> (mu (D,), sigma (D, D)), float64; sigma is the unbiased (N - 1) covariance."""
    x = _as_features(features, "features")
    mu = x.mean(0)  # (D,)
    xc = x - mu
    return mu, xc.T @ xc / (x.shape[0] - 1)  # (D, D)


def _sym_sqrt(sigma: torch.Tensor) -> torch.Tensor:
    """sigma: (D, D) symmetric PSD -> its PSD square root, via eigh (negative round-off eigenvalues -> 0)."""
    evals, evecs = torch.linalg.eigh(sigma)
    return (evecs * evals.clamp(min=0).sqrt()) @ evecs.T


def trace_sqrt_product(sigma1: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """tr((sigma1 sigma2)^(1/2)) for PSD sigma1, sigma2: (D, D).

    sigma1 sigma2 is not symmetric, but it is similar to M = s1 sigma2 s1 with s1 = sigma1^(1/2), which is
    symmetric PSD; similar matrices share eigenvalues, so the trace is sum sqrt(eig(M)). Two `eigh` calls
    in float64 replace scipy.linalg.sqrtm and never produce complex round-off.
    """
    s1 = _sym_sqrt(sigma1)
    m = s1 @ sigma2 @ s1
    m = (m + m.T) / 2  # symmetric up to round-off; make it exactly so for eigvalsh
    return torch.linalg.eigvalsh(m).clamp(min=0).sqrt().sum()


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    mu1, mu2: (D,) means; sigma1, sigma2: (D, D) covariances.
    d^2 = ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))   (Heusel et al. 2017, Eq. 6)
    """
    mu1, mu2, sigma1, sigma2 = (torch.as_tensor(v, dtype=torch.float64) for v in (mu1, mu2, sigma1, sigma2))
    d = mu1.shape[-1]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"expected mu1, mu2 of shape (D,) and sigma1, sigma2 of shape (D, D); got {tuple(mu1.shape)}, "
            f"{tuple(mu2.shape)}, {tuple(sigma1.shape)}, {tuple(sigma2.shape)}"
        )
    sigma2 = sigma2.to(sigma1.device)
    diff = mu1 - mu2.to(mu1.device)
    value = diff @ diff + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt_product(sigma1, sigma2)
    return max(float(value), 0.0)  # round-off can leave -1e-12 for identical inputs


def fid_from_features(real, fake) -> float:
    """real: (N, D), fake: (M, D) features -> Fréchet distance between their fitted Gaussians (FID or sFID)."""
    real, fake = _as_features(real, "real"), _as_features(fake, "fake")
    _same_dim(real, fake)
    return frechet_distance(*feature_statistics(real), *feature_statistics(fake.to(real.device)))


def bootstrap_fid(
    real, fake, fake_logits=None, fake_labels=None, num: int = 200, seed: int = 0, level: float = 0.95
) -> dict:
    """How much FID (and class accuracy) move when the generated samples are redrawn: a bootstrap.

    real: (N, D), fake: (M, D) features; fake_logits (M, K) and fake_labels (M,) add class accuracy.
    Each of `num` replicates resamples the M fake rows with replacement (the reference stays fixed:
    it is common to every model compared). The indices come from `seed` and M alone, so two runs
    scored on the same number of samples are resampled alike, and their replicates pair up: with
    common random numbers (same x_T and labels for every model), replicate-wise differences give a
    paired interval for the difference of two models (`paired_interval`). Note a bootstrap FID is
    biased upwards (duplicated rows shrink the covariance); the interval's width is what it is for.
    Returns {"fid_boot": [num floats], "fid_ci": [lo, hi], ...} and the same for class_accuracy.
    """
    if num < 2:
        raise ValueError(f"num (bootstrap replicates) must be >= 2, got {num}")
    real, fake = _as_features(real, "real"), _as_features(fake, "fake")
    _same_dim(real, fake)
    fake = fake.to(real.device)
    mu_r, sigma_r = feature_statistics(real)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(fake), (num, len(fake)), generator=g)  # (num, M), CPU: the same on every device
    out: dict[str, list] = {"fid_boot": []}
    for rows in idx:
        mu_f, sigma_f = feature_statistics(fake[rows.to(fake.device)])
        out["fid_boot"].append(round(frechet_distance(mu_r, sigma_r, mu_f, sigma_f), 5))
    if fake_logits is not None and fake_labels is not None:
        logits = _as_features(fake_logits, "logits", min_samples=1)
        hits = (logits.argmax(1) == torch.as_tensor(fake_labels, device=logits.device)).double().cpu()  # (M,)
        out["class_accuracy_boot"] = [round(float(hits[rows].mean()), 5) for rows in idx]
    for key in list(out):
        name = key.removesuffix("_boot")
        out[f"{name}_ci"] = percentile_interval(out[key], level)
    return out


def percentile_interval(values, level: float = 0.95) -> list[float]:
    """The central `level` interval of bootstrap replicates: [(1 - level) / 2, (1 + level) / 2] quantiles."""
    v = torch.as_tensor(values, dtype=torch.float64)
    lo, hi = torch.quantile(v, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return [float(lo), float(hi)]


def paired_interval(boot_a, boot_b, level: float = 0.95) -> list[float]:
    """Interval of (a - b) from paired bootstrap replicates (same resampled indices for a and b)."""
    a, b = torch.as_tensor(boot_a, dtype=torch.float64), torch.as_tensor(boot_b, dtype=torch.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired replicates must have the same length, got {len(a)} and {len(b)}")
    return percentile_interval(a - b, level)


# ----------------------------------------------------------------------------- IS and class accuracy


def inception_score(logits, splits: int = 10) -> tuple[float, float]:
    """logits: (N, K) classifier logits -> (mean, std) over `splits` of exp E_x KL(p(y|x) || p(y)).

    High when each sample is classified confidently (low entropy p(y|x)) and the classes are used evenly
    (high entropy p(y)); its maximum is K. Salimans et al. 2016, computed on 10 splits as they did
    (after a fixed shuffle, so that the order of the samples does not matter).
    """
    x = _as_features(logits, "logits", min_samples=splits)
    # A fixed shuffle first: samples stored class by class would otherwise put one class in each split.
    x = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0)).to(x.device)]
    log_p = torch.log_softmax(x, dim=1)  # (N, K)
    scores = []
    for part in torch.tensor_split(log_p, splits):
        log_py = torch.logsumexp(part, 0) - math.log(part.shape[0])  # (K,) log of the marginal p(y)
        kl = (part.exp() * (part - log_py)).sum(1)  # (n,)
        scores.append(kl.mean().exp())
    scores = torch.stack(scores)
    return float(scores.mean()), float(scores.std(unbiased=False)) if splits > 1 else 0.0


def class_accuracy(logits, labels) -> float:
    """logits: (N, K), labels: (N,) the classes the samples were generated for -> fraction classified as asked."""
    x = _as_features(logits, "logits", min_samples=1)
    labels = check_labels(labels, x.shape[0], x.shape[1]).to(x.device)
    return float((x.argmax(1) == labels).double().mean())


# ----------------------------------------------------------------------------- KID


def polynomial_mmd2_unbiased(x, y, degree: int = 3, gamma: float | None = None, coef0: float = 1.0) -> float:
    """x: (n, D), y: (m, D) -> unbiased MMD^2 with k(a, b) = (gamma a.b + coef0)^degree, gamma = 1/D by default.

    MMD^2_u = sum_{i != j} k(x_i, x_j) / (n(n-1)) + sum_{i != j} k(y_i, y_j) / (m(m-1)) - 2 sum_{i,j} k(x_i, y_j) / (nm)
    (Gretton et al. 2012, Lemma 6). Dropping the diagonal makes it unbiased, so it can be negative.
    """
    x, y = _as_features(x, "x"), _as_features(y, "y")
    _same_dim(x, y, ("x", "y"))
    y = y.to(x.device)
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    n, m = x.shape[0], y.shape[0]
    k_xx = (gamma * x @ x.T + coef0) ** degree  # (n, n)
    k_yy = (gamma * y @ y.T + coef0) ** degree  # (m, m)
    k_xy = (gamma * x @ y.T + coef0) ** degree  # (n, m)
    value = (
        (k_xx.sum() - k_xx.diagonal().sum()) / (n * (n - 1))
        + (k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
        - 2 * k_xy.sum() / (n * m)
    )
    return float(value)


def kernel_inception_distance(real, fake, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0):
    """real: (N, D), fake: (M, D) -> (mean, std) of the unbiased cubic-kernel MMD^2 over random subsets.

    Each subset draws min(subset_size, N, M) points from each set without replacement (Bińkowski et al. 2018).
    Unlike FID, its estimator is unbiased: its mean does not depend on the number of samples.
    """
    real, fake = _as_features(real, "real"), _as_features(fake, "fake")
    _same_dim(real, fake)
    fake = fake.to(real.device)
    size = min(subset_size, real.shape[0], fake.shape[0])
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(num_subsets):
        i = torch.randperm(real.shape[0], generator=generator)[:size].to(real.device)
        j = torch.randperm(fake.shape[0], generator=generator)[:size].to(real.device)
        values.append(polynomial_mmd2_unbiased(real[i], fake[j]))
    values = torch.tensor(values, dtype=torch.float64)
    return float(values.mean()), float(values.std(unbiased=False)) if num_subsets > 1 else 0.0


# ----------------------------------------------------------------------------- k-NN metrics


def _distance_chunks(a: torch.Tensor, b: torch.Tensor, chunk: int = 1024):
    """Yield (start, (c, M) Euclidean distances from a[start:start + c] to all of b), in float64."""
    b_sq = (b * b).sum(1)  # (M,)
    for start in range(0, a.shape[0], chunk):
        rows = a[start : start + chunk]  # (c, D)
        d2 = (rows * rows).sum(1, keepdim=True) + b_sq - 2 * rows @ b.T  # (c, M)
        yield start, d2.clamp(min=0).sqrt()


def knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """x: (N, D) -> (N,) distance from each point to its k-th nearest neighbour in x, itself excluded."""
    radii = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for start, d in _distance_chunks(x, x):
        radii[start : start + d.shape[0]] = d.topk(k + 1, dim=1, largest=False).values[:, k]  # self is at 0
    return radii


def _prepare_pair(real, fake, k: int, device=None):
    """Check both sets for a k-NN metric, move them to one device and centre them on the real mean."""
    device = get_device(device)
    real = _as_features(real, "real", min_samples=k + 1, device=device)
    fake = _as_features(fake, "fake", min_samples=k + 1, device=device)
    _same_dim(real, fake)
    mean = real.mean(0)  # centring shrinks the norms, so |a|^2 + |b|^2 - 2 a.b loses fewer digits
    return real - mean, fake - mean


def _ball_hits(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor):
    """Yield (start, (c, M) bool): is points[start + i] inside the closed ball of centre j with radius radii[j]?"""
    for start, d in _distance_chunks(points, centres):
        yield start, d <= radii


def precision_recall(real, fake, k: int = 3, device=None) -> dict[str, float]:
    """real: (N, D), fake: (M, D) -> improved precision and recall (Kynkäänniemi et al. 2019, Eq. 1-2).

    Each set's manifold is the union of balls around its points with radius = distance to the k-th nearest
    neighbour. precision: the fraction of fake points inside the real manifold (fidelity); recall: the
    fraction of real points inside the fake manifold (diversity).
    """
    real, fake = _prepare_pair(real, fake, k, device)
    real_radii, fake_radii = knn_radii(real, k), knn_radii(fake, k)
    inside_real = torch.cat([hits.any(1) for _, hits in _ball_hits(fake, real, real_radii)])  # (M,)
    inside_fake = torch.cat([hits.any(1) for _, hits in _ball_hits(real, fake, fake_radii)])  # (N,)
    return {"precision": float(inside_real.double().mean()), "recall": float(inside_fake.double().mean())}


def density_coverage(real, fake, k: int = 5, device=None) -> dict[str, float]:
    """real: (N, D), fake: (M, D) -> density and coverage (Naeem et al. 2020, Eq. 5-6), balls around real points only.

    density = (1 / kM) sum_j #{i : fake_j in B(real_i, r_i)}   -- about 1 for identical distributions,
              above 1 when fakes crowd into dense real regions; not capped at 1 like precision.
    coverage = (1 / N) #{i : some fake_j in B(real_i, r_i)}     -- 1 - 2^-k for identical distributions.
    """
    real, fake = _prepare_pair(real, fake, k, device)
    real_radii = knn_radii(real, k)
    count = torch.zeros((), dtype=torch.float64, device=real.device)
    covered = torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)
    for _, hits in _ball_hits(fake, real, real_radii):  # hits: (c, N)
        count += hits.sum()
        covered |= hits.any(0)
    return {"density": float(count / (k * fake.shape[0])), "coverage": float(covered.double().mean())}


def per_class_fid(real, real_labels, fake, fake_labels, num_classes: int = 10) -> dict[int, float]:
    """real: (N, D) with real_labels (N,), fake: (M, D) with fake_labels (M,) -> {class: FID}; NaN if < 2 samples."""
    real, fake = _as_features(real, "real"), _as_features(fake, "fake")
    _same_dim(real, fake)
    real_labels = check_labels(torch.as_tensor(real_labels).cpu(), real.shape[0], num_classes, "real_labels")
    fake_labels = check_labels(torch.as_tensor(fake_labels).cpu(), fake.shape[0], num_classes, "fake_labels")
    out = {}
    for c in range(num_classes):
        r, f = real[(real_labels == c).to(real.device)], fake[(fake_labels == c).to(fake.device)]
        out[c] = fid_from_features(r, f) if min(len(r), len(f)) >= 2 else float("nan")
    return out


# ----------------------------------------------------------------------------- images -> features -> report


def check_images(images, name: str = "samples") -> torch.Tensor:
    """images: (N, 1, 32, 32) uint8 pixels in [0, 255] or floats in [-1, 1] (tensor or array) -> float32 in [-1, 1].

    Floats must use the model range, and their minimum must go below 0: images in [0, 1] (what
    many libraries produce) would otherwise be scored as uniformly bright and give a meaningless FID.
    Anything else -> ValueError saying which conversion is needed.
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(images).__name__}")
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, 32, 32):
        raise ValueError(f"{name} must have shape (N, 1, 32, 32), got {tuple(images.shape)}")
    if len(images) == 0:
        raise ValueError(f"{name} is empty")
    if images.dtype == torch.uint8:
        return images.float() / 127.5 - 1.0  # minidit.data.to_model_range
    if not images.dtype.is_floating_point:
        raise ValueError(f"{name} must be uint8 pixels in [0, 255] or floats in [-1, 1], got dtype {images.dtype}")
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} holds NaN/inf values (a diverged model?)")
    lo, hi = float(images.min()), float(images.max())
    if lo >= 0 and hi <= 1.001:
        raise ValueError(
            f"{name} spans [{lo:.3g}, {hi:.3g}]: this looks like images in [0, 1], but floats must be in "
            "the model range [-1, 1]; convert them with x * 2 - 1"
        )
    if lo >= 0 and hi <= 255.5:
        raise ValueError(
            f"{name} spans [{lo:.3g}, {hi:.3g}]: this looks like pixels in [0, 255]; pass them as uint8 "
            "or convert them with x / 127.5 - 1"
        )
    if lo < -1.001 or hi > 1.001:  # a little slack for round-off
        raise ValueError(f"{name} must lie in [-1, 1] (the model range), but spans [{lo:.3g}, {hi:.3g}]")
    return images.float().clamp(-1, 1)


_EVALUATORS: dict[str, torch.nn.Module] = {}


def default_evaluator(device=None) -> torch.nn.Module:
    """The committed evaluator on `device`, loaded (and its sha256 checked) once per device."""

    device = get_device(device)
    if str(device) not in _EVALUATORS:
        _EVALUATORS[str(device)] = load_evaluator(device)
    return _EVALUATORS[str(device)]


@torch.no_grad()
def compute_features(images, evaluator=None, batch_size: int = 500, device=None) -> dict[str, torch.Tensor]:
    """images: (N, 1, 32, 32) in [-1, 1] -> {"pool": (N, 256), "spatial": (N, 512), "logits": (N, 10)} on device."""
    images = check_images(images, "images")
    device = get_device(device) if evaluator is None else next(evaluator.parameters()).device
    evaluator = default_evaluator(device) if evaluator is None else evaluator
    parts = [evaluator.features(images[i : i + batch_size].to(device)) for i in range(0, len(images), batch_size)]
    return {key: torch.cat([p[key].float() for p in parts]) for key in parts[0]}


def metrics_from_features(
    real: dict,
    fake: dict,
    real_labels=None,
    fake_labels=None,
    k_pr: int = 3,
    k_dc: int = 5,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict:
    """real, fake: dicts from `compute_features`; labels (N,), (M,) optional -> every metric as a JSON-able dict.

    fake_labels are the classes the samples were generated for (class accuracy, per-class FID need them).
    """

    out = {
        "fid": fid_from_features(real["pool"], fake["pool"]),
        "sfid": fid_from_features(real["spatial"], fake["spatial"]),
    }
    out["inception_score"], out["inception_score_std"] = inception_score(fake["logits"])
    out["kid"], out["kid_std"] = kernel_inception_distance(
        real["pool"], fake["pool"], kid_subsets, kid_subset_size, seed
    )
    device = real["pool"].device
    out.update(precision_recall(real["pool"], fake["pool"], k=k_pr, device=device))
    out.update(density_coverage(real["pool"], fake["pool"], k=k_dc, device=device))
    if fake_labels is not None:
        out["class_accuracy"] = class_accuracy(fake["logits"], fake_labels)
        if real_labels is not None:
            fids = per_class_fid(real["pool"], real_labels, fake["pool"], fake_labels, len(CLASS_NAMES))
            out["per_class_fid"] = {CLASS_NAMES[c]: v for c, v in fids.items()}
            out["per_class_fid_mean"] = float(np.nanmean(list(fids.values())))
    return out


_REFERENCE_CACHE: dict[tuple, tuple[dict, torch.Tensor, object]] = {}


def real_features(split: str, num: int, seed: int = 0, evaluator=None, device=None, data_dir=None):
    """Features of `num` random images of a Fashion-MNIST split (seeded; cached per process) -> (features, labels)."""

    device = get_device(device) if evaluator is None else next(evaluator.parameters()).device
    key = (split, num, seed, id(evaluator), str(device), str(data_dir))
    if key not in _REFERENCE_CACHE:
        data = load_fashion_mnist(split, root=data_dir)
        if num > len(data):
            raise ValueError(f"asked for {num} real images, but the {split} split has {len(data)}")
        idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:num]
        feats = compute_features(to_model_range(data.images[idx]), evaluator, device=device)
        _REFERENCE_CACHE[key] = (feats, data.labels[idx].to(device), evaluator)  # holding it keeps its id unique
    return _REFERENCE_CACHE[key][:2]


def evaluation_report(
    samples,
    labels=None,
    num_reference: int | None = None,
    seed: int = 0,
    evaluator=None,
    device=None,
    data_dir=None,
    kid_subsets: int = 100,
) -> dict:
    """Score generated samples against real data, with the real-vs-real floor beside them.

    samples: (N, 1, 32, 32) floats in [-1, 1] or uint8 pixels (`check_images`); labels: (N,) integer classes
    they were generated for, or None (`check_labels`).
    The reference is `num_reference` (default N) random train images. The floor scores min(N, 10000) random
    test images against the same reference: the best a perfect generator could do with this many samples.
    """

    samples = check_images(samples, "samples")
    n = len(samples)
    if labels is not None:
        labels = check_labels(labels, n, len(CLASS_NAMES))
    n_ref, n_floor = num_reference or n, min(n, 10_000)
    ref, ref_labels = real_features("train", n_ref, seed, evaluator, device, data_dir)
    test, test_labels = real_features("test", n_floor, seed + 1, evaluator, device, data_dir)
    device = ref["pool"].device
    fake = compute_features(samples, evaluator, device=device)
    fake_labels = None if labels is None else labels.to(device)
    common = dict(kid_subsets=kid_subsets, seed=seed)
    return {
        "num_samples": n,
        "num_reference": n_ref,
        "num_floor": n_floor,
        "reference": "train split",
        "floor": "test split vs the same train reference",
        "samples": metrics_from_features(ref, fake, ref_labels, fake_labels, **common),
        "real_floor": metrics_from_features(ref, test, ref_labels, test_labels, **common),
        "evaluator": (
            {k: evaluator_info().get(k) for k in ("sha256", "test_accuracy", "device", "provisional")}
            if evaluator is None
            else "custom"
        ),
        "device": str(device),
        "torch": torch.__version__,
    }
