"""`kata-numa verify` on fixture nodes: a clean node, and each kind of finding."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from hostgen import NodeSpec, make_host
from kata_numa.agent import AgentOptions
from kata_numa.errors import UsageError
from kata_numa.verify import SandboxCheck, to_json, verify
from procgen import Proc, Thread, bound_nodes, make_process, qemu_argv, set_cpus
from qemu_vm import run_cli

GPU = {"class": "0x030200", "vendor": "0x10de", "device": "0x20b0"}


class Node:
    """A fixture node: a host of two nodes (CPUs 0-3 and 4-7) and the sandboxes on it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        pci = {"0000:3b:00.0": {**GPU, "numa_node": "0"}, "0000:86:00.0": {**GPU, "numa_node": "1"}}
        self.host = make_host(root / "host", {0: NodeSpec("0-3"), 1: NodeSpec("4-7")}, pci=pci)
        self.cgroups = root / "cg"
        self.cgroups.mkdir()
        (self.cgroups / "cgroup.controllers").write_text("cpuset cpu\n")
        (self.cgroups / "cpuset.cpus.effective").write_text("0-7\n")
        self.proc = root / "proc"
        self.count = 0

    def sandbox(
        self, sandbox_id: str, args: Sequence[str], masks: Sequence[str], names: bool = True
    ) -> None:
        """A sandbox whose vCPU i holds `masks[i]`, named `CPU i/KVM` when `names`."""
        self.count += 1
        pid = 8000 + 100 * self.count
        argv = qemu_argv(*args, sandbox=sandbox_id)
        if names:
            argv[2] += ",debug-threads=on"
        threads = [Thread(pid)]
        for index, mask in enumerate(masks):
            name = f"CPU {index}/KVM" if names else "qemu-system-x86"
            threads.append(Thread(pid + 1 + index, name, cpus=mask))
        make_process(self.proc, Proc(pid, argv, threads, start_time=1000 + self.count))
        return pid

    def move(self, pid: int, vcpu: int, mask: str) -> None:
        """Move a vCPU thread by hand (as `taskset -p` would)."""
        set_cpus(self.proc, pid, pid + 1 + vcpu, mask)

    def options(self) -> AgentOptions:
        return AgentOptions(
            sysfs_root=self.host, proc_root=self.proc, cgroup_root=self.cgroups, backoff=()
        )

    def roots(self) -> list[str]:
        return [
            *("--sysfs-root", str(self.host), "--proc-root", str(self.proc)),
            *("--cgroup-root", str(self.cgroups)),
        ]

    def check(self, sandbox_id: str) -> SandboxCheck:
        (check,) = verify(self.options(), sandbox_id).sandboxes
        return check


@pytest.fixture
def node(tmp_path: Path) -> Node:
    node = Node(tmp_path)
    node.sandbox("a", bound_nodes("0", "1"), ["0", "1", "4", "5"])
    return node


def test_clean_node(node: Node) -> None:
    node.sandbox("b", bound_nodes("0"), ["2", "3"])

    report = verify(node.options())

    assert report.findings == 0, [c.findings for c in report.sandboxes]
    assert [c.sandbox.sandbox_id for c in report.sandboxes] == ["a", "b"]
    assert all(v.ok for c in report.sandboxes for v in c.vcpus)


def test_json_shape(node: Node) -> None:
    data = to_json(verify(node.options()))

    (sandbox,) = data["sandboxes"]
    assert {"id", "pid", "vcpus", "findings"} <= set(sandbox)
    assert sandbox["id"] == "a"
    assert sandbox["vcpus"][2] == {
        "index": 2,
        "tid": sandbox["pid"] + 3,
        "cpus": "4",
        "host_node": 1,
        "host_nodes": "1",
        "expected_cpus": "4-7",
        "ok": True,
    }
    assert sandbox["findings"] == []
    json.dumps(data)


UNBOUND = ["-smp", "2", "-m", "256", "-object", "memory-backend-ram,id=m,size=256M"]
UNBOUND += ["-numa", "node,nodeid=0,cpus=0-1,memdev=m"]

