"""Instructor tools: grade students' exercises/ folders, and write a student release without solutions/.

    python -m minidit.grading grade submissions/alice submissions/bob --out grades   # JSON + CSV
    python -m minidit.grading release --out release                                 # no solutions/
    python -m minidit.grading list                                                  # exercises and points
    python -m minidit.grading stubs [ex15 ...]    # (re)write exercises/exNN_*.py stubs from solutions/

Grading runs this checkout's tests (exercises/test_exNN_*.py, not the student's copies) against the
student's files, one exercise per subprocess: a crash costs that exercise only. Each test has a
time limit (--test-timeout; an infinite loop fails the tests that reach it) and each exercise a
hard one (--timeout; the subprocess is killed and the exercise scores 0). An exercise scores
points * passed / total tests; its status is passed, partial, failed, not started, missing,
timeout (a time limit was hit) or crashed (the test process died).
Student code runs with your user's rights: grade untrusted submissions inside a container or VM.
"""

from __future__ import annotations

import argparse
import ast
import csv
import io
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

from minidit import course

# tests/ files that need solutions/; they do not ship in the student release.
RELEASE_EXCLUDE = ("solutions/", "tests/test_exercises.py", "tests/test_course.py", "tests/test_grading.py",
                   "tests/_exercise_runner.py")
TIMEOUT_MESSAGE = "test ran longer than"  # exercises/conftest.py words a timed-out test so
_NEVER_COPY = {".git", ".venv", "__pycache__", ".pytest_cache", ".ipynb_checkpoints", "release", "grades"}


def exercise_status(outcomes: list[str]) -> tuple[str, int, int]:
    """Per-test outcomes ("passed", "failed", "error", "timeout", "not started", "skipped") -> (status, passed, total).

    status: "done" (all passed), "not started" (all not started), "failing" (a failure or error),
    "in progress" (some passed, the rest not started).
    """
    passed = outcomes.count("passed")
    total = len([o for o in outcomes if o != "skipped"])
    if total and passed == total:
        return "done", passed, total
    if any(o in ("failed", "error", "timeout") for o in outcomes):
        return "failing", passed, total
    if passed == 0:
        return "not started", passed, total
    return "in progress", passed, total


# ----------------------------------------------------------------------------- grading

def _read_junit(path: pathlib.Path) -> list[str]:
    outcomes = []
    for case in ET.parse(path).getroot().iter("testcase"):
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        if problem is not None and TIMEOUT_MESSAGE in (problem.get("message") or "") + (problem.text or ""):
            outcomes.append("timeout")
        elif case.find("failure") is not None:
            outcomes.append("failed")
        elif case.find("error") is not None:
            outcomes.append("error")
        elif (skip := case.find("skipped")) is not None:
            outcomes.append("not started" if "not started" in (skip.get("message") or "") else "skipped")
        else:
            outcomes.append("passed")
    return outcomes


def _run_pytest(test_file: pathlib.Path, folder: pathlib.Path, timeout: float,
                test_timeout: float = 0) -> tuple[str, list[str], str]:
    """Run one exercise's tests against `folder` in a subprocess -> (status, outcomes, short log)."""
    root = course.repo_root()
    with tempfile.TemporaryDirectory(prefix="minidit-grade-") as tmp:
        junit = pathlib.Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", str(test_file), "-q", "-p", "no:cacheprovider",
               "-o", "addopts=", "--no-header", f"--junitxml={junit}", "--basetemp", str(pathlib.Path(tmp) / "t")]
        env = dict(os.environ, **{course.ENV_EXERCISES: str(folder), "PYTHONDONTWRITEBYTECODE": "1",
                                  "MINIDIT_TEST_TIMEOUT": str(test_timeout)})
        env.pop(course.ENV_IMPL, None)
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        try:
            log, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group: pytest and anything the student started
            log, _ = proc.communicate()
            return "timeout", [], f"killed after {timeout:g} s (an infinite loop?)\n" + (log or "")[-2000:]
        if not junit.is_file():
            return "crashed", [], f"pytest exited with code {proc.returncode} and wrote no report\n" + log[-2000:]
        return "ran", _read_junit(junit), log[-2000:]


