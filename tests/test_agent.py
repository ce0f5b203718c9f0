"""One agent pass on real processes: races, refusals and what is never touched."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import kata_numa.agent as agent
from hostgen import NodeSpec, make_host
from kata_numa import CpuSet
from kata_numa.agent import AgentOptions, run_pass
from kata_numa.pinning import Outcome, PinResult, apply_assignment
from kata_numa.policy import Assignment
from kata_numa.verify import verify
from procgen import Proc, Thread, cgroup2_mount, make_process, qemu_argv, write_mountinfo
from qemu_proc import FAKE_EXE, FakeQemu, allowed_list, vcpu_tids

FAKE_ID = f"fake-{uuid.uuid4().hex[:8]}"
#: Tests pass this to the agent so that sandboxes of other test runs on the machine are left alone.
ONLY = (FAKE_ID,)


def fake_options(host: Path, only: tuple[str, ...] = ONLY) -> AgentOptions:
    """Options for a pass over the FakeQemu sandbox(es) `only` on the fixture `host`."""
    return AgentOptions(sysfs_root=host, backoff=(), only=only, qemu_paths=(FAKE_EXE,))


@pytest.fixture
def fake_sandbox() -> Iterator[FakeQemu]:
    fake = FakeQemu(f"sandbox-{FAKE_ID}", vcpus=4)
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture
def one_node_host(tmp_path: Path) -> Path:
    return make_host(tmp_path / "host", {0: NodeSpec("0-1")})


def test_vanished_vcpu_thread_does_not_stop_the_others(
    fake_sandbox: FakeQemu, one_node_host: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tids = vcpu_tids(fake_sandbox.pid)
    real_apply = agent.apply_assignment

    def apply_after_thread_2_ended(
        proc_root: Path, assignment: Assignment, dry_run: bool, cgroups: object = None
    ) -> PinResult:
        if (
            assignment.vcpu_index == 2
            and Path(f"/proc/{assignment.pid}/task/{assignment.tid}").exists()
        ):
            fake_sandbox.stop_thread(2)
        return real_apply(proc_root, assignment, dry_run, cgroups)

    monkeypatch.setattr(agent, "apply_assignment", apply_after_thread_2_ended)

    report = run_pass(fake_options(one_node_host))

    (entry,) = report.sandboxes
    outcomes = {r.assignment.vcpu_index: r.outcome for r in entry.results}
    assert outcomes[2] is Outcome.GONE
    assert {outcomes[i] for i in (0, 1, 3)} <= {Outcome.PINNED, Outcome.UNCHANGED}
    assert report.failures == 0
    for index in (0, 1, 3):
        result = next(r for r in entry.results if r.assignment.vcpu_index == index)
        assert allowed_list(fake_sandbox.pid, tids[index]) == str(result.assignment.cpus)


def test_vanished_process_is_a_normal_outcome(fake_sandbox: FakeQemu, one_node_host: Path) -> None:
    tid = vcpu_tids(fake_sandbox.pid)[0]
    assignment = Assignment(
        "fake", fake_sandbox.pid, tid, 0, None, CpuSet("0"), CpuSet("0"), CpuSet("0-1"), True
    )
    fake_sandbox.close()

    assert apply_assignment("/proc", assignment).outcome is Outcome.GONE


@pytest.mark.parametrize(
    ("cpus", "allowed", "why"),
    [
        pytest.param("", "0-1", "empty CPU mask", id="empty-mask"),
        pytest.param("1", "0", "outside the sandbox's allowed CPUs", id="outside-allowed"),
    ],
)
def test_unsafe_masks_are_refused_before_the_kernel_sees_them(
    fake_sandbox: FakeQemu, cpus: str, allowed: str, why: str
) -> None:
    tid = vcpu_tids(fake_sandbox.pid)[0]
    before = allowed_list(fake_sandbox.pid, tid)
    assignment = Assignment(
        "fake", fake_sandbox.pid, tid, 0, None, CpuSet("0"), CpuSet(cpus), CpuSet(allowed), True
    )

    result = apply_assignment("/proc", assignment)

    assert result.outcome is Outcome.FAILED and why in result.error
    assert allowed_list(fake_sandbox.pid, tid) == before


def test_thread_of_another_process_is_refused(fake_sandbox: FakeQemu) -> None:
    """A tid that is not a thread of the sandbox's pid (reused tid) is never written."""
    other = FakeQemu("not-a-sandbox", vcpus=1)
    try:
        foreign_tid = vcpu_tids(other.pid)[0]
        before = allowed_list(other.pid, foreign_tid)
        assignment = Assignment(
            "fake",
            fake_sandbox.pid,
            foreign_tid,
            0,
            None,
            CpuSet("0"),
            CpuSet("0"),
            CpuSet("0-1"),
            True,
        )

        assert apply_assignment("/proc", assignment).outcome is Outcome.GONE
        assert allowed_list(other.pid, foreign_tid) == before
    finally:
        other.close()


