"""minidit.train on the CPU: the fast step equals the official one, resume is bit-for-bit, errors are clear."""

from __future__ import annotations

import copy
import json
import os
import pathlib

import pytest
import torch

from minidit import checkpoint, train as train_module
from minidit.bench import baseline_losses, synthetic_data
from minidit.diffusion import create_diffusion
from minidit.ema import update_ema_loop
from minidit.model import create_model
from minidit.train import FastStep, TrainConfig, draw_batch, main, make_optimizer, train

DATA = synthetic_data(n=64, size=16, seed=0)  # 16x16 images: DiT-T/4 sees 16 tokens, fast on a CPU


def _cfg(out_dir, **overrides) -> TrainConfig:
    base = dict(model="DiT-T/4", global_batch_size=8, steps=6, log_every=2, ckpt_every=0, sample_every=0,
                precision="fp32", compile=False, ema_warmup="ema_warmup", device="cpu", progress=False,
                out_dir=str(out_dir))  # fmt: skip
    return TrainConfig(**{**base, **overrides})


def _state(out_dir) -> dict:
    return torch.load(pathlib.Path(out_dir) / "state.pt", weights_only=True)


def _assert_states_equal(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    for part in ("model", "ema"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs after resuming"
    for pid, slot in a["optimizer"]["state"].items():
        for name, value in slot.items():
            assert torch.equal(value, b["optimizer"]["state"][pid][name]), f"optimiser {name} of param {pid} differs"


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """6 steps in one go (with a sample grid at the end): the reference for the resume tests."""
    out = tmp_path_factory.mktemp("straight")
    history = train(_cfg(out, sample_every=6, sample_steps=2), data=DATA)
    return out, history


# ----------------------------------------------------------------------------- the step


def test_fast_step_matches_the_official_step():
    """Same batch, fp32: same per-example loss, same gradients, and after AdamW + EMA the same weights."""
    torch.manual_seed(0)
    model_a = create_model("DiT-T/4", input_size=16, in_channels=1, num_classes=10, block="adaLN")
    model_b = copy.deepcopy(model_a)
    ema_a, ema_b = copy.deepcopy(model_a).requires_grad_(False), copy.deepcopy(model_a).requires_grad_(False)
    diffusion = create_diffusion()
    generator = torch.Generator().manual_seed(1)
    batch = draw_batch(DATA, generator, 8, diffusion, flip=True, class_dropout_prob=0.5)
    x, y, t, noise, drop = batch
    assert drop.sum() > 0, "the test batch should drop some labels"

    fast = FastStep(model_a, diffusion, make_optimizer(model_a), ema=ema_a)
    loss_a = fast.forward_backward(batch)
    loss_b = baseline_losses(model_b, diffusion, x, y, t, noise, drop)
    loss_b.mean().backward()
    torch.testing.assert_close(loss_a, loss_b.detach(), rtol=1e-5, atol=1e-6)
    for (name, pa), pb in zip(model_a.named_parameters(), model_b.parameters()):
        if pa.requires_grad:
            torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-4, atol=1e-7, msg=f"gradient of {name} differs")

    model_a.zero_grad(set_to_none=True)
    model_b.zero_grad(set_to_none=True)
    opt_b = torch.optim.AdamW(model_b.parameters(), lr=1e-4, weight_decay=0, foreach=False)
    for _ in range(2):
        fast(batch, ema_decay=0.9)
        baseline_losses(model_b, diffusion, x, y, t, noise, drop).mean().backward()
        opt_b.step()
        opt_b.zero_grad()
        update_ema_loop(ema_b, model_b, 0.9)
    for (name, pa), pb in zip(model_a.named_parameters(), model_b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=f"weights {name} differ after 2 steps")
    for (name, ea), eb in zip(ema_a.named_parameters(), ema_b.parameters()):
        torch.testing.assert_close(ea, eb, rtol=1e-5, atol=1e-6, msg=f"EMA {name} differs after 2 steps")


def test_ranks_slice_the_same_global_batch():
    diffusion = create_diffusion()
    whole = draw_batch(DATA, torch.Generator().manual_seed(5), 8, diffusion, flip=True, class_dropout_prob=0.1)
    parts = [draw_batch(DATA, torch.Generator().manual_seed(5), 8, diffusion, flip=True, class_dropout_prob=0.1,
                        rank=r, world_size=2) for r in range(2)]
    for i, tensor in enumerate(whole):
        assert torch.equal(torch.cat([p[i] for p in parts]), tensor)
    assert parts[0][0].shape == (4, 1, 16, 16)


# ----------------------------------------------------------------------------- a run and its files


def test_history_and_files(straight_run):
    out, history = straight_run
    assert history["step"] == [2, 4, 6] and history["final_step"] == 6
    assert all(torch.isfinite(torch.tensor(history["loss"])))
    assert set(history["loss_per_quarter"]) == {"q0", "q1", "q2", "q3"}
    assert all(len(v) == 3 for v in history["loss_per_quarter"].values())
    assert len(history["img_per_s"]) == 3 and history["wall_time"] == sorted(history["wall_time"])
    assert json.loads((out / "history.json").read_text()) == json.loads(json.dumps(history))
    assert json.loads((out / "config.json").read_text())["model"] == "DiT-T/4"
    assert history["precision"] == "fp32" and history["compiled"] is False
    model, ema, config = checkpoint.load_weights(history["checkpoints"][-1])
    assert config["step"] == 6 and config["train"]["global_batch_size"] == 8
    assert ema is not None and model.input_size == 16
    assert pathlib.Path(history["samples"][-1]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.rglob("*.tmp")), "temporary files were left behind"


def test_resume_is_bit_for_bit(straight_run, tmp_path):
    """train 6 == train 3, save, resume, train 3 more: identical weights, EMA and optimiser state."""
    reference, _ = straight_run
    train(_cfg(tmp_path, steps=3), data=DATA)
    assert _state(tmp_path)["step"] == 3
    history = train(_cfg(tmp_path, steps=6, resume=True, sample_every=6, sample_steps=2), data=DATA)
    assert history["final_step"] == 6
    _assert_states_equal(_state(reference), _state(tmp_path))


def test_crash_and_resume_continues_the_loss_curve(straight_run, tmp_path, monkeypatch):
    """A crash after the step-3 checkpoint; resuming from it reproduces the straight run's history."""
    reference, reference_history = straight_run
    calls = {"n": 0}
    real_draw = train_module.draw_batch

    def crash_at_step_5(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("simulated crash")
        return real_draw(*args, **kwargs)

    monkeypatch.setattr(train_module, "draw_batch", crash_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tmp_path, ckpt_every=3), data=DATA)  # checkpoint at 3 (mid log interval), logs at 2 and 4
    monkeypatch.undo()
    assert _state(tmp_path)["step"] == 3
    history = train(_cfg(tmp_path, ckpt_every=3, resume=True, sample_every=6, sample_steps=2), data=DATA)
    _assert_states_equal(_state(reference), _state(tmp_path))
    assert history["step"] == reference_history["step"]
    assert history["loss"] == reference_history["loss"]
    assert history["loss_per_quarter"] == json.loads(json.dumps(reference_history["loss_per_quarter"]))


def test_wall_clock_budget_stops_and_resumes(tmp_path, capsys):
    history = train(_cfg(tmp_path, steps=4, max_minutes=1e-9), data=DATA)
    assert history["final_step"] == 1 and history["stopped_by_budget"]
    assert "budget" in capsys.readouterr().out
    history = train(_cfg(tmp_path, steps=4, resume=True), data=DATA)
    assert history["final_step"] == 4 and not history["stopped_by_budget"]


def test_resume_refuses_a_different_run(straight_run, tmp_path):
    reference, _ = straight_run
    (tmp_path / "state.pt").write_bytes((reference / "state.pt").read_bytes())
    with pytest.raises(ValueError, match="different config.*lr"):
        train(_cfg(tmp_path, steps=8, lr=3e-4, resume=True), data=DATA)
    with pytest.raises(ValueError, match="was written for model"):
        train(_cfg(tmp_path, steps=8, block="adaLN", resume=True), data=DATA)
    (tmp_path / "state.pt").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        train(_cfg(tmp_path, steps=8, resume=True), data=DATA)


# ----------------------------------------------------------------------------- errors and the command line


def _exit_message(capsys, argv) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


def test_bad_flags_exit_with_a_message(capsys, tmp_path, monkeypatch):
    assert "unknown model 'DiT-Q/2'" in _exit_message(capsys, ["--model", "DiT-Q/2"])
    assert "unknown block 'film'" in _exit_message(capsys, ["--block", "film"])
    assert "unrecognized arguments" in _exit_message(capsys, ["--batch", "8"])
    assert "steps must be >= 1" in _exit_message(capsys, ["--steps", "0"])
    assert "lacks" in _exit_message(capsys, ["--data-dir", str(tmp_path)])  # no Fashion-MNIST files there
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert "not divisible by the 2 processes" in _exit_message(capsys, ["--global-batch-size", "7"])
    with pytest.raises(ValueError, match="not divisible"):
        train(_cfg(tmp_path, global_batch_size=7), data=DATA)


def test_config_validation():
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp16")
    with pytest.raises(ValueError, match="ema_warmup"):
        TrainConfig(ema_warmup="slow")
    with pytest.raises(TypeError, match="TrainConfig"):
        train({"model": "DiT-T/4"})
    with pytest.raises(ValueError, match="labels go up to"):
        train(_cfg("unused", num_classes=3), data=DATA)


def test_cpu_fallback_message(tmp_path, capsys):
    train(_cfg(tmp_path, steps=1, precision="bf16", compile=True), data=DATA)
    assert "fp32 without compile" in capsys.readouterr().out


@pytest.mark.data
def test_cli_on_the_real_data(fashion_mnist_dir, tmp_path, capsys):
    code = main(["--preset", "cpu", "--steps", "2", "--log-every", "1", "--global-batch-size", "4", "--sample-every",
                 "0", "--data-dir", str(fashion_mnist_dir), "--out-dir", str(tmp_path), "--no-progress"])
    assert code == 0
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["step"] == [1, 2] and history["config"]["model"] == "DiT-T/4"
    assert history["model_config"]["input_size"] == 32
    assert "weights" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("MINIDIT_TEST_COMPILE") != "1",
                    reason="compiling takes minutes on a CPU; set MINIDIT_TEST_COMPILE=1 to run it")
def test_compiled_step_matches_eager():
    """torch.compile of model + loss (the GPU fast path) computes what the eager step computes."""
    torch.manual_seed(0)
    model_a = create_model("DiT-T/4", input_size=16, in_channels=1, num_classes=10)
    model_b = copy.deepcopy(model_a)
    diffusion = create_diffusion()
    batch = draw_batch(DATA, torch.Generator().manual_seed(0), 8, diffusion, flip=True, class_dropout_prob=0.1)
    compiled = FastStep(model_a, diffusion, make_optimizer(model_a), compile=True, log=pytest.fail)
    eager = FastStep(model_b, diffusion, make_optimizer(model_b))
    for _ in range(2):
        torch.testing.assert_close(compiled(batch), eager(batch), rtol=1e-5, atol=1e-6)
    assert compiled.compiled, "torch.compile fell back to eager"
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
