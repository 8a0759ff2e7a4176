# The two set-up commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= .demo

.PHONY: venv controlplane demo demo-down lint test unit clean

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# Builds etcd, Kubernetes and helm from Go modules, or reuses them from ~/.cache/vk-operator.
controlplane: venv
	$(BIN)/python -m vk_operator.devcluster build

demo: controlplane
	$(BIN)/python -m vk_operator.devcluster.demo up --dir $(DEMO_DIR)

demo-down: venv
	$(BIN)/python -m vk_operator.devcluster.demo down --dir $(DEMO_DIR)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: venv
	$(BIN)/python -m pytest tests/unit

test: controlplane lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) $(DEMO_DIR)
