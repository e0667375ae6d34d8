"""minidit.course.grading: grading a folder with correct, wrong, crashing and looping answers; the student release."""

from __future__ import annotations

import ast
import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest
import torch

from minidit import course
from minidit.course import grading

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _solution(ex_id: str) -> str:
    return (ROOT / "solutions" / f"{course.get(ex_id).stem}.py").read_text()


def _stub(ex_id: str) -> str:
    return (ROOT / "exercises" / f"{course.get(ex_id).stem}.py").read_text()


def _write(folder: pathlib.Path, ex_id: str, text: str) -> None:
    (folder / f"{course.get(ex_id).stem}.py").write_text(text)


@pytest.fixture(scope="module")
def mixed_submission(tmp_path_factory) -> pathlib.Path:
    """alice/exercises: one answer of each kind; ex04, ex08, ... are simply missing."""
    folder = tmp_path_factory.mktemp("submissions") / "alice" / "exercises"
    folder.mkdir(parents=True)
    _write(folder, "ex01", _solution("ex01"))  # correct
    _write(folder, "ex02", _solution("ex02").replace("return abar.sqrt() * x_start", "return abar * x_start"))  # wrong
    _write(
        folder, "ex05", "raise RuntimeError('my file does not even import')\n" + _solution("ex05")
    )  # crash on import
    loop = _solution("ex03").replace(
        "    x_t = diffusion.q_sample(", "    while True:\n        time.sleep(0.05)\n    x_t = diffusion.q_sample("
    )
    _write(folder, "ex03", loop.replace("import torch\n", "import time\n\nimport torch\n", 1))  # half right, half loops
    _write(
        folder,
        "ex07",
        _solution("ex07")
        .replace("    half = dim // 2\n", "    half = dim // 2\n    os._exit(3)\n", 1)
        .replace("import math\n", "import math\nimport os\n", 1),
    )  # kills the test process
    _write(folder, "ex13", _stub("ex13"))  # not started
    return folder