#: sandbox b's arguments and vCPU masks, vCPU 2 of sandbox a moved to (or None), the finding.
FAULTS = {
    "vcpu-moved-off-its-node": (
        bound_nodes("0"), ["2", "3"], True, "1",
        "a", "vCPU 2 (TID 8103) on CPUs 1: outside host node 1",
    ),
    "two-sandboxes-on-one-cpu": (
        bound_nodes("0"), ["2", "0"], True, None,
        "b", "vCPU 1 (TID 8202) on CPUs 0: shares the CPU with sandbox a vCPU 0",
    ),
    "the-other-side-of-the-collision": (
        bound_nodes("0"), ["2", "0"], True, None,
        "a", "vCPU 0 (TID 8101) on CPUs 0: shares the CPU with sandbox b vCPU 1",
    ),
    "unpinned-vcpu": (
        bound_nodes("0"), ["2", "0-3"], True, None,
        "b", "vCPU 1 (TID 8202) on CPUs 0-3: `kata-numa run` would set CPUs 3",
    ),
    "memory-not-bound": (
        UNBOUND, ["2", "3"], True, None,
        "b", "guest node 0: memory backend m is bound to no host node",
    ),
    "gpu-not-covered": (
        [*bound_nodes("0"), "-device", "vfio-pci,host=86:00.0"], ["2", "3"], True, None,
        "b", "VFIO device on host NUMA node not covered by guest NUMA topology "
        "bdf=0000:86:00.0 host-numa=1 guest-numa=none",
    ),
    "no-vcpu-identified": (
        [*bound_nodes("0"), "-accel", "tcg"], ["2", "3"], False, None,
        "b", "no vCPU thread identified (2 expected): start QEMU with -name sandbox-<id>,debug",
    ),
    "binding-to-a-node-the-host-lacks": (
        bound_nodes("7"), ["2", "3"], True, None,
        "b", "guest node 0: memory backend m0 binds host nodes 7, but this host has no node 7",
    ),
}  # fmt: skip


@pytest.mark.parametrize(
    ("args", "masks", "names", "moved", "target", "finding"), FAULTS.values(), ids=FAULTS.keys()
)
def test_each_fault_is_a_finding(
    node: Node,
    args: list[str],
    masks: list[str],
    names: bool,
    moved: str | None,
    target: str,
    finding: str,
) -> None:
    node.sandbox("b", args, masks, names)
    if moved is not None:
        node.move(8100, 2, moved)

    check = node.check(target)

    assert any(f.startswith(finding) for f in check.findings), check.findings
    assert not check.ok


def test_gpu_on_its_node_is_a_note(node: Node) -> None:
    node.sandbox("b", [*bound_nodes("0"), "-device", "vfio-pci,host=3b:00.0"], ["2", "3"])

    check = node.check("b")

    assert check.ok, check.findings
    assert any("placement validated bdf=0000:3b:00.0" in note for note in check.notes)


def test_unknown_sandbox_is_a_usage_error(node: Node) -> None:
    with pytest.raises(UsageError, match="'nope'"):
        verify(node.options(), "nope")


CLI_CASES = {
    "clean": ([], 0, "verify: 1 sandboxes, 0 findings"),
    "finding": (["2:1"], 1, "finding: vCPU 2 (TID 8103) on CPUs 1: outside host node 1"),
    "unknown-sandbox": (["--", "nope"], 2, "no Kata sandbox 'nope'"),
}


@pytest.mark.parametrize(("extra", "code", "text"), CLI_CASES.values(), ids=CLI_CASES.keys())
def test_command(node: Node, extra: list[str], code: int, text: str) -> None:
    args = [a for a in extra if ":" not in a and a != "--"]
    for move in (a for a in extra if ":" in a):
        vcpu, mask = move.split(":")
        node.move(8100, int(vcpu), mask)

    result = run_cli("verify", *node.roots(), *args)

    assert result.returncode == code, result.stderr
    assert text in result.stdout + result.stderr


def test_command_json(node: Node) -> None:
    node.move(8100, 0, "5")

    result = run_cli("verify", "a", "--json", *node.roots())

    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert [v["ok"] for v in data["sandboxes"][0]["vcpus"]] == [False, True, True, True]
    # vCPU 0 is off its node and shares vCPU 3's CPU; vCPU 3 shares it with vCPU 0.
    assert len(data["sandboxes"][0]["findings"]) == 3
    assert data["ok"] is False
