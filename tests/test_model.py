"""The DiT model: configs, zero-init, conditioning, classifier-free guidance, input errors."""

from __future__ import annotations

import json

import pytest
import torch

import minidit.blocks
import minidit.embeddings
from minidit.model import DiT, DiT_models, cfg_combine, create_model, model_config, model_from_config

BLOCK_NAMES = ("in-context", "cross-attention", "adaLN", "adaLN-Zero")
TINY = dict(input_size=16, in_channels=2, num_classes=10, depth=2)


def tiny(block="adaLN-Zero", **kwargs) -> DiT:
    torch.manual_seed(0)
    return create_model("DiT-T/4", **{**TINY, "block": block, **kwargs}).eval()


def _inputs(n=3, c=2, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, c, size, size, generator=g),
        torch.randint(0, 1000, (n,), generator=g),
        torch.randint(0, 10, (n,), generator=g),
    )


def _perturb(model, std=0.05, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * std)


# ----------------------------------------------------------------------------- configs


def test_config_names_and_widths():
    paper = [f"DiT-{s}/{p}" for s in ("XL", "L", "B", "S") for p in (2, 4, 8)]
    assert set(paper) | {"DiT-T/2", "DiT-T/4"} == set(DiT_models)
    table1 = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}  # DiT Table 1
    for size, (depth, width, heads) in table1.items():
        for p in (2, 4, 8):
            preset = DiT_models[f"DiT-{size}/{p}"].preset
            assert (preset["depth"], preset["hidden_size"], preset["num_heads"], preset["patch_size"]) == (
                depth,
                width,
                heads,
                p,
            )


@pytest.mark.parametrize("name", [n for n in DiT_models if not n.startswith("DiT-T")])
def test_every_paper_config_builds(name):
    with torch.device("meta"):  # no memory, no time: shapes only
        model = create_model(name)
    assert model.pos_embed.shape == (1, (32 // model.patch_size) ** 2, model.hidden_size)
    assert len(model.blocks) == model.depth and model.out_channels == 8


@pytest.mark.parametrize("block", BLOCK_NAMES)
@pytest.mark.parametrize("name", ["DiT-T/2", "DiT-T/4"])
def test_forward_shapes(name, block):
    model = create_model(name, **{**TINY, "block": block})
    x, t, y = _inputs()
    assert model(x, t, y).shape == (3, 4, 16, 16)  # eps and variance channels
    no_sigma = create_model(name, **{**TINY, "block": block, "learn_sigma": False})
    assert no_sigma(x, t, y).shape == (3, 2, 16, 16)


def test_model_config_round_trip():
    model = tiny("cross-attention")
    config = model_config(model)
    assert json.loads(json.dumps(config)) == config and config["model"] == "DiT-T/4"
    rebuilt = model_from_config(config)
    assert model_config(rebuilt) == config
    assert rebuilt.state_dict().keys() == model.state_dict().keys()
    plain = DiT(input_size=8, patch_size=2, in_channels=1, hidden_size=384, depth=12, num_heads=6, num_classes=10)
    assert model_config(plain)["model"] == "DiT-S/2"  # recognised from its shape


# ----------------------------------------------------------------------------- initialisation


def test_zero_init_dit_outputs_zero():
    model = tiny("adaLN-Zero")
    x, t, y = _inputs()
    out = model(x, t, y)
    assert torch.equal(out, torch.zeros_like(out)), "adaLN-Zero DiT must output exactly 0 at init (final layer zeroed)"


def test_pos_embed_is_fixed_sincos():
    model = tiny()
    assert not model.pos_embed.requires_grad
    expected = minidit.embeddings.get_2d_sincos_pos_embed(model.hidden_size, 4)
    torch.testing.assert_close(model.pos_embed[0], torch.as_tensor(expected, dtype=torch.float32))


def test_official_init_rules():
    model = tiny("adaLN-Zero", depth=1)
    assert model.y_embedder.embedding_table.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert model.t_embedder.mlp[0].weight.std().item() == pytest.approx(0.02, rel=0.1)
    fc1 = model.blocks[0].mlp.fc1.weight
    bound = (6 / (fc1.shape[0] + fc1.shape[1])) ** 0.5  # xavier-uniform bound
    assert fc1.abs().max() <= bound and fc1.abs().max() > 0.9 * bound
    assert torch.equal(model.blocks[0].mlp.fc1.bias, torch.zeros_like(model.blocks[0].mlp.fc1.bias))
    w = model.x_embedder.proj.weight  # (D, C, p, p): xavier over fan_in = C*p*p
    bound = (6 / (w.shape[0] + w[0].numel())) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound


def test_other_variants_are_not_zero_initialised():
    x, t, y = _inputs()
    for block in ("in-context", "cross-attention", "adaLN"):
        assert model_out_std(tiny(block), x, t, y) > 0.1, f"{block}: output is ~0 at init; only adaLN-Zero zeroes it"


def model_out_std(model, x, t, y):
    with torch.no_grad():
        return model(x, t, y).std().item()


# ----------------------------------------------------------------------------- conditioning


@pytest.mark.parametrize("block", BLOCK_NAMES)
def test_conditioning_changes_the_output(block):
    model = tiny(block)
    _perturb(model)  # undo the zero-init, otherwise adaLN-Zero ignores everything
    x, t, y = _inputs()
    with torch.no_grad():
        base = model(x, t, y)
        other_y = model(x, t, (y + 1) % 10)
        other_t = model(x, (t + 300) % 1000, y)
    assert (base - other_y).abs().amax(dim=(1, 2, 3)).min() > 1e-4, f"{block}: the label does not reach the output"
    assert (base - other_t).abs().amax(dim=(1, 2, 3)).min() > 1e-4, f"{block}: the timestep does not reach the output"


def test_float_and_long_timesteps_agree():
    model = tiny()
    _perturb(model)
    x, t, y = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, y), model(x, t.float(), y))


