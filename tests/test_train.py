"""minidit.train on the CPU: the fast step equals the official one, resume is bit-for-bit, errors are clear."""

from __future__ import annotations

import copy
import json
import math
import os
import pathlib

import pytest
import torch

from minidit import checkpoint
from minidit import data as data_module
from minidit import train as train_module
from minidit.diffusion import create_diffusion
from minidit.ema import update_ema_loop
from minidit.model import create_model
from minidit.tools.bench import baseline_losses, synthetic_data
from minidit.train import FastStep, TrainConfig, draw_batch, main, make_optimizer, train

DATA = synthetic_data(n=64, size=16, seed=0)  # 16x16 images: DiT-T/4 sees 16 tokens, fast on a CPU


def _cfg(out_dir, **overrides) -> TrainConfig:
    base = dict(
        model="DiT-T/4",
        global_batch_size=8,
        steps=6,
        log_every=2,
        ckpt_every=0,
        sample_every=0,
        precision="fp32",
        compile=False,
        ema_warmup="ema_warmup",
        device="cpu",
        progress=False,
        out_dir=str(out_dir),
    )
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
    parts = [
        draw_batch(
            DATA,
            torch.Generator().manual_seed(5),
            8,
            diffusion,
            flip=True,
            class_dropout_prob=0.1,
            rank=r,
            world_size=2,
        )
        for r in range(2)
    ]
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
    code = main(
        [
            "--preset",
            "cpu",
            "--steps",
            "2",
            "--log-every",
            "1",
            "--global-batch-size",
            "4",
            "--sample-every",
            "0",
            "--data-dir",
            str(fashion_mnist_dir),
            "--out-dir",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert code == 0
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["step"] == [1, 2] and history["config"]["model"] == "DiT-T/4"
    assert history["model_config"]["input_size"] == 32
    assert "weights" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("MINIDIT_TEST_COMPILE") != "1",
    reason="compiling takes minutes on a CPU; set MINIDIT_TEST_COMPILE=1 to run it",
)
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_step_matches_eager(mode):
    """torch.compile of model + loss (the GPU fast path) computes what the eager step computes (on a CPU the
    reduce-overhead mode compiles the same graphs without CUDA graphs)."""
    torch.manual_seed(0)
    model_a = create_model("DiT-T/4", input_size=16, in_channels=1, num_classes=10)
    model_b = copy.deepcopy(model_a)
    diffusion = create_diffusion()
    batch = draw_batch(DATA, torch.Generator().manual_seed(0), 8, diffusion, flip=True, class_dropout_prob=0.1)
    compiled = FastStep(model_a, diffusion, make_optimizer(model_a), compile=True, compile_mode=mode, log=pytest.fail)
    eager = FastStep(model_b, diffusion, make_optimizer(model_b))
    for _ in range(2):
        torch.testing.assert_close(compiled(batch), eager(batch), rtol=1e-5, atol=1e-6)
    assert compiled.compiled, "torch.compile fell back to eager"
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode, copied", [("reduce-overhead", True), ("default", False)])
def test_cuda_graph_step_copies_its_loss_out(mode, copied):
    """With CUDA graphs the next replay overwrites the graph's outputs, so the step must hand back a copy of the
    loss (the loop keeps the losses of many steps); without graphs it hands back the loss itself."""
    torch.manual_seed(0)
    model = create_model("DiT-T/4", input_size=16, in_channels=1, num_classes=10)
    diffusion = create_diffusion()
    step = FastStep(model, diffusion, make_optimizer(model), compile_mode=mode)
    step.compiled = True  # as after a successful torch.compile; the loss function itself stays eager here
    produced = []
    inner = step.loss_fn
    step.loss_fn = lambda *batch: produced.append(inner(*batch)) or produced[-1]
    batch = draw_batch(DATA, torch.Generator().manual_seed(0), 8, diffusion, flip=True, class_dropout_prob=0.1)
    loss = step(batch)
    torch.testing.assert_close(loss, produced[0].detach())
    assert (loss.data_ptr() != produced[0].data_ptr()) == copied


# ----------------------------------------------------------------------------- faults: NaN, a taken folder, damage


def _nan_noise_at(monkeypatch, bad_steps):
    """Make draw_batch return NaN noise at the given (1-based) steps: the loss of exactly those steps is NaN."""
    calls = {"n": 0}
    real_draw = train_module.draw_batch

    def draw(*args, **kwargs):
        calls["n"] += 1
        x, y, t, noise, drop = real_draw(*args, **kwargs)
        if calls["n"] in bad_steps:
            noise = torch.full_like(noise, float("nan"))
        return x, y, t, noise, drop

    monkeypatch.setattr(train_module, "draw_batch", draw)


def _all_finite(module_state: dict) -> bool:
    return all(torch.isfinite(v).all() for v in module_state.values() if v.is_floating_point())


def test_a_diverging_run_stops_and_keeps_the_last_finite_state(tmp_path, capsys):
    """lr 1e4: the run stops with an error naming the step; state.pt and every checkpoint stay finite."""
    with pytest.raises(train_module.NonFiniteError, match=r"diverged.*step \d.*--skip-nonfinite") as info:
        train(_cfg(tmp_path, steps=8, lr=1e4, log_every=4, ckpt_every=1), data=DATA)
    assert "last finite state (step 1)" in str(info.value)
    state = _state(tmp_path)
    assert state["step"] == 1 and _all_finite(state["model"]) and _all_finite(state["ema"])
    files = sorted((tmp_path / "checkpoints").glob("*.safetensors"))
    assert [f.stem for f in files] == ["0000001"]
    model, ema, _ = checkpoint.load_weights(files[0])
    assert _all_finite(model.state_dict()) and _all_finite(ema.state_dict())
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["final_step"] == 1 and all(map(torch.isfinite, torch.tensor(history["loss"] or [0.0])))
    # the command line: one line, exit 1, no traceback
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "--model",
                "DiT-T/4",
                "--out-dir",
                str(tmp_path / "cli"),
                "--lr",
                "1e4",
                "--steps",
                "4",
                "--log-every",
                "2",
                "--global-batch-size",
                "8",
                "--precision",
                "fp32",
                "--no-compile",
                "--no-progress",
                "--data-dir",
                str(_fake_data_dir(tmp_path / "data")),
            ]
        )
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "training diverged" in err and "Traceback" not in err
    assert not (tmp_path / "cli" / "state.pt").exists(), "a non-finite state was written"


