"""Where each vCPU goes: guest node → host node, and a node-wide ledger of dedicated CPUs.

Pure decisions, no system calls: `plan_placement` takes what was read and returns the masks
to apply, so tests can feed it fixture trees and fake threads.

The ledger is rebuilt on every pass from what the kernel holds: a vCPU alone on a CPU it may
use keeps that CPU, so a restarted agent changes nothing that is already right.
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


class EmulatorPolicy(enum.StrEnum):
    SPARE = "spare"  # emulator and I/O threads go to allowed CPUs no vCPU holds
    UNTOUCHED = "untouched"


class Role(enum.StrEnum):
    VCPU = "vcpu"
    EMULATOR = "emulator"  # any thread of the process that runs no vCPU (main loop, I/O)


@dataclass(frozen=True)
class Assignment:
    """The mask one thread of a sandbox should have."""

    sandbox_id: str
    pid: int
    tid: int
    #: None for an emulator thread.
    vcpu_index: int | None
    guest_node: int | None
    host_nodes: CpuSet
    cpus: CpuSet
    #: The sandbox's allowed CPUs: `cpus` never leaves them.
    allowed: CpuSet
    dedicated: bool
    role: Role = Role.VCPU


@dataclass
class SandboxPlacement:
    sandbox: Sandbox
    assignments: list[Assignment] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)
    #: Host nodes behind each guest node (a flat VM: guest node 0 → where its vCPUs go).
    host_nodes: dict[int, CpuSet] = field(default_factory=dict)
    #: Per vCPU index, the CPUs it may be on: its host node's allowed CPUs (or the fallback).
    wanted: dict[int, CpuSet] = field(default_factory=dict)

    @property
    def vcpu_assignments(self) -> list[Assignment]:
        return [a for a in self.assignments if a.role is Role.VCPU]


@dataclass(frozen=True)
class PlacementInput:
    sandbox: Sandbox
    vcpus: VcpuThreads
    #: Host nodes of the sandbox's VFIO devices whose locality is known.
    device_nodes: CpuSet = field(default_factory=CpuSet)


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
    how = "guest nodes follow their memory backends' host-nodes (or the host's node order)"
    return mapping, how


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

    def release(self, sandbox_id: str) -> None:
        """Forget every CPU the sandbox's vCPUs hold."""
        self._owner = {cpu: o for cpu, o in self._owner.items() if o[0] != sandbox_id}

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


def _alone(task: Task) -> int | None:
    """The one CPU a thread may run on, if it has exactly one."""
    return task.cpus_allowed.first() if len(task.cpus_allowed) == 1 else None


def kept_flat_node(topology: HostTopology, allowed: CpuSet, vcpus: Iterable[Task]) -> int | None:
    """The host node a flat VM's pinned vCPUs already sit on, all of them inside it."""
    pinned = CpuSet(cpu for task in vcpus if (cpu := _alone(task)) is not None)
    if not pinned:
        return None
    for node in topology.nodes:
        if pinned.issubset(node.cpus & allowed):
            return node.id
    return None


def choose_flat_node(
    topology: HostTopology,
    allowed: CpuSet,
    ledger: Ledger,
    sandbox: Sandbox,
    vcpus: Iterable[Task],
    device_nodes: CpuSet | None = None,
    keep: bool = True,
) -> tuple[CpuSet, str]:
    """Host node(s) for a VM without guest NUMA nodes: where its vCPUs already sit alone (with
    `keep`), else the node of its VFIO devices if they fit there, else the node with the most
    allowed CPUs not dedicated to vCPUs."""
    kept = kept_flat_node(topology, allowed, vcpus) if keep else None
    if kept is not None:
        return CpuSet([kept]), f"flat VM already on host node {kept}: kept there"
    vcpu_count = sandbox.layout.smp.cpus
    scored = [
        (len(ledger.free(node.cpus & allowed)), -node.id, node.id)
        for node in topology.nodes
        if node.cpus & allowed
    ]
    if not scored:
        return CpuSet(), "no host node has an allowed CPU"
    for free, _, node_id in scored:
        if device_nodes and node_id in device_nodes and free >= vcpu_count:
            return CpuSet([node_id]), f"flat VM placed on host node {node_id}, its devices' node"
    free, _, best = max(scored)
    if free < vcpu_count:
        spread = CpuSet(node_id for _, _, node_id in scored)
        return spread, (
            f"flat VM with {vcpu_count} vCPUs fits no single node "
            f"(at most {free} free CPUs): spread over host nodes {spread}"
        )
    return CpuSet(
        [best]
    ), f"flat VM placed on host node {best}, the one with most free CPUs ({free})"


