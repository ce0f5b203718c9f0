# Developer and CI entry points. `make demo` and `make test` are the README's two commands.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
CACHE ?= $(CURDIR)/.cache
APT_PACKAGES := qemu-system-x86 busybox-static hwloc-nox cpio kmod

.PHONY: all deps venv install lint test test-rust test-python demo bench guest-kernel clean

all: install

# System packages the tests and the demo use (Debian's, nothing downloaded from elsewhere).
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VENV)/.stamp-tools:
	python3 -m venv $(VENV)
	$(PIP) install -q -U pip
	$(PIP) install -q "maturin>=1.5,<2" "pytest>=8" "hypothesis>=6" "ruff>=0.6" "mypy>=1.10"
	touch $@

venv: $(VENV)/.stamp-tools

# Builds the Rust extension (maturin) and installs the package editable, with `kata-numa`.
install: venv
	$(PIP) install -q -e .

lint: install
	$(VENV)/bin/ruff check python tests $(wildcard benches)
	$(VENV)/bin/ruff format --check python tests $(wildcard benches)
	$(VENV)/bin/mypy
	$(PY) -m mypy.stubtest kata_numa._native --ignore-missing-stub
	cd rust && cargo fmt --check && cargo clippy --all-targets -q -- -D warnings

test-rust:
	cd rust && cargo test -q

test-python: install
	$(VENV)/bin/pytest -q

test: deps install test-rust test-python

demo: deps install
	bash examples/demo.sh

bench: install
	$(PY) benches/run.py

clean:
	rm -rf $(VENV) rust/target .pytest_cache .hypothesis .mypy_cache .ruff_cache
