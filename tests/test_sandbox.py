"""Recognising Kata sandboxes and reading their guest layout from QEMU command lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from kata_numa._native import parse_qemu_args, read_process
from kata_numa.errors import QemuArgsError
from kata_numa.sandbox import Sandbox, Skipped, classify, is_qemu, sandbox_id_of
from procgen import Proc, make_process

# Command lines in the shape the Kata runtimes write them (ids shortened).
KATA_GO = (
    "/opt/kata/bin/qemu-system-x86_64 -name sandbox-4b1c9e,debug-threads=on -uuid 0a1b "
    "-machine q35,accel=kvm -cpu host,pmu=off -qmp unix:fd=3,server=on,wait=off "
    "-m 2048M,slots=10,maxmem=32768M -device pci-bridge,bus=pcie.0,id=pci-bridge-0 "
    "-object memory-backend-file,id=dimm1,size=2048M,mem-path=/dev/shm,share=on "
    "-numa node,memdev=dimm1 -smp 1,cores=1,threads=1,sockets=8,maxcpus=8 -daemonize"
)
KATA_NUMA = (
    "/usr/bin/qemu-system-x86_64 -name sandbox-77aa -machine q35,accel=kvm -m 4096M "
    "-smp 4,cores=2,threads=1,sockets=2,maxcpus=4 "
    "-object memory-backend-ram,id=numa-mem0,size=2048M,host-nodes=0,policy=bind "
    "-object memory-backend-ram,id=numa-mem1,size=2048M,host-nodes=2-3,policy=bind,prealloc=on "
    "-numa node,nodeid=0,memdev=numa-mem0,cpus=0-1 -numa node,nodeid=1,memdev=numa-mem1,cpus=2-3 "
    "-numa dist,src=0,dst=1,val=20 -numa dist,src=1,dst=0,val=22 "
    "-device vfio-pci,host=0000:41:00.0 "
    "-device vfio-pci,sysfsdev=/sys/bus/pci/devices/0000:c1:00.0,id=gpu1"
)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(["qemu", "-name", "sandbox-abc"], "abc", id="plain"),
        pytest.param(["qemu", "-name", "sandbox-abc,debug-threads=on"], "abc", id="with-options"),
        pytest.param(["qemu", "-name", "guest=sandbox-abc,debug-threads=on"], "abc", id="guest="),
        pytest.param(["qemu", "--name", "sandbox-x1"], "x1", id="double-dash"),
        pytest.param(["qemu", "-name", "sandbox-"], None, id="empty-id"),
        pytest.param(["qemu", "-name", "vm-sandbox-abc"], None, id="not-a-prefix"),
        pytest.param(["qemu", "-uuid", "sandbox-abc"], None, id="other-option"),
        pytest.param(["qemu", "-name"], None, id="missing-value"),
        pytest.param(["qemu", "-name", "sandbox-a", "-name", "plain-vm"], None, id="last-wins"),
        pytest.param(["qemu", "-name", "vm", "-name", "sandbox-b"], "b", id="last-is-sandbox"),
    ],
)
def test_sandbox_id(argv: list[str], expected: str | None) -> None:
    assert sandbox_id_of(argv) == expected


@pytest.mark.parametrize(
    ("argv0", "paths", "expected"),
    [
        pytest.param("/usr/bin/qemu-system-x86_64", (), True, id="x86"),
        pytest.param("qemu-system-aarch64", (), True, id="arm"),
        pytest.param("/opt/kata/bin/qemu-kata", ("/opt/kata/bin/qemu-kata",), True, id="config"),
        pytest.param("/opt/kata/bin/qemu-kata", (), False, id="unknown-binary"),
        pytest.param("/usr/bin/python3", (), False, id="python"),
        pytest.param("/usr/libexec/qemu-kvm", (), True, id="rhel"),
    ],
)
def test_is_qemu(argv0: str, paths: tuple[str, ...], expected: bool) -> None:
    assert is_qemu(argv0, paths) is expected


def test_kata_default_command_line() -> None:
    layout = parse_qemu_args(KATA_GO.split())
    assert layout.name == "sandbox-4b1c9e" and layout.debug_threads
    assert (layout.smp.cpus, layout.smp.maxcpus, layout.smp.sockets) == (1, 8, 8)
    assert layout.memory_mib == 2048
    (node,) = layout.nodes
    assert (node.id, node.memdev, node.cpus.to_list()) == (0, "dimm1", "0-7")
    (backend,) = layout.backends
    assert (backend.kind, backend.mem_path, backend.share, backend.host_nodes) == (
        "file",
        "/dev/shm",
        True,
        None,
    )
    assert layout.accel == "kvm"


def test_kata_numa_command_line() -> None:
    layout = parse_qemu_args(KATA_NUMA.split())
    assert [(n.id, n.cpus.to_list(), n.memdev) for n in layout.nodes] == [
        (0, "0-1", "numa-mem0"),
        (1, "2-3", "numa-mem1"),
    ]
    assert [(b.size_mib, str(b.host_nodes), b.policy, b.prealloc) for b in layout.backends] == [
        (2048, "0", "bind", False),
        (2048, "2-3", "bind", True),
    ]
    assert layout.distances == [(0, 1, 20), (1, 0, 22)]
    assert layout.vfio_devices == ["0000:41:00.0", "0000:c1:00.0"]


@pytest.mark.parametrize(
    ("smp", "expected"),
    [
        pytest.param("4", (4, 4, 1, 4, 1), id="count-only"),
        pytest.param("cpus=4", (4, 4, 1, 4, 1), id="cpus="),
        pytest.param("2,maxcpus=8", (2, 8, 1, 8, 1), id="hotplug"),
        pytest.param("8,sockets=2", (8, 8, 2, 4, 1), id="sockets-only"),
        pytest.param("8,cores=2", (8, 8, 4, 2, 1), id="cores-only"),
        pytest.param("sockets=2,cores=2,threads=2", (8, 8, 2, 2, 2), id="topology-only"),
        pytest.param("6,sockets=2,cores=3", (6, 6, 2, 3, 1), id="non-power-of-two"),
    ],
)
def test_smp_forms(smp: str, expected: tuple[int, int, int, int, int]) -> None:
    s = parse_qemu_args(["qemu", "-smp", smp]).smp
    assert (s.cpus, s.maxcpus, s.sockets, s.cores, s.threads) == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["qemu", "-smp", "four"], "cpus", id="smp-word"),
        pytest.param(["qemu", "-smp", "6,sockets=4,cores=4,maxcpus=8"], "maxcpus", id="smp-sum"),
        pytest.param(["qemu", "-m", "lots"], "size", id="memory"),
        pytest.param(["qemu", "-numa", "node,nodeid=0,cpus=3-1"], "backwards", id="numa-cpus"),
        pytest.param(["qemu", "-numa", "cpu,node-id=4,socket-id=0"], "node-id 4", id="numa-cpu"),
        pytest.param(["qemu", "-smp"], "missing value", id="no-value"),
    ],
)
def test_bad_command_lines_name_the_argument(argv: list[str], message: str) -> None:
    with pytest.raises(QemuArgsError) as caught:
        parse_qemu_args(argv)
    assert message in str(caught.value)


def test_vcpus_outside_every_node_go_to_the_first() -> None:
    layout = parse_qemu_args(["qemu", "-smp", "4", "-numa", "node,nodeid=1,cpus=0"])
    assert layout.nodes[0].cpus.to_list() == "0-3"
    assert any("no -numa node" in note for note in layout.notes)


def test_sandboxes_command_lists_nothing_from_an_empty_proc(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kata_numa", "sandboxes", "--json", "--proc-root", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout) == {"sandboxes": [], "skipped": []}


@pytest.mark.parametrize(
    "sandbox_id",
    [
        pytest.param("bcinj\nERROR kata_numa.agent: sandbox other: forged", id="newline"),
        pytest.param("a b", id="space"),
        pytest.param("-leading-dash", id="leading-dash"),
        pytest.param("x" * 129, id="too-long"),
        pytest.param("../../etc", id="path"),
    ],
)
def test_sandbox_ids_kata_never_writes_are_not_managed(sandbox_id: str) -> None:
    process = FakeProcess(["qemu-system-x86_64", "-name", f"sandbox-{sandbox_id}"])

    found = classify(process)  # type: ignore[arg-type]

    assert isinstance(found, Skipped)
    assert "\n" not in found.reason and "never uses" in found.reason


@dataclass(frozen=True)
class FakeProcess:
    argv: list[str]
    pid: int = 4242
    start_time: int = 1
    comm: str = "qemu-system-x86"
    exe: str | None = "/usr/bin/qemu-system-x86_64"


@pytest.mark.parametrize(
    ("exe", "reason"),
    [
        pytest.param("/usr/bin/python3.11", "runs /usr/bin/python3.11", id="renamed-argv0"),
        pytest.param(None, "cannot read", id="exe-unreadable"),
    ],
)
def test_a_process_that_only_calls_itself_qemu_is_no_sandbox(exe: str | None, reason: str) -> None:
    process = FakeProcess(["qemu-system-x86_64", "-name", "sandbox-fake"], exe=exe)

    found = classify(process)  # type: ignore[arg-type]

    assert isinstance(found, Skipped) and reason in found.reason
    assert found.sandbox_id is None


def test_rhel_qemu_kvm_counts() -> None:
    process = FakeProcess(["qemu-kvm", "-name", "sandbox-rh"], exe="/usr/libexec/qemu-kvm")
    assert not isinstance(classify(process), Skipped)  # type: ignore[arg-type]


def test_a_replaced_binary_still_counts(tmp_path: Path) -> None:
    """`/proc/<pid>/exe` of a QEMU whose package was upgraded meanwhile ends in ` (deleted)`."""
    exe = "/usr/bin/qemu-system-x86_64 (deleted)"
    make_process(tmp_path, Proc(77, ["qemu-system-x86_64", "-name", "sandbox-up"], exe=exe))

    process = read_process(str(tmp_path), 77)

    assert process.exe == "/usr/bin/qemu-system-x86_64"
    assert not isinstance(classify(process), Skipped)


def test_a_qemu_named_binary_that_is_not_roots_is_no_sandbox(tmp_path: Path) -> None:
    """A user's copy of any program named qemu-system-x86_64 (here: a file the test owns as
    another uid) is refused; the operator may still name such a binary with --qemu-path."""
    binary = tmp_path / "qemu-system-x86_64"
    binary.write_text("")
    os.chown(binary, 65534, 65534)
    make_process(tmp_path, Proc(78, ["qemu-system-x86_64", "-name", "sandbox-u"], exe=str(binary)))
    process = read_process(str(tmp_path), 78)

    found = classify(process, proc_root=tmp_path)

    assert isinstance(found, Skipped) and "uid 65534" in found.reason
    assert isinstance(classify(process, (str(binary),), tmp_path), Sandbox)


@pytest.mark.parametrize(
    "host",
    ["/dev/shm/e", "../../../dev/zero", "0000:3b:00.8", "3b:00", "0000:3b:00.0/x", "zz:00.0"],
)
def test_vfio_hosts_that_are_not_pci_addresses_are_ignored(host: str) -> None:
    """The address is joined onto a sysfs path later: only DDDD:BB:DD.F may get there."""
    layout = parse_qemu_args(["qemu", "-device", f"vfio-pci,host={host}"])

    assert layout.vfio_devices == []
    assert any("not a PCI address" in note for note in layout.notes)


def test_a_huge_numa_cpus_argument_is_refused_quickly_with_a_short_message() -> None:
    argv = ["qemu", "-smp", "2", "-numa", "node," + ",".join(["cpus=0-1048575"] * 2000)]

    with pytest.raises(QemuArgsError) as caught:
        parse_qemu_args(argv)

    assert len(str(caught.value)) < 1000