def grade_folder(folder: str | os.PathLike, exercise_ids=None, timeout: float = 600.0, test_timeout: float = 30.0) -> dict:
    """Grade one student's exercises folder -> a JSON-able dict with per-exercise points."""
    folder = course.exercise_folder(str(folder))
    results = {}
    for ex in [course.get(i) for i in (exercise_ids or course.EXERCISES)]:
        test_file = course.repo_root() / "exercises" / f"test_{ex.stem}.py"
        start = time.perf_counter()
        if not (folder / f"{ex.stem}.py").is_file():
            status, outcomes, log = "missing", [], f"no file {ex.stem}.py"
        else:
            status, outcomes, log = _run_pytest(test_file, folder, timeout, test_timeout)
        if status == "ran":
            status = exercise_status(outcomes)[0]
            status = {"done": "passed", "failing": "failed" if "passed" not in outcomes else "partial",
                      "in progress": "partial"}.get(status, status)
            if "timeout" in outcomes:
                status = "timeout"
        passed, total = outcomes.count("passed"), len([o for o in outcomes if o != "skipped"])
        score = round(ex.points * passed / total, 2) if total else 0.0
        results[ex.id] = {
            "title": ex.title, "status": status, "points": score, "max_points": ex.points,
            "optional": ex.optional, "passed": passed, "tests": total,
            "failed": outcomes.count("failed") + outcomes.count("error") + outcomes.count("timeout"),
            "not_started": outcomes.count("not started"), "seconds": round(time.perf_counter() - start, 1),
            "log": log if status not in ("passed", "not started", "missing") else "",
        }
    required = [r for r in results.values() if not r["optional"]]
    return {
        "student": _student_name(folder), "folder": str(folder),
        "total": round(sum(r["points"] for r in results.values()), 2),
        "max_total": sum(r["max_points"] for r in required),  # optional exercises are bonus
        "exercises": results,
    }


def _student_name(folder: pathlib.Path) -> str:
    return folder.parent.name if folder.name == "exercises" else folder.name


