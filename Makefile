# Two commands set up everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=
# Benchmarks read the real datasets: $NNLAB_DATA_DIR, else ../shared/datasets beside the checkout
BENCH_DATA ?= $(or $(NNLAB_DATA_DIR),$(abspath ../shared/datasets))

.PHONY: install backends graphviz postgresql slurm slurm-stop ray ray-stop run test test-fast test-ui ui bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=python3 ...'"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,detection,albumentations,server,ray]"
	-@$(MAKE) --no-print-directory graphviz
	touch $(STAMP)

install: $(STAMP)

## Graphviz for architecture diagrams: installed with apt where we are root, else a note (runs skip the diagram)
graphviz:
	@command -v dot >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get install -y -q graphviz >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q graphviz >/dev/null 2>&1; } \
	  || echo "make: could not install graphviz; runs will skip architecture.png"; \
	else echo "make: Graphviz's dot not found; install it (apt install graphviz / brew install graphviz) for architecture.png"; fi

## PostgreSQL for `nnlab server` and its tests: Debian's package with apt where we are root, else a note (the
## server's tests then fail, naming what to install)
postgresql:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get install -y -q postgresql >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q postgresql >/dev/null 2>&1; } \
	  || echo "make: could not install PostgreSQL; nnlab server and its tests need it (apt install postgresql)"; \
	else echo "make: PostgreSQL not found; nnlab server and its tests need it (apt install postgresql)"; fi

## A one-node SLURM cluster on this machine (Debian's slurm-wlm and munge, installed with apt where missing; needs
## root): `hydra/launcher=slurm` sweeps run on it, and its tests (tests/job/test_slurm.py) use it
slurm:
	@cluster/slurm.sh start

slurm-stop:
	@cluster/slurm.sh stop

## A local Ray head for `hydra/launcher=ray` sweeps, with this machine's cores (installs the ray extra where
## missing; left alone if a cluster already runs here). Other machines join it: ray start --address=THIS_HOST:6379
ray: $(STAMP)
	@$(PY) -c "import ray" 2>/dev/null || $(PY) -m pip install -q -e ".[ray]"
	@if $(VENV)/bin/ray status >/dev/null 2>&1; then echo "make: a Ray cluster already runs here (ray status)"; \
	else $(VENV)/bin/ray start --head --num-cpus=$$(nproc) --disable-usage-stats --include-dashboard=false; fi

## Stops every Ray process on this machine (ray stop)
ray-stop:
	$(VENV)/bin/ray stop

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
test: $(STAMP) postgresql
	$(PY) -m pytest -q $(ARGS)

## Skip the end-to-end subprocess runs
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(ARGS)

## The MLflow UI and Netron checks: playwright, netron and Debian's chromium (apt where root), then the `ui` tests.
## The screenshot is kept in outputs/ui-check/ (NNLAB_UI_SCREENSHOT_DIR overrides)
test-ui: $(STAMP)
	$(PY) -m pip install -q "playwright>=1.40" "netron>=9"
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
	  || echo "make: could not install chromium; the ui tests will skip"; \
	else echo "make: Chromium not found; install it (apt install chromium) or the ui tests skip"; fi
	NNLAB_UI_SCREENSHOT_DIR=$${NNLAB_UI_SCREENSHOT_DIR:-$(abspath outputs/ui-check)} $(PY) -m pytest -q -m ui tests/test_ui.py tests/job/test_netron.py $(ARGS)

## Browse the runs of ./mlflow.db at http://127.0.0.1:5000 (lean: one worker, no job runner: 0.5 GB, not 2.7 GB)
ui: $(STAMP)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(abspath mlflow.db) \
	  --host 127.0.0.1 --port 5000 --workers 1

## Benchmarks on the real datasets (minutes to an hour; not in CI). Results land in bench-results/
bench: $(STAMP)
	NNLAB_DATA_DIR=$(BENCH_DATA) $(PY) benchmarks/run.py $(ARGS)

clean:
	rm -rf outputs multirun bench-results .pytest_cache
