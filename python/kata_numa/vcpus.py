"""Which threads of a sandbox's QEMU run its vCPUs.

Three methods, in this order; the first two are read in Rust (`scan_vcpus`):
1. thread names `CPU <n>/KVM` (QEMU with `-name ...,debug-threads=on`);
2. the KVM vCPU descriptor each vCPU thread is blocked on (`/proc/<pid>/task/<tid>/syscall` →
   `/proc/<pid>/fd/<fd>` → `anon_inode:kvm-vcpu:<id>`, the x86 APIC ID turned into the index);
3. a QMP monitor socket the operator configured (`query-cpus-fast`).

A vCPU thread in guest mode shows `running`, and the vCPUs of a paused VM wait outside KVM, so
the reading is repeated with back-off while vCPUs are missing. Nothing is guessed from thread
order: a vCPU no method names is left alone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from kata_numa._native import CpuSet, Task, VcpuScan, query_vcpu_threads, scan_vcpus
from kata_numa.errors import QmpError
from kata_numa.sandbox import Sandbox

log = logging.getLogger("kata_numa.vcpus")

#: Seconds to wait between reads while vCPU threads are being created or are not in KVM_RUN.
BACKOFF = (0.05, 0.1, 0.2, 0.4, 0.8)
#: Seconds a QMP monitor may take to answer.
QMP_TIMEOUT = 2.0

#: The methods that need nothing from the agent's command line.
WITHOUT_QMP = (
    "start QEMU with -name sandbox-<id>,debug-threads=on, or run it under KVM with ptrace "
    "access to /proc/<pid>/task/*/syscall (root or CAP_SYS_PTRACE)"
)
HOW_TO_ENABLE = (
    f"{WITHOUT_QMP}, or configure a QMP monitor "
    '(Kata: extra_monitor_socket = "qmp") and pass its path with --qmp-socket'
)

#: Why vCPUs are missing when no note says more, by method.
MISSING_BY_METHOD = {
    "kvm-descriptors": "not blocked in KVM_RUN while read",
    "thread-names": "no thread named CPU <n>/KVM or CPU <n>/TCG for them",
    "qmp": "the QMP monitor did not list them",
}


@dataclass
class VcpuThreads:
    """vCPU index → thread, the other threads (emulator, I/O), and how vCPUs were told apart."""

    by_index: dict[int, Task] = field(default_factory=dict)
    #: Threads known not to run a vCPU; filled only when every expected vCPU was identified.
    others: list[Task] = field(default_factory=list)
    method: str = "none"
    #: vCPUs `-smp` says exist.
    expected: int = 0
    notes: list[str] = field(default_factory=list)
    #: What would identify the vCPUs when none was: the methods not tried yet, or what the
    #: QMP monitor that was asked said.
    advice: str = HOW_TO_ENABLE

    @property
    def complete(self) -> bool:
        return len(self.by_index) >= self.expected

    @property
    def missing(self) -> int:
        return max(0, self.expected - len(self.by_index))

    @property
    def missing_reason(self) -> str:
        """Why some vCPUs were not identified: the notes, else what the method leaves out."""
        return "; ".join(self.notes) or MISSING_BY_METHOD.get(self.method, "no method named them")


def qmp_socket_for(template: str | None, sandbox: Sandbox) -> Path | None:
    """The operator's socket path with `{id}` and `{pid}` filled in for this sandbox."""
    if not template:
        return None
    return Path(template.replace("{id}", sandbox.sandbox_id).replace("{pid}", str(sandbox.pid)))


def _threads(tasks: list[Task], by_tid: dict[int, int], expected: int, method: str) -> VcpuThreads:
    """`by_tid`: thread id → vCPU index."""
    found = VcpuThreads(method=method, expected=expected)
    known = {task.tid: task for task in tasks}
    for tid, index in sorted(by_tid.items(), key=lambda item: item[1]):
        if tid in known:
            found.by_index[index] = known[tid]
        else:
            found.notes.append(f"vCPU {index}: thread {tid} is not a thread of this process")
    if found.complete:
        vcpu_tids = {task.tid for task in found.by_index.values()}
        found.others = [task for task in tasks if task.tid not in vcpu_tids]
    if not found.by_index:
        found.method = "none"
    return found


