# The two set-up commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= .demo

.PHONY: venv controlplane demo demo-down lint test unit clean host-tools image realnode

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# Builds etcd, Kubernetes and helm from Go modules, or reuses them from ~/.cache/vk-operator.
controlplane: venv
	$(BIN)/python -m vk_operator.devcluster build

# Debian packages for the image build (mmdebstrap, umoci, skopeo) and the real node (containerd, runc,
# CNI plugins), installed with apt when missing (root, Debian 12).
HOST_TOOLS := mmdebstrap:mmdebstrap umoci:umoci skopeo:skopeo containerd:containerd ctr:containerd runc:runc \
	/usr/lib/cni/bridge:containernetworking-plugins
host-tools:
	@missing=""; for pair in $(HOST_TOOLS); do cmd=$${pair%%:*}; pkg=$${pair#*:}; \
	  [ -x "$$cmd" ] || command -v "$$cmd" >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; fi

# The OCI image (docker archive) without Docker or a registry; cached in ~/.cache/vk-operator by its inputs.
image: venv host-tools
	$(BIN)/python -m vk_operator.devcluster.image

# The real node's kubelet and pause image (cached like the control plane).
realnode: venv host-tools
	$(BIN)/python -m vk_operator.devcluster build --real-node

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

test: controlplane lint image realnode
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) $(DEMO_DIR)