def test_label_dropout_only_in_training_mode():
    model = tiny(class_dropout_prob=0.5)
    _perturb(model)
    x, t, y = _inputs(n=16)
    with torch.no_grad():
        eval_out = model(x, t, y)
        assert torch.equal(model(x, t, y), eval_out)
        model.train()
        torch.manual_seed(0)
        train_out = model(x, t, y)
    per_sample_changed = (train_out - eval_out).abs().amax(dim=(1, 2, 3)) > 1e-6
    assert 0 < per_sample_changed.sum() < 16, "in training about half the labels should be dropped"


# ----------------------------------------------------------------------------- classifier-free guidance


def test_cfg_scale_one_is_conditional_and_zero_is_unconditional():
    model = tiny()
    _perturb(model)
    x, t, y = _inputs()
    with torch.no_grad():
        cond = model(x, t, y)
        uncond = model(x, t, torch.full_like(y, 10))  # the null label
        torch.testing.assert_close(model.forward_with_cfg(x, t, y, 1.0), cond, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.forward_with_cfg(x, t, y, 0.0)[:, :2], uncond[:, :2], atol=1e-5, rtol=1e-5)
        guided = model.forward_with_cfg(x, t, y, 4.0)
    expected_eps = uncond[:, :2] + 4.0 * (cond[:, :2] - uncond[:, :2])
    torch.testing.assert_close(guided[:, :2], expected_eps, atol=1e-5, rtol=1e-5)
    # learned-variance channels are never guided: they stay the conditional prediction
    torch.testing.assert_close(guided[:, 2:], cond[:, 2:], atol=1e-6, rtol=1e-6)


