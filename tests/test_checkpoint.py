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
    checkpoint.save_state(
        tmp_path / "s.pt",
        model=model,
        ema=ema,
        optimizer=opt,
        step=11,
        rng=rng,
        config={"lr": 1e-3},
        extra={"pending": torch.arange(3)},
    )
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
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(pathlib.Path(checkpoint.__file__).parent.parent),
    )
    assert result.returncode == 9, result.stderr
    assert checkpoint.load_state(path, model=_tiny())["step"] == 1


# ----------------------------------------------------------------------------- integrity


def _flip(path: pathlib.Path, offset: int, n: int = 64) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset : offset + n] = bytes(b ^ 0xFF for b in raw[offset : offset + n])
    path.write_bytes(bytes(raw))


def test_flipped_bytes_in_a_state_are_caught(tmp_path):
    """torch.load does not check the zip CRCs: without the digest this file would load with damaged tensors."""
    model = _tiny()
    ema, opt = _trained_state(model)
    path = checkpoint.save_state(tmp_path / "state.pt", model=model, ema=ema, optimizer=opt, step=3)
    _flip(path, path.stat().st_size // 2)
    raw = torch.load(path, weights_only=True)  # what torch alone says: fine
    assert raw["step"] == 3
    fresh = _tiny(seed=1)
    before = copy.deepcopy(fresh.state_dict())
    with pytest.raises(checkpoint.ChecksumError, match=r"state\.pt failed its checksum.*no intact checkpoint"):
        checkpoint.load_state(path, model=fresh)
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items()), "damaged weights were loaded"


def test_flipped_bytes_in_weights_are_caught_and_the_newest_intact_file_named(tmp_path):
    model = _tiny()
    ema, _ = _trained_state(model)
    folder = tmp_path / "checkpoints"
    paths = [checkpoint.save_weights(folder / f"{s:07d}.safetensors", model, ema, {"step": s}) for s in (1, 2, 3)]
    assert all(checkpoint.verify_weights(p) for p in paths)
    _flip(paths[2], paths[2].stat().st_size // 2)
    _flip(paths[1], paths[1].stat().st_size - 100, n=1)  # one byte of the last tensor
    assert [checkpoint.verify_weights(p) for p in paths] == [True, False, False]
    with pytest.raises(checkpoint.ChecksumError, match=r"0000003\.safetensors failed.*newest intact.*0000001"):
        checkpoint.load_weights(paths[2])
    assert checkpoint.newest_intact_weights(paths[2]) == paths[0]
    paths[2].write_bytes(paths[2].read_bytes()[:1000])  # a copy cut short: unreadable, and the intact one named
    with pytest.raises(checkpoint.CheckpointError, match=r"corrupt or truncated.*newest intact.*0000001"):
        checkpoint.load_weights(paths[2])


def test_a_file_without_a_checksum_loads_with_a_warning(tmp_path):
    """Files of an older minidit (no digest) still load, and say that they could not be verified."""
    from safetensors.torch import load_file, save_file

    model = _tiny()
    path = checkpoint.save_weights(tmp_path / "w.safetensors", model)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = {k: v for k, v in f.metadata().items() if k != checkpoint.DIGEST_KEY}
    save_file(load_file(str(path)), str(path), metadata=metadata)
    with pytest.warns(UserWarning, match="no checksum"):
        loaded, _, _ = checkpoint.load_weights(path)
    assert _same(loaded, model)


def test_a_code_running_pickle_is_refused_as_such(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"format": checkpoint.STATE_FORMAT, "x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(checkpoint.CheckpointError) as info:
        checkpoint.load_state(tmp_path / "evil.pt")
    message = str(info.value)
    assert "refused" in message and "print" in message and "nothing in it was run" in message
    assert "corrupt or truncated" not in message


def test_a_killed_save_leaves_a_tmp_file_that_the_next_start_removes(tmp_path):
    """The child dies half-way through a save: its .tmp file stays, remove_stale_tmp deletes it (dead pid)."""
    script = textwrap.dedent(f"""
        import os, torch
        from minidit import checkpoint
        from minidit.model import create_model
        model = create_model("DiT-T/4", input_size=16, in_channels=1, num_classes=10)
        def dies_half_way(obj, f, *a, **k):
            open(f, "wb").write(b"PK half a file")
            os._exit(9)
        torch.save = dies_half_way
        checkpoint.save_state({str(tmp_path / "s.pt")!r}, model=model, optimizer=torch.optim.AdamW(model.parameters()),
                              step=2)
    """)
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(pathlib.Path(checkpoint.__file__).parent.parent),
    )
    assert result.returncode == 9, result.stderr
    left = list(tmp_path.glob(".s.pt.*.tmp"))
    assert len(left) == 1 and not (tmp_path / "s.pt").exists()
    (tmp_path / "notes.tmp").write_text("not ours")  # only atomic_write's .<name>.<pid>.tmp files are touched
    assert checkpoint.remove_stale_tmp(tmp_path) == left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.tmp"]


def test_output_checks(tmp_path):
    (tmp_path / "f").write_text("x")
    assert checkpoint.writable_target(tmp_path / "new" / "deeper" / "a.png") == tmp_path / "new" / "deeper" / "a.png"
    with pytest.raises(ValueError, match="existing folder"):
        checkpoint.writable_target(tmp_path)
    with pytest.raises(ValueError, match="is a file, so no folder"):
        checkpoint.writable_target(tmp_path / "f" / "a.png")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        checkpoint.writable_folder(tmp_path / "f")
    assert not (tmp_path / "new").exists(), "a check must not create anything"
