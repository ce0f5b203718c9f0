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
from typing import Protocol

from kata_numa._native import CpuSet, GuestLayout, HostTopology
from kata_numa.ledger import Ledger, Owner
from kata_numa.sandbox import Sandbox
from kata_numa.vcpus import VcpuThreads

__all__ = [
    "NO_INTERSECTION",
    "Assignment",
    "EmulatorPolicy",
    "Ledger",
    "PlacementInput",
    "Policy",
    "Role",
    "SandboxPlacement",
    "choose_flat_node",
    "guest_to_host_nodes",
    "node_cpus",
    "plan_placement",
]

NO_INTERSECTION = "NUMA node HostCPUs do not intersect sandbox CPUSet"

#: Plans made against the previous plan's result before giving up on a fixed point.
SETTLE_ROUNDS = 4


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
    bound = [backends[n.memdev].host_nodes for n in layout.nodes if n.memdev in backends]
    if len(layout.nodes) == 1 and not any(bound):
        return None, "one guest node without a host binding (Kata's default): placed as a flat VM"
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


def node_cpus(topology: HostTopology, nodes: CpuSet) -> CpuSet:
    cpus = CpuSet()
    for node in topology.nodes:
        if node.id in nodes:
            cpus = cpus | node.cpus
    return cpus


class ThreadMask(Protocol):
    """What the planner reads of a thread: its id and the CPUs the kernel lets it run on."""

    @property
    def tid(self) -> int: ...
    @property
    def cpus_allowed(self) -> CpuSet: ...


@dataclass(frozen=True)
class _Thread:
    tid: int
    cpus_allowed: CpuSet


@dataclass(frozen=True)
class _Item:
    """A sandbox as one planning round sees it."""

    source: PlacementInput
    vcpus: dict[int, _Thread]
    others: tuple[_Thread, ...]

    @property
    def sandbox(self) -> Sandbox:
        return self.source.sandbox

    @classmethod
    def of(cls, item: PlacementInput) -> _Item:
        vcpus = {i: _Thread(t.tid, t.cpus_allowed) for i, t in item.vcpus.by_index.items()}
        others = tuple(_Thread(t.tid, t.cpus_allowed) for t in item.vcpus.others)
        return cls(item, vcpus, others)

    def after(self, masks: dict[int, CpuSet]) -> _Item:
        """The sandbox once `masks` (tid → CPUs) are applied."""
        vcpus = {i: _Thread(t.tid, masks.get(t.tid, t.cpus_allowed)) for i, t in self.vcpus.items()}
        others = tuple(_Thread(t.tid, masks.get(t.tid, t.cpus_allowed)) for t in self.others)
        return _Item(self.source, vcpus, others)

    def masks(self) -> dict[int, CpuSet]:
        return {t.tid: t.cpus_allowed for t in (*self.vcpus.values(), *self.others)}


def _alone(task: ThreadMask) -> int | None:
    """The one CPU a thread may run on, if it has exactly one."""
    return task.cpus_allowed.first() if len(task.cpus_allowed) == 1 else None


def memory_host_nodes(layout: GuestLayout) -> CpuSet | None:
    """Host nodes a flat VM's memory is bound to (`-machine memory-backend=` with `host-nodes`)."""
    for backend in layout.backends:
        if backend.id == layout.machine_memdev and backend.host_nodes:
            return backend.host_nodes
    return None


