"""minidit.ema: the foreach EMA update against its closed form, the official loop, and the warm-up rule."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from minidit.ema import WARMUPS, ema_decay_with_warmup, unwrap_model, update_ema, update_ema_loop


def _pair(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 7), nn.GELU(), nn.Linear(7, 3), nn.LayerNorm(3))
    ema = copy.deepcopy(model).requires_grad_(False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))  # the model has moved away from the EMA
    return model, ema


@pytest.mark.parametrize("decay", [0.0, 0.5, 0.9999, 1.0])
def test_update_ema_matches_closed_form(decay):
    model, ema = _pair()
    expected = [decay * e + (1 - decay) * p for e, p in zip(ema.parameters(), model.parameters())]
    update_ema(ema, model, decay)
    for got, want in zip(ema.parameters(), expected):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7,
                                   msg="EMA should be decay * ema + (1 - decay) * param: is the lerp weight 1 - decay?")


def test_foreach_update_agrees_with_the_official_loop():
    model, ema_a = _pair()
    ema_b = copy.deepcopy(ema_a)
    for _ in range(3):
        update_ema(ema_a, model, 0.9)
        update_ema_loop(ema_b, model, 0.9)
    for a, b in zip(ema_a.parameters(), ema_b.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_decay_zero_copies_and_leaves_the_model_alone():
    model, ema = _pair()
    before = [p.clone() for p in model.parameters()]
    update_ema(ema, model, 0.0)
    for e, p, b in zip(ema.parameters(), model.parameters(), before):
        assert torch.equal(e, p) and torch.equal(p, b)


def test_wrappers_are_looked_through():
    model, ema = _pair()

    class Compiled(nn.Module):  # what torch.compile returns keeps the module as ._orig_mod
        def __init__(self, module):
            super().__init__()
            self._orig_mod = module

    wrapped = Compiled(Compiled(model))
    assert unwrap_model(wrapped) is model
    update_ema(ema, wrapped, 0.0)
    assert all(torch.equal(e, p) for e, p in zip(ema.parameters(), model.parameters()))


def test_bad_inputs():
    model, ema = _pair()
    with pytest.raises(ValueError, match="decay"):
        update_ema(ema, model, 1.5)
    with pytest.raises(ValueError, match="same architecture"):
        update_ema(nn.Linear(2, 2), model, 0.5)


def test_warmup_schedule():
    assert ema_decay_with_warmup(0, 0.9999, "none") == 0.9999
    assert ema_decay_with_warmup(0, 0.9999, "ema_warmup") == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    assert ema_decay_with_warmup(80, 0.9999, "ema_warmup") == pytest.approx(0.9)
    assert ema_decay_with_warmup(10**7, 0.9999, "ema_warmup") == 0.9999  # capped at the paper's decay
    ramp = [ema_decay_with_warmup(s, 0.9999, "ema_warmup") for s in range(0, 5000, 50)]
    assert ramp == sorted(ramp), "the warm-up decay must never decrease"
    assert set(WARMUPS) == {"none", "ema_warmup"}
    with pytest.raises(ValueError, match="unknown EMA warm-up"):
        ema_decay_with_warmup(0, 0.9999, "linear")
