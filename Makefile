# The two commands of the README: `make demo` (main job) and `make test` (everything CI runs).
VENV ?= /opt/podvirt/venv
PY := $(VENV)/bin/python
export PATH := $(VENV)/bin:$(PATH)

.PHONY: setup test lint demo down bench crds manifests protos images

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
	$(PY) scripts/demo.py up

down:
	$(PY) scripts/demo.py down

bench: setup
	$(PY) -m benchmarks $(BENCH_ARGS)

crds: setup
	$(PY) -m kubevirt_types.crdgen crds/

manifests: setup
	$(PY) -m virt_operator.manifests .

# The kubelet's device-plugin API (podvirt_common/deviceplugin/api.proto) as Python: messages and grpclib stubs.
protos: setup
	$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpclib_python_out=. podvirt_common/deviceplugin/api.proto

# REGISTRY and TAG default to the manifests' (quay.io/podvirt, v<version>).
images:
	scripts/build_images.sh $(if $(REGISTRY),--registry $(REGISTRY)) $(if $(TAG),--tag $(TAG))