def _atomic_write(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_grades(grades: list[dict], out: str | os.PathLike) -> tuple[pathlib.Path, pathlib.Path]:
    """Write out/grades.json (everything) and out/grades.csv (one row per student, points per exercise)."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ids = sorted({i for g in grades for i in g["exercises"]})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["student", *ids, "total", "max_total", *[f"{i}_status" for i in ids]])
    for g in grades:
        ex = g["exercises"]
        writer.writerow([g["student"], *[ex[i]["points"] if i in ex else "" for i in ids], g["total"],
                         g["max_total"], *[ex[i]["status"] if i in ex else "" for i in ids]])
    json_path, csv_path = out / "grades.json", out / "grades.csv"
    _atomic_write(json_path, json.dumps({"students": grades}, indent=2) + "\n")
    _atomic_write(csv_path, buffer.getvalue())
    return json_path, csv_path


# ----------------------------------------------------------------------------- stubs

def make_stub(source: str, exercise_id: str) -> str:
    """A solution file's text with every function body (and method body) replaced by the stub's raise.

    Everything else stays: the module docstring, imports, signatures, docstrings, class attributes.
    So the stub is generated from the solution and tests/test_exercises.py can check they agree.
    """
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    edits = []

    def stub(fn: ast.FunctionDef | ast.AsyncFunctionDef, qualname: str) -> None:
        first = fn.body[0]
        has_doc = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)
        rest = fn.body[1:] if has_doc else fn.body
        if rest:
            start = first.end_lineno if has_doc else first.lineno - 1  # 0-based: the line after the docstring
            indent = " " * rest[0].col_offset
            edits.append((start, fn.end_lineno, f'{indent}raise NotImplementedError("{exercise_id}: {qualname}")\n'))

    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            stub(node, node.name)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    stub(item, f"{node.name}.{item.name}")
    for start, end, text in sorted(edits, reverse=True):
        lines[start:end] = [text]
    return "".join(lines)


def write_stubs(exercise_ids=None, force: bool = False) -> list[pathlib.Path]:
    """(Re)write exercises/exNN_*.py from solutions/; refuses to overwrite started work unless force."""
    root, written = course.repo_root(), []
    for ex in [course.get(i) for i in (exercise_ids or course.EXERCISES)]:
        solution, target = root / "solutions" / f"{ex.stem}.py", root / "exercises" / f"{ex.stem}.py"
        text = make_stub(solution.read_text(), ex.id)
        if target.is_file() and target.read_text() == text:
            continue
        if target.is_file() and not force:
            module = course.load(ex.id, str(root / "exercises"))
            started = [n for n in ex.names if hasattr(module, n) and course.is_started(getattr(module, n))]
            if started:
                raise ValueError(f"{target} has started work ({', '.join(started)}); pass --force to overwrite")
        _atomic_write(target, text)
        written.append(target)
    return written


# ----------------------------------------------------------------------------- release

def _release_files(root: pathlib.Path) -> list[str]:
    """Files of the checkout (tracked or not ignored by git; all files without git), minus the solutions."""
    files: list[str] = []
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                             cwd=root, capture_output=True, text=True, check=True).stdout
        files = [f for f in out.split("\0") if f and (root / f).is_file()]
    except (OSError, subprocess.CalledProcessError):
        pass
    if not files:
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if path.is_file() and not _NEVER_COPY.intersection(rel.parts) and path.suffix not in (".pyc", ".tmp"):
                files.append(rel.as_posix())
    return sorted(f for f in files if not f.startswith(RELEASE_EXCLUDE) and not _NEVER_COPY.intersection(f.split("/")))


def check_stubs(root: pathlib.Path) -> list[str]:
    """Names in exercises/ that are implemented rather than stubs (a release must not ship answers)."""
    problems = []
    for ex in course.EXERCISES.values():
        try:
            module = course.load(ex.id, str(root / "exercises"))
        except Exception as err:
            problems.append(f"{ex.stem}.py: {type(err).__name__}: {err}")
            continue
        problems += [f"{ex.stem}.py: {n} is implemented" for n in ex.names if course.is_started(getattr(module, n))]
    return problems


def release(out: str | os.PathLike, force: bool = False) -> list[str]:
    """Copy the checkout into `out` without solutions/ and the tests that need them; returns the files."""
    root = course.repo_root()
    out = pathlib.Path(out).resolve()
    problems = check_stubs(root)
    if problems:
        raise ValueError("exercises/ must hold the stubs before a release:\n  " + "\n  ".join(problems))
    if out.exists() and not force:
        raise ValueError(f"{out} exists; pass --force to replace it")
    files = [f for f in _release_files(root) if not (root / f).resolve().is_relative_to(out)]
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent if out.parent.exists() else None))
    for rel in files:
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, tmp / rel)
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    return files


# ----------------------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minidit.grading", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("grade", help="grade one or more students' exercises folders")
    g.add_argument("folders", nargs="+", help="a student's exercises/ folder (or their checkout)")
    g.add_argument("--out", default="grades", help="output folder for grades.json and grades.csv")
    g.add_argument("--timeout", type=float, default=600.0, help="seconds per exercise before it is killed (scores 0)")
    g.add_argument("--test-timeout", type=float, default=30.0, help="seconds per test before that test fails")
    g.add_argument("--only", nargs="+", metavar="EXNN", help="grade only these exercises")
    r = sub.add_parser("release", help="write a student release without solutions/")
    r.add_argument("--out", default="release")
    r.add_argument("--force", action="store_true", help="replace an existing output folder")
    sub.add_parser("list", help="list the exercises and their points")
    s = sub.add_parser("stubs", help="(re)write the exercises/ stubs from solutions/")
    s.add_argument("ids", nargs="*", metavar="EXNN")
    s.add_argument("--force", action="store_true", help="overwrite stubs that hold started work")
    args = parser.parse_args(argv)

    if args.command == "list":
        for ex in course.EXERCISES.values():
            optional = " (optional)" if ex.optional else ""
            print(f"{ex.id}  {ex.points:>4g} pts{optional:<11}  {ex.stem + '.py':<28}  {ex.title}")
        return 0
    if args.command == "stubs":
        try:
            written = write_stubs(args.ids, force=args.force)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print("\n".join(f"wrote {p}" for p in written) or "all stubs are up to date")
        return 0
    if args.command == "release":
        try:
            files = release(args.out, force=args.force)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"wrote {len(files)} files to {args.out} (no solutions/)")
        return 0
    grades = []
    for folder in args.folders:
        if not course.exercise_folder(folder).is_dir():
            print(f"error: {folder} is not a folder", file=sys.stderr)
            return 2
        result = grade_folder(folder, args.only, args.timeout, args.test_timeout)
        grades.append(result)
        print(f"{result['student']}: {result['total']:g} / {result['max_total']:g}")
        for ex_id, r in result["exercises"].items():
            print(f"  {ex_id}  {r['points']:>5g}/{r['max_points']:<3g} {r['status']:<12} {r['passed']}/{r['tests']} tests")
    json_path, csv_path = write_grades(grades, args.out)
    print(f"wrote {json_path} and {csv_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
