"""Where each vCPU goes: guest node → host node, and a node-wide ledger of dedicated CPUs.

Pure decisions, no system calls: `plan_placement` takes what was read and returns the masks
to apply, so tests can feed it fixture trees and fake threads.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from kata_numa._native import CpuSet, GuestLayout, HostTopology, Task
from kata_numa.sandbox import Sandbox
from kata_numa.vcpus import VcpuThreads

NO_INTERSECTION = "NUMA node HostCPUs do not intersect sandbox CPUSet"


class Policy(enum.StrEnum):
    DEDICATED = "dedicated"  # one host CPU per vCPU
    NODE = "node"  # every vCPU gets the allowed CPUs of its host node


@dataclass(frozen=True)
class Assignment:
    """The mask one vCPU thread should have."""

    sandbox_id: str
    pid: int
    tid: int
    vcpu_index: int
    guest_node: int | None
    host_nodes: CpuSet
    cpus: CpuSet
    #: The sandbox's allowed CPUs: `cpus` never leaves them.
    allowed: CpuSet
    dedicated: bool


@dataclass
class SandboxPlacement:
    sandbox: Sandbox
    assignments: list[Assignment] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PlacementInput:
    sandbox: Sandbox
    vcpus: VcpuThreads


def guest_to_host_nodes(
    layout: GuestLayout, topology: HostTopology
) -> tuple[dict[int, CpuSet] | None, str]:
    """Host nodes behind each guest node, with a sentence on how they were found.

    From each node's memory backend `host-nodes`; when a backend has none, guest node i maps to
    the i-th host node if the counts match. `None` means a flat VM (no `-numa`) or no mapping.
    """
    if not layout.nodes:
        return None, "no -numa options: a flat VM"
    backends = {backend.id: backend for backend in layout.backends}
    host_ids = [node.id for node in topology.nodes]
    mapping: dict[int, CpuSet] = {}
    by_order = len(layout.nodes) == len(host_ids)
    for position, node in enumerate(layout.nodes):
        backend = backends.get(node.memdev or "")
        if backend is not None and backend.host_nodes:
            mapping[node.id] = backend.host_nodes
        elif by_order:
            mapping[node.id] = CpuSet([host_ids[position]])
        else:
            return None, (
                f"guest node {node.id} has no host-nodes binding and the VM has "
                f"{len(layout.nodes)} guest nodes for {len(host_ids)} host nodes"
            )
    return (
        mapping,
        "guest nodes follow their memory backends' host-nodes (or the host's node order)",
    )


class Ledger:
    """Dedicated CPUs of the whole host: which vCPU thread holds which CPU."""

    def __init__(self) -> None:
        self._owner: dict[int, tuple[str, int]] = {}

    def owner(self, cpu: int) -> tuple[str, int] | None:
        return self._owner.get(cpu)

    def claim(self, cpu: int, sandbox_id: str, tid: int) -> bool:
        if cpu in self._owner:
            return self._owner[cpu] == (sandbox_id, tid)
        self._owner[cpu] = (sandbox_id, tid)
        return True

    def free(self, candidates: CpuSet) -> CpuSet:
        return CpuSet(cpu for cpu in candidates if cpu not in self._owner)

    def dedicated(self) -> CpuSet:
        return CpuSet(self._owner)

    def dedicated_to_others(self, sandbox_id: str) -> CpuSet:
        return CpuSet(cpu for cpu, (owner, _) in self._owner.items() if owner != sandbox_id)


def node_cpus(topology: HostTopology, nodes: CpuSet) -> CpuSet:
    cpus = CpuSet()
    for node in topology.nodes:
        if node.id in nodes:
            cpus = cpus | node.cpus
    return cpus


def choose_flat_node(
    topology: HostTopology, allowed: CpuSet, ledger: Ledger, sandbox: Sandbox, vcpus: Iterable[Task]
) -> tuple[CpuSet, str]:
    """Host node(s) for a VM without guest NUMA nodes: where its vCPUs already sit alone,
    else the node with the most allowed CPUs not dedicated to other sandboxes."""
    pinned = CpuSet()
    for task in vcpus:
        if len(task.cpus_allowed) == 1:
            pinned = pinned | task.cpus_allowed
    for node in topology.nodes:
        if pinned and pinned.issubset(node.cpus & allowed):
            return CpuSet([node.id]), f"flat VM already on host node {node.id}: kept there"
    scored = [
        (len(ledger.free(node.cpus & allowed)), -node.id, node.id)
        for node in topology.nodes
        if node.cpus & allowed
    ]
    if not scored:
        return CpuSet(), "no host node has an allowed CPU"
    free, _, best = max(scored)
    if free < sandbox.layout.smp.cpus:
        spread = CpuSet(node_id for _, _, node_id in scored)
        return spread, (
            f"flat VM with {sandbox.layout.smp.cpus} vCPUs fits no single node "
            f"(at most {free} free CPUs): spread over host nodes {spread}"
        )
    return CpuSet(
        [best]
    ), f"flat VM placed on host node {best}, the one with most free CPUs ({free})"


def plan_placement(
    topology: HostTopology, inputs: Sequence[PlacementInput], policy: Policy = Policy.DEDICATED
) -> list[SandboxPlacement]:
    """Decide every vCPU's mask for every sandbox at once (one ledger for the host).

    Sandboxes are served oldest first. A vCPU already alone on a CPU it may use keeps it (so a
    restarted agent changes nothing); others get the lowest free CPU of their node. A vCPU for
    which no free CPU is left gets its node's allowed CPUs, never a CPU another vCPU holds.
    """
    ledger = Ledger()
    ordered = sorted(inputs, key=lambda i: (i.sandbox.start_time, i.sandbox.pid))
    placements = [SandboxPlacement(item.sandbox) for item in ordered]
    wanted = [
        _candidates(topology, item, placement, ledger)
        for item, placement in zip(ordered, placements, strict=True)
    ]
    if policy is Policy.DEDICATED:
        _keep_existing(ordered, wanted, ledger)
    for item, placement, candidates in zip(ordered, placements, wanted, strict=True):
        _assign(item, placement, candidates, ledger, policy)
    return placements


@dataclass(frozen=True)
class _Want:
    task: Task
    index: int
    guest_node: int | None
    host_nodes: CpuSet
    cpus: CpuSet
    allowed: CpuSet


def _candidates(
    topology: HostTopology, item: PlacementInput, placement: SandboxPlacement, ledger: Ledger
) -> list[_Want]:
    sandbox = item.sandbox
    allowed = sandbox.allowed_cpus & topology.online_cpus
    if not allowed:
        placement.warnings.append("the sandbox may use no online CPU: left untouched")
        return []
    mapping, how = guest_to_host_nodes(sandbox.layout, topology)
    placement.decisions.append(how)
    guest_of: dict[int, int] = {}
    if mapping is None:
        flat_nodes, why = choose_flat_node(
            topology, allowed, ledger, sandbox, item.vcpus.by_index.values()
        )
        placement.decisions.append(why)
    else:
        for node in sandbox.layout.nodes:
            for vcpu in node.cpus:
                guest_of[vcpu] = node.id
    wants = []
    warned: set[int | None] = set()
    for index, task in sorted(item.vcpus.by_index.items()):
        guest = guest_of.get(index)
        host_nodes = (
            flat_nodes
            if mapping is None
            else mapping.get(guest if guest is not None else -1, CpuSet())
        )
        cpus = node_cpus(topology, host_nodes) & allowed
        if not cpus:
            if guest not in warned:
                placement.warnings.append(
                    f"{NO_INTERSECTION}: guest node {guest} → host nodes {host_nodes or '?'}, "
                    f"allowed CPUs {allowed}; using the allowed CPUs"
                )
                warned.add(guest)
            cpus = allowed
        wants.append(_Want(task, index, guest, host_nodes, cpus, allowed))
    return wants


def _keep_existing(
    ordered: Sequence[PlacementInput], wanted: Sequence[list[_Want]], ledger: Ledger
) -> None:
    for item, wants in zip(ordered, wanted, strict=True):
        for want in wants:
            current = want.task.cpus_allowed
            if len(current) == 1 and current.issubset(want.cpus):
                ledger.claim(next(iter(current)), item.sandbox.sandbox_id, want.task.tid)


def _assign(
    item: PlacementInput,
    placement: SandboxPlacement,
    wants: list[_Want],
    ledger: Ledger,
    policy: Policy,
) -> None:
    sandbox = item.sandbox
    shared: list[int] = []
    for want in wants:
        cpus, dedicated = want.cpus, False
        if policy is Policy.DEDICATED:
            held = want.task.cpus_allowed
            if len(held) == 1 and ledger.owner(next(iter(held))) == (
                sandbox.sandbox_id,
                want.task.tid,
            ):
                cpus, dedicated = held, True
            else:
                free = ledger.free(want.cpus)
                if free:
                    cpu = next(iter(free))
                    ledger.claim(cpu, sandbox.sandbox_id, want.task.tid)
                    cpus, dedicated = CpuSet([cpu]), True
                else:
                    shared.append(want.index)
        placement.assignments.append(
            Assignment(
                sandbox.sandbox_id,
                sandbox.pid,
                want.task.tid,
                want.index,
                want.guest_node,
                want.host_nodes,
                cpus,
                want.allowed,
                dedicated,
            )
        )
    if shared:
        placement.warnings.append(
            f"vCPUs {CpuSet(shared)} have no free dedicated CPU in their node: they share the "
            "node's allowed CPUs instead"
        )
