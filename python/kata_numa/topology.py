"""The host's NUMA topology: reading it (Rust) and showing it (`kata-numa topology`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kata_numa._native import CpuSet, HostTopology, NumaNode, read_host_topology

__all__ = [
    "HostTopology",
    "NumaNode",
    "distance_matrix",
    "format_numactl",
    "read_topology",
    "to_json",
]


def read_topology(root: str | Path = "/") -> HostTopology:
    """Read nodes, CPUs, memory, distances and PCI devices below `root` (a sysfs capture or `/`)."""
    return read_host_topology(str(root))


def node_by_id(topology: HostTopology) -> dict[int, NumaNode]:
    return {node.id: node for node in topology.nodes}


def distance_matrix(topology: HostTopology) -> list[list[int | None]]:
    """Distances in the order of `topology.nodes`; `None` where sysfs did not say."""
    rows: list[list[int | None]] = []
    for node in topology.nodes:
        known = dict(node.distances)
        rows.append([known.get(other.id) for other in topology.nodes])
    return rows


def gpus_by_node(topology: HostTopology) -> dict[int | None, list[str]]:
    """GPU addresses per host node; key `None` holds GPUs whose locality is unknown (-1)."""
    gpus: dict[int | None, list[str]] = {}
    for device in topology.pci_devices:
        if device.is_gpu:
            gpus.setdefault(device.numa_node, []).append(device.bdf)
    return gpus


def _mib(kib: int) -> int:
    return kib // 1024


def _columns(values: Iterable[object], width: int) -> str:
    return "".join(f"{value!s:>{width}}" for value in values)


def format_numactl(topology: HostTopology) -> str:
    """The view of `numactl --hardware`, plus GPUs per node."""
    lines = [f"available: {len(topology.nodes)} nodes ({_node_list(topology)})"]
    gpus = gpus_by_node(topology)
    for node in topology.nodes:
        cpus = " ".join(str(cpu) for cpu in node.cpus)
        lines.append(f"node {node.id} cpus: {cpus}".rstrip())
        lines.append(f"node {node.id} size: {_mib(node.memory_kib)} MB")
        lines.append(f"node {node.id} free: {_mib(node.free_kib)} MB")
        for pages in node.hugepages:
            if pages.total:
                size = (
                    f"{pages.size_kib // 1024}MB"
                    if pages.size_kib >= 1024
                    else f"{pages.size_kib}kB"
                )
                lines.append(
                    f"node {node.id} hugepages {size}: {pages.total} total, {pages.free} free"
                )
        if gpus.get(node.id):
            lines.append(f"node {node.id} gpus: {' '.join(gpus[node.id])}")
    if gpus.get(None):
        lines.append(f"gpus with unknown node (numa_node -1): {' '.join(gpus[None])}")
    lines.append("node distances:")
    width = max(4, *(len(str(node.id)) + 1 for node in topology.nodes))
    lines.append("node " + _columns((node.id for node in topology.nodes), width))
    for node, row in zip(topology.nodes, distance_matrix(topology), strict=True):
        lines.append(f"{node.id:>3}: " + _columns(("?" if d is None else d for d in row), width))
    lines.extend(f"note: {note}" for note in topology.notes)
    return "\n".join(lines)


def _node_list(topology: HostTopology) -> str:
    return CpuSet(node.id for node in topology.nodes).to_list()


def to_json(topology: HostTopology) -> dict[str, Any]:
    """The machine view of `kata-numa topology --json`."""
    gpus = gpus_by_node(topology)
    nodes = []
    for node, row in zip(topology.nodes, distance_matrix(topology), strict=True):
        nodes.append(
            {
                "id": node.id,
                "cpus": node.cpus.to_list(),
                "memory_kib": node.memory_kib,
                "free_kib": node.free_kib,
                "distances": row,
                "hugepages": [
                    {"size_kib": p.size_kib, "total": p.total, "free": p.free}
                    for p in node.hugepages
                ],
                "gpus": gpus.get(node.id, []),
            }
        )
    return {
        "nodes": nodes,
        "online_cpus": topology.online_cpus.to_list(),
        "gpus_unknown_node": gpus.get(None, []),
        "pci_devices": [
            {
                "bdf": d.bdf,
                "numa_node": d.numa_node,
                "class": f"0x{d.class_code:06x}",
                "driver": d.driver,
                "iommu_group": d.iommu_group,
                "gpu": d.is_gpu,
            }
            for d in topology.pci_devices
        ],
        "notes": topology.notes,
    }
