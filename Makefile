# zcfast: two commands for a fresh machine (Python 3.11 and a C++ compiler needed).
#   make demo   set everything up, then score real NAS-Bench-201 architectures on shipped CIFAR-10 data
#   make test   set everything up, then run the test suite (without the `slow` tests; also
#               runs every command and snippet of README.md and docs/*.md: tests/test_docs.py)
#   make test-slow   the load- and timing-sensitive tests (pytest -m slow)
# Set-up is idempotent: a virtual environment in .venv, the pinned requirements, and the
# C++ extension built in place (incrementally) against the installed torch.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=
# make test runs pytest on PYTEST_WORKERS processes (pytest-xdist; 0 = in this process).
# test-slow stays in one process: its tests are timing- and load-sensitive.
PYTEST_WORKERS ?= 2

.PHONY: setup build demo test test-slow bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip >/dev/null

$(VENV)/.requirements: requirements.txt | $(BIN)/python
	$(BIN)/pip install -r requirements.txt
	touch $@

# The editable install declares no extension (ZCFAST_NO_EXTENSION=1): `build` compiles it in place,
# so each source is compiled once. Compile jobs: MAX_JOBS (torch's ninja build; default nproc + 2).
$(VENV)/.editable: setup.py | $(VENV)/.requirements
	ZCFAST_NO_EXTENSION=1 $(BIN)/pip install --no-build-isolation --no-deps -e .
	touch $@

setup: $(VENV)/.requirements $(VENV)/.editable

build: setup
	$(BIN)/python setup.py build_ext --inplace

demo: build
	$(BIN)/zcfast info
	$(BIN)/zcfast correlate --space nb201 --dataset cifar10 --proxies all --n 20 --seed 0 --out out/demo

test: build
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

test-slow: build
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

bench: build
	$(BIN)/python bench/bench_ops.py
	$(BIN)/python bench/bench_proxies.py
	$(BIN)/python bench/bench_throughput.py

clean:
	rm -rf build *.egg-info zcfast/*.so out
