"""Tests for ex07 (the timestep embedding).   Run: pytest exercises -k ex07"""

import math

import torch

from exercises._testing import check, check_shape


def _formula(t: float, dim: int, max_period: float = 10000, order=("cos", "sin"), denominator=None) -> list[float]:
    half = dim // 2
    freqs = [math.exp(-math.log(max_period) * k / (denominator or half)) for k in range(half)]
    parts = {"cos": [math.cos(t * f) for f in freqs], "sin": [math.sin(t * f) for f in freqs]}
    return parts[order[0]] + parts[order[1]] + [0.0] * (dim % 2)


def test_formula(impl):
    t = torch.tensor([0, 1, 10, 999])
    emb = impl.timestep_embedding(t, 16)
    check(emb, [_formula(v, 16) for v in t.tolist()], what="timestep_embedding(t, 16)", atol=1e-5, mistakes={
        "cos first, then sin: the official DiT order (the opposite of the position embedding)":
            [_formula(v, 16, order=("sin", "cos")) for v in t.tolist()],
        "the frequencies are exp(-log(max_period) * k / (dim // 2)), dividing by dim // 2":
            [_formula(v, 16, denominator=16) for v in t.tolist()],
    })


def test_fractional_timesteps_and_max_period(impl):
    t = torch.tensor([0.5, 2.25, 37.8])
    check(impl.timestep_embedding(t, 8, max_period=100), [_formula(v, 8, 100) for v in t.tolist()],
          what="timestep_embedding(t, 8, max_period=100)", atol=1e-5,
          mistakes={"use the max_period argument": [_formula(v, 8) for v in t.tolist()],
                    "t can be fractional: do not round it to an integer": [_formula(round(v), 8, 100) for v in t.tolist()]})


def test_output_is_float32_from_integer_t(impl):
    emb = impl.timestep_embedding(torch.tensor([3, 7]), 10)
    check_shape(emb, (2, 10), what="timestep_embedding(t, 10)")
    assert emb.dtype == torch.float32, f"the embedding has dtype {emb.dtype}; convert t with .float()"


def test_odd_dim_gets_a_zero_column(impl):
    emb = impl.timestep_embedding(torch.tensor([1.0, 5.0]), 9)
    check_shape(emb, (2, 9), what="timestep_embedding(t, 9)", hint="for odd dim append one column of zeros")
    check(emb, [_formula(v, 9) for v in (1.0, 5.0)], what="timestep_embedding(t, 9)", atol=1e-5)


def test_t_zero_is_cos_one_sin_zero(impl):
    emb = impl.timestep_embedding(torch.zeros(1), 12)
    check(emb, [[1.0] * 6 + [0.0] * 6], what="the embedding of t = 0", atol=0)


def test_agrees_with_minidit(impl, ref):
    t = torch.tensor([0.0, 1.0, 17.5, 250.0, 999.0])
    for dim in (256, 33, 2):
        check(impl.timestep_embedding(t, dim), ref.timestep_embedding(t, dim), what=f"timestep_embedding(t, {dim})",
              atol=1e-6)
