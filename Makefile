# The two commands of the README: `make demo` (main job) and `make test` (everything CI runs).
VENV ?= /opt/podvirt/venv
PY := $(VENV)/bin/python
export PATH := $(VENV)/bin:$(PATH)

.PHONY: setup test lint demo down bench crds

setup:
	@PODVIRT_VENV=$(VENV) scripts/setup.sh

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(PY) -m devcluster up --state-dir $${PODVIRT_DEMO_DIR:-/var/tmp/podvirt-demo}

down:
	$(PY) -m devcluster down --state-dir $${PODVIRT_DEMO_DIR:-/var/tmp/podvirt-demo}

bench: setup
	$(PY) -m benchmarks $(BENCH_ARGS)

crds: setup
	$(PY) -m kubevirt_types.crdgen crds/
