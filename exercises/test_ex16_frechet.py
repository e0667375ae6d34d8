"""Tests for ex16 (the Fréchet distance).   Run: pytest exercises -k ex16"""

import math

import numpy as np
import pytest
import torch


def _random_covariance(d, seed):
    a = np.random.default_rng(seed).normal(size=(d, 3 * d))
    return a @ a.T / (3 * d)


def _check(got, expected, what, mistakes=()):
    if got is None:
        raise AssertionError("frechet_distance returned None: did you forget to `return`?")
    got = float(got)
    if not math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-8):
        hint = next((h for value, h in mistakes if math.isclose(got, value, rel_tol=1e-6, abs_tol=1e-8)), "")
        raise AssertionError(f"{what}: got {got:.6g} where {expected:.6g} was expected" + (f": {hint}" if hint else ""))


def test_one_dimension_closed_form(impl):
    # In 1D: d^2 = (m1 - m2)^2 + (s1 - s2)^2 with s the standard deviations.
    m1, m2, s1, s2 = 1.0, -0.5, 2.0, 0.5
    got = impl.frechet_distance(np.array([m1]), np.array([[s1**2]]), np.array([m2]), np.array([[s2**2]]))
    expected = (m1 - m2) ** 2 + (s1 - s2) ** 2
    _check(got, expected, "1D Fréchet distance", mistakes=[
        (math.sqrt(expected), "FID is the squared distance d^2: do not take the square root at the end"),
        ((m1 - m2) ** 2 + s1**2 + s2**2 - s1 * s2, "the cross term is 2 tr((sigma1 sigma2)^(1/2)): the factor 2"),
        ((m1 - m2) ** 2 + (s1**2 - s2**2) ** 2, "tr((sigma1 sigma2)^(1/2)) needs a matrix square root"),
    ])


def test_diagonal_covariances(impl):
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 1.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2))
    _check(impl.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)), expected, "Fréchet distance, diagonal covariances")


def test_general_covariances_against_eigenvalues_of_the_product(impl):
    # tr((S1 S2)^(1/2)) = sum of the square roots of the (real, >= 0) eigenvalues of S1 S2.
    d = 6
    s1, s2 = _random_covariance(d, 0), _random_covariance(d, 1)
    mu1, mu2 = np.random.default_rng(2).normal(size=d), np.random.default_rng(3).normal(size=d)
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)).sum()
    expected = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)
    _check(impl.frechet_distance(mu1, s1, mu2, s2), expected, "Fréchet distance, full covariances", mistakes=[
        (float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.trace(s1 @ s2))),
         "the trace of the square root is not the square root of the trace"),
        (float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
               - 2 * np.trace(np.sqrt(np.clip(s1 @ s2, 0, None)))),
         "np.sqrt is elementwise; you need the matrix square root (eigh, as in the hint)"),
    ])


def test_identical_gaussians_and_symmetry(impl):
    d = 5
    s1, s2 = _random_covariance(d, 4), _random_covariance(d, 5)
    mu1, mu2 = np.zeros(d), np.ones(d)
    assert abs(impl.frechet_distance(mu1, s1, mu1, s1)) < 1e-8, "the distance of a Gaussian to itself must be 0"
    _check(impl.frechet_distance(mu1, s1, mu2, s2), float(impl.frechet_distance(mu2, s2, mu1, s1)),
           "d(a, b) vs d(b, a): the distance is symmetric")
    assert isinstance(impl.frechet_distance(mu1, s1, mu2, s2), float), "return a Python float (float(...))"


def test_accepts_tensors(impl):
    s = _random_covariance(3, 6)
    got = impl.frechet_distance(torch.zeros(3), torch.tensor(s), torch.ones(3), torch.tensor(s))
    _check(got, 3.0, "Fréchet distance of two shifted Gaussians given as tensors")


@pytest.mark.parametrize("d", [2, 16])
def test_agrees_with_minidit(impl, ref, d):
    s1, s2 = _random_covariance(d, 7), _random_covariance(d, 8)
    mu1, mu2 = np.random.default_rng(9).normal(size=d), np.random.default_rng(10).normal(size=d)
    _check(impl.frechet_distance(mu1, s1, mu2, s2), ref.frechet_distance(mu1, s1, mu2, s2), f"frechet_distance (D = {d})")
