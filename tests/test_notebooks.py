"""The notebooks: sources and .ipynb files agree, and every notebook runs top to bottom.

notebooks/NN_topic.py (jupytext percent format) is the source of truth; notebooks/NN_topic.ipynb is
generated from it with `jupytext --update --to ipynb notebooks/NN_topic.py` (--update keeps the
cell ids, so diffs stay small) and is committed without outputs. These tests check that pairing, then execute every
notebooks/[0-9][0-9]_*.ipynb with nbclient in quick mode (MINIDIT_QUICK=1, working directory
notebooks/), on a kernel that runs *this* interpreter, and report the cell that failed.

    pytest tests/test_notebooks.py -k 03        # one notebook
    MINIDIT_NOTEBOOK_TIMEOUT=1200 pytest tests/test_notebooks.py   # a slower machine
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import sys
import time

import pytest

jupytext = pytest.importorskip("jupytext", reason="pip install -e '.[dev]' (jupytext) to check the notebooks")
nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[dev]' (nbformat) to check the notebooks")

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
IPYNBS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
TIMEOUT_S = int(os.environ.get("MINIDIT_NOTEBOOK_TIMEOUT", "600"))  # seconds per notebook, quick mode
SYNC_HINT = "regenerate it with `jupytext --update --to ipynb {py}`"
STRIP_HINT = "strip them with `jupytext --to ipynb {py}` (without --update, which keeps outputs)"
MAGIC = re.compile(r"^\s*[%!]", re.MULTILINE)


def _cells(notebook) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


# ----------------------------------------------------------------------------- pairing and format


def test_there_are_notebooks():
    assert SOURCES, f"no notebooks/NN_*.py found in {NOTEBOOKS}"


def test_every_source_has_its_ipynb_and_back():
    py_stems = {p.stem for p in SOURCES}
    nb_stems = {p.stem for p in IPYNBS}
    missing = sorted(py_stems - nb_stems)
    orphans = sorted(nb_stems - py_stems)
    assert not missing, f"no .ipynb for {missing}: " + SYNC_HINT.format(py="notebooks/<name>.py")
    assert not orphans, f".ipynb without a notebooks/<name>.py source: {orphans} (the .py is the source of truth)"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_ipynb_matches_source(source: pathlib.Path):
    ipynb = source.with_suffix(".ipynb")
    if not ipynb.exists():
        pytest.fail(f"{ipynb.name} is missing: " + SYNC_HINT.format(py=f"notebooks/{source.name}"))
    from_source = _cells(jupytext.read(source))
    committed = _cells(nbformat.read(ipynb, as_version=4))
    if from_source != committed:
        differing = next(
            (i for i, (a, b) in enumerate(zip(from_source, committed)) if a != b), min(len(from_source), len(committed))
        )
        pytest.fail(
            f"{ipynb.name} differs from {source.name} (cell {differing}; {len(from_source)} cells in the "
            f"source, {len(committed)} in the .ipynb): " + SYNC_HINT.format(py=f"notebooks/{source.name}")
        )


@pytest.mark.parametrize("ipynb", IPYNBS, ids=lambda p: p.stem)
def test_ipynb_has_no_outputs(ipynb: pathlib.Path):
    notebook = nbformat.read(ipynb, as_version=4)
    dirty = [
        i
        for i, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, (
        f"{ipynb.name}: cells {dirty} hold outputs; commit notebooks without outputs: "
        + STRIP_HINT.format(py=f"notebooks/{ipynb.stem}.py")
    )


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_conventions(source: pathlib.Path):
    """Title cell first, a QUICK parameter read from MINIDIT_QUICK, no IPython magics (they must run as scripts)."""
    cells = jupytext.read(source).cells
    assert cells and cells[0].cell_type == "markdown" and cells[0].source.lstrip().startswith("# "), (
        f"{source.name}: the first cell must be markdown with the title ('# NN · ...'), paper section and objectives"
    )
    code = [cell.source for cell in cells if cell.cell_type == "code"]
    assert any('os.environ.get("MINIDIT_QUICK"' in c for c in code[:3]), (
        f'{source.name}: one of the first code cells must set QUICK = os.environ.get("MINIDIT_QUICK", "0") == "1"'
    )
    magics = [c.splitlines()[0] for c in code if MAGIC.search(c)]
    assert not magics, (
        f"{source.name}: IPython magics or shell escapes {magics}; notebooks must also run as plain scripts"
    )


def test_readme_lists_every_notebook():
    readme = NOTEBOOKS / "README.md"
    assert readme.is_file(), "notebooks/README.md (the index of the notebooks) is missing"
    text = readme.read_text()
    unlisted = [p.stem for p in SOURCES if p.stem not in text]
    assert not unlisted, f"notebooks/README.md does not mention {unlisted}"


# ----------------------------------------------------------------------------- execution


@pytest.fixture(scope="session")
def kernel_manager_factory(tmp_path_factory):
    """Kernels named "python3" that run sys.executable, whatever kernels the machine has installed."""
    pytest.importorskip("nbclient", reason="pip install -e '.[dev]' (nbclient) to run the notebooks")
    pytest.importorskip("ipykernel", reason="pip install -e '.[dev]' (ipykernel) to run the notebooks")
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    kernels = tmp_path_factory.mktemp("kernels")
    spec = kernels / "python3"
    spec.mkdir()
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "Python 3 (tests)", "language": "python"})
    )

    def make() -> KernelManager:
        specs = KernelSpecManager(kernel_dirs=[str(kernels)], ensure_native_kernel=False)
        return KernelManager(kernel_name="python3", kernel_spec_manager=specs)

    return make


@pytest.fixture
def notebook_env(monkeypatch):
    """Quick mode, minidit's own code (not a student's), the repository importable without installing."""
    monkeypatch.setenv("MINIDIT_QUICK", "1")
    monkeypatch.delenv("MINIDIT_IMPL", raising=False)
    monkeypatch.delenv("MINIDIT_EXERCISES", raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # silences a debugger warning on frozen modules
    # One thread per kernel unless MINIDIT_TEST_THREADS says otherwise: quick mode's tensors are tiny, and on a
    # shared machine a second thread mostly waits for the first (notebook 06: 13 s single-threaded, 35 s with
    # two threads, on 2 cores with a load average of 15).
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("MINIDIT_TEST_THREADS", "1"))


def _execute(notebook, kernel_manager_factory, timeout: int):
    """Run all cells in notebooks/; `timeout` seconds for the whole notebook (each cell gets what is left)."""
    from nbclient import NotebookClient

    deadline = time.monotonic() + timeout
    client = NotebookClient(
        notebook,
        km=kernel_manager_factory(),
        kernel_name="python3",
        timeout=timeout,
        timeout_func=lambda cell: max(1, int(deadline - time.monotonic())),
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    return client.execute()


def _failed_cell(notebook) -> tuple[int, str, str]:
    """(index, source head, error) of the first code cell whose outputs hold an error."""
    for i, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if output.get("output_type") == "error":
                head = "\n".join(cell.source.splitlines()[:8])
                return i, head, f"{output.get('ename')}: {output.get('evalue')}"
    return -1, "", ""


def test_kernel_runs_this_interpreter(kernel_manager_factory, notebook_env):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys; print(sys.executable)")])
    _execute(notebook, kernel_manager_factory, timeout=120)
    printed = notebook.cells[0].outputs[0]["text"].strip()
    assert os.path.realpath(printed) == os.path.realpath(sys.executable), (
        f"the notebook kernel runs {printed}, not this interpreter {sys.executable}"
    )


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("ipynb", IPYNBS, ids=lambda p: p.stem)
def test_notebook_runs_in_quick_mode(ipynb: pathlib.Path, kernel_manager_factory, notebook_env, fashion_mnist_dir):
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    notebook = nbformat.read(ipynb, as_version=4)
    start = time.monotonic()
    try:
        _execute(notebook, kernel_manager_factory, TIMEOUT_S)
    except CellExecutionError as err:
        index, head, error = _failed_cell(notebook)
        pytest.fail(
            f"{ipynb.name}: cell {index} failed with {error}\n--- cell source ---\n{head}\n--- traceback ---\n{err}",
            pytrace=False,
        )
    except CellTimeoutError as err:
        pytest.fail(f"{ipynb.name}: ran past its {TIMEOUT_S} s budget (MINIDIT_NOTEBOOK_TIMEOUT): {err}", pytrace=False)
    except DeadKernelError as err:
        pytest.fail(f"{ipynb.name}: the kernel died (out of memory?): {err}", pytrace=False)
    print(f"{ipynb.name}: {time.monotonic() - start:.1f} s in quick mode")
