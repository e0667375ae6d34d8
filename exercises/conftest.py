"""pytest set-up for the exercises: which folder is checked, "not started", and the progress table.

    pytest exercises                              # all exercises, ends with a progress table
    pytest exercises -k ex05                      # one exercise
    MINIDIT_EXERCISES=solutions pytest exercises  # check the reference solutions (or any folder: a path)

A test that reaches a stub's `raise NotImplementedError("ex05: patchify")` is reported as skipped,
"not started"; any other exception or a wrong value is a real failure, shown with a short traceback
(pass --tb=long for the full one), and the progress table repeats the first hint of each failing
exercise. With MINIDIT_TEST_TIMEOUT=s (set by `python -m minidit.course.grading grade`) a test that runs
longer than s seconds fails with a TimeoutError, so an infinite loop costs only the tests that reach it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import textwrap

import pytest

from exercises._testing import summarize_failure
from minidit import course
from minidit.course.grading import TIMEOUT_MESSAGE, exercise_status

_NOT_STARTED = re.compile(r"^(ex\d\d)\b")
_NO_REFERENCE = "compares with minidit's own version"


def _exercise_of(item: pytest.Item) -> course.Exercise:
    return course.get(item.path.stem.removeprefix("test_"))


@pytest.fixture
def impl(request: pytest.FixtureRequest):
    """The module under test: exercises/exNN_*.py, or the same file in $MINIDIT_EXERCISES."""
    return course.load(_exercise_of(request.node).id, "student")


@pytest.fixture
def ref(request: pytest.FixtureRequest):
    """minidit's own versions of the exercise's functions/classes (for the agreement tests)."""
    ex = _exercise_of(request.node)
    if course.in_release(ex.id):
        pytest.skip(f"{_NO_REFERENCE} (it is not in the student release)")
    return course.reference(ex.id)


@contextlib.contextmanager
def _time_limit():
    seconds = float(os.environ.get("MINIDIT_TEST_TIMEOUT", "0") or 0)
    if seconds <= 0 or not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum, frame):
        raise TimeoutError(f"{TIMEOUT_MESSAGE} {seconds:g} s (an infinite loop?)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    with _time_limit():
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    with _time_limit():
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    exc = call.excinfo
    if report.skipped and isinstance(report.longrepr, tuple) and _NO_REFERENCE in report.longrepr[2]:
        report.longrepr = (str(course.exercise_folder("student")), None, f"{_NO_REFERENCE} (not in the student release)")
    if exc is not None and exc.errisinstance(NotImplementedError) and _NOT_STARTED.match(str(exc.value)):
        # One folded line in pytest's summary ("SKIPPED [n] exercises: not started"); the table has the rest.
        report.outcome = "skipped"
        needed = _NOT_STARTED.match(str(exc.value)).group(1)
        if needed != _exercise_of(item).id and course.in_release(needed) and not course.graded():
            # the student release: this test runs another exercise's piece through minidit, not written yet
            report.longrepr = (str(course.exercise_folder("student")), None, f"needs {needed} first")
        else:
            report.longrepr = (str(course.exercise_folder("student")), None, "not started")
    elif exc is not None and report.failed and item.config.getoption("tbstyle", "auto") == "auto":
        # A short traceback by default: the hint is the message, not 300 lines of frames.
        with contextlib.suppress(Exception):
            report.longrepr = item._repr_failure_py(exc, style="short")


def _is_exercise_report(report) -> bool:
    return bool(re.search(r"(^|/)test_ex\d\d_\w+\.py::", report.nodeid))


def _first_hint(failures: list[tuple[str, object]]) -> str:
    """'test_name: first line' of the first failure that names a mistake, else of the first failure."""
    lines = []
    for name, longrepr in failures:
        crash = getattr(longrepr, "reprcrash", None)
        line, named = summarize_failure(crash.message if crash is not None else longrepr)
        lines.append((not named, f"{name}: {line}"))
    return min(lines, key=lambda item: item[0])[1]  # min is stable: the first named one


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    outcomes: dict[str, list[str]] = {}
    failures: dict[str, list[tuple[str, object]]] = {}
    for kind in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(kind, []):
            if not _is_exercise_report(report) or report.when not in ("setup", "call", "teardown"):
                continue
            if kind == "passed" and report.when != "call":
                continue
            ex_id = re.search(r"test_(ex\d\d)_", report.nodeid).group(1)
            if kind == "skipped":
                reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
                kind = "not started" if reason.startswith("not started") else "skipped"
            if kind in ("failed", "error"):
                failures.setdefault(ex_id, []).append((report.nodeid.split("::")[-1], report.longrepr))
            outcomes.setdefault(ex_id, []).append(kind)
    if not outcomes:
        return
    write = terminalreporter.write_line
    folder = course.exercise_folder("student")
    terminalreporter.write_sep("=", f"exercise progress ({folder})")
    done = 0
    for ex_id in sorted(outcomes):
        ex = course.get(ex_id)
        status, passed, total = exercise_status(outcomes[ex_id])
        done += status == "done"
        mark = {"done": "[x]", "in progress": "[~]", "failing": "[!]"}.get(status, "[ ]")
        tests = f"{passed}/{total} tests" if status != "not started" else ""
        optional = " (optional)" if ex.optional else ""
        write(f"  {mark} {ex.id}  {ex.title + optional:<62} {status:<12} {tests}")
        if ex_id in failures:
            hint = textwrap.shorten(_first_hint(failures[ex_id]), 400, placeholder=" ...")
            write(textwrap.fill(hint, 110, initial_indent="        first hint: ", subsequent_indent=" " * 20))
    checked, total = len(outcomes), len(course.EXERCISES)
    write(f"  {done}/{checked} exercises done" + (f" (of the {checked} checked; {total} in all)." if checked < total else "."))
    todo = [e for e in sorted(outcomes) if exercise_status(outcomes[e])[0] != "done"]
    if todo:
        ex = course.get(todo[0])
        write(f"  Next: edit {folder.name}/{ex.stem}.py, then run: pytest exercises -k {ex.id}")
