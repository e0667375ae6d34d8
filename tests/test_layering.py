"""The package's layers, checked on its source (ast): what may import what.

    core        minidit/*.py                 what a student reads: data, diffusion, embeddings, blocks, model, ...
    evaluation  minidit/evaluation/          metrics, the evaluator network, `python -m minidit.evaluate`
    superres    minidit/superres/            image conditioning, degradations, the SR experiment (notebook 09)
    course      minidit/course/              the exercise switch, grading, the sandbox
    tools       minidit/tools/               bench, scaling, notebook 08's and 10's experiment runners

Rules: a module imports only from its own layer and the layers listed before it (the one exception is
the course seam below); nothing in the package imports a tool; the import graph has no cycle; an import
inside a function is of a dependency that is optional or heavy (never another minidit module) and says
why in a comment on its line, except in the two modules the sandbox's child imports before its limits
(they stay free of torch); exercised pieces are reached through their own module, never copied by
`from ... import name` (the course switch replaces them where they are defined).
"""

from __future__ import annotations

import ast
import importlib
import os
import pathlib
import subprocess
import sys

import pytest

from minidit import course

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "minidit"
LAYERS = ("core", "evaluation", "superres", "course", "tools")  # lowest first
# The one import that goes up: an entry point honours $MINIDIT_IMPL (the course switch), in minidit.cli.
SEAM = {("minidit.cli", "minidit.course")}
# The sandbox's child imports these before it sets its memory limit: torch (and minidit's modules, which
# import it) only inside the functions that need them.
TORCH_FREE = {"minidit.course", "minidit.course.sandbox"}
LATE = ("torch", "numpy", "safetensors", "einops", "minidit")
# `python -m minidit.evaluate` stays where it always was: a three-line shim over minidit.evaluation.evaluate.
LAYER_OF = {"minidit.evaluate": "evaluation"}


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def layer(module: str) -> str:
    if module in LAYER_OF:
        return LAYER_OF[module]
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else "core"


def _imports(module: str) -> list[tuple[str, int, bool, str]]:
    """[(imported module, line, inside a function?, source line)] of one minidit module."""
    path = MODULES[module]
    source = path.read_text()
    lines = source.splitlines()
    out = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, in_function, lines[child.lineno - 1]) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module != "__future__":
                for a in child.names:
                    full = f"{child.module}.{a.name}"
                    name = full if full in MODULES else child.module
                    out.append((name, child.lineno, in_function, lines[child.lineno - 1]))
            visit(child, inner)

    visit(ast.parse(source), False)
    return out


def _internal(name: str) -> list[str]:
    """The minidit modules an import runs: the module and the packages above it."""
    parts = name.split(".")
    return [m for m in (".".join(parts[:i]) for i in range(2, len(parts) + 1)) if m in MODULES]


IMPORTS = {m: _imports(m) for m in MODULES}


def test_every_module_is_this_checkouts():
    """(An editable install of another checkout can answer for a module that moved: that would hide a stale path.)"""
    for name, path in MODULES.items():
        if name.endswith("__main__"):
            continue
        assert pathlib.Path(importlib.import_module(name).__file__).resolve() == path.resolve(), name
    for name, _ in MODULES.items():
        for target, line, _, _ in IMPORTS[name]:
            if target.startswith("minidit."):
                assert _internal(target), f"{name}:{line} imports {target}, which is not a module of minidit/"


def test_layers_only_import_downwards():
    bad = []
    for name in MODULES:
        mine = LAYERS.index(layer(name))
        for target, line, _, _ in IMPORTS[name]:
            for dep in _internal(target):
                if LAYERS.index(layer(dep)) > mine and (name, dep) not in SEAM:
                    bad.append(f"{name}:{line} ({layer(name)}) imports {dep} ({layer(dep)})")
    assert not bad, "imports from a layer above:\n" + "\n".join(bad)


def test_tools_are_never_imported_by_the_library():
    bad = [
        f"{name}:{line} imports {target}"
        for name in MODULES
        if layer(name) != "tools"
        for target, line, _, _ in IMPORTS[name]
        if target.startswith("minidit.tools")
    ]
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    graph = {
        name: {d for t, _, _, _ in IMPORTS[name] for d in _internal(t) if d != name and (name, d) not in SEAM}
        for name in MODULES
    }
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = path[path.index(dep) :] + [dep] if dep in path else [node, dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                walk(dep, path + [dep])
        state[node] = 2

    for name in MODULES:
        if name not in state:
            walk(name, [name])


def test_imports_inside_functions_are_of_optional_or_heavy_dependencies_and_say_why():
    bad = []
    for name in MODULES:
        for target, line, in_function, text in IMPORTS[name]:
            if not in_function or (name in TORCH_FREE and target.split(".")[0] in LATE):
                continue
            if target.startswith("minidit") and (name, target) not in SEAM:
                bad.append(f"{name}:{line} imports minidit module {target} inside a function: import it at the top")
            elif "#" not in text:
                bad.append(f"{name}:{line} `{text.strip()}` inside a function, without a comment saying why")
    assert not bad, "\n".join(bad)


def test_the_sandbox_child_imports_no_torch_before_its_limits():
    code = "import sys, minidit.course.sandbox; print(sorted({'torch', 'numpy'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_exercised_pieces_are_not_copied_into_other_modules():
    """course.use replaces a piece where it is defined; a `from module import piece` copy would keep minidit's."""
    pieces = {}
    for ex in course.EXERCISES.values():
        for targets in ex.targets.values():
            for target in targets:
                module, _, path = target.partition(":")
                if "[" not in path and "." not in path:  # a class's method is replaced on the class itself
                    pieces.setdefault(module, set()).add(path)
    bad = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in pieces and node.module != name:
                bad += [
                    f"{name}:{node.lineno} copies {node.module}.{a.name}"
                    for a in node.names
                    if a.name in pieces[node.module]
                ]
    assert not bad, "import the module and call module.piece instead:\n" + "\n".join(bad)


def test_the_layers_are_what_the_docstring_says():
    assert {layer(m) for m in MODULES} == set(LAYERS)
    for sub in LAYERS[1:]:
        assert (PACKAGE / sub / "__init__.py").is_file(), f"minidit/{sub}/ is a package"
