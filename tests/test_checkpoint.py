"""minidit.checkpoint: round trips, clear errors on bad files, and writes that cannot destroy the last good file."""

from __future__ import annotations

import copy
import pathlib
import subprocess
import sys
import textwrap

import pytest
import torch

from minidit import checkpoint
from minidit.model import create_model


def _tiny(seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return create_model("DiT-T/4", input_size=16, in_channels=1, num_classes=10, **kwargs)


def _trained_state(model):
    """A model, its EMA and an AdamW that has taken one step (so the optimiser has state)."""
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model(torch.randn(2, 1, 16, 16), torch.tensor([1, 500]), torch.tensor([3, 4])).square().mean().backward()
    opt.step()
    return ema, opt


def _same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_weights_round_trip(tmp_path):
    model = _tiny(block="adaLN")
    ema, _ = _trained_state(model)
    path = checkpoint.save_weights(tmp_path / "w.safetensors", model, ema, {"step": 7})
    loaded, loaded_ema, config = checkpoint.load_weights(path)
    assert _same(loaded, model) and _same(loaded_ema, ema)
    assert not _same(loaded, loaded_ema), "model and EMA were saved from different weights"
    assert config["step"] == 7 and config["model_config"]["block"] == "adaLN"
    assert not loaded.training and loaded.block == "adaLN"
    assert checkpoint.read_weights_config(path) == config
    # without an EMA
    _, no_ema, _ = checkpoint.load_weights(checkpoint.save_weights(tmp_path / "raw.safetensors", model))
    assert no_ema is None


def test_weights_errors(tmp_path):
    path = checkpoint.save_weights(tmp_path / "w.safetensors", _tiny())
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        checkpoint.load_weights(tmp_path / "cut.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a minidit weights file"):
        checkpoint.load_weights(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        checkpoint.load_weights(tmp_path / "missing.safetensors")


def test_state_round_trip(tmp_path):
    model = _tiny()
    ema, opt = _trained_state(model)
    g = torch.Generator().manual_seed(3)
    rng = {"torch": torch.get_rng_state(), "data": g.get_state()}
    checkpoint.save_state(tmp_path / "s.pt", model=model, ema=ema, optimizer=opt, step=11, rng=rng,
                          config={"lr": 1e-3}, extra={"pending": torch.arange(3)})
    model2 = _tiny(seed=1)
    ema2 = copy.deepcopy(model2)
    opt2 = torch.optim.AdamW([p for p in model2.parameters() if p.requires_grad], lr=1e-3)
    state = checkpoint.load_state(tmp_path / "s.pt", model=model2, ema=ema2, optimizer=opt2)
    assert state["step"] == 11 and state["config"] == {"lr": 1e-3}
    assert _same(model2, model) and _same(ema2, ema)
    assert torch.equal(state["extra"]["pending"], torch.arange(3))
    g2 = torch.Generator()
    g2.set_state(state["rng"]["data"])
    assert torch.equal(torch.rand(4, generator=g2), torch.rand(4, generator=g))
    # the optimiser continues identically
    for m, o in ((model, opt), (model2, opt2)):
        m(torch.ones(1, 1, 16, 16), torch.tensor([9]), torch.tensor([1])).sum().backward()
        o.step()
    assert _same(model2, model)


def test_state_errors(tmp_path):
    model = _tiny()
    ema, opt = _trained_state(model)
    path = checkpoint.save_state(tmp_path / "s.pt", model=model, ema=ema, optimizer=opt, step=1)
    other = _tiny(block="in-context")
    with pytest.raises(ValueError, match="was written for model"):
        checkpoint.load_state(path, model=other)
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        checkpoint.load_state(tmp_path / "cut.pt", model=model)
    torch.save({"hello": 1}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a minidit training state"):
        checkpoint.load_state(tmp_path / "foreign.pt")


def test_interrupted_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = _tiny()
    ema, opt = _trained_state(model)
    state_path = checkpoint.save_state(tmp_path / "s.pt", model=model, ema=ema, optimizer=opt, step=1)
    weights_path = checkpoint.save_weights(tmp_path / "w.safetensors", model, ema)
    good_state, good_weights = state_path.read_bytes(), weights_path.read_bytes()

    def half_then_fail(obj, f, *args, **kwargs):  # e.g. the disk fills up half-way
        with open(f, "wb") as out:
            out.write(b"PK\x03\x04 half a zip file")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(OSError, match="No space"):
        checkpoint.save_state(state_path, model=model, ema=ema, optimizer=opt, step=2)
    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", lambda tensors, name, metadata=None: half_then_fail(0, name))
    with pytest.raises(OSError, match="No space"):
        checkpoint.save_weights(weights_path, model, ema)
    monkeypatch.undo()
    assert state_path.read_bytes() == good_state and weights_path.read_bytes() == good_weights
    assert checkpoint.load_state(state_path, model=_tiny())["step"] == 1
    checkpoint.load_weights(weights_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.pt", "w.safetensors"], "temporary files were left"


def test_killed_write_keeps_the_previous_checkpoint(tmp_path):
    """A process killed in the middle of torch.save (os._exit: no cleanup runs) leaves the old file intact."""
    model = _tiny()
    ema, opt = _trained_state(model)
    path = checkpoint.save_state(tmp_path / "s.pt", model=model, ema=ema, optimizer=opt, step=1)
    script = textwrap.dedent(f"""
        import os, torch
        from minidit import checkpoint
        from minidit.model import create_model
        model = create_model("DiT-T/4", input_size=16, in_channels=1, num_classes=10)
        opt = torch.optim.AdamW(model.parameters())
        def dies_half_way(obj, f, *a, **k):
            open(f, "wb").write(b"PK half a file")
            os._exit(9)
        torch.save = dies_half_way
        checkpoint.save_state({str(path)!r}, model=model, optimizer=opt, step=2)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=str(pathlib.Path(checkpoint.__file__).parent.parent))
    assert result.returncode == 9, result.stderr
    assert checkpoint.load_state(path, model=_tiny())["step"] == 1
