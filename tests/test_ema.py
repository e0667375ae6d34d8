"""minidit.ema: the foreach EMA update against its closed form, the official loop, and the warm-up rule."""

from __future__ import annotations

import copy
import math

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
        torch.testing.assert_close(
            got,
            want,
            rtol=1e-6,
            atol=1e-7,
            msg="EMA should be decay * ema + (1 - decay) * param: is the lerp weight 1 - decay?",
        )


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


# ----------------------------------------------------------------------------- EMA safe by default (issue [10])


@pytest.mark.parametrize(
    "decay, warmup",
    [
        (0.9999, "none"),
        (0.9999, "ema_warmup"),
        (0.99, "ema_warmup"),
        (0.5, "ema_warmup"),
        (0.05, "ema_warmup"),
        (1.0, "ema_warmup"),
    ],
)
def test_ema_stats_match_the_product_of_the_decays(decay, warmup):
    from minidit.ema import ema_stats

    for updates in (0, 1, 7, 300, 2500):
        decays = [ema_decay_with_warmup(s, decay, warmup) for s in range(updates)]
        share = math.prod(decays) if decays else 1.0
        stats = ema_stats(updates, decay, warmup)
        assert stats["ema_updates"] == updates
        assert stats["ema_init_share"] == pytest.approx(share, rel=1e-9, abs=1e-300), (updates, stats)
        if decays and decays[-1] < 1:
            assert stats["ema_window_steps"] == pytest.approx(1 / (1 - decays[-1]))


def test_young_ema_message_names_the_fix():
    from minidit.ema import ema_stats, young_ema_message

    paper = young_ema_message(ema_stats(7420, 0.9999, "none"))  # the run: 48% of the init left
    assert paper is not None and "48%" in paper and "--ema-warmup" in paper and "--raw" in paper
    assert young_ema_message(ema_stats(7420, 0.9999, "ema_warmup")) is None
    assert young_ema_message(ema_stats(200_000, 0.9999, "none")) is None  # the paper's length: 0.9999^200000 ~ 0


def _ema_lag(out_dir, **overrides) -> float:
    """||EMA - raw|| / ||raw - init|| after training a tiny model: small = the EMA follows the weights."""
    from minidit.checkpoint import load_weights
    from minidit.model import create_model
    from minidit.tools.bench import synthetic_data
    from minidit.train import TrainConfig, train

    cfg = TrainConfig(
        model="DiT-T/4",
        global_batch_size=8,
        steps=200,
        log_every=100,
        ckpt_every=0,
        sample_every=0,
        device="cpu",
        progress=False,
        out_dir=str(out_dir),
        lr=1e-3,
        **overrides,
    )
    history = train(cfg, data=synthetic_data(n=128, size=16, seed=0))
    raw, ema, config = load_weights(history["checkpoints"][-1])
    torch.manual_seed(cfg.seed)  # train() builds its model right after seeding: the same initial weights
    init = create_model("DiT-T/4", input_size=16, in_channels=1, num_classes=10)

    def flat(m):
        return torch.cat([p.detach().flatten() for p in m.parameters()])

    assert config["ema_updates"] == 200 and "ema_window_steps" in config and "ema_init_share" in config
    return float((flat(ema) - flat(raw)).norm() / (flat(raw) - flat(init)).norm())


@pytest.mark.slow
def test_default_flags_give_an_ema_close_to_the_trained_weights(tmp_path):
    """A few hundred steps with the defaults: the EMA has moved with the weights (issue [10]: no noise)."""
    lag = _ema_lag(tmp_path / "default")
    assert lag < 0.3, f"the default EMA is {lag:.2f} of the distance travelled away from the trained weights"
    paper = _ema_lag(tmp_path / "paper", ema_warmup="none")  # the paper's constant 0.9999: still ~97% init
    assert paper > 0.9, f"with the paper's constant decay the EMA should still sit near the init, lag {paper:.2f}"