@dataclass(frozen=True)
class _Want:
    task: Task
    index: int
    guest_node: int | None
    host_nodes: CpuSet
    cpus: CpuSet
    allowed: CpuSet


class _Usage:
    """How many vCPUs share each CPU through a wider mask (a node mask counts 1/len per CPU)."""

    def __init__(self) -> None:
        self.load: dict[int, float] = {}

    def add(self, cpus: CpuSet) -> None:
        for cpu in cpus:
            self.load[cpu] = self.load.get(cpu, 0.0) + 1.0 / len(cpus)


def plan_placement(
    topology: HostTopology,
    inputs: Sequence[PlacementInput],
    policy: Policy = Policy.DEDICATED,
    emulator: EmulatorPolicy = EmulatorPolicy.SPARE,
) -> list[SandboxPlacement]:
    """Decide every thread's mask for every sandbox at once (one ledger for the host).

    Sandboxes are served oldest first. A vCPU already alone on a CPU it may use keeps it (so a
    restarted agent changes nothing); others get the least-used free CPU of their node, away
    from SMT siblings of other sandboxes' vCPUs while a whole free core exists. A vCPU for
    which no free CPU is left gets its node's allowed CPUs, never a CPU another vCPU holds alone.
    """
    ledger = Ledger()
    ordered = sorted(inputs, key=lambda i: (i.sandbox.start_time, i.sandbox.pid))
    placements = [SandboxPlacement(item.sandbox) for item in ordered]
    wanted: list[list[_Want] | None] = [
        _fixed_wants(topology, item, placement)
        for item, placement in zip(ordered, placements, strict=True)
    ]
    if policy is Policy.DEDICATED:
        _keep_existing(ordered, wanted, ledger)
        _release_displaced_flat(ordered, placements, wanted, ledger)

    usage = _Usage()
    for item, placement, wants in zip(ordered, placements, wanted, strict=True):
        if wants is None:
            wants = _flat_wants(topology, item, placement, ledger)
        placement.wanted = {want.index: want.cpus for want in wants}
        _assign(topology, item, placement, wants, ledger, usage, policy)
    if emulator is EmulatorPolicy.SPARE:
        for item, placement in zip(ordered, placements, strict=True):
            _assign_emulators(topology, item, placement, ledger)
    return placements


def _allowed(topology: HostTopology, item: PlacementInput, placement: SandboxPlacement) -> CpuSet:
    allowed = item.sandbox.allowed_cpus & topology.online_cpus
    if not allowed:
        placement.warnings.append("the sandbox may use no online CPU: left untouched")
    return allowed


def _fixed_wants(
    topology: HostTopology, item: PlacementInput, placement: SandboxPlacement
) -> list[_Want] | None:
    """Wanted CPUs of each vCPU when they follow from the sandbox alone; None for a flat VM
    whose host node depends on what other sandboxes hold."""
    allowed = _allowed(topology, item, placement)
    if not allowed:
        return []
    mapping, how = guest_to_host_nodes(item.sandbox.layout, topology)
    placement.decisions.append(how)
    if mapping is None:
        kept = kept_flat_node(topology, allowed, item.vcpus.by_index.values())
        if kept is None:
            return None
        placement.decisions.append(f"flat VM already on host node {kept}: kept there")
        mapping = {0: CpuSet([kept])}
        guest_of = dict.fromkeys(item.vcpus.by_index, 0)
    else:
        guest_of = {vcpu: node.id for node in item.sandbox.layout.nodes for vcpu in node.cpus}
    placement.host_nodes = dict(mapping)
    return _wants(topology, item, placement, allowed, mapping, guest_of)


def _flat_wants(
    topology: HostTopology, item: PlacementInput, placement: SandboxPlacement, ledger: Ledger
) -> list[_Want]:
    allowed = item.sandbox.allowed_cpus & topology.online_cpus
    tasks = item.vcpus.by_index.values()
    devices = item.device_nodes
    nodes, why = choose_flat_node(
        topology, allowed, ledger, item.sandbox, tasks, devices, keep=False
    )
    placement.decisions.append(why)
    placement.host_nodes = {0: nodes}
    guest_of = dict.fromkeys(item.vcpus.by_index, 0)
    return _wants(topology, item, placement, allowed, {0: nodes}, guest_of)