def choose_flat_node(
    topology: HostTopology,
    allowed: CpuSet,
    ledger: Ledger,
    sandbox: Sandbox,
    vcpus: Iterable[ThreadMask],
    device_nodes: CpuSet | None = None,
) -> tuple[CpuSet, str]:
    """Host node(s) for a VM without guest NUMA nodes, with the reason.

    A node has room for the CPUs free in the ledger plus those the VM's own vCPUs hold there.
    In order: the nodes its memory is bound to (`-machine memory-backend=`); the node its held
    CPUs are all on, if it has room for every vCPU; the node of its VFIO devices, if it has
    room; the node with the most room, if enough; else every node with an allowed CPU.
    """
    count = max(sandbox.layout.smp.cpus, len(list(vcpus)))
    own = ledger.dedicated() - ledger.dedicated_to_others(sandbox.sandbox_id)
    room = {
        node.id: len(ledger.free(node.cpus & allowed)) + len(own & node.cpus)
        for node in topology.nodes
        if node.cpus & allowed
    }
    if not room:
        return CpuSet(), "no host node has an allowed CPU"
    bound = memory_host_nodes(sandbox.layout)
    if bound and (nodes := CpuSet(n for n in room if n in bound)):
        return nodes, f"flat VM whose memory is bound to host nodes {bound}: its vCPUs follow"
    for node in topology.nodes:
        if own and own.issubset(node.cpus) and room.get(node.id, 0) >= count:
            return CpuSet([node.id]), f"flat VM already on host node {node.id}: kept there"
    for node_id, free in room.items():
        if device_nodes and node_id in device_nodes and free >= count:
            return CpuSet([node_id]), f"flat VM placed on host node {node_id}, its devices' node"
    best = max(room, key=lambda node_id: (room[node_id], -node_id))
    if room[best] < count:
        spread = CpuSet(room)
        return spread, (
            f"flat VM with {count} vCPUs fits no single node (at most {room[best]} free "
            f"CPUs): spread over host nodes {spread}"
        )
    return CpuSet([best]), f"flat VM placed on host node {best}, the one with most room"


@dataclass(frozen=True)
class _Want:
    task: _Thread
    index: int
    guest_node: int | None
    host_nodes: CpuSet
    cpus: CpuSet
    allowed: CpuSet


class _Usage:
    """Load on each CPU from threads of each sandbox that hold no CPU of their own (emulator
    threads, unpinned vCPUs) where the kernel has them now; a mask of n CPUs puts 1/n on each."""

    def __init__(self, items: Sequence[_Item]) -> None:
        self._load: dict[str, dict[int, float]] = {}
        for item in items:
            load = self._load.setdefault(item.sandbox.sandbox_id, {})
            for task in (*item.others, *item.vcpus.values()):
                if task in item.others or _alone(task) is None:
                    for cpu in task.cpus_allowed:
                        load[cpu] = load.get(cpu, 0.0) + 1.0 / len(task.cpus_allowed)

    def of_others(self, sandbox_id: str, cpu: int) -> float:
        return sum(load.get(cpu, 0.0) for owner, load in self._load.items() if owner != sandbox_id)


def plan_placement(
    topology: HostTopology,
    inputs: Sequence[PlacementInput],
    policy: Policy = Policy.DEDICATED,
    emulator: EmulatorPolicy = EmulatorPolicy.SPARE,
) -> list[SandboxPlacement]:
    """Decide every thread's mask for every sandbox at once (one ledger for the host).

    Sandboxes are served oldest first. A vCPU already alone on a CPU it may use keeps it (so a
    restarted agent changes nothing); others get the least-used free CPU of their node, away
    from SMT siblings of other sandboxes' vCPUs while a whole free core exists, else one freed
    by moving placed vCPUs within their nodes. A vCPU for which no CPU can be freed gets its
    node's allowed CPUs.

    The plan is made again against its own result until that changes nothing (at most
    SETTLE_ROUNDS times): one sandbox's choice can free room another decided without, and the
    plan applied must be one the next pass keeps as it is.
    """
    items = [_Item.of(item) for item in sorted(inputs, key=_age)]
    placements = _plan_round(topology, items, policy, emulator)
    for _ in range(SETTLE_ROUNDS - 1):
        masks = {a.tid: a.cpus for p in placements for a in p.assignments}
        settled = [item.after(masks) for item in items]
        if all(a.masks() == b.masks() for a, b in zip(settled, items, strict=True)):
            break
        items = settled
        placements = _plan_round(topology, items, policy, emulator)
    return placements


def _age(item: PlacementInput) -> tuple[int, int]:
    return (item.sandbox.start_time, item.sandbox.pid)


