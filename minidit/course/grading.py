"""Instructor tools: grade students' exercises/ folders, and write a student release without solutions.

    python -m minidit.course.grading grade submissions/alice submissions/bob --out grades   # JSON + CSV
    python -m minidit.course.grading grade submission --gradescope results/results.json     # + Gradescope's file
    python -m minidit.course.grading release --out release     # no solutions/; minidit's pieces run exercises/
    python -m minidit.course.grading list                      # exercises and points
    python -m minidit.course.grading stubs [ex15 ...]          # (re)write exercises/exNN_*.py stubs from solutions/

Grading runs this checkout's tests (exercises/test_exNN_*.py, the same oracles and hints students
run) in a clean pytest process per exercise; the student's code runs only in a confined child of
that process (minidit.course.sandbox), which decides nothing and writes no report. Each test has a time
limit (--test-timeout: a loop fails the tests that reach it) and each exercise a hard one
(--timeout: everything is killed and the exercise scores 0). A file that imports or reaches the
exercise's own answer from minidit or solutions/ scores 0 ("rejected"). An exercise scores
points * passed / total tests; its status is passed, partial, failed, not started, missing,
timeout, crashed (the student's process died) or rejected. See README "For instructors" for what
this guarantees and what it does not.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import dataclasses
import io
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile

from safetensors.torch import save_file

from minidit import course
from minidit.checkpoint import atomic_write, atomic_write_json
from minidit.course import sandbox

# tests/ files that need solutions/; they do not ship in the student release.
RELEASE_EXCLUDE = ("solutions/", "tests/")  # tests/ checks minidit's own pieces, which the release does not ship
TIMEOUT_MESSAGE = sandbox.TIMEOUT_MESSAGE  # exercises/conftest.py words a timed-out test so
_REPO = pathlib.Path(__file__).resolve().parents[2]  # the folder that holds minidit/
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


# ----------------------------------------------------------------------------- honesty

_DYNAMIC = {"importlib", "__import__", "exec", "eval", "compile", "runpy"}


def exercised_names(ex: course.Exercise) -> set[str]:
    """The names an exercise asks for and the minidit attributes they replace (DiT.forward_with_cfg ->
    forward_with_cfg)."""
    names = set(ex.names)
    for targets in ex.targets.values():
        for target in targets:
            path = target.partition(":")[2]
            if not path.endswith("]"):
                names.add(path.rsplit(".", 1)[-1])
    return names


def honesty_problems(ex: course.Exercise, source: str) -> list[str]:
    """Why a submission file is not the student's own implementation (empty: nothing found), by reading it.

    Not allowed: importing or reaching the exercise's own names from minidit or solutions
    (`from minidit.diffusion import q_sample`, `diffusion.q_sample(...)`, `model.forward_with_cfg(...)`,
    `getattr(m, "q_sample")`), importing solutions at all, and loading code dynamically (importlib,
    exec, eval, ...). Everything else is allowed: other exercises' pieces and minidit's building blocks
    (Attention, Mlp, modulate in ex11, diffusion.q_sample in ex03). The child process adds a runtime
    check (minidit's own versions of the graded pieces raise there), see minidit.course.sandbox.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []  # the tests report the syntax error
    own, problems = exercised_names(ex), []

    def add(node: ast.AST, text: str) -> None:
        problems.append(f"line {getattr(node, 'lineno', '?')}: {text}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "solutions":
                    add(node, f"imports {alias.name}")
                elif alias.name.split(".")[0] in _DYNAMIC:
                    add(node, f"imports {alias.name} (loading code dynamically)")
        elif isinstance(node, ast.ImportFrom):
            top = (node.module or "").split(".")[0]
            if top == "solutions":
                add(node, f"imports from {node.module}")
            elif top in _DYNAMIC:
                add(node, f"imports from {node.module} (loading code dynamically)")
            elif top == "minidit":
                for alias in node.names:
                    if alias.name in own or alias.name == "*":
                        add(node, f"imports {alias.name} from {node.module}")
        elif isinstance(node, ast.Attribute) and node.attr in own:
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                add(node, f"uses {ast.unparse(node)}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in _DYNAMIC:
                add(node, f"calls {node.func.id}() (loading code dynamically)")
            elif (
                node.func.id in ("getattr", "hasattr")
                and len(node.args) > 1
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in own
            ):
                add(node, f"uses {ast.unparse(node)}")
    return problems


# ----------------------------------------------------------------------------- grading


@dataclasses.dataclass
class Options:
    """Limits of one grading run (see minidit.course.sandbox.Limits for what each means in the child)."""

    timeout: float = 600.0  # seconds per exercise, all its tests together (the verdict process is killed)
    test_timeout: float = 30.0  # seconds per test (and per call into the student's code)
    memory_mb: int = 2048
    max_processes: int = 32
    output_mb: int = 16
    user: str = "nobody"

    def limits(self) -> sandbox.Limits:
        call = self.test_timeout if self.test_timeout > 0 else self.timeout
        return sandbox.Limits(
            call_seconds=call,
            memory_mb=self.memory_mb,
            cpu_seconds=int(self.timeout) + 1,
            output_mb=self.output_mb,
            max_processes=self.max_processes,
            user=self.user,
        )


def _run_tests(exercises: list[course.Exercise], folder: pathlib.Path, options: Options) -> dict[str, dict]:
    """Run this checkout's tests of these exercises against `folder` -> per exercise: status, tests, log, notes.

    The tests run in one clean pytest process with minidit.course.sandbox as plugin: the student's code runs
    only in that process's confined children, one per exercise, each killed (with all it started)
    before the next exercise's tests; an exercise whose tests together run longer than
    options.timeout stops there and scores 0. Output goes to files (never pipes); at the end every
    process still alive below us (setsid or not) is killed, then the report is read.
    """
    root = course.repo_root()
    files = [str(root / "exercises" / f"test_{ex.stem}.py") for ex in exercises]
    sandbox.become_subreaper()
    before = set(sandbox.children())
    limit = options.timeout * len(exercises) + 60  # the exercise budgets hold it well within this
    with tempfile.TemporaryDirectory(prefix="minidit-grade-") as tmp:
        report, log_path = pathlib.Path(tmp) / "report.json", pathlib.Path(tmp) / "pytest.log"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            *files,
            "-p",
            "minidit.course.sandbox",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            "--no-header",
            "-rN",
            "--basetemp",
            str(pathlib.Path(tmp) / "t"),
        ]
        env = {k: v for k, v in os.environ.items() if k not in (course.ENV_IMPL, course.ENV_EXERCISES)}
        env.update(
            {
                sandbox.ENV_SUBMISSION: str(folder),
                sandbox.ENV_REPORT: str(report),
                sandbox.ENV_LIMITS: json.dumps(dataclasses.asdict(options.limits())),
                sandbox.ENV_BUDGET: str(options.timeout),
                "MINIDIT_TEST_TIMEOUT": str(options.test_timeout),
                "PYTHONDONTWRITEBYTECODE": "1",
            }
        )
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                cmd,
                cwd=root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        timed_out = False
        try:
            proc.wait(limit)
        except subprocess.TimeoutExpired:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        finally:
            sandbox.kill_descendants(keep=before)  # whatever is left (daemons, setsid children) dies here
        log = log_path.read_text(errors="replace")[-2000:]
        data = json.loads(report.read_text()) if report.is_file() and not timed_out else None
    if data is None:
        status, why = (
            ("timeout", f"killed after {limit:g} s")
            if timed_out
            else ("crashed", f"the test process exited with code {proc.returncode} and wrote no report")
        )
        return {
            ex.id: {"status": status, "tests": [], "log": f"{why}\n{log}", "notes": [], "seconds": 0.0}
            for ex in exercises
        }
    out = {}
    for ex in exercises:
        info = data["exercises"].get(ex.id, {})
        tests = [t for t in data["tests"] if t["exercise"] == ex.id]
        problems = [f"{t['name']}: {t['outcome']}: {t['message']}" for t in tests if t["outcome"] != "passed"]
        output = info.get("output", "").strip()
        text = "\n".join(problems) + (f"\n--- your code's output ---\n{output}" if output else "")
        status, over = _status(tests), bool(info.get("over_budget"))
        if over:
            status, text = "timeout", f"its tests ran longer than {options.timeout:g} s together: scored 0\n{text}"
        out[ex.id] = {
            "status": status,
            "tests": tests,
            "log": text[-4000:],
            "notes": info.get("notes", []),
            "seconds": round(info.get("seconds", 0.0), 1),
            "over_budget": over,
        }
    return out


def _status(tests: list[dict]) -> str:
    outcomes = [t["outcome"] for t in tests]
    for special in ("rejected", "timeout", "crashed"):
        if special in outcomes:
            return special
    status = exercise_status([{"crashed": "error", "rejected": "error"}.get(o, o) for o in outcomes])[0]
    return {
        "done": "passed",
        "failing": "failed" if "passed" not in outcomes else "partial",
        "in progress": "partial",
    }.get(status, status)


def _instructor_files(root: pathlib.Path) -> dict[str, bytes]:
    """The files a grading run trusts: the exercise tests and helpers, the package, the root conftest."""
    files = {}
    for pattern in ("exercises/*.py", "minidit/**/*.py", "conftest.py", "pyproject.toml"):
        for path in sorted(root.glob(pattern)):
            if path.is_file() and "__pycache__" not in path.parts:
                files[path.relative_to(root).as_posix()] = path.read_bytes()
    return {k: v for k, v in files.items() if not k.startswith("exercises/ex")}  # not the instructor's own stubs


def _restore_checkout(root: pathlib.Path, snapshot: dict[str, bytes]) -> list[str]:
    """Put back any trusted file a submission changed, removed or added; returns what was wrong."""
    now = _instructor_files(root)
    wrong = sorted(set(now) ^ set(snapshot) | {k for k in now.keys() & snapshot.keys() if now[k] != snapshot[k]})
    for rel in wrong:
        if rel in snapshot:
            atomic_write(root / rel, lambda tmp, data=snapshot[rel]: tmp.write_bytes(data))
        else:
            (root / rel).unlink(missing_ok=True)
    return wrong


def grade_folder(
    folder: str | os.PathLike,
    exercise_ids=None,
    timeout: float = 600.0,
    test_timeout: float = 30.0,
    options: Options | None = None,
    snapshot: dict[str, bytes] | None = None,
) -> dict:
    """Grade one student's exercises folder -> a JSON-able dict with per-exercise points and per-test results."""
    options = options or Options(timeout=timeout, test_timeout=test_timeout)
    folder = course.exercise_folder(str(folder))
    root = course.repo_root()
    snapshot = snapshot if snapshot is not None else _instructor_files(root)
    chosen = [course.get(i) for i in (exercise_ids or course.EXERCISES)]
    early: dict[str, dict] = {}  # exercises decided without running anything
    for ex in chosen:
        file = folder / f"{ex.stem}.py"
        if not file.is_file():
            early[ex.id] = {"status": "missing", "log": f"no file {ex.stem}.py"}
        elif problems := honesty_problems(ex, file.read_text(errors="replace")):
            early[ex.id] = {
                "status": "rejected",
                "log": (
                    f"{ex.id} scores 0: {ex.stem}.py does not implement the exercise itself - "
                    + "; ".join(problems)
                    + ". Write your own code (other exercises' pieces and building blocks such as Attention and Mlp "
                    "may be imported)."
                ),
            }
    to_run = [ex for ex in chosen if ex.id not in early]
    ran = _run_tests(to_run, folder, options) if to_run else {}
    tampered = _restore_checkout(root, snapshot)  # only possible without Landlock; the next student is safe
    results = {}
    for ex in chosen:
        r = {"tests": [], "notes": [], "seconds": 0.0, **early.get(ex.id, {}), **ran.get(ex.id, {})}
        tests, status, log = r["tests"], r["status"], r["log"]
        if tampered and ex.id in ran:
            log = f"WARNING: the submission changed the grader's files {tampered}; they were restored\n{log}"
        passed = sum(t["outcome"] == "passed" for t in tests)
        total = sum(t["outcome"] != "skipped" for t in tests)
        over = r.get("over_budget", False)
        score = round(ex.points * passed / total, 2) if total and status != "rejected" and not over else 0.0
        results[ex.id] = {
            "title": ex.title,
            "status": status,
            "points": score,
            "max_points": ex.points,
            "optional": ex.optional,
            "passed": passed,
            "tests": total,
            "failed": sum(t["outcome"] in ("failed", "error", "timeout", "crashed", "rejected") for t in tests),
            "not_started": sum(t["outcome"] == "not started" for t in tests),
            "seconds": r["seconds"],
            "log": log if status not in ("passed", "not started") or (tampered and ex.id in ran) else "",
            "results": tests,
            "tampered": tampered if ex.id in ran else [],
            "sandbox": r["notes"],
        }
    required = [r for r in results.values() if not r["optional"]]
    return {
        "student": _student_name(folder),
        "folder": str(folder),
        "total": round(sum(r["points"] for r in results.values()), 2),
        "max_total": sum(r["max_points"] for r in required),  # optional exercises are bonus
        "exercises": results,
    }


def _student_name(folder: pathlib.Path) -> str:
    return folder.parent.name if folder.name == "exercises" else folder.name


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
        writer.writerow(
            [
                g["student"],
                *[ex[i]["points"] if i in ex else "" for i in ids],
                g["total"],
                g["max_total"],
                *[ex[i]["status"] if i in ex else "" for i in ids],
            ]
        )
    json_path, csv_path = out / "grades.json", out / "grades.csv"
    atomic_write_json(json_path, {"students": grades})
    atomic_write(csv_path, lambda tmp: tmp.write_text(buffer.getvalue()))
    return json_path, csv_path


def gradescope_results(grade: dict) -> dict:
    """One student's grade as Gradescope's autograder results.json: one entry per test, hints as output."""
    entries = []
    for ex_id, r in grade["exercises"].items():
        title = f"{ex_id} {r['title']}" + (" (optional bonus)" if r["optional"] else "")
        graded = [t for t in r["results"] if t["outcome"] != "skipped"]
        if not graded or r["status"] in ("rejected", "missing"):
            entries.append(
                {
                    "name": title,
                    "number": ex_id,
                    "score": r["points"],
                    "max_score": r["max_points"],
                    "status": "passed" if r["status"] == "passed" else "failed",
                    "output": r["log"] or r["status"],
                }
            )
            continue
        each = r["max_points"] / len(graded)
        per_pass = r["points"] / max(1, sum(t["outcome"] == "passed" for t in graded))  # sums to the exercise's points
        for i, t in enumerate(graded, 1):
            passed = t["outcome"] == "passed"
            entries.append(
                {
                    "name": f"{title}: {t['name']}",
                    "number": f"{ex_id}.{i}",
                    "score": round(per_pass if passed else 0.0, 4),
                    "max_score": round(each, 4),
                    "status": "passed" if passed else "failed",
                    "output": "" if passed else f"{t['outcome']}: {t['message']}",
                }
            )
    summary = "\n".join(
        f"{ex_id}  {r['points']:g}/{r['max_points']:g}  {r['status']}" for ex_id, r in grade["exercises"].items()
    )
    return {"score": grade["total"], "output": summary, "tests": entries, "stdout_visibility": "hidden"}


def write_gradescope(grade: dict, path: str | os.PathLike) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, gradescope_results(grade))
    return path


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
        has_doc = (
            isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)
        )
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
        atomic_write(target, lambda tmp, text=text: tmp.write_text(text))
        written.append(target)
    return written


