"""minidit.evaluation.metrics against closed forms, scipy, brute-force loops and point clouds with known answers;
then, on real Fashion-MNIST, the behaviour every metric must show (worse with corruption, mode dropping)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minidit.evaluation import metrics

# ----------------------------------------------------------------------------- FID


def _random_spd(d: int, seed: int) -> torch.Tensor:
    a = torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def test_frechet_distance_of_commuting_gaussians_matches_closed_form():
    # Covariances diagonal in the same rotated basis commute, and then
    # d^2 = |mu1 - mu2|^2 + sum_i (sqrt(l1_i) - sqrt(l2_i))^2.
    d = 6
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    l1 = torch.tensor([0.5, 1.0, 2.0, 3.0, 0.1, 4.0], dtype=torch.float64)
    l2 = torch.tensor([1.5, 0.2, 2.0, 1.0, 0.9, 0.3], dtype=torch.float64)
    mu1, mu2 = torch.arange(d, dtype=torch.float64), torch.ones(d, dtype=torch.float64)
    expected = float((mu1 - mu2).square().sum() + (l1.sqrt() - l2.sqrt()).square().sum())
    got = metrics.frechet_distance(mu1, q @ torch.diag(l1) @ q.T, mu2, q @ torch.diag(l2) @ q.T)
    assert got == pytest.approx(expected, rel=1e-9), f"FID {got} where the closed form gives {expected}"


def test_fid_of_sampled_gaussians_approaches_closed_form():
    g = torch.Generator().manual_seed(1)
    n, d = 200_000, 3
    s1, s2 = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([0.5, 2.0, 2.0])  # standard deviations
    a = torch.randn(n, d, generator=g) * s1
    b = torch.randn(n, d, generator=g) * s2 + torch.tensor([1.0, 0.0, -1.0])
    expected = 2.0 + float((s1 - s2).square().sum())  # |mu diff|^2 + sum (sqrt(var1) - sqrt(var2))^2
    assert metrics.fid_from_features(a, b) == pytest.approx(expected, abs=0.03)


def test_fid_is_zero_on_identical_sets_and_symmetric():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(500, 16, generator=g), torch.randn(400, 16, generator=g) * 1.3 + 0.2
    assert metrics.fid_from_features(a, a) == pytest.approx(0.0, abs=1e-9)
    assert metrics.fid_from_features(a, b) == pytest.approx(metrics.fid_from_features(b, a), rel=1e-9)


def test_frechet_distance_matches_scipy_sqrtm():
    linalg = pytest.importorskip("scipy.linalg")
    d = 20
    s1, s2 = _random_spd(d, 3), _random_spd(d, 4)  # do not commute
    mu1 = torch.randn(d, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    mu2 = torch.zeros(d, dtype=torch.float64)
    covmean = linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    expected = float(((mu1 - mu2) ** 2).sum() + s1.trace() + s2.trace() - 2 * np.trace(covmean))
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    # and with singular covariances, as when there are fewer samples than feature dimensions
    a = torch.randn(10, d, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    b = torch.randn(12, d, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    (ma, sa), (mb, sb) = metrics.feature_statistics(a), metrics.feature_statistics(b)
    covmean = linalg.sqrtm(sa.numpy() @ sb.numpy()).real
    expected = float(((ma - mb) ** 2).sum() + sa.trace() + sb.trace() - 2 * np.trace(covmean))
    assert metrics.frechet_distance(ma, sa, mb, sb) == pytest.approx(expected, rel=1e-5)


def test_feature_statistics_match_numpy():
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    mu, sigma = metrics.feature_statistics(x)
    torch.testing.assert_close(mu, x.mean(0))
    torch.testing.assert_close(sigma, torch.from_numpy(np.cov(x.numpy(), rowvar=False)))


# ----------------------------------------------------------------------------- IS and class accuracy


def test_inception_score_extremes():
    k = 10
    confident_balanced = 50.0 * F.one_hot(torch.arange(1000) % k, k).double()  # sure of the class, all classes used
    assert metrics.inception_score(confident_balanced, splits=1)[0] == pytest.approx(k, rel=1e-6)
    sorted_by_class = 50.0 * F.one_hot(torch.arange(1000) // 100, k).double()  # as read from class folders
    # 10 splits of a shuffled order hold the classes almost evenly: IS a little under 10, never 1
    assert metrics.inception_score(sorted_by_class)[0] == pytest.approx(k, rel=0.05), "IS must not depend on order"
    one_class = 50.0 * F.one_hot(torch.zeros(1000, dtype=torch.long), k).double()  # mode collapse
    assert metrics.inception_score(one_class)[0] == pytest.approx(1.0, abs=1e-6)
    undecided = torch.zeros(1000, k)  # p(y|x) uniform: no information
    assert metrics.inception_score(undecided) == pytest.approx((1.0, 0.0), abs=1e-9)


def test_class_accuracy():
    logits = F.one_hot(torch.tensor([0, 1, 2, 3]), 10).float()
    assert metrics.class_accuracy(logits, torch.tensor([0, 1, 2, 9])) == 0.75


# ----------------------------------------------------------------------------- KID


def _mmd2_brute_force(x, y, kernel):
    n, m = len(x), len(y)
    kxx = sum(kernel(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(kernel(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(kernel(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return float(kxx + kyy - 2 * kxy)


def test_polynomial_mmd_matches_brute_force_loops():
    g = torch.Generator().manual_seed(9)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64)
    y = torch.randn(9, 3, generator=g, dtype=torch.float64) + 0.5
    expected = _mmd2_brute_force(x, y, lambda a, b: (a @ b / 3 + 1) ** 3)
    assert metrics.polynomial_mmd2_unbiased(x, y) == pytest.approx(expected, rel=1e-10)


def test_kid_is_unbiased_for_identical_distributions():
    # The diagonal-free estimator has expectation exactly 0 when both sets come from one distribution,
    # however few samples there are; the biased (V-statistic) version would be positive on average.
    g = torch.Generator().manual_seed(10)
    values = torch.tensor(
        [
            metrics.polynomial_mmd2_unbiased(torch.randn(20, 4, generator=g), torch.randn(20, 4, generator=g))
            for _ in range(400)
        ]
    )
    mean, stderr = float(values.mean()), float(values.std() / math.sqrt(len(values)))
    assert abs(mean) < 4 * stderr, f"mean MMD^2 {mean:.4g} over 400 trials: {abs(mean) / stderr:.1f} std errors from 0"
    assert (values < 0).any(), "an unbiased MMD^2 estimate must sometimes be negative"


def test_mmd_expectation_matches_closed_form_for_quadratic_kernel():
    # k(a, b) = (a.b + c)^2 gives MMD^2 = tr((S_x - S_y)^2) + 2c |mu_x - mu_y|^2 with S = Sigma + mu mu^T.
    d, c = 2, 1.0
    mu_x, mu_y = torch.tensor([0.0, 0.0]), torch.tensor([0.5, -0.5])
    sd_x, sd_y = torch.tensor([1.0, 1.0]), torch.tensor([1.5, 0.7])
    s_x = torch.diag(sd_x**2) + torch.outer(mu_x, mu_x)
    s_y = torch.diag(sd_y**2) + torch.outer(mu_y, mu_y)
    expected = float(((s_x - s_y) @ (s_x - s_y)).trace() + 2 * c * (mu_x - mu_y).square().sum())
    g = torch.Generator().manual_seed(11)
    values = torch.tensor(
        [
            metrics.polynomial_mmd2_unbiased(
                torch.randn(50, d, generator=g) * sd_x + mu_x,
                torch.randn(50, d, generator=g) * sd_y + mu_y,
                degree=2,
                gamma=1.0,
                coef0=c,
            )
            for _ in range(400)
        ]
    )
    stderr = float(values.std() / math.sqrt(len(values)))
    assert float(values.mean()) == pytest.approx(expected, abs=4 * stderr)


def test_kid_subsets_give_mean_and_std():
    g = torch.Generator().manual_seed(12)
    a, b = torch.randn(300, 8, generator=g), torch.randn(300, 8, generator=g)
    same_mean, same_std = metrics.kernel_inception_distance(a, b, num_subsets=20, subset_size=100)
    far_mean, _ = metrics.kernel_inception_distance(a, b + 1.0, num_subsets=20, subset_size=100)
    assert abs(same_mean) < 3 * same_std + 1e-3 and far_mean > 10 * same_std
    seeded = [metrics.kernel_inception_distance(a, b, 5, 100, seed=3) for _ in range(2)]
    assert seeded[0] == seeded[1], "the same seed must draw the same subsets"


# ----------------------------------------------------------------------------- precision, recall, density, coverage


def test_precision_recall_on_a_line_with_known_answer():
    # Points 0..99 on a line: the 3rd nearest neighbour of an inner point is at distance 2 and of an end point
    # at 3, so the real manifold is [-3, 102]. Fakes at 50..149 -> 53 of them inside (50..102), precision 0.53;
    # by symmetry the fake manifold is [47, 152] and 53 reals (47..99) are inside, recall 0.53.
    real = torch.arange(100, dtype=torch.float64)[:, None]
    fake = real + 50
    assert metrics.precision_recall(real, fake, k=3) == {"precision": 0.53, "recall": 0.53}
    radii = metrics.knn_radii(real, 3)[[0, 1, 50, 99]]
    torch.testing.assert_close(radii, torch.tensor([3.0, 2.0, 2.0, 3.0], dtype=torch.float64))


def _cloud(n, d=8, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_precision_recall_subset_shift_and_collapse():
    real = _cloud(2000, d=2)
    half = real[real[:, 0] < 0]  # a subset that keeps only half of the support
    subset = metrics.precision_recall(real, half)
    assert subset["precision"] == 1.0, "every point of a subset of the real set lies in the real manifold"
    assert 0.5 <= subset["recall"] < 0.6, f"recall {subset['recall']} where about half the real points are covered"
    assert metrics.precision_recall(real, real[:600])["recall"] > 0.95, "a random subset covers the whole support"
    shifted = metrics.precision_recall(real, real + 100.0)
    assert shifted == {"precision": 0.0, "recall": 0.0}
    collapsed = metrics.precision_recall(real, real[:1].repeat(200, 1))  # mode collapse onto one real point
    assert collapsed["precision"] == 1.0 and collapsed["recall"] <= 0.01


def test_precision_recall_same_distribution_is_high_and_symmetric():
    real, fake = _cloud(1000, seed=1), _cloud(1000, seed=2)
    pr = metrics.precision_recall(real, fake)
    assert 0.6 < pr["precision"] <= 1 and 0.6 < pr["recall"] <= 1
    swapped = metrics.precision_recall(fake, real)
    assert swapped == {"precision": pr["recall"], "recall": pr["precision"]}


def test_density_and_coverage_known_values():
    # Naeem et al. 2020 §4: for identical distributions E[density] = 1 and E[coverage] -> 1 - 2^-k (M = N).
    real, fake = _cloud(2000, seed=3), _cloud(2000, seed=4)
    dc = metrics.density_coverage(real, fake, k=5)
    assert dc["density"] == pytest.approx(1.0, abs=0.1)
    assert dc["coverage"] == pytest.approx(1 - 2**-5, abs=0.02)
    assert metrics.density_coverage(real, real + 100.0) == {"density": 0.0, "coverage": 0.0}
    # Fakes crowded into the dense centre: density above 1 (it is not capped like precision), coverage falls.
    crowded = metrics.density_coverage(real, 0.3 * fake)
    assert crowded["density"] > 1.5 and crowded["coverage"] < dc["coverage"] - 0.2


def test_per_class_fid_and_missing_class():
    g = torch.Generator().manual_seed(13)
    real, fake = torch.randn(200, 4, generator=g), torch.randn(200, 4, generator=g)
    labels = torch.arange(200) % 2
    fids = metrics.per_class_fid(real, labels, fake + 5.0 * labels[:, None], labels, num_classes=3)
    assert fids[0] < 1.0 < 4 * 25 * 0.8 < fids[1]  # class 1 is shifted by 5 in each of 4 dims: FID near 100
    assert math.isnan(fids[2])


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: metrics.precision_recall(_cloud(3), _cloud(10)), "at least 4"),
        (lambda: metrics.density_coverage(_cloud(10), _cloud(5)), "at least 6"),
        (lambda: metrics.fid_from_features(_cloud(10, 4), _cloud(10, 5)), "differ in dimension"),
        (lambda: metrics.fid_from_features(torch.randn(10), _cloud(10)), r"shape \(N, D\)"),
        (lambda: metrics.fid_from_features(_cloud(10) * float("nan"), _cloud(10)), "NaN"),
        (lambda: metrics.frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(4), torch.eye(4)), "expected mu1"),
        (lambda: metrics.check_images(torch.rand(2, 1, 32, 32)), r"in \[0, 1\].*x \* 2 - 1"),
        (lambda: metrics.check_images(torch.rand(2, 1, 32, 32) * 255), r"\[0, 255\].*uint8"),
        (lambda: metrics.check_images(torch.rand(2, 1, 32, 32) * 4 - 2), r"must lie in \[-1, 1\]"),
        (lambda: metrics.check_images(torch.full((2, 1, 32, 32), float("nan"))), "NaN"),
        (lambda: metrics.check_images(torch.zeros(2, 1, 32, 32, dtype=torch.int32)), "uint8 pixels"),
        (lambda: metrics.check_images(torch.zeros(2, 3, 32, 32)), r"\(N, 1, 32, 32\)"),
        (lambda: metrics.class_accuracy(torch.zeros(4, 10), torch.zeros(5, dtype=torch.long)), r"shape \(4,\)"),
        (lambda: metrics.class_accuracy(torch.zeros(4, 10), torch.zeros(4)), "integer class indices"),
        (lambda: metrics.class_accuracy(torch.zeros(4, 10), torch.arange(20, 24)), r"\[0, 9\].*\[20, 23\]"),
        (
            lambda: metrics.per_class_fid(
                _cloud(10), torch.zeros(10, dtype=torch.long), _cloud(10), torch.full((10,), 3), num_classes=3
            ),
            "fake_labels.*\\[3, 3\\]",
        ),
    ],
)
def test_bad_input_raises_clear_value_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_uint8_pixels_and_model_range_floats_are_the_same_images():
    pixels = torch.randint(0, 256, (3, 1, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    from minidit.data import to_model_range

    torch.testing.assert_close(metrics.check_images(pixels), to_model_range(pixels), rtol=0, atol=0)
    torch.testing.assert_close(metrics.check_images(pixels.numpy()), metrics.check_images(to_model_range(pixels)))


# ----------------------------------------------------------------------------- real Fashion-MNIST

N_REAL = 1000  # per set: enough for stable orderings, small enough for 2 CPU cores
LOWER_IS_BETTER = ("fid", "sfid", "kid", "per_class_fid_mean")
HIGHER_IS_BETTER = ("inception_score", "precision", "recall", "density", "coverage", "class_accuracy")


@pytest.fixture(scope="module")
def real_sets(fashion_mnist_dir):
    """Evaluator features of 1000 train images (the reference) and 1000 test images with labels."""
    from minidit.data import load_fashion_mnist, to_model_range
    from minidit.evaluation.evaluator import load_evaluator

    evaluator = load_evaluator("cpu")
    g = torch.Generator().manual_seed(0)
    train, test = load_fashion_mnist("train", fashion_mnist_dir), load_fashion_mnist("test", fashion_mnist_dir)
    ref_idx = torch.randperm(len(train), generator=g)[:N_REAL]
    test_order = torch.randperm(len(test), generator=g)
    ref = metrics.compute_features(to_model_range(train.images[ref_idx]), evaluator)
    sets = {
        "evaluator": evaluator,
        "ref": ref,
        "ref_labels": train.labels[ref_idx],
        "x": to_model_range(test.images[test_order]),
        "y": test.labels[test_order],
    }  # all 10k, shuffled
    sets["clean"] = _score(sets, sets["x"][:N_REAL], sets["y"][:N_REAL])
    return sets


def _score(sets, x, y):
    fake = metrics.compute_features(x, sets["evaluator"])
    return metrics.metrics_from_features(sets["ref"], fake, sets["ref_labels"], y, kid_subsets=5, kid_subset_size=500)


def _noise(x, sigma):
    return (x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)


def _blur(x, sigma):
    from minidit.superres.degrade import gaussian_blur

    return gaussian_blur(x, sigma).clamp(-1, 1)


def test_real_vs_real_floor_is_near_perfect(real_sets):
    clean = real_sets["clean"]
    assert clean["fid"] < 2.0 and abs(clean["kid"]) < 0.01, clean
    assert clean["precision"] > 0.8 and clean["recall"] > 0.8 and clean["coverage"] > 0.9, clean
    assert clean["density"] == pytest.approx(1.0, abs=0.15)


@pytest.mark.parametrize("corruption, levels", [("noise", (0.1, 0.3)), ("blur", (0.7, 1.5))])
def test_every_metric_gets_worse_as_real_images_are_corrupted(real_sets, corruption, levels):
    corrupt = {"noise": _noise, "blur": _blur}[corruption]
    x, y = real_sets["x"][:N_REAL], real_sets["y"][:N_REAL]
    scores = [real_sets["clean"]] + [_score(real_sets, corrupt(x, level), y) for level in levels]
    for key in LOWER_IS_BETTER + HIGHER_IS_BETTER:
        values = [s[key] for s in scores]
        worse = values if key in LOWER_IS_BETTER else [-v for v in values]
        assert worse[0] < worse[1] < worse[2], f"{key} should get worse with {corruption} {(0,) + levels}: {values}"


def test_mode_dropping_hurts_recall_and_coverage_but_not_precision(real_sets):
    keep = torch.nonzero(real_sets["y"] < 5).squeeze(1)[:N_REAL]  # five of ten classes, distinct real images
    clean, dropped = real_sets["clean"], _score(real_sets, real_sets["x"][keep], real_sets["y"][keep])
    assert dropped["recall"] < clean["recall"] - 0.2, (clean["recall"], dropped["recall"])
    assert dropped["coverage"] < clean["coverage"] - 0.2, (clean["coverage"], dropped["coverage"])
    assert dropped["precision"] > clean["precision"] - 0.05, (clean["precision"], dropped["precision"])
    assert dropped["class_accuracy"] > clean["class_accuracy"] - 0.05, "each kept image is still a good image"
    assert dropped["fid"] > clean["fid"] + 10, "FID sees that something is wrong, without saying what"
    assert math.isnan(dropped["per_class_fid"]["Sandal"]), "a dropped class has no per-class FID"


# ----------------------------------------------------------------------------- bootstrap intervals (issue [10])


def test_bootstrap_fid_replicates_are_fids_of_resamples_and_pair_up():
    from minidit.evaluation.metrics import bootstrap_fid, fid_from_features, paired_interval

    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(400, 6, generator=g), torch.randn(300, 6, generator=g) + 0.5
    logits, labels = torch.randn(300, 10, generator=g), torch.randint(0, 10, (300,), generator=g)
    out = bootstrap_fid(real, fake, logits, labels, num=30, seed=7)
    # oracle: the replicates are plain FIDs of rows drawn as documented (seed and sample count alone)
    idx = torch.randint(300, (30, 300), generator=torch.Generator().manual_seed(7))
    for k in (0, 17):
        assert out["fid_boot"][k] == pytest.approx(fid_from_features(real, fake[idx[k]]), rel=1e-4)
        assert out["class_accuracy_boot"][k] == pytest.approx(
            float((logits[idx[k]].argmax(1) == labels[idx[k]]).double().mean()), abs=1e-5
        )
    lo, hi = out["fid_ci"]
    assert lo < hi and lo <= sorted(out["fid_boot"])[2] and hi >= sorted(out["fid_boot"])[-3]
    # a second model scored on the same number of samples is resampled alike: replicates pair up
    shifted = bootstrap_fid(real, fake + 1.0, num=30, seed=7)
    gaps = [b - a for a, b in zip(out["fid_boot"], shifted["fid_boot"])]
    lo, hi = paired_interval(shifted["fid_boot"], out["fid_boot"])
    assert min(gaps) == pytest.approx(lo, abs=0.2) and hi <= max(gaps) + 1e-9 and lo > 0
    assert paired_interval([3.0, 4.0, 5.0], [1.0, 2.0, 3.0]) == pytest.approx([2.0, 2.0])
    with pytest.raises(ValueError, match="same length"):
        paired_interval([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="replicates"):
        bootstrap_fid(real, fake, num=1)