def _wants(
    topology: HostTopology,
    item: PlacementInput,
    placement: SandboxPlacement,
    allowed: CpuSet,
    mapping: dict[int, CpuSet],
    guest_of: dict[int, int],
) -> list[_Want]:
    wants = []
    warned: set[int | None] = set()
    for index, task in sorted(item.vcpus.by_index.items()):
        guest = guest_of.get(index)
        host_nodes = mapping.get(guest, CpuSet()) if guest is not None else CpuSet()
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
    ordered: Sequence[PlacementInput], wanted: Sequence[list[_Want] | None], ledger: Ledger
) -> None:
    for item, wants in zip(ordered, wanted, strict=True):
        for want in wants or []:
            cpu = _alone(want.task)
            if cpu is not None and cpu in want.cpus:
                ledger.claim(cpu, item.sandbox.sandbox_id, want.task.tid)


def _release_displaced_flat(
    ordered: Sequence[PlacementInput],
    placements: list[SandboxPlacement],
    wanted: list[list[_Want] | None],
    ledger: Ledger,
) -> None:
    """A flat VM stays on the node its vCPUs sit on only while no older sandbox holds one of
    their CPUs; otherwise it is placed anew, on whichever node has room."""
    for position, (item, placement) in enumerate(zip(ordered, placements, strict=True)):
        wants = wanted[position]
        if item.sandbox.layout.nodes or not wants:
            continue
        sandbox_id = item.sandbox.sandbox_id
        held = [(cpu, w.task.tid) for w in wants if (cpu := _alone(w.task)) is not None]
        if all(ledger.owner(cpu) == (sandbox_id, tid) for cpu, tid in held):
            continue
        ledger.release(sandbox_id)
        wanted[position] = None
        placement.decisions.append("its CPUs are held by older sandboxes: placed anew")


def _best_cpu(
    topology: HostTopology, free: CpuSet, sandbox_id: str, ledger: Ledger, usage: _Usage
) -> int:
    """Free CPU to dedicate: off the SMT siblings of other sandboxes' vCPUs first, then the
    least used, then the lowest number."""
    siblings = {cpu.id: cpu.siblings for cpu in topology.cpus}

    def by_other_sandbox(cpu: int) -> bool:
        for sibling in siblings.get(cpu, CpuSet()):
            owner = ledger.owner(sibling)
            if sibling != cpu and owner is not None and owner[0] != sandbox_id:
                return True
        return False

    return min(free, key=lambda cpu: (by_other_sandbox(cpu), usage.load.get(cpu, 0.0), cpu))


def _assign(
    topology: HostTopology,
    item: PlacementInput,
    placement: SandboxPlacement,
    wants: list[_Want],
    ledger: Ledger,
    usage: _Usage,
    policy: Policy,
) -> None:
    sandbox = item.sandbox
    shared: list[int] = []
    for want in wants:
        cpus, dedicated = want.cpus, False
        if policy is Policy.DEDICATED:
            held = _alone(want.task)
            if held is not None and ledger.owner(held) == (sandbox.sandbox_id, want.task.tid):
                cpus, dedicated = CpuSet([held]), True
            elif free := ledger.free(want.cpus):
                cpu = _best_cpu(topology, free, sandbox.sandbox_id, ledger, usage)
                ledger.claim(cpu, sandbox.sandbox_id, want.task.tid)
                cpus, dedicated = CpuSet([cpu]), True
            else:
                shared.append(want.index)
        if not dedicated:
            usage.add(cpus)
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


def _assign_emulators(
    topology: HostTopology, item: PlacementInput, placement: SandboxPlacement, ledger: Ledger
) -> None:
    """Emulator and I/O threads to allowed CPUs no vCPU holds, those of the sandbox's own host
    nodes first; left alone when every allowed CPU is dedicated or the vCPUs are not all known."""
    sandbox = item.sandbox
    allowed = sandbox.allowed_cpus & topology.online_cpus
    if not item.vcpus.others or not allowed:
        return
    spare = allowed - ledger.dedicated()
    if not spare:
        placement.decisions.append("emulator threads left alone: every allowed CPU holds a vCPU")
        return
    own_nodes = CpuSet()
    for nodes in placement.host_nodes.values():
        own_nodes = own_nodes | nodes
    near = spare & node_cpus(topology, own_nodes)
    cpus = near or spare
    placement.decisions.append(f"emulator and I/O threads on spare CPUs {cpus}")
    for task in item.vcpus.others:
        placement.assignments.append(
            Assignment(
                sandbox.sandbox_id,
                sandbox.pid,
                task.tid,
                None,
                None,
                own_nodes,
                cpus,
                allowed,
                False,
                Role.EMULATOR,
            )
        )
