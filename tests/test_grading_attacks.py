"""Red-team submissions (issue [12]): each tries to get marks without the work, and must score exactly
what its honest wrong answer scores; nothing it starts survives grading; the instructor's files stay
as they were.

Every attack is an ex02 file with a *wrong* q_sample (x_start multiplied by alphas_cumprod, not its
square root: some tests pass, some fail) plus the attack, written as a real attacker would (wrapped in
try/except, so a failed attack leaves the honest part running). The grader runs on a copy of this
checkout, so an attack that worked would damage the copy, not the repository.
"""

from __future__ import annotations

import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from minidit import course
from minidit.course import sandbox

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOLUTION = (ROOT / "solutions" / "ex02_q_sample.py").read_text()
WRONG = SOLUTION.replace("return abar.sqrt() * x_start", "return abar * x_start")
assert WRONG != SOLUTION
SLEEP_MARK = "4242.25"  # `sleep 4242.25`: a process started by a submission, to look for afterwards

# A forger run inside the student's process: it looks for every report the grader might write (the
# JUnit XML named on a command line, the sandbox's report named in an environment, grades.csv/json
# under --out) and writes a perfect score into each.
FORGER = r"""
def _forge():
    import os, json
    perfect_xml = '<testsuites><testsuite name="pytest" tests="7"><testcase name="x"/></testsuite></testsuites>'
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            args = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="ignore").split("\0")
        except OSError:
            args = []
        env = {}
        try:
            raw = open(f"/proc/{pid}/environ", "rb").read().decode().split("\0")
            env = dict(e.split("=", 1) for e in raw if "=" in e)
        except OSError:
            pass
        targets = [a.split("=", 1)[1] for a in args if a.startswith("--junitxml=")]
        for i, a in enumerate(args[:-1]):
            if a == "--out":
                targets += [os.path.join(args[i + 1], "grades.csv"), os.path.join(args[i + 1], "grades.json")]
        if "MINIDIT_SANDBOX_REPORT" in env:
            targets.append(env["MINIDIT_SANDBOX_REPORT"])
        for path in targets:
            try:
                with open(path, "w") as f:
                    if path.endswith(".xml"):
                        f.write(perfect_xml)
                    elif path.endswith(".csv"):
                        f.write("student,ex02,total,max_total,ex02_status\nforged,10,10,10,passed\n")
                    else:
                        f.write(json.dumps({"tests": [{"name": "x", "outcome": "passed", "message": ""}]}))
            except OSError:
                pass
"""

ATTACKS = {
    # 1. a pytest plugin that rewrites every report to "passed"
    "plugin": r"""
try:
    import gc
    import pytest

    class _Forge:
        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_makereport(self, item, call):
            outcome = yield
            report = outcome.get_result()
            report.outcome, report.longrepr = "passed", None

    for _obj in gc.get_objects():
        if type(_obj).__name__ == "PytestPluginManager":
            _obj.register(_Forge(), "forge")
except Exception:
    pass
""",
    # 2. an atexit hook that rewrites the reports named on the grader's command lines and environments
    "atexit": FORGER
    + r"""
try:
    import atexit
    atexit.register(_forge)
    _forge()
except Exception:
    pass
""",
    # 3. the test module's `check` helper replaced by a no-op
    "check-noop": r"""
try:
    import sys
    for _name, _mod in list(sys.modules.items()):
        if "test_ex" in _name or _name.endswith("_testing"):
            _mod.check = lambda *args, **kwargs: None
    import exercises._testing as _t
    _t.check = lambda *args, **kwargs: None
except Exception:
    pass
""",
    # 4. the instructor's test file overwritten (for the NEXT student), found next to the minidit package
    "overwrite-tests": r"""
try:
    import pathlib
    import minidit
    _root = pathlib.Path(minidit.__file__).resolve().parent.parent
    for _f in (_root / "exercises").glob("test_ex02_*.py"):
        _f.write_text("def test_forged():\n    pass\n")
    (_root / "exercises" / "conftest.py").write_text("")
except Exception:
    pass
""",
    # 5. a daemon (double fork, setsid, fds closed) that edits the grades after the grader exits
    "daemon": FORGER
    + r"""
try:
    import os, time
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            for _fd in range(3, 256):
                try:
                    os.close(_fd)
                except OSError:
                    pass
            for _ in range(600):
                _forge()
                time.sleep(0.1)
            os._exit(0)
        os._exit(0)
except Exception:
    pass
""",
    # 6. a setsid child that keeps the inherited stdout (a pipe, in the old grader) open forever
    "hang": rf'''
try:
    import subprocess, sys
    subprocess.Popen(["sleep", "{SLEEP_MARK}"], start_new_session=True, stdout=sys.stdout, stderr=sys.stderr)
except Exception:
    pass
''',
    # 7. 2.7 GB allocated: if that works, the right answer is returned (a limit that holds keeps it wrong)
    "memory": r"""
try:
    _big = bytearray(2_700_000_000)
    _ANSWER_IS_RIGHT = True
except MemoryError:
    _ANSWER_IS_RIGHT = False
""",
}


