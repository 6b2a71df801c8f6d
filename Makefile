# The two set-up commands: `make demo` and `make test`. Both create .venv on first use.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kubeforge-installed
# The demo's scratch files; its state is where `kubeforge get` looks: ./.kubeforge or $KUBEFORGE_STATE_DIR.
DEMO_DIR ?= .kubeforge/demo

.PHONY: demo test lint install system-deps clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch/torchvision are pinned to the releases that pip finds on this machine's disk.
	$(BIN)/python -m pip install --progress-bar off -e ".[train,serve,operator,test]"
	touch $(STAMP)

# tritonserver's Python-backend stub links the shared libpython3.11; the report tests load
# report.html in headless Chromium; OpenCV (pulled in by boxmot, the trackers) loads libGL and
# libgthread. All are Debian packages.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
system-deps:
	@missing=""; \
	ldconfig -p | grep -q 'libpython3.11.so.1.0' || missing="$$missing libpython3.11"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	ldconfig -p | grep -q 'libGL.so.1' || missing="$$missing libgl1"; \
	ldconfig -p | grep -q 'libgthread-2.0.so.0' || missing="$$missing libglib2.0-0"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

demo: $(STAMP)
	DEMO_DIR=$(DEMO_DIR) KUBEFORGE=$(BIN)/kubeforge bash examples/quickstart/demo.sh

lint: $(STAMP)
	$(BIN)/ruff check operator trainers tests benchmarks
	$(BIN)/kubeforge crds generate --check
	$(BIN)/kubeforge chart sync --check

test: $(STAMP)
	$(BIN)/ruff check operator trainers tests benchmarks
	$(BIN)/kubeforge crds generate --check
	$(BIN)/kubeforge chart sync --check
	# pytest exits 5 when it collected nothing: that fails here like any other error.
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .kubeforge .pytest_cache