def test_a_nan_step_is_named_and_nothing_after_it_is_saved(tmp_path, monkeypatch):
    _nan_noise_at(monkeypatch, {3})
    with pytest.raises(train_module.NonFiniteError, match="loss turned NaN/inf at step 3"):
        train(_cfg(tmp_path, steps=8, log_every=4, ckpt_every=2), data=DATA)
    assert _state(tmp_path)["step"] == 2 and _all_finite(_state(tmp_path)["model"])
    assert [f.stem for f in sorted((tmp_path / "checkpoints").glob("*"))] == ["0000002"]


def test_a_sample_grid_between_logging_steps_checks_first(tmp_path, monkeypatch):
    """A grid at step 3 (logging at 4) of weights that went NaN at step 2: an error, not a black PNG."""
    _nan_noise_at(monkeypatch, {2})
    with pytest.raises(train_module.NonFiniteError, match="loss turned NaN/inf at step 2"):
        train(_cfg(tmp_path, steps=8, log_every=4, sample_every=3, sample_steps=2), data=DATA)
    assert not (tmp_path / "samples").exists()


def test_skip_nonfinite_skips_exactly_the_bad_steps(tmp_path, monkeypatch):
    """With --skip-nonfinite the NaN step changes nothing: the state after step 3 is the state after step 2."""
    _nan_noise_at(monkeypatch, {3})
    history = train(_cfg(tmp_path, steps=4, log_every=4, ckpt_every=1, skip_nonfinite=True), data=DATA)
    assert history["final_step"] == 4 and history["skipped_steps"] == [3]
    assert all(map(math.isfinite, history["loss"]))
    weights = {s: checkpoint.load_weights(tmp_path / "checkpoints" / f"000000{s}.safetensors") for s in (2, 3, 4)}
    for part in (0, 1):  # model, EMA
        after = {s: w[part].state_dict() for s, w in weights.items()}
        assert all(torch.equal(after[2][k], after[3][k]) for k in after[2]), "the skipped step changed the weights"
        assert any(not torch.equal(after[3][k], after[4][k]) for k in after[3]), "step 4 should have trained"
        assert _all_finite(after[4])


