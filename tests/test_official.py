"""load_official_dit: an official-format state dict computes the same function in minidit.

The oracle is tests/reference_dit.py, a plain, separately written re-implementation of the official
architecture with the official key names.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from minidit.model import create_model
from minidit.official import load_official_dit
from tests.reference_dit import ReferenceDiT, ref_pos_embed

# DiT-T/4's shape (depth 4, D = 128, 4 heads, p = 4) on 16x16 latents, 10 classes.
TINY = dict(input_size=16, patch_size=4, in_channels=4, hidden_size=128, depth=4, num_heads=4, num_classes=10)


def _reference(learn_sigma=True, null_class=True, seed=0):
    ref = ReferenceDiT(**TINY, learn_sigma=learn_sigma, null_class=null_class)
    ref.randomize(seed)
    return ref


def _inputs(n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, 16, 16, generator=g)
    t = torch.tensor([0.0, 17.0, 999.0][:n])
    y = torch.randint(0, 10, (n,), generator=g)
    return x, t, y


def _load(sd, **kwargs):
    return load_official_dit(sd, model="DiT-T/4", input_size=16, in_channels=4, num_classes=10, **kwargs)


@pytest.mark.parametrize("learn_sigma,null_class", [(True, True), (False, False)])
def test_same_function_as_reference(learn_sigma, null_class):
    ref = _reference(learn_sigma, null_class)
    model = _load(ref.state_dict())
    assert model.learn_sigma == learn_sigma and (model.y_embedder.dropout_prob > 0) == null_class
    x, t, y = _inputs()
    with torch.no_grad():
        expected, got = ref(x, t, y), model(x, t, y)
    assert expected.abs().mean() > 0.1, "the reference output is degenerate; the comparison would prove nothing"
    torch.testing.assert_close(
        got,
        expected,
        atol=1e-5,
        rtol=1e-5,
        msg=lambda m: f"minidit differs from the reference DiT on official weights:\n{m}",
    )


def test_state_dict_keys_are_official():
    ref = _reference()
    model = create_model("DiT-T/4", input_size=16, in_channels=4, num_classes=10)
    assert set(model.state_dict()) == set(ref.state_dict())
    # and the other way: minidit's own weights load into the reference shape-for-shape
    ref.load_state_dict(model.state_dict(), strict=True)


def test_fresh_pos_embed_matches_official_layout():
    model = create_model("DiT-T/4", input_size=16, in_channels=4, num_classes=10)
    expected = ref_pos_embed(128, 4).float()[None]
    torch.testing.assert_close(
        model.pos_embed.data,
        expected,
        atol=1e-6,
        rtol=0,
        msg="pos_embed layout differs from the official one (column half first, then row)",
    )


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_load_from_file(tmp_path, suffix):
    ref = _reference(seed=3)
    path = tmp_path / f"dit{suffix}"
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
    if suffix == ".pt":
        torch.save({"model": sd, "ema": sd, "opt": {}}, path)  # an official-style training checkpoint
    else:
        save_file(sd, str(path))
    model = _load(path)
    x, t, y = _inputs(2)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, y), ref(x, t, y), atol=1e-5, rtol=1e-5)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "fn": _inputs}, path)  # a function: not plain data
    with pytest.raises(ValueError, match="weights_only"):
        load_official_dit(path, model="DiT-T/4")


def test_loaded_model_does_not_share_memory_with_given_dict():
    sd = _reference().state_dict()
    model = _load(sd)
    with torch.no_grad():
        model.blocks[0].attn.qkv.weight.zero_()
    assert sd["blocks.0.attn.qkv.weight"].abs().sum() > 0


def test_missing_unexpected_and_shape_errors():
    sd = _reference().state_dict()
    broken = dict(sd)
    del broken["blocks.1.mlp.fc1.weight"]
    with pytest.raises(ValueError, match=r"missing keys \['blocks.1.mlp.fc1.weight'\]"):
        _load(broken)
    extra = dict(sd, **{"blocks.4.attn.qkv.weight": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"unexpected keys \['blocks.4.attn.qkv.weight'\]"):
        _load(extra)
    with pytest.raises(ValueError, match="pos_embed.*input_size"):
        load_official_dit(sd, model="DiT-T/4", input_size=32, in_channels=4, num_classes=10)
    with pytest.raises(ValueError, match="unknown model"):
        load_official_dit(sd, model="DiT-M/4")
    with pytest.raises(ValueError, match="no checkpoint"):
        load_official_dit("/nonexistent/DiT-XL-2-256x256.pt")
