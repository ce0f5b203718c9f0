"""VFIO devices of sandboxes and their NUMA verdicts (fixture sysfs and /proc trees)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from hostgen import NodeSpec, make_host
from kata_numa._native import CpuSet, parse_qemu_args, read_process
from kata_numa.agent import AgentOptions, log_report, run_pass
from kata_numa.gpu import FROM_ARGS, Verdict, check_device, sandbox_devices
from kata_numa.log import setup_logging
from kata_numa.policy import guest_to_host_nodes
from kata_numa.sandbox import Sandbox, classify
from kata_numa.topology import read_topology
from procgen import Proc, Thread, bound_nodes, make_process, qemu_argv, write_mountinfo

GPU = {"class": "0x030200", "vendor": "0x10de", "device": "0x20b0", "numa_node": "1"}
DEVICES = {
    "0000:3b:00.0": GPU,
    "0000:5e:00.0": {**GPU, "numa_node": "2"},
    "0000:af:00.0": {**GPU, "numa_node": "-1"},
    "0000:d8:00.0": {**GPU, "numa_node": "1"},
}


@pytest.fixture
def three_nodes(tmp_path: Path) -> Path:
    nodes = {0: NodeSpec("0-3"), 1: NodeSpec("4-7"), 2: NodeSpec("8-11")}
    return make_host(tmp_path / "host", nodes, pci=DEVICES)


def two_guest_nodes(first: int, second: int) -> list[str]:
    """Guest nodes 0 and 1 with their memory bound to host nodes `first` and `second`."""
    return bound_nodes(str(first), str(second))


VERDICTS = {
    "plan-on-node-1-validated": ("0000:3b:00.0", (1, 0), Verdict.VALIDATED, 1, "0"),
    "node-2-not-covered": ("0000:5e:00.0", (0, 1), Verdict.NOT_COVERED, 2, ""),
    "numa-node-minus-one-unknown": ("0000:af:00.0", (0, 2), Verdict.UNKNOWN, None, ""),
    "absent-device": ("0000:01:00.0", (0, 1), Verdict.MISSING, None, ""),
}


@pytest.mark.parametrize(
    ("bdf", "hosts", "verdict", "host", "guests"), VERDICTS.values(), ids=VERDICTS.keys()
)
def test_verdicts(
    three_nodes: Path,
    bdf: str,
    hosts: tuple[int, int],
    verdict: Verdict,
    host: int | None,
    guests: str,
) -> None:
    topology = read_topology(three_nodes)
    layout = parse_qemu_args(qemu_argv(*two_guest_nodes(*hosts)))
    mapping, _ = guest_to_host_nodes(layout, topology)
    assert mapping is not None

    check = check_device(topology, three_nodes, bdf, FROM_ARGS, mapping)

    assert check.verdict is verdict
    assert check.host_node == host
    assert check.guest_nodes == CpuSet(guests)


def test_unknown_locality_is_never_node_0_nor_the_last(three_nodes: Path) -> None:
    topology = read_topology(three_nodes)
    every_node = {0: CpuSet("0"), 1: CpuSet("1"), 2: CpuSet("2")}

    check = check_device(topology, three_nodes, "0000:af:00.0", FROM_ARGS, every_node)

    assert check.verdict is Verdict.UNKNOWN
    assert check.fields["HOST_NUMA"] == -1
    assert "locality unknown" in check.message()


def test_messages_carry_the_fields(three_nodes: Path) -> None:
    topology = read_topology(three_nodes)

    check = check_device(topology, three_nodes, "0000:3b:00.0", FROM_ARGS, {0: CpuSet("1")})

    assert check.message() == (
        "VFIO device NUMA placement validated bdf=0000:3b:00.0 host-numa=1 guest-numa=0"
    )
    assert check.fields == {"BDF": "0000:3b:00.0", "HOST_NUMA": 1, "GUEST_NUMA": "0"}


PID = 6000


def gpu_sandbox(tmp_path: Path, host: Path) -> Sandbox:
    """A sandbox with one cold-plugged GPU on its command line and two hot-plugged ones held
    through VFIO descriptors (a group and an iommufd cdev)."""
    for group, bdf in ((40, "0000:5e:00.0"), (41, "0000:d8:00.0")):
        (host / f"sys/kernel/iommu_groups/{group}/devices/{bdf}").mkdir(parents=True)
    cdev = host / "sys/class/vfio-dev/vfio0"
    cdev.mkdir(parents=True)
    (cdev / "device").symlink_to("../../../devices/pci0000:d7/0000:d8:00.0")
    fds = {20: "/dev/vfio/vfio", 21: "/dev/vfio/40", 22: "/dev/vfio/devices/vfio0"}
    argv = qemu_argv(*two_guest_nodes(1, 0), "-device", "vfio-pci,host=3b:00.0,id=gpu0")
    proc_root = tmp_path / "proc"
    make_process(proc_root, Proc(PID, argv, [Thread(PID)], fds))
    found = classify(read_process(str(proc_root), PID))
    assert isinstance(found, Sandbox)
    return found


def test_devices_from_arguments_and_descriptors(tmp_path: Path, three_nodes: Path) -> None:
    sandbox = gpu_sandbox(tmp_path, three_nodes)

    devices = sandbox_devices(tmp_path / "proc", three_nodes, sandbox)

    assert devices == [
        ("0000:3b:00.0", FROM_ARGS),
        ("0000:5e:00.0", "/dev/vfio/40"),
        ("0000:d8:00.0", "/dev/vfio/devices/vfio0"),
    ]


def test_agent_logs_each_verdict_with_its_fields(
    tmp_path: Path,
    three_nodes: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gpu_sandbox(tmp_path, three_nodes)
    proc_root = tmp_path / "proc"
    write_mountinfo(proc_root, [])
    setup_logging("INFO")
    monkeypatch.setattr(logging.getLogger("kata_numa"), "propagate", True)
    options = AgentOptions(
        sysfs_root=three_nodes, proc_root=proc_root, cgroup_root=three_nodes, backoff=()
    )
    (three_nodes / "cgroup.controllers").write_text("cpuset\n")

    with caplog.at_level(logging.INFO, logger="kata_numa"):
        log_report(run_pass(options))

    verdicts = [r for r in caplog.records if r.name == "kata_numa.gpu"]
    fields = [
        (r.__dict__["BDF"], r.__dict__["HOST_NUMA"], r.__dict__["GUEST_NUMA"], r.levelname)
        for r in verdicts
    ]
    assert fields == [
        ("0000:3b:00.0", 1, "0", "INFO"),
        ("0000:5e:00.0", 2, "none", "WARNING"),
        ("0000:d8:00.0", 1, "0", "INFO"),
    ]
    assert "not covered by guest NUMA topology" in verdicts[1].getMessage()