def _fake_data_dir(folder: pathlib.Path) -> pathlib.Path:
    """Four tiny Fashion-MNIST-format files (IDX, gzipped) with 16 images each."""
    import gzip
    import struct

    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    for image_name, label_name in data_module.FILES.values():
        images = torch.randint(0, 256, (16, 28, 28), generator=gen, dtype=torch.uint8).numpy()
        labels = torch.randint(0, 10, (16,), generator=gen, dtype=torch.uint8).numpy()
        for name, array, magic in ((image_name, images, 2051), (label_name, labels, 2049)):
            raw = struct.pack(">i", magic) + b"".join(struct.pack(">i", n) for n in array.shape) + array.tobytes()
            (folder / name).write_bytes(gzip.compress(raw))
    return folder


def test_a_run_folder_belongs_to_one_run(tmp_path, capsys):
    """Without --resume a folder holding a run is refused; --overwrite deletes the old run's files first."""
    train(_cfg(tmp_path, steps=4, ckpt_every=2), data=DATA)  # checkpoints 2 and 4
    with pytest.raises(train_module.RunFolderError, match="already holds a run.*--resume.*--out-dir.*--overwrite"):
        train(_cfg(tmp_path, steps=2), data=DATA)
    assert _state(tmp_path)["step"] == 4, "the refused run touched the old one"
    (tmp_path / "notes.txt").write_text("mine")
    history = train(_cfg(tmp_path, steps=2, overwrite=True), data=DATA)
    assert sorted(f.stem for f in (tmp_path / "checkpoints").glob("*")) == ["0000002"], "old checkpoints remain"
    assert history["checkpoints"] == [str(tmp_path / "checkpoints" / "0000002.safetensors")]
    assert (tmp_path / "notes.txt").read_text() == "mine", "--overwrite deleted a file that is not the run's"
    # resuming needs a state; run files without one are refused rather than mixed
    (tmp_path / "state.pt").unlink()
    with pytest.raises(train_module.RunFolderError, match="no state.pt"):
        train(_cfg(tmp_path, steps=4, resume=True), data=DATA)
    with pytest.raises(ValueError, match="exclude each other"):
        _cfg(tmp_path, resume=True, overwrite=True)
    # the command line says the same in one line, exit 2, before loading anything
    data_dir = str(_fake_data_dir(tmp_path / "data"))
    message = _exit_message(capsys, ["--out-dir", str(tmp_path), "--data-dir", data_dir])
    assert "already holds a run" in message and "--overwrite" in message and "Traceback" not in message


def test_output_paths_are_checked_before_training(tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(train_module.RunFolderError, match="is a file, not a folder"):
        train(_cfg(tmp_path / "a_file"), data=DATA)
    with pytest.raises(train_module.RunFolderError, match="a_file is a file, so no folder"):
        train(_cfg(tmp_path / "a_file" / "run"), data=DATA)
    assert "is a file, not a folder" in _exit_message(capsys, ["--out-dir", str(tmp_path / "a_file")])
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        with pytest.raises(train_module.RunFolderError, match="no permission"):
            train(_cfg(locked / "run"), data=DATA)


def test_cli_reports_data_errors_in_one_line(tmp_path, capsys):
    folder = _fake_data_dir(tmp_path / "data")
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:40])  # a download cut short
    err = _exit_message(capsys, ["--data-dir", str(folder), "--out-dir", str(tmp_path / "run")])
    assert "truncated or corrupt gzip" in err and "Traceback" not in err and len(err.strip().splitlines()) <= 3
    err = _exit_message(capsys, ["--data-dir", str(tmp_path / "nowhere"), "--out-dir", str(tmp_path / "run")])
    assert "--data-dir" in err and "root argument" not in err
    assert not (tmp_path / "run").exists(), "the output folder was created although nothing could run"


