"""The CPUs a sandbox may use.

TODO(#4): read the cgroup cpuset (v2 `cpuset.cpus.effective`, v1 `cpuset.effective_cpus`,
hybrid hosts); until then the main thread's `Cpus_allowed_list`, which QEMU inherits from its
cpuset and which the agent never changes, stands in for it.
"""

from __future__ import annotations

from pathlib import Path

from kata_numa._native import CpuSet, read_task


def allowed_cpus(proc_root: str | Path, pid: int, online: CpuSet) -> CpuSet:
    """CPUs the process may run on, ∩ online CPUs. Raises ProcessGone when it ended."""
    return read_task(str(proc_root), pid, pid).cpus_allowed & online
