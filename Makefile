# Two commands set up everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=
# Benchmarks read the real datasets: $NNLAB_DATA_DIR, else ../shared/datasets beside the checkout
BENCH_DATA ?= $(or $(NNLAB_DATA_DIR),$(abspath ../shared/datasets))

.PHONY: install backends run test test-fast ui bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=python3 ...'"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

## JAX and PyTorch (CPU builds) beside TensorFlow, so the backend tests run instead of skipping.
## torch==2.13.0 is pinned because a plain `torch` pulls a multi-GB CUDA build.
backends: $(VENV)/.backends
$(VENV)/.backends: $(STAMP)
	$(PY) -m pip install -q "torch==2.13.0" "jax>=0.4.30"
	touch $@

## Train the embedded default (scikit-learn digits, MLP) offline; extra Hydra overrides via ARGS="..."
run: $(STAMP)
	$(PY) -m nnlab $(ARGS)

## The whole test suite (what CI runs)
test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

## Skip the end-to-end subprocess runs
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(ARGS)

## Browse the runs of ./mlflow.db at http://127.0.0.1:5000
ui: $(STAMP)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(abspath mlflow.db) --host 127.0.0.1 --port 5000

## Benchmarks on the real datasets (minutes to an hour; not in CI). Results land in bench-results/
bench: $(STAMP)
	NNLAB_DATA_DIR=$(BENCH_DATA) $(PY) benchmarks/run.py $(ARGS)

clean:
	rm -rf outputs multirun bench-results .pytest_cache
