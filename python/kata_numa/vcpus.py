"""Finding the vCPU threads of a QEMU process (`/proc/<pid>/task`)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from kata_numa._native import Task, read_tasks
from kata_numa.sandbox import Sandbox

log = logging.getLogger("kata_numa.vcpus")

#: Seconds to wait between reads while a new QEMU is still creating its vCPU threads.
BACKOFF = (0.05, 0.1, 0.2, 0.4, 0.8)


@dataclass
class VcpuThreads:
    """vCPU index → thread, the other threads (emulator, I/O), and how vCPUs were told apart."""

    by_index: dict[int, Task] = field(default_factory=dict)
    others: list[Task] = field(default_factory=list)
    method: str = "none"


def identify_vcpus(tasks: list[Task]) -> VcpuThreads:
    """Tell vCPU threads by their names (`CPU <n>/KVM`, `CPU <n>/TCG`).

    TODO(#4): KVM vCPU descriptors and QMP for QEMU without debug-threads=on.
    """
    found = VcpuThreads()
    for task in tasks:
        if task.vcpu_index is not None and task.vcpu_index not in found.by_index:
            found.by_index[task.vcpu_index] = task
        else:
            found.others.append(task)
    if found.by_index:
        found.method = "thread-names"
    return found


def read_vcpu_threads(
    proc_root: str | Path, sandbox: Sandbox, backoff: tuple[float, ...] = BACKOFF
) -> VcpuThreads:
    """Read the sandbox's vCPU threads, waiting with back-off until `-smp` many exist.

    Raises ProcessGone when the process ended.
    """
    expected = sandbox.layout.smp.cpus
    found = identify_vcpus(read_tasks(str(proc_root), sandbox.pid))
    if not sandbox.layout.debug_threads:
        return found  # names will never appear: no point in waiting for them
    for delay in backoff:
        if len(found.by_index) >= expected:
            break
        time.sleep(delay)
        found = identify_vcpus(read_tasks(str(proc_root), sandbox.pid))
    return found