def test_processes_that_are_not_sandboxes_are_never_pinned(one_node_host: Path) -> None:
    plain = FakeQemu("some-vm", vcpus=2)
    try:
        before = {tid: allowed_list(plain.pid, tid) for tid in vcpu_tids(plain.pid).values()}
        report = run_pass(fake_options(one_node_host))
        assert all(entry.sandbox.pid != plain.pid for entry in report.sandboxes)
        assert any(s.pid == plain.pid for s in report.skipped)
        assert {
            tid: allowed_list(plain.pid, tid) for tid in vcpu_tids(plain.pid).values()
        } == before
    finally:
        plain.close()


def test_fake_proc_tree_is_never_applied(tmp_path: Path, one_node_host: Path) -> None:
    """A --proc-root that is not the live /proc only plans: its pids are not this host's."""
    proc = tmp_path / "proc"
    (proc / "1").mkdir(parents=True)
    cgroups = tmp_path / "cgroup"
    cgroups.mkdir()
    (cgroups / "cgroup.controllers").write_text("cpuset\n")
    options = AgentOptions(sysfs_root=one_node_host, proc_root=proc, cgroup_root=cgroups)
    report = run_pass(options)
    assert report.dry_run


def test_flat_vm_follows_its_planned_memory_binding(tmp_path: Path) -> None:
    """A launcher starts QEMU with `kata-numa plan`'s flat arguments; the agent then pins the
    vCPU on the node the plan bound the memory to, not on the node it would pick itself."""
    host = make_host(tmp_path / "host", {0: NodeSpec("0"), 1: NodeSpec("1")})
    plan = subprocess.run(
        [
            sys.executable,
            "-m",
            "kata_numa",
            "plan",
            "--vcpus",
            "1",
            "--memory",
            "128M",
            "--sysfs-root",
            str(host),
            "--used",
            "0:1",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    args = json.loads(plan.stdout)["qemu_args"]
    assert "memory-backend=numa-mem0" in args and json.loads(plan.stdout)["host_nodes"] == "1"
    name = f"flat-{uuid.uuid4().hex[:8]}"
    fake = FakeQemu(f"sandbox-{name}", vcpus=1, args=args)
    try:
        report = run_pass(fake_options(host, only=(name,)))

        (entry,) = report.sandboxes
        assert [str(r.assignment.host_nodes) for r in entry.vcpu_results] == ["1"]
        assert allowed_list(fake.pid, vcpu_tids(fake.pid)[0]) == "1"
    finally:
        fake.close()


def test_a_process_calling_itself_qemu_is_never_pinned(one_node_host: Path) -> None:
    """A Python process started as `qemu-system-x86_64 ... -name sandbox-X` (what any local
    user can do) is no sandbox unless the operator names its binary as a QEMU."""
    name = f"impostor-{uuid.uuid4().hex[:8]}"
    impostor = FakeQemu(f"sandbox-{name}", vcpus=1)
    try:
        tid = vcpu_tids(impostor.pid)[0]
        before = allowed_list(impostor.pid, tid)
        options = AgentOptions(sysfs_root=one_node_host, backoff=(), only=(name,))

        report = run_pass(options)

        assert report.sandboxes == []
        (skipped,) = [s for s in report.skipped if s.pid == impostor.pid]
        assert "calls itself QEMU but runs" in skipped.reason
        assert allowed_list(impostor.pid, tid) == before
    finally:
        impostor.close()


def test_one_unreadable_sandbox_does_not_stop_the_others(tmp_path: Path) -> None:
    """A file of one sandbox that holds what the kernel never writes (or cannot be read) skips
    that sandbox alone, reported as not managed; the others are still placed."""
    host = make_host(tmp_path / "host", {0: NodeSpec("0-1")})
    proc, cgroups = tmp_path / "proc", tmp_path / "cgroup"
    write_mountinfo(proc, [cgroup2_mount(cgroups)])
    (cgroups / "cgroup.controllers").parent.mkdir(parents=True)
    (cgroups / "cgroup.controllers").write_text("cpuset\n")
    (cgroups / "cpuset.cpus.effective").write_text("0-1\n")
    for pid, name in ((100, "good"), (200, "odd")):
        argv = [*qemu_argv("-smp", "1", sandbox=name)]
        argv[2] += ",debug-threads=on"
        threads = [Thread(pid, cpus="0-1"), Thread(pid + 1, "CPU 0/KVM", cpus="0-1")]
        make_process(proc, Proc(pid, argv, threads, start_time=pid))
    (proc / "200/task/201/status").write_text("Name:\tCPU 0/KVM\nCpus_allowed_list:\t0-1x\n")

    options = AgentOptions(sysfs_root=host, proc_root=proc, cgroup_root=cgroups)

    report = run_pass(options)
    checked = verify(options)

    assert [entry.sandbox.sandbox_id for entry in report.sandboxes] == ["good"]
    (odd,) = [s for s in report.skipped if s.sandbox_id == "odd"]
    assert "200/task/201/status" in odd.reason
    assert report.failures == 1
    assert [s.sandbox_id for s in checked.unmanaged] == ["odd"] and checked.findings >= 1