# Limits that are not attacks on the verdict: too many processes, too much output.
LIMITS = {
    "processes": rf'''
try:
    import subprocess
    _children = [subprocess.Popen(["sleep", "{SLEEP_MARK}"]) for _ in range(100)]
except Exception:
    pass
''',
    "output": r"""
try:
    import sys
    for _ in range(40):
        sys.stdout.write("x" * (1 << 20))
        sys.stdout.flush()
except Exception:
    pass
""",
}


def _attack_file(name: str) -> str:
    text = WRONG + ATTACKS[name]
    if name == "memory":  # the allocation decides between the right and the wrong answer
        text = text.replace(
            "    return abar * x_start",
            "    if _ANSWER_IS_RIGHT:\n        return abar.sqrt() * x_start"
            " + (1 - abar).sqrt() * noise\n    return abar * x_start",
        )
    return text


# Calling the answer: each scores 0 with a message saying why.
CALLING = {
    "import-answer": "from minidit.diffusion import q_sample  # noqa: F401\n",
    "thin-wrapper": (
        "import minidit.diffusion as d\n\n\ndef q_sample(x_start, t, noise, alphas_cumprod):\n"
        "    return d.q_sample(x_start, t, noise, alphas_cumprod)\n"
    ),
    "dynamic-lookup": (
        "import sys\n\nimport minidit.diffusion  # noqa: F401\n\n"
        "q_sample = getattr(sys.modules['minidit.diffusion'], 'q' + '_sample')\n"
    ),
}


@pytest.fixture(scope="module")
def instructor(tmp_path_factory) -> pathlib.Path:
    """A copy of this checkout's graded parts: what an instructor grades from."""
    root = tmp_path_factory.mktemp("instructor") / "course"
    for part in ("minidit", "exercises", "solutions"):
        shutil.copytree(ROOT / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("conftest.py", "pyproject.toml"):
        shutil.copy2(ROOT / part, root / part)
    return root


def _grade(
    instructor: pathlib.Path,
    folders: list[pathlib.Path],
    out: pathlib.Path,
    only: list[str],
    *extra: str,
    timeout: float = 120,
) -> tuple[dict, float]:
    env = {k: v for k, v in os.environ.items() if k not in (course.ENV_EXERCISES, course.ENV_IMPL)}
    env["PYTHONPATH"] = str(instructor)
    env["TMPDIR"] = str(_SANDBOX_TMP)  # the children's folders: `_leftovers` looks for this run's only
    start = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "minidit.course.grading",
            "grade",
            *map(str, folders),
            "--out",
            str(out),
            "--only",
            *only,
            "--test-timeout",
            "20",
            "--timeout",
            str(timeout),
            *extra,
        ],
        cwd=instructor,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout + proc.stderr
    grades = json.loads((out / "grades.json").read_text())
    return {g["student"]: g["exercises"] for g in grades["students"]}, elapsed


def _submission(base: pathlib.Path, student: str, ex_id: str, text: str) -> pathlib.Path:
    folder = base / student / "exercises"
    folder.mkdir(parents=True)
    (folder / f"{course.get(ex_id).stem}.py").write_text(text)
    return folder


# Where this module's graders make their sandboxes, so that another grading run on the same machine (a
# second test session, an instructor's) cannot look like a survivor of this one.
_SANDBOX_TMP = pathlib.Path(tempfile.mkdtemp(prefix="minidit-attack-tests-"))


