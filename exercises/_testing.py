"""Helpers for the exercise tests: comparisons whose failure message names the likely mistake.

A failure message's first line is what the progress table shows (`summarize_failure`), so a hint
goes there: "x_t is wrong: <the mistake and its fix>", with the numbers below it.
"""

from __future__ import annotations

import re
from typing import Any
from collections.abc import Callable, Mapping

import numpy as np
import torch


def _tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    return torch.as_tensor(np.asarray(x))


NAN_HINT = ("a square root or log of a negative number, a division by zero, or an index that wrapped around "
            "(t - 1 at t = 0 or t = -1 reads the *last* element)?")


def check(actual: Any, expected: Any, *, what: str, atol: float, rtol: float = 0.0,
          mistakes: Mapping[str, Any] | None = None, nan_hint: str = NAN_HINT) -> None:
    """torch.testing.assert_close, with a diagnosis when it fails.

    what: names the value ("x_t", "betas"); mistakes: hint -> the value that mistake would have
    produced; when `actual` matches one of them, the failure message gives that hint. nan_hint:
    what NaN or inf in `actual` (where `expected` is finite) most likely means here.
    """
    __tracebackhide__ = True  # pytest: show the test's line, not this helper's
    if actual is None:
        raise AssertionError(f"{what} is None: did you forget to `return` it?")
    if not isinstance(actual, (torch.Tensor, np.ndarray, float, int, np.floating)):
        raise AssertionError(f"{what} should be a tensor/array, got {type(actual).__name__}")
    a, e = _tensor(actual), _tensor(expected)
    if tuple(a.shape) != tuple(e.shape):
        for hint, wrong in (mistakes or {}).items():
            if tuple(_tensor(wrong).shape) == tuple(a.shape):
                raise AssertionError(f"{what} has shape {tuple(a.shape)} where {tuple(e.shape)} was expected: {hint}")
        raise AssertionError(f"{what} has shape {tuple(a.shape)} where {tuple(e.shape)} was expected")
    bad = ~torch.isfinite(a.double())
    if bad.any() and torch.isfinite(e.double()).all():
        kinds = " or ".join(k for k, m in (("NaN", a.double().isnan()), ("inf", a.double().isinf())) if m.any())
        raise AssertionError(f"{what} has {kinds} in {int(bad.sum())} of {a.numel()} values where finite numbers "
                             f"were expected: {nan_hint}")
    try:
        torch.testing.assert_close(a.double(), e.double(), atol=atol, rtol=rtol, equal_nan=False)
    except AssertionError as err:
        for hint, wrong in (mistakes or {}).items():
            w = _tensor(wrong).double()
            if w.shape == a.shape and torch.allclose(a.double(), w, atol=max(atol, 1e-6), rtol=max(rtol, 1e-5)):
                raise AssertionError(f"{what} is wrong: {hint}\n\n{err}") from None
        raise AssertionError(f"{what} is wrong.\n\n{err}") from None


def check_shape(actual: Any, shape: tuple[int, ...], *, what: str, hint: str = "") -> None:
    """Fail with a readable message unless `actual` is a tensor/array of exactly this shape."""
    __tracebackhide__ = True  # pytest: show the test's line, not this helper's
    if actual is None:
        raise AssertionError(f"{what} is None: did you forget to `return` it?")
    got = tuple(getattr(actual, "shape", ()))
    if got != tuple(shape):
        raise AssertionError(f"{what} has shape {got} where {tuple(shape)} was expected" + (f": {hint}" if hint else ""))


def call(fn: Callable, *args, what: str, errors: Mapping[str, str], **kwargs) -> Any:
    """fn(*args, **kwargs), turning an exception whose text contains a key of `errors` into a failure
    that gives the hint: a raw "The size of tensor a (5) must match ..." becomes the mistake behind it."""
    __tracebackhide__ = True  # pytest: show the test's line, not this helper's
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise  # a stub: "not started"
    except Exception as err:
        for text, hint in errors.items():
            if text in str(err):
                raise AssertionError(f"{what} raised {type(err).__name__}: {hint}\n\n{type(err).__name__}: {err}") from None
        raise


# A first line that only says that something is wrong, or a raw exception, is not a hint.
_GENERIC = re.compile(r"( is wrong\.$| was expected$|^assert |^AssertionError$|^\w+(Error|Exception): )")


def summarize_failure(message: str) -> tuple[str, bool]:
    """The first line of a failure message, and whether it names a mistake (a hint) rather than only
    saying that a value is wrong. For the progress table."""
    lines = [line.strip() for line in str(message).strip().splitlines() if line.strip()]
    first = lines[0] if lines else "failed"
    first = re.sub(r"^(E\s+)?(AssertionError: )?", "", first)
    return first, not _GENERIC.search(first)