# ----------------------------------------------------------------------------- release


def _release_files(root: pathlib.Path) -> list[str]:
    """Files of the checkout (tracked or not ignored by git; all files without git), minus the solutions."""
    files: list[str] = []
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        files = [f for f in out.split("\0") if f and (root / f).is_file()]
    except (OSError, subprocess.CalledProcessError):
        pass
    if not files:
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if path.is_file() and not _NEVER_COPY.intersection(rel.parts) and path.suffix not in (".pyc", ".tmp"):
                files.append(rel.as_posix())
    return sorted(f for f in files if not f.startswith(RELEASE_EXCLUDE) and not _NEVER_COPY.intersection(f.split("/")))


def _release_targets() -> dict[str, list[tuple[str, str, str]]]:
    """minidit file -> [(exercise id, name, qualified name in the file)] of every exercised piece."""
    out: dict[str, list[tuple[str, str, str]]] = {}
    for ex in course.EXERCISES.values():
        for name, targets in ex.targets.items():
            for target in targets:
                module, _, path = target.partition(":")
                if module.startswith("minidit.") and not path.endswith("]"):  # BLOCKS[...] holds a class already done
                    rel = module.replace(".", "/")  # a module file, or a package's __init__.py
                    rel += "/__init__.py" if (_REPO / rel).is_dir() else ".py"
                    out.setdefault(rel, []).append((ex.id, name, path))
    return out


