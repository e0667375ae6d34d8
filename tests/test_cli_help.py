"""Every command the README names answers --help (argparse formats each help text with %: a bare % breaks it)."""

from __future__ import annotations

import runpy
import sys
import warnings

import pytest

COMMANDS = (
    "minidit.train",
    "minidit.sample",
    "minidit.evaluate",
    "minidit.superres",
    "minidit.tools.bench",
    "minidit.tools.experiments",
    "minidit.tools.scaling",
    "minidit.tools.latent_experiment",
    "minidit.evaluation.evaluator",
    "minidit.course.grading",
)


@pytest.mark.parametrize("module", COMMANDS)
def test_help(module, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [module, "--help"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: the module was imported before it ran as __main__
        with pytest.raises(SystemExit) as info:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    out = capsys.readouterr().out
    assert info.value.code == 0 and out.startswith("usage: "), out[:300]