def test_cfg_guided_channels_reproduces_official_quirk():
    model = tiny(in_channels=4, num_classes=10)
    _perturb(model)
    x, t, y = _inputs(c=4)
    with torch.no_grad():
        cond, uncond = model(x, t, y), model(x, t, torch.full_like(y, 10))
        out = model.forward_with_cfg(x, t, y, 3.0, guided_channels=3)
    torch.testing.assert_close(out[:, :3], uncond[:, :3] + 3.0 * (cond[:, :3] - uncond[:, :3]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[:, 3:], cond[:, 3:], atol=1e-6, rtol=1e-6)  # 4th latent channel unguided
    with pytest.raises(ValueError, match="guided_channels"):
        model.forward_with_cfg(x, t, y, 3.0, guided_channels=5)


def test_cfg_is_one_batched_forward_in_training_mode_too():
    model = tiny(class_dropout_prob=0.5)
    _perturb(model)
    x, t, y = _inputs()
    calls = []
    model.blocks[0].register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    model.train()  # random dropout must not leak into the conditional half
    with torch.no_grad():
        out = model.forward_with_cfg(x, t, y, 1.0)
        model.eval()
        torch.testing.assert_close(out, model(x, t, y), atol=1e-5, rtol=1e-5)
    assert calls[0] == 6, "conditional and unconditional halves must go through the model as one batch"


def test_cfg_combine():
    c, u = torch.tensor([2.0]), torch.tensor([1.0])
    assert cfg_combine(c, u, 0.0) == u and cfg_combine(c, u, 1.0) == c and cfg_combine(c, u, 3.0) == 4.0


# ----------------------------------------------------------------------------- the course switch hooks


def test_model_uses_patched_module_globals(monkeypatch):
    """minidit.course swaps students' functions in by patching module attributes; the model must see them."""
    x, t, y = _inputs()
    model = tiny("adaLN")
    _perturb(model)
    with torch.no_grad():
        base = model(x, t, y)
        for module, name in [
            (minidit.blocks, "modulate"),
            (minidit.embeddings, "patchify"),
            (minidit.embeddings, "unpatchify"),
            (minidit.embeddings, "timestep_embedding"),
        ]:
            original = getattr(module, name)
            monkeypatch.setattr(module, name, lambda *a, _f=original, **k: 2 * _f(*a, **k))
            assert not torch.allclose(model(x, t, y), base), f"the model does not call {module.__name__}.{name}"
            monkeypatch.setattr(module, name, original)

    calls = []
    monkeypatch.setattr(
        minidit.embeddings,
        "get_2d_sincos_pos_embed",
        lambda d, g: calls.append((d, g)) or torch.zeros(g * g, d).numpy(),
    )
    assert torch.equal(tiny().pos_embed, torch.zeros(1, 16, 128)) and calls == [(128, 4)]

    class MyBlock(minidit.blocks.AdaLNBlock):
        pass

    monkeypatch.setitem(minidit.blocks.BLOCKS, "adaLN", MyBlock)
    assert isinstance(tiny("adaLN").blocks[0], MyBlock), "the model must look blocks up in minidit.blocks.BLOCKS"


# ----------------------------------------------------------------------------- errors


def test_bad_inputs_raise_clear_errors():
    model = tiny()
    x, t, y = _inputs()
    with pytest.raises(ValueError, match="not divisible by patch size 4"):
        model(torch.randn(3, 2, 18, 18), t, y)
    with pytest.raises(ValueError, match="built for input_size=16"):
        model(torch.randn(3, 2, 32, 32), t, y)
    with pytest.raises(ValueError, match="3 channels.*in_channels=2"):
        model(torch.randn(3, 3, 16, 16), t, y)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 9\].*null"):
        model(x, t, torch.tensor([0, 11, 2]))
    with pytest.raises(ValueError, match="labels must be in"):
        model(x, t, torch.tensor([0, -1, 2]))
    with pytest.raises(ValueError, match=r"t must be a tensor of shape \(N,\) = \(3,\)"):
        model(x, t[:2], y)
    with pytest.raises(ValueError, match="t must be"):
        model(x, t[:, None], y)
    with pytest.raises(ValueError, match="t must be"):
        model(x, torch.tensor(5), y)
    with pytest.raises(ValueError, match="y must be"):
        model(x, t, y[:1])
    with pytest.raises(TypeError, match="integer class labels"):
        model(x, t, y.float())
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        model(x[0], t, y)
    no_null = tiny(class_dropout_prob=0.0)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 9\]"):
        no_null(x, t, torch.tensor([0, 10, 2]))
    with pytest.raises(ValueError, match="class_dropout_prob"):
        no_null.forward_with_cfg(x, t, y, 4.0)


