"""Run exercise tests against several folders in ONE process (torch is imported once).

Used by tests/test_exercises.py for the solutions run and the planted-bug (mutant) runs:

    python tests/_exercise_runner.py JOBS.json OUT.json

JOBS.json: [{"label": str, "folder": str, "ids": ["ex02", ...], "exitfirst": bool}, ...]
OUT.json:  {label: {"exit_code": int, "outcomes": {nodeid: "passed"|"failed"|"error"|"not started"|"skipped"},
                    "messages": {nodeid: the failure's message}, "log": the tail of pytest's output}}
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


class _Recorder:
    """A pytest plugin that keeps one outcome per test (the worst of setup, call and teardown)."""

    def __init__(self) -> None:
        self.outcomes: dict[str, str] = {}
        self.messages: dict[str, str] = {}

    def pytest_runtest_logreport(self, report) -> None:
        if report.outcome == "skipped":
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            kind = "not started" if "not started" in reason else "skipped"
        elif report.outcome == "failed":
            kind = "failed" if report.when == "call" else "error"
        elif report.when == "call":
            kind = "passed"
        else:
            return
        if self.outcomes.get(report.nodeid) not in ("failed", "error"):
            self.outcomes[report.nodeid] = kind
            if kind in ("failed", "error"):
                crash = getattr(report.longrepr, "reprcrash", None)
                self.messages[report.nodeid] = crash.message if crash is not None else str(report.longrepr)


def run_job(job: dict) -> dict:
    from minidit import course

    os.environ[course.ENV_EXERCISES] = job["folder"]
    files = [str(ROOT / "exercises" / f"test_{course.get(i).stem}.py") for i in job["ids"]]
    args = [*files, "-q", "-p", "no:cacheprovider", "-o", "addopts=", "--no-header", "-rN"]
    if job.get("exitfirst"):
        args.append("-x")
    recorder, out = _Recorder(), io.StringIO()
    with contextlib.redirect_stdout(out):
        code = pytest.main(args, plugins=[recorder])
    return {
        "exit_code": int(code),
        "outcomes": recorder.outcomes,
        "messages": recorder.messages,
        "log": out.getvalue()[-3000:],
    }


def main(argv: list[str]) -> int:
    jobs = json.loads(pathlib.Path(argv[0]).read_text())
    results = {job["label"]: run_job(job) for job in jobs}
    pathlib.Path(argv[1]).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main(sys.argv[1:]))