def _plan_round(
    topology: HostTopology, ordered: list[_Item], policy: Policy, emulator: EmulatorPolicy
) -> list[SandboxPlacement]:
    """One planning round against the masks the threads hold in `ordered` (oldest first)."""
    ledger = Ledger()
    placements = [SandboxPlacement(item.sandbox) for item in ordered]
    wanted = [_numa_wants(topology, i, p) for i, p in zip(ordered, placements, strict=True)]
    held = [
        w if w is not None else _held_flat(topology, i)
        for i, w in zip(ordered, wanted, strict=True)
    ]
    registry = {
        (item.sandbox.sandbox_id, want.task.tid): want
        for item, wants in zip(ordered, held, strict=True)
        for want in wants
    }
    if policy is Policy.DEDICATED:
        _keep_existing(ordered, held, ledger)

    usage = _Usage(ordered)
    for position, (item, placement) in enumerate(zip(ordered, placements, strict=True)):
        wants = wanted[position]
        if wants is None:
            wants = wanted[position] = _flat_wants(topology, item, placement, ledger)
            registry.update(((item.sandbox.sandbox_id, w.task.tid), w) for w in wants)
        placement.wanted = {want.index: want.cpus for want in wants}
        if policy is Policy.DEDICATED:
            _dedicate(topology, item, wants, ledger, usage, registry)
    if policy is Policy.DEDICATED:  # a flat VM that moved away may have freed CPUs
        for item, wants in zip(ordered, wanted, strict=True):
            _dedicate(topology, item, wants or [], ledger, usage, registry)
    for item, placement, wants in zip(ordered, placements, wanted, strict=True):
        _assign(item, placement, wants or [], ledger, policy)
    if emulator is EmulatorPolicy.SPARE:
        for item, placement in zip(ordered, placements, strict=True):
            _assign_emulators(topology, item, placement, ledger)
    return placements


def _allowed(topology: HostTopology, item: _Item) -> CpuSet:
    return item.sandbox.allowed_cpus & topology.online_cpus


def _numa_wants(
    topology: HostTopology, item: _Item, placement: SandboxPlacement
) -> list[_Want] | None:
    """Wanted CPUs of each vCPU of a VM with guest NUMA nodes; None for a flat VM, whose host
    node depends on what other sandboxes hold."""
    allowed = _allowed(topology, item)
    if not allowed:
        placement.warnings.append("the sandbox may use no online CPU: left untouched")
        return []
    mapping, how = guest_to_host_nodes(item.sandbox.layout, topology)
    placement.decisions.append(how)
    if mapping is None:
        return None
    placement.host_nodes = dict(mapping)
    guest_of = {vcpu: node.id for node in item.sandbox.layout.nodes for vcpu in node.cpus}
    return _wants(topology, item, placement, allowed, mapping, guest_of)


def _held_flat(topology: HostTopology, item: _Item) -> list[_Want]:
    """Until a flat VM is placed: each of its vCPUs alone on an allowed CPU, wanting any
    allowed CPU (a flat VM may go to any node, so older sandboxes may move it anywhere)."""
    allowed = _allowed(topology, item)
    wants = []
    for index, task in sorted(item.vcpus.items()):
        cpu = _alone(task)
        if cpu is not None and cpu in allowed:
            wants.append(_Want(task, index, 0, CpuSet(), allowed, allowed))
    return wants


def _flat_wants(
    topology: HostTopology, item: _Item, placement: SandboxPlacement, ledger: Ledger
) -> list[_Want]:
    allowed = _allowed(topology, item)
    tasks = item.vcpus.values()
    nodes, why = choose_flat_node(
        topology, allowed, ledger, item.sandbox, tasks, item.source.device_nodes
    )
    placement.decisions.append(why)
    placement.host_nodes = {0: nodes}
    guest_of = dict.fromkeys(item.vcpus, 0)
    wants = _wants(topology, item, placement, allowed, {0: nodes}, guest_of)
    for want in wants:  # CPUs held outside the chosen nodes are given up
        cpu = ledger.cpu_of(item.sandbox.sandbox_id, want.task.tid)
        if cpu is not None and cpu not in want.cpus:
            ledger.unclaim(cpu)
    return wants


def _wants(
    topology: HostTopology,
    item: _Item,
    placement: SandboxPlacement,
    allowed: CpuSet,
    mapping: dict[int, CpuSet],
    guest_of: dict[int, int],
) -> list[_Want]:
    wants = []
    warned: set[int | None] = set()
    for index, task in sorted(item.vcpus.items()):
        guest = guest_of.get(index)
        host_nodes = mapping.get(guest, CpuSet()) if guest is not None else CpuSet()
        cpus = node_cpus(topology, host_nodes) & allowed
        if not cpus:
            if guest not in warned:
                unknown = host_nodes - CpuSet(node.id for node in topology.nodes)
                why = f" (host node {unknown} is not a node of this host)" if unknown else ""
                placement.warnings.append(
                    f"{NO_INTERSECTION}: guest node {guest} → host nodes {host_nodes or '?'}"
                    f"{why}, allowed CPUs {allowed}; using the allowed CPUs"
                )
                warned.add(guest)
            cpus = allowed
        wants.append(_Want(task, index, guest, host_nodes, cpus, allowed))
    return wants