def test_bad_configs_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown model 'DiT-M/2'.*DiT-XL/2"):
        create_model("DiT-M/2")
    with pytest.raises(ValueError, match="unknown block 'adaLN-One'.*adaLN-Zero"):
        create_model("DiT-T/4", block="adaLN-One")
    with pytest.raises(ValueError, match="image size 30 is not divisible by patch size 4"):
        create_model("DiT-T/4", input_size=30)
    with pytest.raises(ValueError, match="number of heads"):
        create_model("DiT-T/4", num_heads=3)
    with pytest.raises(ValueError, match="patch_size must be a positive integer, got 0"):
        create_model("DiT-T/4", patch_size=0)
    with pytest.raises(ValueError, match="depth >= 0"):
        create_model("DiT-T/4", depth=-1)
    with pytest.raises(ValueError, match=r"class_dropout_prob must be in \[0, 1\)"):
        create_model("DiT-T/4", class_dropout_prob=1.0)


def test_other_float_dtypes_are_cast_and_integer_images_refused():
    """float64 / float16 / bf16 inputs give the fp32 model's answer for the same numbers, in the weights' dtype."""
    model = tiny().eval()
    _perturb(model)  # zero-init adaLN-Zero would output 0 for every input
    x, t, y = _inputs()
    with torch.no_grad():
        reference = model(x, t, y)
        for dtype in (torch.float64, torch.float16, torch.bfloat16):
            xd = x.to(dtype)
            out = model(xd, t, y)
            assert out.dtype == torch.float32
            torch.testing.assert_close(out, model(xd.float(), t, y), rtol=0, atol=0)
        torch.testing.assert_close(model(x.double(), t, y), reference, rtol=0, atol=0)
    with pytest.raises(TypeError, match="floating point.*to_model_range"):
        model((x * 100).to(torch.uint8), t, y)


def test_force_drop_ids_must_match_the_labels():
    model = tiny().eval()
    _perturb(model)  # zero-init adaLN-Zero would output 0 for every input
    x, t, y = _inputs()
    with pytest.raises(ValueError, match=r"force_drop_ids must be a tensor of shape \(N,\) = \(3,\)"):
        model(x, t, y, force_drop_ids=torch.ones(1, dtype=torch.long))  # would broadcast: every label dropped
    with torch.no_grad():  # the right shape drops exactly the rows marked 1
        dropped = model(x, t, y, force_drop_ids=torch.tensor([0, 1, 0]))
        null = model(x, t, torch.full_like(y, model.num_classes))
        plain = model(x, t, y)
    torch.testing.assert_close(dropped[1], null[1])
    torch.testing.assert_close(dropped[[0, 2]], plain[[0, 2]])
    assert not torch.allclose(dropped[1], plain[1]), "the null label should change the output"


def test_in_context_strips_exactly_the_two_conditioning_tokens():
    """With no blocks, the output must be the final layer applied to the T image tokens, in order."""
    model = create_model("DiT-T/4", **{**TINY, "depth": 0, "block": "in-context"})
    x, t, y = _inputs()
    with torch.no_grad():
        tokens = model.x_embedder(x) + model.pos_embed
        expected = model.unpatchify(model.final_layer(tokens, None))
        torch.testing.assert_close(model(x, t, y), expected)
