"""cpuset.mems translation (DESIGN §2.8): host NUMA node IDs → guest node IDs of one sandbox.

A container asks for memory on host nodes; inside the VM those are guest nodes. A guest node is
in the result when any of its host nodes is asked for. When nothing maps, the value stays unset
(with a warning): an empty or unmapped `cpuset.mems` is never written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from kata_numa._native import CpuSet, HostTopology
from kata_numa.errors import CpuSetError, UsageError
from kata_numa.policy import guest_to_host_nodes
from kata_numa.sandbox import Sandbox


@dataclass(frozen=True)
class MemsTranslation:
    #: Guest node IDs to write; None means leave `cpuset.mems` unset.
    guest_nodes: CpuSet | None
    warnings: list[str] = field(default_factory=list)


def parse_host_mems(text: str, topology: HostTopology) -> CpuSet:
    """The host NUMA nodes of the command line's MEMS (`0,2`, `0-3`): a non-empty list of nodes
    this host has. Raises UsageError naming MEMS otherwise."""
    try:
        nodes = CpuSet.parse_list(text)
    except CpuSetError as exc:
        part = text[exc.position :].split(",", 1)[0]
        raise UsageError(
            f"MEMS {text!r}: {part!r} at character {exc.position} is not a node number or "
            "range; give host NUMA nodes such as 0,2 or 0-3"
        ) from None
    have = CpuSet(node.id for node in topology.nodes)

    if not nodes:
        raise UsageError("MEMS is empty: give the host NUMA nodes to translate, such as 0,2")
    lacking = nodes - have
    if lacking:
        raise UsageError(
            f"MEMS {text!r} names host nodes {lacking} this host lacks (its nodes are {have})"
        )
    return nodes


def translate_mems(host_mems: CpuSet, host_nodes: Mapping[int, CpuSet]) -> MemsTranslation:
    """`host_nodes` maps each guest node to the host nodes behind it."""
    guests = CpuSet(guest for guest, nodes in host_nodes.items() if nodes & host_mems)
    covered = CpuSet()
    for guest in guests:
        covered = covered | host_nodes[guest]
    unmapped = host_mems - covered

    if not guests:
        mapped = ", ".join(f"{g}→{n}" for g, n in sorted(host_nodes.items())) or "none"
        warning = (
            f"host nodes {host_mems or '(none)'} map to no guest node (guest→host: {mapped}); "
            "cpuset.mems left unset"
        )
        return MemsTranslation(None, [warning])
    warnings = []
    if unmapped:
        warnings.append(f"host nodes {unmapped} back no guest node: left out")
    return MemsTranslation(guests, warnings)


def sandbox_host_nodes(sandbox: Sandbox, topology: HostTopology) -> tuple[dict[int, CpuSet], str]:
    """Guest node → host nodes of a running sandbox, read back from its command line. A flat VM
    is one guest node 0 over every host node (its memory is not bound)."""
    mapping, how = guest_to_host_nodes(sandbox.layout, topology)
    if mapping is not None:
        return mapping, how
    if sandbox.layout.nodes:
        return {}, how
    return {0: CpuSet(node.id for node in topology.nodes)}, how
