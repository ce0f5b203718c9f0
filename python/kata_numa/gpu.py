"""VFIO devices (GPUs above all) of each sandbox and whether its guest NUMA nodes cover them.

Devices come from the QEMU command line (`-device vfio-pci,host=|sysfsdev=`, cold-plugged)
and from the process's open `/dev/vfio/<group>` and `/dev/vfio/devices/vfio<N>` descriptors
(hot-plugged ones too). Each gets one of the verdicts of DESIGN §2.7. A `numa_node` of -1 is
"locality unknown": never node 0, never the last node.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kata_numa._native import CpuSet, HostTopology, open_vfio_devices, read_pci_device
from kata_numa.errors import SysfsError
from kata_numa.sandbox import Sandbox

log = logging.getLogger("kata_numa.gpu")

FROM_ARGS = "command line"


class Verdict(enum.StrEnum):
    VALIDATED = "validated"
    NOT_COVERED = "not-covered"
    UNKNOWN = "unknown"  # numa_node is -1
    MISSING = "missing"  # no such PCI device in sysfs


@dataclass(frozen=True)
class DeviceCheck:
    bdf: str
    #: `command line`, or the descriptor it was found through (`/dev/vfio/12`).
    source: str
    host_node: int | None
    #: The guest node(s) backed by the device's host node; empty when none is.
    guest_nodes: CpuSet
    verdict: Verdict

    @property
    def fields(self) -> dict[str, object]:
        """Journald fields of the verdict's log line."""
        host = -1 if self.host_node is None else self.host_node
        guest = self.guest_nodes.to_list() or "none"
        return {"BDF": self.bdf, "HOST_NUMA": host, "GUEST_NUMA": guest}

    def message(self) -> str:
        f = self.fields
        tail = f"bdf={f['BDF']} host-numa={f['HOST_NUMA']} guest-numa={f['GUEST_NUMA']}"
        return {
            Verdict.VALIDATED: f"VFIO device NUMA placement validated {tail}",
            Verdict.NOT_COVERED: (
                f"VFIO device on host NUMA node not covered by guest NUMA topology {tail}"
            ),
            Verdict.UNKNOWN: f"VFIO device NUMA locality unknown (numa_node is -1) {tail}",
            Verdict.MISSING: f"VFIO device not found in sysfs {tail}",
        }[self.verdict]


@dataclass(frozen=True)
class Device:
    """A VFIO device of a sandbox and where the host has it."""

    bdf: str
    source: str
    #: False when sysfs has no such PCI device.
    found: bool
    #: `numa_node`; None when it is -1 (locality unknown) or the device was not found.
    host_node: int | None


def sandbox_devices(
    proc_root: str | Path, sysfs_root: str | Path, sandbox: Sandbox
) -> list[tuple[str, str]]:
    """(BDF, source) of each device: the command line's first, then open descriptors'.

    Raises ProcessGone when the process ended.
    """
    devices = [(bdf, FROM_ARGS) for bdf in sandbox.layout.vfio_devices]
    seen = {bdf for bdf, _ in devices}
    for device in open_vfio_devices(str(proc_root), str(sysfs_root), sandbox.pid):
        if device.bdf not in seen:
            devices.append((device.bdf, device.source))
            seen.add(device.bdf)
    return devices


def locate(topology: HostTopology, sysfs_root: str | Path, bdf: str, source: str) -> Device:
    """The device's host node, read from sysfs when it appeared after the topology was read."""
    for device in topology.pci_devices:
        if device.bdf == bdf:
            return Device(bdf, source, True, device.numa_node)
    if not (Path(sysfs_root) / "sys/bus/pci/devices" / bdf).is_dir():
        return Device(bdf, source, False, None)
    try:
        return Device(bdf, source, True, read_pci_device(str(sysfs_root), bdf).numa_node)
    except SysfsError as exc:
        log.warning(
            "PCI device %s: %s; its locality counts as unknown", bdf, exc, extra={"BDF": bdf}
        )
        return Device(bdf, source, True, None)


def locate_devices(
    topology: HostTopology, sysfs_root: str | Path, devices: list[tuple[str, str]]
) -> list[Device]:
    return [locate(topology, sysfs_root, bdf, source) for bdf, source in devices]


def judge(device: Device, host_nodes: Mapping[int, CpuSet]) -> DeviceCheck:
    """The verdict for one device; `host_nodes` is guest node → host nodes of the sandbox."""
    bdf, source, host_node = device.bdf, device.source, device.host_node
    if not device.found:
        return DeviceCheck(bdf, source, None, CpuSet(), Verdict.MISSING)
    if host_node is None:
        return DeviceCheck(bdf, source, None, CpuSet(), Verdict.UNKNOWN)
    guests = CpuSet(guest for guest, nodes in host_nodes.items() if host_node in nodes)
    verdict = Verdict.VALIDATED if guests else Verdict.NOT_COVERED
    return DeviceCheck(bdf, source, host_node, guests, verdict)


def check_device(
    topology: HostTopology,
    sysfs_root: str | Path,
    bdf: str,
    source: str,
    host_nodes: Mapping[int, CpuSet],
) -> DeviceCheck:
    return judge(locate(topology, sysfs_root, bdf, source), host_nodes)


def device_nodes(devices: list[Device]) -> CpuSet:
    """Host nodes of the devices whose locality is known."""
    return CpuSet(d.host_node for d in devices if d.host_node is not None)


def log_checks(sandbox: Sandbox, checks: list[DeviceCheck]) -> None:
    """INFO for a validated device, WARNING for every other verdict."""
    for check in checks:
        extra = {"SANDBOX_ID": sandbox.sandbox_id, "PID": sandbox.pid, **check.fields}
        level = logging.INFO if check.verdict is Verdict.VALIDATED else logging.WARNING
        log.log(level, "sandbox %s: %s", sandbox.sandbox_id, check.message(), extra=extra)
