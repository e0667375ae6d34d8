"""Every minidit command line reports a user error in at most two lines on stderr, exit status 2, no traceback,
and checks its outputs before any work starts (a folder where a file goes, a file where a folder goes)."""

from __future__ import annotations

import importlib

import pytest


@pytest.fixture
def paths(tmp_path):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_dir").mkdir()
    return {
        "file": str(tmp_path / "a_file"),
        "dir": str(tmp_path / "a_dir"),
        "under_file": str(tmp_path / "a_file" / "x"),
    }


CASES = [
    ("train", ["--steps", "0"], "steps must be >= 1"),
    ("train", ["--out-dir", "{file}"], "is a file, not a folder"),
    ("train", ["--device", "tpu"], "unknown device 'tpu'"),
    ("sample", ["--ckpt", "{dir}", "--out", "{dir}"], "is an existing folder"),
    ("sample", ["--ckpt", "{dir}", "--batch-size", "0"], "--batch-size must be >= 1"),
    ("sample", ["--ckpt", "{dir}"], "no .safetensors checkpoint"),
    ("evaluate", ["--samples", "{dir}/none.npz"], "does not exist"),
    ("evaluate", ["--ckpt", "{dir}", "--steps", "0"], "--steps must be >= 1"),
    ("tools.bench", ["--out", "{dir}", "--device", "cpu"], "is an existing folder"),
    ("tools.bench", ["--batch", "0"], "--batch must be >= 1"),
    ("evaluation.evaluator", ["train", "--out", "{under_file}"], "is a file, so no folder"),
    ("evaluation.evaluator", ["train", "--epochs", "0"], "--epochs must be >= 1"),
    (
        "tools.scaling",
        ["--device", "cpu", "--gpus", "2", "--models", "DiT-T/4", "--out", "{dir}"],
        "is an existing folder",
    ),
    ("superres.experiment", ["--out", "{file}"], "is a file, not a folder"),
    ("superres.experiment", ["--out", "{dir}", "--num-eval", "0"], "--num-eval must be >= 1"),
    ("superres.experiment", ["--out", "{dir}", "--minutes", "-1"], "--minutes must be > 0"),
]


@pytest.mark.parametrize("module, argv, message", CASES, ids=[f"{c[0]}:{' '.join(c[1])}" for c in CASES])
def test_user_errors_are_one_short_message(module, argv, message, paths, capsys):
    main = importlib.import_module(f"minidit.{module}").main
    with pytest.raises(SystemExit) as info:
        main([a.format(**paths) for a in argv])
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert message in err and "Traceback" not in err, err
    lines = err.strip().splitlines()
    prog = "python -m minidit." + module.removesuffix(".experiment")  # python -m minidit.superres
    assert len(lines) <= 2 and lines[0].startswith(f"{prog}: error: "), err
