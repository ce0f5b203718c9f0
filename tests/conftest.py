"""Fixtures shared by the test modules."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from machines import FIXTURES, MACHINES, MachineStore
from qemurun import Runner


@pytest.fixture(scope="session")
def sysfs_machines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MachineStore]:
    """The captured machines, each unpacked on first use (a few seconds for all of them)."""
    if not MACHINES:
        pytest.skip(f"no captured machines in {FIXTURES} (set KATA_NUMA_FIXTURES)")
    if shutil.which("tar") is None:
        pytest.skip("tar is not installed: cannot unpack the captured machines")
    base = tmp_path_factory.mktemp("sysfs-machines")
    yield MachineStore(base)
    shutil.rmtree(base, ignore_errors=True)  # up to 700 MB unpacked: not kept between runs


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    """Starts QEMU processes for a test and stops every one of them afterwards."""
    qemu = Runner(tmp_path)
    try:
        yield qemu
    finally:
        qemu.stop_all()
