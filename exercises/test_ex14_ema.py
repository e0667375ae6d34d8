"""Tests for ex14 (the EMA update).   Run: pytest exercises -k ex14"""

import copy

import torch
from torch import nn

from exercises._testing import check, generator, randomize_


def _pair(seed=0):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    ema = copy.deepcopy(model)
    randomize_(model, seed)
    randomize_(ema, seed + 100)
    for p in ema.parameters():
        p.requires_grad_(False)  # as in training: the EMA copy is never optimised
    return ema, model


def test_update_formula(impl):
    ema, model = _pair()
    before = {k: v.clone() for k, v in ema.named_parameters()}
    impl.update_ema(ema, model, 0.9)
    for name, param in model.named_parameters():
        got = dict(ema.named_parameters())[name]
        check(got, 0.9 * before[name] + 0.1 * param.detach(), what=f"ema {name}", atol=1e-6, mistakes={
            "decay multiplies the EMA and (1 - decay) the model: ema = decay * ema + (1 - decay) * model":
                0.1 * before[name] + 0.9 * param.detach(),
            "the EMA was not updated in place (or not at all)": before[name],
        })


def test_decay_zero_copies_and_one_freezes(impl):
    ema, model = _pair(seed=1)
    before = [p.clone() for p in ema.parameters()]
    impl.update_ema(ema, model, 1.0)
    for b, p in zip(before, ema.parameters()):
        check(p, b, what="the EMA after decay = 1", atol=0)
    impl.update_ema(ema, model, 0.0)
    for e, p in zip(ema.parameters(), model.parameters()):
        check(e, p.detach(), what="the EMA after decay = 0", atol=0)


def test_in_place_without_gradients_and_model_untouched(impl):
    ema, model = _pair(seed=2)
    ids = [id(p) for p in ema.parameters()]
    model_before = [p.clone() for p in model.parameters()]
    out = impl.update_ema(ema, model, 0.99)
    assert out is None, "update_ema changes the EMA in place and returns None"
    assert [id(p) for p in ema.parameters()] == ids, (
        "the EMA's parameters must stay the same tensor objects: update them in place (mul_/add_/lerp_), "
        "do not assign new tensors")
    for p in ema.parameters():
        assert p.grad_fn is None, "the EMA must not be part of the autograd graph: use torch.no_grad()"
    for b, p in zip(model_before, model.parameters()):
        check(p, b, what="the model's weights after update_ema", atol=0, mistakes={"update the EMA, not the model": p})


def test_works_when_the_ema_requires_grad(impl):
    # In-place updates of leaf tensors that require grad only work under torch.no_grad().
    ema, model = _pair(seed=3)
    for p in ema.parameters():
        p.requires_grad_(True)
    impl.update_ema(ema, model, 0.5)


def test_buffers_are_copied(impl):
    ema, model = _pair(seed=4)
    model.train()
    model(torch.randn(16, 4, generator=generator(5)))  # changes BatchNorm's running statistics
    impl.update_ema(ema, model, 0.9)
    check(ema[1].running_mean, model[1].running_mean, what="the EMA's BatchNorm running_mean", atol=0,
          mistakes={"copy the buffers (for-loop over ema_model.buffers() and model.buffers())": torch.zeros(8)})


def test_many_steps_converge_to_a_fixed_model(impl):
    ema, model = _pair(seed=6)
    for _ in range(200):
        impl.update_ema(ema, model, 0.9)
    for e, p in zip(ema.parameters(), model.parameters()):
        check(e, p.detach(), what="the EMA after 200 updates towards a fixed model", atol=1e-6)


def test_agrees_with_minidit(impl, ref):
    ema_a, model = _pair(seed=7)
    ema_b = copy.deepcopy(ema_a)
    impl.update_ema(ema_a, model, 0.999)
    ref.update_ema(ema_b, model, 0.999)
    for (name, a), b in zip(ema_a.state_dict().items(), ema_b.state_dict().values()):
        check(a, b, what=f"ema {name}", atol=1e-6)
