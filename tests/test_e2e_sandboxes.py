"""End to end with real QEMU processes that name no threads: `run` pins every vCPU, a second
`run` changes nothing, `verify` says the node is clean, and each planted fault (a vCPU moved
by hand with taskset, two sandboxes on one CPU) makes `verify` exit 1 with that finding.

The agent acts only on the sandboxes these tests start (`run --sandbox ID`), so that other
QEMU processes on a shared machine are never touched.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from hostgen import NodeSpec, make_host
from qemu_vm import (
    TCG,
    halting_bios,
    kvm_unusable,
    needs_qemu,
    qemu_vm,
    qmp_vcpu_threads,
    run_cli,
    taskset,
    thread_masks,
)

pytestmark = [
    pytest.mark.qemu,
    needs_qemu,
    pytest.mark.skipif(
        not {0, 1} <= os.sched_getaffinity(0),
        reason="needs CPUs 0 and 1 in this process's affinity",
    ),
]


@dataclass
class VM:
    sandbox_id: str
    pid: int
    qmp: Path

    def vcpu_tids(self) -> dict[int, int]:
        """vCPU index → thread, as QEMU itself reports (not how the agent finds them)."""
        return qmp_vcpu_threads(self.qmp)

    def vcpu_masks(self) -> dict[int, str]:
        masks = thread_masks(self.pid)
        return {index: masks[tid] for index, tid in self.vcpu_tids().items()}


@dataclass
class Node:
    host: Path
    qmp_template: str
    vms: list[VM]

    def agent_args(self) -> list[str]:
        return ["--sysfs-root", str(self.host), "--qmp-socket", self.qmp_template]

    def run(self) -> str:
        only = [arg for vm in self.vms for arg in ("--sandbox", vm.sandbox_id)]
        result = run_cli("run", "--once", *self.agent_args(), *only)
        assert result.returncode == 0, result.stderr
        return result.stderr

    def verify(self, vm: VM, *extra: str) -> tuple[int, str]:
        result = run_cli("verify", vm.sandbox_id, *self.agent_args(), *extra)
        assert result.returncode in (0, 1), result.stderr
        return result.returncode, result.stdout


BOUND_TO_NODE_0 = [
    "-smp", "1", "-m", "64",
    "-object", "memory-backend-ram,id=m0,size=64M,host-nodes=0,policy=bind",
    "-numa", "node,nodeid=0,cpus=0,memdev=m0",
]  # fmt: skip
FLAT = ["-smp", "1", "-m", "64"]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    """A host whose node 0 is CPU 0 and node 1 is CPU 1, with two paused TCG sandboxes that
    name no threads: `a` (its one guest node bound to host node 0, started first) and the flat
    `b`. Their vCPUs can be found only through the QMP sockets the agent is told of."""
    host = make_host(tmp_path / "host", {0: NodeSpec("0"), 1: NodeSpec("1")})
    tag = f"e2e{os.getpid()}"
    template = str(tmp_path / "{id}.qmp")
    with ExitStack() as stack:
        vms = []
        for name, args in (("a", BOUND_TO_NODE_0), ("b", FLAT)):
            sandbox_id = f"{tag}-{name}"
            qmp = Path(template.replace("{id}", sandbox_id))
            vm_args = [*TCG, "-S", "-name", f"sandbox-{sandbox_id}", *args]
            process = stack.enter_context(qemu_vm(vm_args, qmp, vcpus=1))
            vms.append(VM(sandbox_id, process.pid, qmp))
        yield Node(host, template, vms)


def test_run_pins_vcpus_found_through_qmp(node: Node) -> None:
    a, b = node.vms

    log = node.run()

    assert a.vcpu_masks() == {0: "0"}, log
    assert b.vcpu_masks() == {0: "1"}, log
    assert f"sandbox {a.sandbox_id} placed" in log
    assert "vCPUs by qmp" in log


def test_second_run_changes_no_mask(node: Node) -> None:
    node.run()
    before = {vm.sandbox_id: thread_masks(vm.pid) for vm in node.vms}

    node.run()

    assert {vm.sandbox_id: thread_masks(vm.pid) for vm in node.vms} == before


def test_verify_is_clean_after_run(node: Node) -> None:
    node.run()

    for vm in node.vms:
        code, out = node.verify(vm)
        assert (code, "0 findings") == (0, out.splitlines()[-1][-10:]), out


def test_verify_json_after_run(node: Node) -> None:
    node.run()
    a = node.vms[0]

    code, out = node.verify(a, "--json")

    data = json.loads(out)
    (sandbox,) = data["sandboxes"]
    assert code == 0
    assert (sandbox["id"], sandbox["pid"], sandbox["findings"]) == (a.sandbox_id, a.pid, [])
    assert sandbox["vcpus"] == [
        {
            "index": 0,
            "tid": a.vcpu_tids()[0],
            "cpus": "0",
            "host_node": 0,
            "host_nodes": "0",
            "expected_cpus": "0",
            "ok": True,
        }
    ]


def test_verify_finds_a_vcpu_moved_by_hand(node: Node) -> None:
    node.run()
    a = node.vms[0]

    taskset(a.vcpu_tids()[0], "1")
    code, out = node.verify(a)

    assert code == 1
    assert f"finding: vCPU 0 (TID {a.vcpu_tids()[0]}) on CPUs 1: outside host node 0" in out
    node.run()
    assert a.vcpu_masks() == {0: "0"}
    assert node.verify(a)[0] == 0


def test_verify_finds_two_sandboxes_on_one_cpu(node: Node) -> None:
    node.run()
    a, b = node.vms

    taskset(b.vcpu_tids()[0], "0")  # onto a's CPU, while CPU 1 is free
    code_b, out_b = node.verify(b)
    code_a, out_a = node.verify(a)

    assert (code_a, code_b) == (1, 1)
    assert f"shares the CPU with sandbox {a.sandbox_id} vCPU 0" in out_b
    assert f"shares the CPU with sandbox {b.sandbox_id} vCPU 0" in out_a
    node.run()
    assert (a.vcpu_masks(), b.vcpu_masks()) == ({0: "0"}, {0: "1"})


def test_kvm_vcpus_found_by_descriptors_are_pinned_to_their_nodes(tmp_path: Path) -> None:
    """Under KVM, without thread names or QMP: vCPU 3 of -smp 6,sockets=2,cores=3 has APIC ID 4
    and belongs to guest node 0 (vCPUs 0-3), whatever its APIC ID suggests."""
    reason = kvm_unusable()
    if reason is not None:
        pytest.skip(reason)
    host = make_host(tmp_path / "host", {0: NodeSpec("0"), 1: NodeSpec("1")})
    sandbox_id = f"e2e{os.getpid()}-kvm"
    args = [
        "-accel", "kvm", "-bios", str(halting_bios(tmp_path)), "-name", f"sandbox-{sandbox_id}",
        "-smp", "6,sockets=2,cores=3", "-m", "128",
        "-object", "memory-backend-ram,id=m0,size=64M",
        "-object", "memory-backend-ram,id=m1,size=64M",
        "-numa", "node,nodeid=0,cpus=0-3,memdev=m0",
        "-numa", "node,nodeid=1,cpus=4-5,memdev=m1",
    ]  # fmt: skip
    qmp = tmp_path / "kvm.qmp"

    with qemu_vm(args, qmp, vcpus=6) as process:
        vm = VM(sandbox_id, process.pid, qmp)
        result = run_cli("run", "--once", "--sysfs-root", str(host), "--sandbox", sandbox_id)
        masks = vm.vcpu_masks()

    assert result.returncode == 0, result.stderr
    assert "vCPUs by kvm-descriptors" in result.stderr
    assert masks == {0: "0", 1: "0", 2: "0", 3: "0", 4: "1", 5: "1"}