def release_source(source: str, pieces: list[tuple[str, str, str]]) -> str:
    """A minidit module's text with the bodies of the exercised pieces removed and delegation added.

    Functions and methods keep their signature and docstring and get `@_course.release_piece(id, name)`
    (they call the student's exercises/ version); a class keeps its attributes and method signatures and
    gets `@_course.release_class(id, name)` (building it builds the student's class). So the release
    holds no solution, and notebooks run on the student's code (or stop with a message naming the file).
    """
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    edits: list[tuple[int, int, str]] = []  # (start, end) 0-based line slice -> replacement

    def empty_body(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        first = fn.body[0]
        has_doc = (
            isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)
        )
        start = first.end_lineno if has_doc else first.lineno - 1
        indent = " " * first.col_offset
        edits.append((start, fn.end_lineno, "" if has_doc else f"{indent}...\n"))

    def decorate(node: ast.AST, text: str) -> None:
        first = min([d.lineno for d in node.decorator_list] + [node.lineno]) - 1
        edits.append((first, first, " " * node.col_offset + text + "\n"))

    def find(qualname: str):
        scope: list[ast.stmt] = tree.body
        node = None
        for part in qualname.split("."):
            node = next(
                (
                    n
                    for n in scope
                    if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == part
                ),
                None,
            )
            if node is None:
                raise ValueError(f"{qualname} not found")
            scope = node.body
        return node

    for ex_id, name, qualname in pieces:
        node = find(qualname)
        if isinstance(node, ast.ClassDef):
            decorate(node, f"@_course.release_class({ex_id!r}, {name!r})")
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    empty_body(item)
        else:
            decorate(node, f"@_course.release_piece({ex_id!r}, {name!r})")
            empty_body(node)
    # the import goes after `from __future__ ...` (which must come first) or the docstring
    anchor = 0
    for stmt in tree.body:
        if (
            isinstance(stmt, ast.ImportFrom)
            and stmt.module == "__future__"
            or (stmt is tree.body[0] and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant))
        ):
            anchor = stmt.end_lineno
    edits.append(
        (anchor, anchor, "\nfrom minidit import course as _course  # the student release: pieces run exercises/\n")
    )
    for start, end, text in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        lines[start:end] = [text]
    return "".join(lines)


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
    for rel, pieces in _release_targets().items():  # minidit without the solutions: it runs the student's code
        if (tmp / rel).is_file():
            (tmp / rel).write_text(release_source((root / rel).read_text(), pieces))

    (tmp / "minidit" / course.RECORD_FILE).parent.mkdir(parents=True, exist_ok=True)
    save_file(course.record_reference_outputs(), tmp / "minidit" / course.RECORD_FILE)
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    return files