def _keep_existing(ordered: Sequence[_Item], held: Sequence[list[_Want]], ledger: Ledger) -> None:
    """Rebuild the ledger from the kernel: a vCPU alone on a CPU it may use keeps it, oldest
    sandbox first. vCPUs that may use other CPUs claim first: of two vCPUs alone on one CPU,
    one that may use only that CPU is the one a previous pass left sharing it."""
    for only_one in (False, True):
        for item, wants in zip(ordered, held, strict=True):
            for want in wants:
                cpu = _alone(want.task)
                if cpu is not None and cpu in want.cpus and (len(want.cpus) == 1) == only_one:
                    ledger.claim(cpu, item.sandbox.sandbox_id, want.task.tid)


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

    return min(free, key=lambda c: (by_other_sandbox(c), usage.of_others(sandbox_id, c), c))


def _dedicate(
    topology: HostTopology,
    item: _Item,
    wants: list[_Want],
    ledger: Ledger,
    usage: _Usage,
    registry: dict[Owner, _Want],
) -> None:
    """Under `dedicated`: each vCPU alone on a free CPU it may use keeps it; the others get the
    best free CPU of theirs, else one freed by moving placed vCPUs within their own CPUs."""
    sandbox_id = item.sandbox.sandbox_id

    def wanted_of(owner: Owner) -> CpuSet | None:
        want = registry.get(owner)
        return want.cpus if want is not None else None

    for want in wants:
        held = _alone(want.task)
        if held is not None and held in want.cpus:
            ledger.claim(held, sandbox_id, want.task.tid)
    for want in wants:
        if ledger.cpu_of(sandbox_id, want.task.tid) is not None:
            continue
        free = ledger.free(want.cpus)
        if free:
            cpu: int | None = _best_cpu(topology, free, sandbox_id, ledger, usage)
        else:
            cpu = ledger.make_room(want.cpus, wanted_of)
        if cpu is not None:
            ledger.claim(cpu, sandbox_id, want.task.tid)


def _assign(
    item: _Item,
    placement: SandboxPlacement,
    wants: list[_Want],
    ledger: Ledger,
    policy: Policy,
) -> None:
    """Masks from the settled ledger: the dedicated CPU, else the node's allowed CPUs."""
    sandbox = item.sandbox
    shared = []
    for want in wants:
        cpu = ledger.cpu_of(sandbox.sandbox_id, want.task.tid)
        if cpu is None:
            shared.append(want.index)
        placement.assignments.append(
            Assignment(
                sandbox.sandbox_id,
                sandbox.pid,
                want.task.tid,
                want.index,
                want.guest_node,
                want.host_nodes,
                want.cpus if cpu is None else CpuSet([cpu]),
                want.allowed,
                cpu is not None,
            )
        )
    if shared and policy is Policy.DEDICATED:
        placement.warnings.append(
            f"vCPUs {CpuSet(shared)} have no free dedicated CPU in their node: they share the "
            "node's allowed CPUs instead"
        )


def _assign_emulators(
    topology: HostTopology, item: _Item, placement: SandboxPlacement, ledger: Ledger
) -> None:
    """Emulator and I/O threads to allowed CPUs no vCPU holds, those of the sandbox's own host
    nodes first. When every allowed CPU holds a vCPU they share their nodes' allowed CPUs (never
    staying on a spare CPU of an earlier pass that another sandbox's vCPU holds now); left alone
    when the vCPUs are not all known."""
    sandbox = item.sandbox
    allowed = _allowed(topology, item)
    if not item.others or not allowed:
        return
    own_nodes = CpuSet()
    for nodes in placement.host_nodes.values():
        own_nodes = own_nodes | nodes
    spare = allowed - ledger.dedicated()
    if spare:
        cpus = (spare & node_cpus(topology, own_nodes)) or spare
        placement.decisions.append(f"emulator and I/O threads on spare CPUs {cpus}")
    else:
        cpus = (allowed & node_cpus(topology, own_nodes)) or allowed
        placement.decisions.append(
            f"no spare CPU: emulator and I/O threads share their nodes' allowed CPUs {cpus}"
        )
    for task in item.others:
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
