# Developer and CI entry points. `make demo` and `make test` are the README's two commands.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
CACHE ?= $(CURDIR)/.cache
APT_PACKAGES := qemu-system-x86 busybox-static hwloc-nox cpio kmod
# numactl: tests compare `kata-numa topology` with `numactl --hardware` on captured machines.
APT_PACKAGES += numactl

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
	# Linters pinned: a newer release may add rules, and CI must judge the code, not the release.
	$(PIP) install -q "maturin>=1.5,<2" "pytest>=8" "hypothesis>=6" "ruff==0.17.6" "mypy==2.4.1"
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

test: deps install guest-kernel test-rust test-python

# A Debian kernel for the guest-boot tests (pytest -m guest): the package linux-image-amd64
# points at, fetched with apt-get download and unpacked with dpkg-deb into .cache (never
# installed into /boot). Only vmlinuz and its config are kept.
GUEST_KERNEL_DIR := $(CACHE)/guest-kernel
KERNEL_PKG = apt-cache depends linux-image-amd64 2>/dev/null | \
	sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$$/\1/p' | head -n1

guest-kernel: $(GUEST_KERNEL_DIR)/vmlinuz

$(GUEST_KERNEL_DIR)/vmlinuz:
	@set -e; SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	pkg=$$($(KERNEL_PKG)); \
	if [ -z "$$pkg" ]; then $$SUDO apt-get update -qq; pkg=$$($(KERNEL_PKG)); fi; \
	[ -n "$$pkg" ] || { echo "apt knows no linux-image-*-amd64 package" >&2; exit 1; }; \
	work=$(GUEST_KERNEL_DIR).tmp; rm -rf $$work; mkdir -p $$work; \
	echo "guest kernel: $$pkg"; \
	(cd $$work && apt-get download -qq $$pkg 2>/dev/null) || \
		($$SUDO apt-get update -qq && cd $$work && apt-get download -qq $$pkg); \
	dpkg-deb -x $$work/$${pkg}_*.deb $$work/root; \
	mkdir -p $(GUEST_KERNEL_DIR); \
	cp $$work/root/boot/config-* $(GUEST_KERNEL_DIR)/config; \
	echo $$pkg > $(GUEST_KERNEL_DIR)/package; \
	cp $$work/root/boot/vmlinuz-* $(GUEST_KERNEL_DIR)/vmlinuz.tmp; \
	mv $(GUEST_KERNEL_DIR)/vmlinuz.tmp $@; rm -rf $$work

demo: deps install
	bash examples/demo.sh

bench: install
	$(PY) benches/run.py

clean:
	rm -rf $(VENV) rust/target .pytest_cache .hypothesis .mypy_cache .ruff_cache
