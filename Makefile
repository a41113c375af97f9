# Two entry points that work on a fresh machine (see README):
#   make run   set up .venv and run the main job (`emdloss compare` on its built-in default)
#   make test  set up .venv, then lint, type-check and run the test suite
# Developer targets:
#   make test-fast   the core tests without slow/ddp/Sinkhorn ones, stop at the first failure:
#                    the edit-test loop (~30 s; no lint, no type-check)
#   make ci-minimal  CI's second job: the built wheel in a fresh venv, without extras and then
#                    with every dependency at its declared floor (.ci/minimal.sh)
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Tests, CI and the default run read real data from ../shared/data when it is there.
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)),)
export EMDLOSS_DATA ?= $(SHARED_DATA)
endif
export OMP_NUM_THREADS ?= 2
# The venv's tools (ninja for the optional C++ kernel among them) come first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup run test test-fast ci-minimal lint typecheck pytest bench docs

setup: $(VENV)/.installed

# torch/torchvision come from plain pip (the local wheel store here); the rest from PyPI.
$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	# The optional C++ kernel, compiled ahead of time (it prints what it does); runs use it only
	# when they ask for it (EMDLOSS_CPU_KERNEL=1), so a failed build costs nothing but speed.
	$(BIN)/emdloss build-kernel || echo "emdloss: the optional C++ kernel was not built; the PyTorch path is used"
	touch $@

run: setup
	$(BIN)/emdloss compare

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

typecheck: setup
	$(BIN)/mypy

# Every extra is installed here, so a test skipped for a missing module is a failure.
pytest: setup
	EMDLOSS_REQUIRE_EXTRAS=1 $(BIN)/python -m pytest -q tests src/emdloss

test: lint typecheck pytest

# The core tests (tests/conftest.py) without slow, multi-process and Sinkhorn-solver tests (the
# Sinkhorn gradchecks alone are ~70% of the core tests' time). Measured 2026-11-30: 361 tests,
# 27 s of CPU time (so ~30 s on 2 idle cores; 259 s wall on the shared machine at load 12).
test-fast: setup
	$(BIN)/python -m pytest -q -x -p no:cacheprovider -m "core and not slow and not ddp" \
		--ignore=tests/test_sinkhorn.py tests

ci-minimal: setup
	bash .ci/minimal.sh

bench: setup
	$(BIN)/python benchmarks/loss_speed.py

# The documentation site, strict: -W turns every warning into an error, -n reports every broken
# reference. Output: docs/_build/html/index.html.
docs: setup
	$(BIN)/sphinx-build -W --keep-going -n -q -b html docs docs/_build/html