def _flip_middle(path: pathlib.Path, n: int = 64) -> None:
    raw = bytearray(path.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + n] = bytes(b ^ 0xFF for b in raw[mid : mid + n])
    path.write_bytes(bytes(raw))


def test_a_damaged_state_is_refused_and_the_newest_intact_weights_named(tmp_path, capsys):
    train(_cfg(tmp_path, steps=4, ckpt_every=2), data=DATA)
    _flip_middle(tmp_path / "state.pt")
    _flip_middle(tmp_path / "checkpoints" / "0000004.safetensors")
    with pytest.raises(checkpoint.ChecksumError, match=r"state\.pt failed its checksum.*0000002\.safetensors"):
        train(_cfg(tmp_path, steps=6, resume=True), data=DATA)
    with pytest.raises(checkpoint.ChecksumError, match=r"0000004\.safetensors failed its checksum.*0000002"):
        checkpoint.load_weights(tmp_path / "checkpoints" / "0000004.safetensors")
    data_dir = str(_fake_data_dir(tmp_path / "data"))
    err = _exit_message(
        capsys,
        [
            "--out-dir",
            str(tmp_path),
            "--resume",
            "--steps",
            "6",
            "--data-dir",
            data_dir,
            "--model",
            "DiT-T/4",
            "--global-batch-size",
            "8",
            "--log-every",
            "2",
            "--ckpt-every",
            "2",
            "--sample-every",
            "0",
            "--precision",
            "fp32",
            "--no-compile",
            "--ema-warmup",
            "ema_warmup",
            "--no-progress",
        ],
    )
    assert "failed its checksum" in err and "Traceback" not in err


def test_stale_temporary_files_are_removed_on_the_next_start(tmp_path):
    train(_cfg(tmp_path, steps=2, ckpt_every=2), data=DATA)
    dead_pid = 2**22 + 12345  # above Linux's pid_max default: no such process
    stale = [tmp_path / f".state.pt.{dead_pid}.tmp", tmp_path / "checkpoints" / f".0000004.safetensors.{dead_pid}.tmp"]
    for path in stale:
        path.write_bytes(b"PK half a file")
    live = tmp_path / f".history.json.{os.getppid()}.tmp"  # a live process might still be writing this one
    live.write_text("{")
    train(_cfg(tmp_path, steps=4, ckpt_every=2, resume=True), data=DATA)
    assert not any(p.exists() for p in stale) and live.exists()


def test_auto_compile_mode_uses_cuda_graphs_for_small_steps_on_one_gpu():
    """ "auto" (the default): CUDA graphs where the bench measured they pay -- one CUDA process, a small step
    (DiT-S/4 and S/8 at batch 256) -- and torch.compile's default elsewhere (DiT-S/2, DDP, CPU)."""
    from minidit.step import AUTO_GRAPHS_MAX_GMACS, resolve_compile_mode

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert TrainConfig().compile_mode == "auto"
    assert resolve_compile_mode("auto", "DiT-S/4", 256, 1, cuda) == "reduce-overhead"
    assert resolve_compile_mode("auto", "DiT-S/8", 256, 1, cuda) == "reduce-overhead"
    assert resolve_compile_mode("auto", "DiT-S/2", 256, 1, cuda) == "default"
    assert resolve_compile_mode("auto", "DiT-S/4", 256, 2, cuda) == "default"  # DDP
    assert resolve_compile_mode("auto", "DiT-S/4", 256, 1, cpu) == "default"
    assert resolve_compile_mode("auto", "DiT-S/4", 4 * 256, 1, cuda) == "default"  # 4x the step: 1,445 GMACs
    assert resolve_compile_mode("default", "DiT-S/8", 256, 1, cuda) == "default"  # an explicit mode is kept
    model = create_model("DiT-T/4", input_size=32, in_channels=1, num_classes=10)  # a model object works too
    assert resolve_compile_mode("auto", model, 256, 1, cuda) == "reduce-overhead" and AUTO_GRAPHS_MAX_GMACS > 0