def _from_scan(scan: VcpuScan, expected: int) -> VcpuThreads:
    by_tid = {tid: index for index, tid in scan.vcpus.items()}
    found = _threads(scan.tasks, by_tid, expected, scan.method or "none")
    found.notes.extend(scan.notes)
    return found


def _expected(sandbox: Sandbox, scan: VcpuScan) -> int:
    """vCPUs that exist: `-smp`'s boot count, or more when vCPUs were hot-plugged since (Kata
    starts QEMU with one vCPU and `maxcpus`, then adds them): each has a KVM vCPU descriptor.
    Counting those keeps a hot-plugged vCPU that was not identified from passing for an
    emulator thread."""
    return max(sandbox.layout.smp.cpus, scan.kvm_vcpu_fds)


def _may_improve(scan: VcpuScan, sandbox: Sandbox) -> bool:
    """Whether reading again can name more vCPUs: names or KVM descriptors are in play."""
    layout = sandbox.layout
    kvm = layout.accel is None or "kvm" in layout.accel
    return layout.debug_threads or scan.kvm_vcpu_fds > 0 or kvm


def _one_vcpu_per_thread(threads: dict[int, int]) -> tuple[dict[int, int], list[str]]:
    """QMP's vCPU index → thread id, turned into thread id → vCPU index. A thread that runs
    several vCPUs (single-threaded TCG runs them all on one) is no vCPU: pinning it would pin
    them together. The same rule as for a KVM descriptor that several threads wait on."""
    indexes: dict[int, list[int]] = {}
    for index, tid in sorted(threads.items()):
        indexes.setdefault(tid, []).append(index)
    by_tid = {tid: found[0] for tid, found in indexes.items() if len(found) == 1}
    notes = [
        f"QEMU runs vCPUs {CpuSet(found)} on one thread (TID {tid}; TCG with thread=single?): "
        "they cannot be pinned apart; run QEMU with -accel tcg,thread=multi or under KVM"
        for tid, found in indexes.items()
        if len(found) > 1
    ]
    return by_tid, notes


def _ask_qmp(socket: Path, tasks: list[Task], expected: int) -> VcpuThreads:
    """The vCPUs the monitor at `socket` names; its `advice` says what it answered."""
    try:
        threads = query_vcpu_threads(str(socket), QMP_TIMEOUT)
    except QmpError as exc:
        advice = f"{exc}; other ways: {WITHOUT_QMP}"
        return VcpuThreads(expected=expected, notes=[str(exc)], advice=advice)
    by_tid, shared = _one_vcpu_per_thread(threads)

    found = _threads(tasks, by_tid, expected, "qmp")

    found.notes[:0] = shared
    if found.missing and not found.notes:
        found.notes.append(f"the QMP monitor named {len(threads)} of {expected} vCPUs")
    found.advice = f"QMP monitor {socket}: {found.missing_reason}"
    return found


def read_vcpu_threads(
    proc_root: str | Path,
    sandbox: Sandbox,
    backoff: tuple[float, ...] = BACKOFF,
    qmp_socket: Path | None = None,
) -> VcpuThreads:
    """Identify the sandbox's vCPU threads: names, else KVM descriptors (read again with
    back-off while some are missing), else the QMP monitor at `qmp_socket`.

    Raises ProcessGone when the process ended.
    """
    binary = sandbox.argv[0] if sandbox.argv else ""
    scan = scan_vcpus(str(proc_root), sandbox.pid, sandbox.layout.smp, binary)
    for delay in backoff:
        if len(scan.vcpus) >= _expected(sandbox, scan) or not _may_improve(scan, sandbox):
            break
        time.sleep(delay)
        scan = scan_vcpus(str(proc_root), sandbox.pid, sandbox.layout.smp, binary)
    expected = _expected(sandbox, scan)
    found = _from_scan(scan, expected)

    if found.complete or qmp_socket is None:
        return found
    asked = _ask_qmp(qmp_socket, scan.tasks, expected)
    if len(asked.by_index) > len(found.by_index):
        asked.notes = found.notes + asked.notes
        return asked
    found.notes.extend(asked.notes)
    found.advice = asked.advice
    return found
