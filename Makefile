# minidit — one command to set up and open the course, one to set up and run the tests.
#
#   make course   # installs everything (apt data package, .venv, packages) and opens JupyterLab
#   make test     # installs everything and runs the whole test suite (what CI runs)
#
# Variables: PYTHON (interpreter that creates .venv), TORCH (a pip requirement for torch;
# CI pins the CPU build torch==2.13.0, everyone else keeps whatever torch they already have).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ifeq ($(CI),true)
TORCH  ?= torch==2.13.0
endif
TORCH  ?=
PYTEST_ARGS ?=

.PHONY: setup data venv course test lint format exercises notebooks-sync release grade clean

# EXTRAS: what `pip install -e ".[EXTRAS]"` adds; the course needs JupyterLab, the tests do not.
setup: data venv

# The Debian/Ubuntu package dataset-fashion-mnist puts the IDX files in /usr/share/datasets/fashion-mnist.
# Elsewhere: set MINIDIT_DATA_DIR, or let minidit download the files (see README).
data:
	@if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then \
	  echo "Fashion-MNIST: found in /usr/share/datasets/fashion-mnist"; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist python3-venv >/dev/null || \
	  echo "apt-get could not install dataset-fashion-mnist; see README 'Other systems'"; \
	else \
	  echo "No apt-get here: minidit will look in \$$MINIDIT_DATA_DIR or download Fashion-MNIST (see README)"; \
	fi

# --system-site-packages: a torch that is already installed (Colab, conda, a laptop) is reused.
$(BIN)/python:
	$(PYTHON) -m venv --system-site-packages $(VENV)

EXTRAS ?= dev
venv: $(BIN)/python
	@if [ -n "$(TORCH)" ]; then $(BIN)/python -m pip install -q "$(TORCH)"; fi
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"

# Jupyter refuses to start as root unless told; containers (Docker, Colab-like images) often run as root.
course:
	$(MAKE) setup EXTRAS=notebooks,dev
	$(BIN)/python -m jupyterlab notebooks/ $$(if [ "$$(id -u)" = 0 ]; then echo --allow-root; fi) $(JUPYTER_ARGS)

# A student release has no tests/ (they check minidit's own pieces, which it does not ship), and its
# generated sources are not linted: the linter runs in the full checkout (CI) only.
test: setup
	@if [ -d tests ]; then $(MAKE) --no-print-directory lint; fi
	$(BIN)/python -m pytest $$(ls -d tests 2>/dev/null) exercises $(PYTEST_ARGS)

# ruff: the linter and the formatter (configured in pyproject.toml); `make format` applies the formatter.
lint:
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .

format:
	$(BIN)/python -m ruff format .

# The student loop: which exercises are done (no set-up step, so it is quick).
exercises:
	$(BIN)/python -m pytest exercises

# notebooks/NN_x.py (jupytext percent format) is the source; the .ipynb is generated from it.
notebooks-sync:
	$(BIN)/python -m jupytext --update --to ipynb notebooks/[0-9][0-9]_*.py

release:
	$(BIN)/python -m minidit.course.grading release --out release $(RELEASE_ARGS)

grade:
	$(BIN)/python -m minidit.course.grading grade $(STUDENT) --out grades $(GRADE_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