@pytest.fixture(scope="module")
def graded(mixed_submission, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("grades")
    env = {k: v for k, v in os.environ.items() if k not in (course.ENV_EXERCISES, course.ENV_IMPL)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "minidit.course.grading",
            "grade",
            str(mixed_submission),
            "--out",
            str(out),
            "--only",
            "ex01",
            "ex02",
            "ex03",
            "ex04",
            "ex05",
            "ex07",
            "ex13",
            "--test-timeout",
            "10",
            "--timeout",
            "300",
            "--gradescope",
            str(out / "results.json"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(out / "grades.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        "json": json.loads((out / "grades.json").read_text()),
        "csv": rows,
        "stdout": proc.stdout,
        "gradescope": json.loads((out / "results.json").read_text()),
    }


def test_each_kind_of_answer_gets_its_score(graded):
    (student,) = graded["json"]["students"]
    assert student["student"] == "alice"
    ex = student["exercises"]
    assert ex["ex01"]["status"] == "passed" and ex["ex01"]["points"] == 10.0, ex["ex01"]
    assert ex["ex02"]["status"] in ("partial", "failed") and ex["ex02"]["points"] < 10.0, ex["ex02"]
    assert ex["ex02"]["failed"] >= 2, ex["ex02"]
    # The loop costs only the tests that reach it: epsilon_mse_loss's tests still pass.
    assert ex["ex03"]["status"] == "timeout" and 0 < ex["ex03"]["points"] < 10.0, ex["ex03"]
    assert ex["ex04"]["status"] == "missing" and ex["ex04"]["points"] == 0.0
    assert ex["ex05"]["status"] == "failed" and ex["ex05"]["points"] == 0.0, ex["ex05"]
    assert ex["ex07"]["status"] == "crashed" and ex["ex07"]["points"] == 0.0, ex["ex07"]
    assert ex["ex13"]["status"] == "not started" and ex["ex13"]["points"] == 0.0, ex["ex13"]
    expected_total = sum(r["points"] for r in ex.values())
    assert student["total"] == pytest.approx(expected_total)


def test_failures_carry_the_tests_hints(graded):
    ex02 = graded["json"]["students"][0]["exercises"]["ex02"]
    failed = [t for t in ex02["results"] if t["outcome"] == "failed"]
    assert failed and any("square root" in t["message"] for t in failed), ex02["results"]
    assert "square root" in ex02["log"]


def test_gradescope_results(graded):
    student, results = graded["json"]["students"][0], graded["gradescope"]
    assert results["score"] == student["total"]
    for ex_id, r in student["exercises"].items():
        entries = [t for t in results["tests"] if t["number"].split(".")[0] == ex_id]
        assert entries and all(set(t) >= {"name", "score", "max_score", "output"} for t in entries)
        assert sum(t["score"] for t in entries) == pytest.approx(r["points"], abs=1e-3)
        assert sum(t["max_score"] for t in entries) == pytest.approx(r["max_points"], abs=1e-3)
    wrong = [t for t in results["tests"] if t["number"].startswith("ex02.") and t["score"] == 0]
    assert wrong and any("square root" in t["output"] for t in wrong)
    assert any(t["number"] == "ex04" and "no file" in t["output"] for t in results["tests"])  # missing


def test_honesty_check_reads_the_file():
    for ex in course.EXERCISES.values():  # the reference answers and the stubs are honest
        for folder in ("solutions", "exercises"):
            assert grading.honesty_problems(ex, (ROOT / folder / f"{ex.stem}.py").read_text()) == [], (folder, ex.id)
    ex02, ex12 = course.get("ex02"), course.get("ex12")
    flagged = {
        "from minidit.diffusion import q_sample": ex02,
        "import minidit.diffusion as d\ndef q_sample(*a):\n    return d.q_sample(*a)": ex02,
        "from minidit import diffusion\nf = getattr(diffusion, 'q_sample')": ex02,
        "from solutions.ex02_q_sample import helper": ex02,
        "import importlib\nq = importlib.import_module('minidit.diffusion')": ex02,
        "def forward_with_cfg(model, x, t, y, s):\n    return model.forward_with_cfg(x, t, y, s)": ex12,
    }
    for source, ex in flagged.items():
        assert grading.honesty_problems(ex, source), source
    allowed = {  # other exercises' pieces and building blocks
        "from minidit.blocks import Attention, Mlp, modulate": course.get("ex11"),
        "from minidit import diffusion\nx = diffusion.q_sample": course.get("ex03"),
        "def f(self):\n    return self.q_sample": ex02,
    }
    for source, ex in allowed.items():
        assert grading.honesty_problems(ex, source) == [], source


def test_csv_has_one_row_per_student_with_points(graded):
    (row,) = graded["csv"]
    student = graded["json"]["students"][0]
    assert row["student"] == "alice"
    for ex_id, result in student["exercises"].items():
        assert float(row[ex_id]) == result["points"] and row[f"{ex_id}_status"] == result["status"]
    assert float(row["total"]) == student["total"]


def test_a_hung_exercise_is_killed(tmp_path):
    # The per-exercise limit: a file that hangs while importing, with no per-test limit, costs 8 s and scores 0.
    _write(tmp_path, "ex16", "import time\nwhile True:\n    time.sleep(0.05)\n")
    start = time.monotonic()
    (result,) = grading._run_tests([course.get("ex16")], tmp_path, grading.Options(timeout=8, test_timeout=0)).values()
    assert result["status"] == "timeout" and result["over_budget"], result
    assert all(t["outcome"] == "timeout" for t in result["tests"]), result["tests"]
    assert time.monotonic() - start < 8 + 15  # the budget, one process start, and the tests refused after it


def test_exercise_status_rules():
    assert grading.exercise_status(["passed", "passed"]) == ("done", 2, 2)
    assert grading.exercise_status(["not started", "not started"])[0] == "not started"
    assert grading.exercise_status(["passed", "not started"])[0] == "in progress"
    assert grading.exercise_status(["passed", "failed"])[0] == "failing"
    assert grading.exercise_status(["passed", "timeout"])[0] == "failing"


def test_make_stub_keeps_signatures_and_docstrings():
    source = '''"""Module."""

import torch


def f(x: int, y=2) -> int:
    """Doc of f."""
    # a comment in the body
    z = x + y
    return z


class Block(torch.nn.Module):
    """One line."""

    kind = "vector"

    def forward(self, x):
        """Doc of forward."""
        return x
'''
    stub = grading.make_stub(source, "ex99")
    assert 'def f(x: int, y=2) -> int:\n    """Doc of f."""\n    raise NotImplementedError("ex99: f")\n' in stub
    assert '    kind = "vector"' in stub and 'raise NotImplementedError("ex99: Block.forward")' in stub
    assert "a comment in the body" not in stub and "return z" not in stub


def _solution_body_lines() -> dict[str, str]:
    """Every line of a solution's function bodies (docstrings aside) longer than 30 characters, without its comment."""
    lines = {}
    for path in sorted((ROOT / "solutions").glob("ex*.py")):
        source = path.read_text()
        text = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = (
                    node.body[1:]
                    if isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
                    else node.body
                )
                for i in range(body[0].lineno - 1 if body else node.end_lineno, node.end_lineno):
                    code = text[i].split("  #")[0].strip()
                    if len(code) > 30:
                        lines.setdefault(code, path.name)
    return lines


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("release") / "course"
    grading.release(out)
    return out


def test_release_has_no_solutions(released, tmp_path):
    files = grading._release_files(ROOT)
    assert (released / "exercises" / "conftest.py").is_file() and (
        released / "minidit" / "course" / "__init__.py"
    ).is_file()
    assert not (released / "solutions").exists() and not any(f.startswith("solutions/") for f in files)
    assert not (released / "tests").exists() and not (released / ".git").exists()
    with pytest.raises(ValueError, match="exists"):
        grading.release(released)
    grading.release(released, force=True)
    # The stubs in the release are the repository's stubs.
    for ex in course.EXERCISES.values():
        assert (released / "exercises" / f"{ex.stem}.py").read_text() == (
            ROOT / "exercises" / f"{ex.stem}.py"
        ).read_text()


# Lines a solution shares with a building block that ships on purpose: ex10's cross-attention is written
# like minidit.blocks.Attention (self-attention), which students read and import.
SHARED_WITH_BUILDING_BLOCKS = {
    "self.proj = nn.Linear(dim, dim)": "Attention",
    "out = F.scaled_dot_product_attention(q, k, v)": "Attention",
    'return self.proj(rearrange(out, "n h t d -> n t (h d)"))': "Attention",
}


def test_no_solution_body_line_appears_anywhere_in_the_release(released):
    lines = _solution_body_lines()
    assert len(lines) > 100  # the solutions have that many non-trivial lines: the check is not empty
    found = []
    for path in sorted(released.rglob("*")):
        if path.is_file():
            text = path.read_text(errors="ignore")
            found += [
                f"{path.relative_to(released)}: {line}  (from {lines[line]})"
                for line in lines
                if line in text and line not in SHARED_WITH_BUILDING_BLOCKS
            ]
    assert not found, "solution lines in the student release:\n" + "\n".join(found)
    # the shared lines appear in that building block's source only
    import inspect

    from minidit import blocks

    for line, block in SHARED_WITH_BUILDING_BLOCKS.items():
        assert line in lines and line in inspect.getsource(getattr(blocks, block))
        assert (released / "minidit" / "blocks.py").read_text().count(line) == 1
    # while this checkout's minidit holds many of them (what the release removes)
    minidit_text = "".join(p.read_text() for p in (ROOT / "minidit").glob("*.py"))
    assert sum(line in minidit_text for line in lines) > 30


_RUN_DIT = """
import sys, torch
from safetensors.torch import load_file, save_file
from minidit.model import DiT
model = DiT(input_size=8, patch_size=4, in_channels=1, hidden_size=32, depth=2, num_heads=2, num_classes=3).eval()
model.load_state_dict(load_file(sys.argv[1]))
x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
t, y = torch.tensor([3, 700]), torch.tensor([0, 2])
with torch.no_grad():
    save_file({"out": model(x, t, y)}, sys.argv[2])
print(type(model.blocks[0]).__module__)
"""


def _in_release(released: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in (course.ENV_EXERCISES, course.ENV_IMPL)}
    env.update(PYTHONPATH=str(released), MINIDIT_QUICK="1", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, *args], cwd=released, env=env, capture_output=True, text=True, timeout=600)


def test_the_released_minidit_runs_the_students_code(released, tmp_path):
    from safetensors.torch import load_file, save_file

    from minidit.model import DiT

    # Stubs: a piece that is not written stops with the file to write.
    proc = _in_release(
        released,
        "-c",
        "import torch; from minidit import diffusion; "
        "diffusion.q_sample(torch.zeros(1, 1), torch.tensor([0]), torch.zeros(1, 1), torch.ones(2))",
    )
    assert proc.returncode != 0 and "exercises/ex02_q_sample.py" in proc.stderr, proc.stderr
    # Written (the reference answers copied in): minidit's DiT is built from the student's blocks and agrees with ours.
    for ex in course.EXERCISES.values():
        shutil.copyfile(ROOT / "solutions" / f"{ex.stem}.py", released / "exercises" / f"{ex.stem}.py")
    torch.manual_seed(0)
    reference = DiT(
        input_size=8, patch_size=4, in_channels=1, hidden_size=32, depth=2, num_heads=2, num_classes=3
    ).eval()
    for p in reference.parameters():
        torch.nn.init.normal_(p, std=0.1)
    save_file(reference.state_dict(), tmp_path / "sd.safetensors")
    proc = _in_release(released, "-c", _RUN_DIT, str(tmp_path / "sd.safetensors"), str(tmp_path / "out.safetensors"))
    assert proc.returncode == 0, proc.stderr
    assert "ex08_adaln_zero" in proc.stdout  # the block is the student's class
    x, t, y = (
        torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)),
        torch.tensor([3, 700]),
        torch.tensor([0, 2]),
    )
    with torch.no_grad():
        torch.testing.assert_close(
            load_file(tmp_path / "out.safetensors")["out"], reference(x, t, y), atol=1e-5, rtol=1e-5
        )
    # The self-study loop in the release: every exercise done, the comparisons with minidit skipped.
    proc = _in_release(released, "-m", "pytest", "exercises", "-q", "-p", "no:cacheprovider")
    assert proc.returncode == 0 and f"{len(course.EXERCISES)}/{len(course.EXERCISES)} exercises done" in proc.stdout, (
        proc.stdout[-3000:]
    )
    # A notebook runs on the student's code.
    proc = _in_release(released, "notebooks/01_forward_noising.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # course.compare measures against minidit's outputs recorded in the release; a wrong answer shows.
    (released / "exercises" / "ex02_q_sample.py").write_text(
        (ROOT / "solutions" / "ex02_q_sample.py").read_text().replace("abar.sqrt() * x_start", "abar * x_start")
    )
    proc = _in_release(
        released,
        "-c",
        "import json; from minidit import course; print(json.dumps({e: course.compare(e) for e in course.EXERCISES}))",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for ex_id, report in results.items():
        for name, value in report.items():
            if ex_id == "ex02":
                assert isinstance(value, float) and value > 1e-2, (name, value)
            elif name in ("simple_training_loss", "forward_with_cfg", "update_ema"):  # no record: they need a DiT
                assert value == "no random comparison (see its tests)", (ex_id, name, value)
            else:
                assert isinstance(value, float) and value < 1e-4, (ex_id, name, value)


def test_release_refuses_implemented_exercises(tmp_path, monkeypatch):
    fake_root = tmp_path / "repo"
    (fake_root / "exercises").mkdir(parents=True)
    for ex in course.EXERCISES.values():
        (fake_root / "exercises" / f"{ex.stem}.py").write_text(_stub(ex.id))
    _write(fake_root / "exercises", "ex02", _solution("ex02"))
    monkeypatch.setattr(course, "repo_root", lambda: fake_root)
    with pytest.raises(ValueError, match="ex02_q_sample.py: q_sample is implemented"):
        grading.release(tmp_path / "out")


def test_the_boundary_behaves_like_one_process(tmp_path):
    """What the tests rely on when impl runs in the child: modules, gradients, generators, in-place updates."""
    from minidit.course import sandbox

    for ex_id in ("ex03", "ex09", "ex12", "ex14"):
        shutil.copyfile(ROOT / "solutions" / f"{course.get(ex_id).stem}.py", tmp_path / f"{course.get(ex_id).stem}.py")
    with open(tmp_path / "ex09_in_context.py", "a") as f:  # a method besides forward, one that changes a weight
        f.write(
            "\n\nInContextBlock.twice = lambda self, x: 2 * self(x, None)\n"
            "InContextBlock.bump = lambda self: self.norm1.weight.data.add_(1.0)\n"
        )
    subs = {
        e: sandbox.Submission(e, tmp_path, sandbox.Limits(call_seconds=60)) for e in ("ex03", "ex09", "ex12", "ex14")
    }
    try:
        # a module built by the student: a stand-in with the same parameters, class attributes and layers
        mine, theirs = subs["ex09"].module().InContextBlock(32, 4), course.reference("ex09").InContextBlock(32, 4)
        assert list(mine.state_dict()) == list(theirs.state_dict()) and mine.cond_kind == "in-context"
        assert isinstance(mine.norm1, torch.nn.LayerNorm)
        mine.load_state_dict(theirs.state_dict())
        x = torch.randn(2, 5, 32)
        torch.testing.assert_close(mine(x, None), theirs(x, None))
        torch.testing.assert_close(mine.twice(x), 2 * theirs(x, None))
        before = mine.norm1.weight.detach().clone()
        mine.bump()
        torch.testing.assert_close(mine.norm1.weight.detach(), before + 1)
        # gradients through the student's function
        pred = torch.randn(2, 1, 4, 4, requires_grad=True)
        subs["ex03"].module().epsilon_mse_loss(pred, torch.zeros(2, 1, 4, 4)).sum().backward()
        torch.testing.assert_close(pred.grad, 2 * pred.detach() / 16)
        # a generator advances as it would in one process
        g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        labels = torch.arange(64) % 10
        remote = [subs["ex12"].module().token_drop(labels, 10, 0.5, generator=g1) for _ in range(2)]
        local = [course.load("ex12", "solutions").token_drop(labels, 10, 0.5, generator=g2) for _ in range(2)]
        assert all(torch.equal(a, b) for a, b in zip(remote, local)) and torch.equal(g1.get_state(), g2.get_state())
        # an in-place update of a torch.nn model: the same parameter objects, new values
        model, ema = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
        ids = [id(p) for p in ema.parameters()]
        subs["ex14"].module().update_ema(ema, model, 0.0)
        assert [id(p) for p in ema.parameters()] == ids
        assert all(torch.equal(a, b) for a, b in zip(ema.parameters(), model.parameters()))
    finally:
        for sub in subs.values():
            sub.close()
