"""The CPUs a sandbox may use: its cgroup cpuset, intersected with the online CPUs.

The reading is in Rust (`read_cgroup_layout`, `read_allowed_cpus`): cgroup v2
`cpuset.cpus.effective`, v1 `cpuset.effective_cpus` (or `cpuset.cpus`), walking up to the
nearest ancestor that has the file, the hierarchies found from `/proc/self/mountinfo` or below a
folder the operator names (`--cgroup-root`). Never the threads' own affinity: the agent changes
that itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kata_numa._native import (
    AllowedCpus,
    CgroupLayout,
    CpuSet,
    read_allowed_cpus,
    read_cgroup_layout,
)

__all__ = ["Allowed", "CgroupLayout", "allowed_cpus", "read_layout", "thread_cpuset"]


@dataclass(frozen=True)
class Allowed:
    """A sandbox's allowed CPUs and where they came from."""

    cpus: CpuSet
    #: The cpuset file read (`.../cpuset.cpus.effective`), or what was looked at instead.
    source: str
    #: Said when the CPUs are not simply the cgroup's (no cpuset anywhere, offline CPUs).
    note: str | None = None


def read_layout(
    proc_root: str | Path = "/proc", cgroup_root: str | Path | None = None
) -> CgroupLayout:
    """Where the cpuset hierarchies are: `<proc_root>/self/mountinfo`, or below `cgroup_root`."""
    root = None if cgroup_root is None else str(cgroup_root)
    return read_cgroup_layout(str(proc_root), root)


def allowed_cpus(proc_root: str | Path, pid: int, online: CpuSet, layout: CgroupLayout) -> Allowed:
    """The cpuset CPUs of process `pid` ∩ `online`. Raises ProcessGone when it ended, and
    SysfsError when its cgroup path is not below the hierarchy's mount (`/../..` in a private
    cgroup namespace): never the CPUs of another cgroup."""
    found = read_allowed_cpus(str(proc_root), pid, layout)

    if found.cpus is None:
        missing = f"no cpuset for PID {pid} ({found.source}): every online CPU is allowed"
        return Allowed(online, found.source, missing)
    offline = found.cpus - online
    note = f"CPUs {offline} of {found.source} are offline" if offline else None
    return Allowed(found.cpus & online, found.source, note)


def thread_cpuset(proc_root: str | Path, pid: int, tid: int, layout: CgroupLayout) -> AllowedCpus:
    """The cpuset of thread `tid`'s own cgroup (`/proc/<pid>/task/<tid>/cgroup`): cgroup v1 lets
    the threads of one process sit in different cpusets, and the kernel holds each thread to its
    own. Raises ProcessGone when the thread ended."""
    return read_allowed_cpus(str(proc_root), pid, layout, tid)