def generator(seed: int = 0) -> torch.Generator:
    """A seeded CPU generator, so every test draws the same small inputs."""
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- block oracles
# Written from the state dict with plain torch ops (no minidit), to check a block independently.

def randomize_(module: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Give every parameter seeded random values (no zero init: every path of the block matters)."""
    g = generator(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


def layer_norm(x: torch.Tensor, sd: Mapping[str, torch.Tensor] | None = None, prefix: str = "") -> torch.Tensor:
    """LayerNorm over the last dim, eps 1e-6, with the affine from sd[prefix + weight/bias] if present."""
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    out = (x - mean) / torch.sqrt(var + 1e-6)
    if sd is not None and prefix + "weight" in sd:
        out = out * sd[prefix + "weight"] + sd[prefix + "bias"]
    return out


def linear(x: torch.Tensor, sd: Mapping[str, torch.Tensor], prefix: str) -> torch.Tensor:
    out = x @ sd[prefix + "weight"].T
    return out + sd[prefix + "bias"] if prefix + "bias" in sd else out


def multi_head_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """q: (N, T, D), k, v: (N, S, D) -> (N, T, D): per head softmax(q k^T / sqrt(D/heads)) v, heads concatenated."""
    n, t, d = q.shape
    hd = d // heads
    outs = []
    for h in range(heads):
        sl = slice(h * hd, (h + 1) * hd)
        weights = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / hd**0.5, dim=-1)  # (N, T, S)
        outs.append(weights @ v[..., sl])  # (N, T, D/heads)
    return torch.cat(outs, dim=-1)


def self_attention(x: torch.Tensor, sd, prefix: str, heads: int) -> torch.Tensor:
    """timm/DiT Attention from its state dict: qkv (D -> 3D, [q, k, v]) and proj."""
    q, k, v = linear(x, sd, prefix + "qkv.").chunk(3, dim=-1)
    return linear(multi_head_attention(q, k, v, heads), sd, prefix + "proj.")


def mlp(x: torch.Tensor, sd, prefix: str) -> torch.Tensor:
    """fc1 -> GELU (tanh approximation) -> fc2."""
    h = linear(x, sd, prefix + "fc1.")
    h = 0.5 * h * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (h + 0.044715 * h**3)))
    return linear(h, sd, prefix + "fc2.")


def check_state_dict_keys(mine: torch.nn.Module, reference: torch.nn.Module, what: str) -> None:
    """Fail, listing the differences, unless both modules have the same parameter names and shapes."""
    __tracebackhide__ = True  # pytest: show the test's line, not this helper's
    a = {k: tuple(v.shape) for k, v in mine.state_dict().items()}
    b = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    if a != b:
        missing = sorted(set(b) - set(a))
        extra = sorted(set(a) - set(b))
        shapes = sorted(f"{k}: {a[k]} vs {b[k]}" for k in set(a) & set(b) if a[k] != b[k])
        raise AssertionError(
            f"{what}'s parameters differ from minidit's (use the names in the docstring, so state dicts load):\n"
            f"  missing: {missing}\n  unexpected: {extra}\n  wrong shape (yours vs expected): {shapes}"
        )


def check_inside_dit(exercise_id: str, block: str, seed: int = 0) -> None:
    """Build a tiny DiT with the checked folder's code switched in (minidit.course.use) and compare it,
    with the same weights, to minidit's own DiT: the student's block really runs inside the model."""
    __tracebackhide__ = True  # pytest: show the test's line, not this helper's
    from minidit import course
    from minidit.model import DiT

    if course.in_release(exercise_id):
        import pytest

        pytest.skip("compares with minidit's own version of the block (it is not in the student release)")

    kwargs = dict(input_size=8, patch_size=4, in_channels=2, hidden_size=32, depth=2, num_heads=4, num_classes=3,
                  block=block)
    reference = randomize_(DiT(**kwargs), seed).eval()
    with course.use("student", exercise_id):
        mine = DiT(**kwargs).eval()
        try:
            mine.load_state_dict(reference.state_dict())
        except RuntimeError as err:
            raise AssertionError(f"minidit's DiT weights do not load into a DiT built with your block: {err}") from None
        g = generator(seed + 1)
        x, t, y = torch.randn(3, 2, 8, 8, generator=g), torch.tensor([0, 10, 999]), torch.tensor([0, 2, 1])
        with torch.no_grad():
            got = mine(x, t, y)
    with torch.no_grad():
        expected = reference(x, t, y)
    check(got, expected, what=f"a DiT ({block}) running your code", atol=1e-4, rtol=1e-4)