# ----------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minidit.course.grading", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("grade", help="grade one or more students' exercises folders")
    g.add_argument("folders", nargs="+", help="a student's exercises/ folder (or their checkout)")
    g.add_argument("--out", default="grades", help="output folder for grades.json and grades.csv")
    g.add_argument("--timeout", type=float, default=600.0, help="seconds per exercise before it is killed (scores 0)")
    g.add_argument("--test-timeout", type=float, default=30.0, help="seconds per test before that test fails")
    g.add_argument("--only", nargs="+", metavar="EXNN", help="grade only these exercises")
    g.add_argument("--memory-mb", type=int, default=2048, help="address space of the student's process (RLIMIT_AS)")
    g.add_argument("--max-processes", type=int, default=32, help="processes the student's code may start")
    g.add_argument("--output-mb", type=int, default=16, help="largest file or output the student's code may write")
    g.add_argument(
        "--child-user",
        default="nobody",
        help="when grading as root, run the student's code as this user ('' keeps root, capabilities dropped)",
    )
    g.add_argument(
        "--gradescope",
        metavar="RESULTS_JSON",
        help="also write Gradescope's results.json (one folder only), e.g. /autograder/results/results.json",
    )
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
    if args.gradescope and len(args.folders) != 1:
        print("error: --gradescope grades exactly one folder", file=sys.stderr)
        return 2
    options = Options(
        timeout=args.timeout,
        test_timeout=args.test_timeout,
        memory_mb=args.memory_mb,
        max_processes=args.max_processes,
        output_mb=args.output_mb,
        user=args.child_user,
    )
    sandbox.become_subreaper()  # what a submission leaves running (daemons, setsid) stays ours to kill
    snapshot = _instructor_files(course.repo_root())
    grades = []
    for folder in args.folders:
        if not course.exercise_folder(folder).is_dir():
            print(f"error: {folder} is not a folder", file=sys.stderr)
            return 2
        result = grade_folder(folder, args.only, options=options, snapshot=snapshot)
        grades.append(result)
        print(f"{result['student']}: {result['total']:g} / {result['max_total']:g}")
        notes = sorted({n for r in result["exercises"].values() for n in r["sandbox"]})
        if notes:
            print(f"  (the student's code ran confined: {'; '.join(notes)})")
        for ex_id, r in result["exercises"].items():
            print(
                f"  {ex_id}  {r['points']:>5g}/{r['max_points']:<3g} {r['status']:<12} {r['passed']}/{r['tests']} tests"
            )
    sandbox.kill_descendants()  # nothing a submission started outlives the grader; then the reports
    json_path, csv_path = write_grades(grades, args.out)
    print(f"wrote {json_path} and {csv_path}")
    if args.gradescope:
        print(f"wrote {write_gradescope(grades[0], args.gradescope)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
