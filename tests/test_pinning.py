"""Pinning errors that explain themselves: a thread in a cpuset of its own (cgroup v1 lets each
thread of a process have one) refuses CPUs that its process's cpuset allows."""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cpusets import last_cpu_cpuset
from kata_numa import pinning
from kata_numa._native import CpuSet
from kata_numa.errors import AffinityError
from kata_numa.pinning import Outcome, apply_assignment
from kata_numa.policy import Assignment
from procgen import (
    Proc,
    Thread,
    cpuset_v1_mount,
    make_process,
    qemu_argv,
    tmpfs_mount,
    write_mountinfo,
)
from qemu_proc import FakeQemu, allowed_list, vcpu_tids

PID, TID = 6000, 6001


def assignment(pid: int, tid: int, cpus: str, allowed: str) -> Assignment:
    host_nodes = CpuSet("0")
    return Assignment("abc", pid, tid, 0, 0, host_nodes, CpuSet(cpus), CpuSet(allowed), True)


def v1_thread_tree(tmp_path: Path, mountinfo: bool = True) -> Path:
    """A sandbox in cpuset /kata/abc (CPUs 0-7) whose thread TID sits in /kata/abc/vcpu0
    (CPU 3); returns the proc root."""
    proc_root = tmp_path / "proc"
    cg = tmp_path / "cg"
    threads = [Thread(PID), Thread(TID)]
    make_process(proc_root, Proc(PID, qemu_argv(), threads, cgroup="3:cpuset:/kata/abc\n"))
    (proc_root / f"{PID}/task/{TID}/cgroup").write_text("3:cpuset:/kata/abc/vcpu0\n")
    if mountinfo:
        write_mountinfo(proc_root, [tmpfs_mount(cg), cpuset_v1_mount(cg / "cpuset")])
    for folder, cpus in (("", "0-7"), ("kata/abc", "0-7"), ("kata/abc/vcpu0", "3")):
        (cg / "cpuset" / folder).mkdir(parents=True, exist_ok=True)
        (cg / "cpuset" / folder / "cpuset.effective_cpus").write_text(f"{cpus}\n")
    return proc_root


class FakeKernel:
    """sched_{get,set}affinity of a thread whose cpuset allows `cpuset` only."""

    def __init__(self, cpuset: str, refuse: int | None) -> None:
        self.mask = CpuSet("0-7") & CpuSet(cpuset)
        self.cpuset = CpuSet(cpuset)
        self.refuse = refuse

    def get_affinity(self, pid: int, tid: int) -> CpuSet:
        return self.mask

    def set_affinity(self, pid: int, tid: int, cpus: CpuSet) -> None:
        if self.refuse is not None:
            reason = os.strerror(self.refuse)
            message = f"cannot change the CPU affinity of thread {tid}: {reason}"
            raise AffinityError(message, tid=tid, errno=self.refuse)
        self.mask = cpus & self.cpuset  # what the kernel does with a partly allowed mask


#: CPUs asked for, the errno the kernel answers, what the error must say (`{cg}`, `{proc}`).
REFUSALS = {
    "einval-outside-the-threads-cpuset": (
        "0",
        errno.EINVAL,
        True,
        [
            "the kernel refused CPUs 0: the thread's own cpuset",
            "{cg}/cpuset/kata/abc/vcpu0/cpuset.effective_cpus allows only CPUs 3",
            "(cgroup /kata/abc/vcpu0 of the thread, see {proc}/6000/task/6001/cgroup)",
        ],
    ),
    "einval-cpuset-unreadable": (
        "0",
        errno.EINVAL,
        False,
        [
            "the kernel refused CPUs 0: the thread's own cpuset (cgroup of the thread, see "
            "{proc}/6000/task/6001/cgroup) does not allow them",
            "mountinfo",
        ],
    ),
    "narrowed-by-the-threads-cpuset": (
        "2-3",
        None,
        True,
        [
            "kernel holds 3 after setting 2-3: the thread's own cpuset",
            "{cg}/cpuset/kata/abc/vcpu0/cpuset.effective_cpus allows only CPUs 3",
        ],
    ),
    "eperm-says-what-the-kernel-said": (
        "0",
        errno.EPERM,
        True,
        ["cannot change the CPU affinity of thread 6001: Operation not permitted"],
    ),
}


@pytest.mark.parametrize(
    ("cpus", "refuse", "mountinfo", "says"), REFUSALS.values(), ids=REFUSALS.keys()
)
def test_a_refusal_names_the_threads_own_cpuset(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cpus: str,
    refuse: int | None,
    mountinfo: bool,
    says: list[str],
) -> None:
    proc_root = v1_thread_tree(tmp_path, mountinfo)
    kernel = FakeKernel("3", refuse)
    monkeypatch.setattr(pinning, "get_affinity", kernel.get_affinity)
    monkeypatch.setattr(pinning, "set_affinity", kernel.set_affinity)

    result = apply_assignment(proc_root, assignment(PID, TID, cpus, "0-7"))

    assert result.outcome is Outcome.FAILED
    for text in says:
        assert text.format(cg=tmp_path / "cg", proc=proc_root) in result.error
    if refuse == errno.EPERM:
        assert "cpuset" not in result.error


# --- a real thread in a real v1 cpuset of its own ---------------------------------------------


@pytest.fixture
def thread_cpuset() -> Iterator[Path]:
    """A v1 cpuset of the highest online CPU, for one thread; removed after its thread ends."""
    with last_cpu_cpuset() as folder:
        yield folder


@pytest.fixture
def fake_sandbox(thread_cpuset: Path) -> Iterator[FakeQemu]:
    fake = FakeQemu(f"sandbox-pinning-{uuid.uuid4().hex[:8]}", vcpus=2)
    try:
        yield fake
    finally:
        fake.close()


def test_real_thread_in_its_own_cpuset(thread_cpuset: Path, fake_sandbox: FakeQemu) -> None:
    tid = vcpu_tids(fake_sandbox.pid)[0]
    (thread_cpuset / "tasks").write_text(f"{tid}\n")  # v1: this thread only
    inside = CpuSet(thread_cpuset.joinpath("cpuset.cpus").read_text())
    allowed = CpuSet(os.sched_getaffinity(fake_sandbox.pid))
    outside = (allowed - inside).first()
    assert outside is not None

    result = apply_assignment(
        "/proc", assignment(fake_sandbox.pid, tid, str(outside), str(allowed))
    )

    assert result.outcome is Outcome.FAILED
    assert f"the kernel refused CPUs {outside}: the thread's own cpuset" in result.error
    assert f"{thread_cpuset}/cpuset.effective_cpus allows only CPUs {inside}" in result.error
    assert f"/proc/{fake_sandbox.pid}/task/{tid}/cgroup" in result.error
    assert CpuSet(allowed_list(fake_sandbox.pid, tid)) == inside