def _leftovers() -> list[str]:
    """Processes a submission started that are still alive (by the sandbox's folder name or the sleep mark)."""
    found = []
    for pid in os.listdir("/proc"):
        try:
            cmd = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
        except OSError:
            continue
        if pid.isdigit() and (f"{_SANDBOX_TMP}/{sandbox.MARKER}" in cmd or SLEEP_MARK in cmd):
            found.append(f"{pid}: {cmd}")
    return found


@pytest.fixture(scope="module")
def attacked(instructor, tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("submissions")
    tests_before = {p.name: p.read_bytes() for p in (instructor / "exercises").glob("*.py")}
    # honest-before, the attackers, then honest-after: an attack on the checkout would show in the last one
    order = ["honest-before", *[a for a in ATTACKS if a != "hang"], *CALLING, *LIMITS, "honest-after"]
    folders = []
    for student in order:
        text = (
            WRONG
            if student.startswith("honest")
            else CALLING[student]
            if student in CALLING
            else WRONG + LIMITS[student]
            if student in LIMITS
            else _attack_file(student)
        )
        folders.append(_submission(base, student, "ex02", text))
    out = tmp_path_factory.mktemp("grades")
    grades, _ = _grade(instructor, folders, out, ["ex02"])
    csv_after_grading = (out / "grades.csv").read_text()
    time.sleep(2.0)  # a surviving daemon would edit the grades now
    return {
        "grades": grades,
        "out": out,
        "csv": csv_after_grading,
        "tests_before": tests_before,
        "instructor": instructor,
        "leftovers": _leftovers(),
    }


def test_the_honest_wrong_answer_scores_partially(attacked):
    honest = attacked["grades"]["honest-before"]["ex02"]
    assert honest["status"] == "partial" and 0 < honest["points"] < 10, honest
    assert attacked["grades"]["honest-after"]["ex02"] == {
        **honest,
        "seconds": attacked["grades"]["honest-after"]["ex02"]["seconds"],
    }


@pytest.mark.parametrize("attack", [a for a in ATTACKS if a != "hang"])
def test_each_attack_scores_what_its_honest_answer_deserves(attacked, attack):
    honest = attacked["grades"]["honest-before"]["ex02"]
    got = attacked["grades"][attack]["ex02"]
    assert got["points"] == honest["points"], (attack, got)
    outcomes = {t["name"]: t["outcome"] for t in got["results"]}
    assert outcomes == {t["name"]: t["outcome"] for t in honest["results"]}, (attack, got)


def test_the_next_student_is_graded_by_the_instructors_tests(attacked):
    honest, after = attacked["grades"]["honest-before"]["ex02"], attacked["grades"]["honest-after"]["ex02"]
    assert after["points"] == honest["points"] and after["results"] == honest["results"]
    now = {p.name: p.read_bytes() for p in (attacked["instructor"] / "exercises").glob("*.py")}
    assert now == attacked["tests_before"], "the instructor's exercises/ changed"


def test_no_process_of_a_submission_survives_and_the_grades_stay(attacked):
    assert attacked["leftovers"] == []
    assert (attacked["out"] / "grades.csv").read_text() == attacked["csv"]
    with open(attacked["out"] / "grades.csv", newline="") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    assert (
        "forged" not in rows and float(rows["daemon"]["ex02"]) == attacked["grades"]["honest-before"]["ex02"]["points"]
    )


def test_too_many_processes_are_stopped(attacked):
    # An unprivileged child gets EAGAIN from fork past RLIMIT_NPROC (and keeps its honest score); root ignores
    # that limit, so there the parent's watchdog ends the child when it holds more than --max-processes.
    got, honest = attacked["grades"]["processes"]["ex02"], attacked["grades"]["honest-before"]["ex02"]
    if got["status"] == "crashed":  # checked after every call: no test passes while it holds them
        assert "more than 32 processes" in got["log"] and got["points"] == 0.0, got
    else:
        assert got["results"] == honest["results"], got


def test_output_past_the_limit_fails_to_write(attacked):
    # RLIMIT_FSIZE: writing more than --output-mb (16) raises in the student's code; the honest part still runs.
    got, honest = attacked["grades"]["output"]["ex02"], attacked["grades"]["honest-before"]["ex02"]
    assert got["points"] == honest["points"] and got["status"] == honest["status"], got


@pytest.mark.parametrize("student", list(CALLING))
def test_calling_the_answer_scores_zero_and_says_why(attacked, student):
    got = attacked["grades"][student]["ex02"]
    assert got["status"] == "rejected" and got["points"] == 0.0, got
    assert "own" in got["log"], got["log"]


def test_an_indirect_call_of_minidits_piece_is_caught_at_run_time(instructor, tmp_path):
    # Nothing in this file names compute_alphas_cumprod, but GaussianDiffusion calls minidit's own:
    # in the child that raises, so the tests that reach it are "rejected" and the exercise scores 0.
    solution = (ROOT / "solutions" / "ex01_schedule.py").read_text()
    head, _, _ = solution.partition("def compute_alphas_cumprod")
    text = (
        head.replace("import torch\n", "import torch\n\nfrom minidit.diffusion import GaussianDiffusion\n", 1)
        + "def compute_alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:\n"
        + "    return GaussianDiffusion(betas, learn_sigma=False).alphas_cumprod.to(betas.dtype)\n"
    )
    assert not __import__("minidit.course.grading", fromlist=["x"]).honesty_problems(course.get("ex01"), text)
    folder = _submission(tmp_path, "indirect", "ex01", text)
    grades, _ = _grade(instructor, [folder], tmp_path / "out", ["ex01"])
    got = grades["indirect"]["ex01"]
    assert got["status"] == "rejected" and got["points"] == 0.0, got
    assert "minidit's own compute_alphas_cumprod" in got["log"]


def test_a_setsid_child_holding_the_output_does_not_stall_the_grader(attacked, instructor, tmp_path):
    folder = _submission(tmp_path, "hang", "ex02", _attack_file("hang"))
    timeout = 20
    grades, elapsed = _grade(instructor, [folder], tmp_path / "out", ["ex02"], timeout=timeout)
    assert elapsed < timeout + 5, f"grading took {elapsed:.0f} s"
    assert grades["hang"]["ex02"]["points"] == attacked["grades"]["honest-before"]["ex02"]["points"]
    assert _leftovers() == []


PROBE = """
import os, socket

def _try(f):
    try:
        return f()
    except Exception as err:
        return type(err).__name__

ROOT = {root!r}
RESULTS = {{
    "read solutions/": _try(lambda: len(open(ROOT + "/solutions/ex02_q_sample.py").read())),
    "read the tests": _try(lambda: len(open(ROOT + "/exercises/test_ex02_q_sample.py").read())),
    "read minidit": _try(lambda: len(open(ROOT + "/minidit/diffusion.py").read())) > 0,
    "write outside its folder": _try(lambda: open(ROOT + "/probe.txt", "w").write("x")),
    "write in its folder": _try(lambda: open("probe.txt", "w").write("x")),
    "signal its parent": _try(lambda: os.kill(os.getppid(), 0)),
    "open a TCP connection": _try(lambda: socket.create_connection(("127.0.0.1", 9), timeout=2)),
}}

def q_sample(x_start, t, noise, alphas_cumprod):
    return RESULTS
"""


@pytest.mark.skipif(sandbox.landlock_abi() < 6, reason="needs Landlock ABI 6 (Linux >= 6.12)")
def test_the_child_is_confined(tmp_path, monkeypatch):
    for folder in ("exercises", "tests"):  # as under `pytest tests exercises`: the test folders are on sys.path
        monkeypatch.syspath_prepend(str(ROOT / folder))
    (tmp_path / "ex02_q_sample.py").write_text(PROBE.format(root=str(ROOT)))
    sub = sandbox.Submission("ex02", tmp_path, sandbox.Limits(call_seconds=60))
    try:
        got = sub.module().q_sample(0, 0, 0, 0)
    finally:
        sub.close()
    assert got == {
        "read solutions/": "PermissionError",
        "read the tests": "PermissionError",
        "read minidit": True,
        "write outside its folder": "PermissionError",
        "write in its folder": 1,
        "signal its parent": "PermissionError",
        "open a TCP connection": "PermissionError",
    }, got
    assert not (ROOT / "probe.txt").exists()
