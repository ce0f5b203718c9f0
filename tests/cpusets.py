"""Real cgroup v1 cpusets for tests: one of the highest online CPU, removed after use."""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from kata_numa import CpuSet

CPUSET_V1 = Path("/sys/fs/cgroup/cpuset")


def cpuset_unusable() -> str | None:
    """Why a cpuset cgroup cannot be made here, or None."""
    if os.geteuid() != 0:
        return "creating a cpuset cgroup needs root"
    if not (CPUSET_V1 / "cpuset.cpus").is_file():
        return f"no cgroup v1 cpuset hierarchy at {CPUSET_V1}"
    if len(CpuSet((CPUSET_V1 / "cpuset.effective_cpus").read_text())) < 2:
        return "the root cpuset has fewer than two CPUs"
    return None


@contextmanager
def last_cpu_cpuset() -> Iterator[Path]:
    """A cpuset cgroup holding the highest online CPU only (the test is skipped where none can
    be made). Removed on exit: whatever was moved into it must have ended by then."""
    reason = cpuset_unusable()
    if reason is not None:
        pytest.skip(reason)
    folder = CPUSET_V1 / f"kata-numa-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    try:
        last = CpuSet((CPUSET_V1 / "cpuset.effective_cpus").read_text()).last()
        (folder / "cpuset.mems").write_text((CPUSET_V1 / "cpuset.effective_mems").read_text())
        (folder / "cpuset.cpus").write_text(f"{last}\n")
        yield folder
    finally:
        _remove(folder)


def _remove(folder: Path) -> None:
    """Remove the cgroup; threads a failed test left inside go back to the root first, so that
    a failure never leaves a cgroup behind nor hides the test's own assertion."""
    for tid in (folder / "tasks").read_text().split():
        try:
            (CPUSET_V1 / "tasks").write_text(f"{tid}\n")
        except ProcessLookupError:
            continue
    try:
        folder.rmdir()
    except OSError as exc:
        warnings.warn(f"could not remove test cgroup {folder}: {exc}", stacklevel=2)
