"""`kata-numa verify`: is every sandbox on this node placed well? Changes nothing.

Per sandbox: each vCPU thread's current mask against the host node of its guest node, vCPUs
of any sandboxes sharing a CPU while a CPU of their node is free, memory-backend bindings
against the host's nodes, VFIO device verdicts, and the guest layout. The expected masks are
what `run` would apply now, so a node that `run` left alone verifies clean.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kata_numa._native import CpuSet, HostTopology
from kata_numa.agent import AgentOptions, SandboxState, plan_states, read_states
from kata_numa.errors import UsageError
from kata_numa.gpu import DeviceCheck, Verdict
from kata_numa.policy import NO_INTERSECTION, Assignment, SandboxPlacement, guest_to_host_nodes
from kata_numa.sandbox import Sandbox, Skipped, find_sandboxes
from kata_numa.topology import read_topology


@dataclass(frozen=True)
class VcpuCheck:
    index: int
    tid: int
    #: The mask the kernel holds.
    cpus: CpuSet
    #: Host node(s) behind the vCPU's guest node.
    host_nodes: CpuSet
    #: The CPUs it may be on: those nodes' CPUs inside the sandbox's allowed CPUs.
    expected: CpuSet
    #: What `run` would set.
    planned: CpuSet
    ok: bool


@dataclass
class SandboxCheck:
    sandbox: Sandbox
    method: str
    allowed: CpuSet
    vcpus: list[VcpuCheck] = field(default_factory=list)
    devices: list[DeviceCheck] = field(default_factory=list)
    layout: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


@dataclass
class VerifyReport:
    sandboxes: list[SandboxCheck] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def unmanaged(self) -> list[Skipped]:
        """Sandboxes running here that cannot be read or placed: each one is a finding."""
        return [s for s in self.skipped if s.sandbox_id is not None]

    @property
    def findings(self) -> int:
        return sum(len(check.findings) for check in self.sandboxes) + len(self.unmanaged)


@dataclass(frozen=True)
class _Pinned:
    """A vCPU alone on one CPU."""

    sandbox_id: str
    index: int
    tid: int
    moves: bool  # `run` would give it another mask


def verify(options: AgentOptions, sandbox_id: str | None = None) -> VerifyReport:
    """Check every sandbox (all are read: collisions involve others), report `sandbox_id`'s
    or all. Raises UsageError when `sandbox_id` runs nowhere here."""
    topology = read_topology(options.sysfs_root)
    sandboxes, skipped = find_sandboxes(options.proc_root, options.qemu_paths)
    known = {s.sandbox_id for s in sandboxes} | {s.sandbox_id for s in skipped if s.sandbox_id}
    if sandbox_id is not None and sandbox_id not in known:
        running = ", ".join(sorted(known)) or "none"
        raise UsageError(f"no Kata sandbox {sandbox_id!r} runs here (sandboxes: {running})")
    options = dataclasses.replace(options, dry_run=True)
    states, _, unreadable = read_states(options, topology, sandboxes)
    skipped = [*skipped, *unreadable]
    if sandbox_id is not None:
        skipped = [s for s in skipped if s.sandbox_id in (None, sandbox_id)]

    planned = plan_states(options, topology, states)

    pinned = _pinned_cpus(planned)
    report = VerifyReport(skipped=skipped)
    for placement, state, devices in planned:
        if sandbox_id is None or placement.sandbox.sandbox_id == sandbox_id:
            report.sandboxes.append(_check(topology, placement, state, devices, pinned))
    return report


def _pinned_cpus(
    planned: Iterable[tuple[SandboxPlacement, SandboxState, list[DeviceCheck]]],
) -> dict[int, list[_Pinned]]:
    """CPU → the vCPUs (of every sandbox) whose mask is that CPU alone."""
    pinned: dict[int, list[_Pinned]] = {}
    for placement, state, _ in planned:
        plans = {a.vcpu_index: a for a in placement.vcpu_assignments}
        for index, task in state.vcpus.by_index.items():
            cpu = task.cpus_allowed.first()
            if cpu is None or len(task.cpus_allowed) != 1:
                continue
            plan = plans.get(index)
            moves = plan is not None and plan.cpus != task.cpus_allowed
            entry = _Pinned(placement.sandbox.sandbox_id, index, task.tid, moves)
            pinned.setdefault(cpu, []).append(entry)
    return pinned


def _check(
    topology: HostTopology,
    placement: SandboxPlacement,
    state: SandboxState,
    devices: list[DeviceCheck],
    pinned: dict[int, list[_Pinned]],
) -> SandboxCheck:
    sandbox = state.sandbox
    check = SandboxCheck(sandbox, state.vcpus.method, state.allowed.cpus, devices=devices)
    check.layout = _layout_lines(sandbox, placement)
    _check_identification(check, state)
    _check_vcpus(check, placement, state, pinned)
    _check_memory(check, topology)
    _check_devices(check)
    _check_layout(check, topology, placement)
    return check


def _check_identification(check: SandboxCheck, state: SandboxState) -> None:
    vcpus = state.vcpus
    if not vcpus.by_index:
        check.findings.append(
            f"no vCPU thread identified ({vcpus.expected} expected): {vcpus.advice}"
        )
    elif vcpus.missing:
        check.findings.append(
            f"{vcpus.missing} of {vcpus.expected} vCPU threads not identified "
            f"({vcpus.missing_reason})"
        )
    check.notes.extend(vcpus.notes)
    if state.allowed.note:
        check.notes.append(state.allowed.note)


def _check_vcpus(
    check: SandboxCheck,
    placement: SandboxPlacement,
    state: SandboxState,
    pinned: dict[int, list[_Pinned]],
) -> None:
    plans: dict[int | None, Assignment] = {a.vcpu_index: a for a in placement.vcpu_assignments}
    sandbox_id = state.sandbox.sandbox_id
    for index, task in sorted(state.vcpus.by_index.items()):
        plan = plans.get(index)
        expected = placement.wanted.get(index, CpuSet())
        host_nodes = plan.host_nodes if plan is not None else CpuSet()
        planned = plan.cpus if plan is not None else task.cpus_allowed
        cpus = task.cpus_allowed
        where = f"vCPU {index} (TID {task.tid}) on CPUs {cpus}"
        on_node = bool(cpus) and cpus.issubset(expected)
        alone_on = cpus.first() if len(cpus) == 1 else None
        holders = pinned.get(alone_on, []) if alone_on is not None else []
        sharing = [p for p in holders if p.tid != task.tid]
        colliding = bool(sharing) and (any(p.moves for p in sharing) or planned != cpus)
        if not on_node and state.sandbox.layout.nodes:
            check.findings.append(
                f"{where}: outside host node {host_nodes or '?'} (its allowed CPUs: {expected})"
            )
        elif not on_node:
            check.findings.append(
                f"{where}: not on host node {host_nodes or '?'}, where `kata-numa run` would "
                f"place this flat VM (CPUs {expected})"
            )
        if colliding:
            others = ", ".join(_name(p, sandbox_id) for p in sharing)
            fix = f"would move it to CPUs {planned}" if planned != cpus else "would move the other"
            check.findings.append(f"{where}: shares the CPU with {others}; `kata-numa run` {fix}")
        elif on_node and planned != cpus:
            check.findings.append(f"{where}: `kata-numa run` would set CPUs {planned}")
        elif sharing:
            others = ", ".join(_name(p, sandbox_id) for p in sharing)
            check.notes.append(f"{where} shares it with {others}: no free CPU left in its node")
        # A vCPU that `run` leaves where it is is ok, even when another is moved off its CPU.
        ok = on_node and planned == cpus
        check.vcpus.append(VcpuCheck(index, task.tid, cpus, host_nodes, expected, planned, ok))


def _name(pinned: _Pinned, own_sandbox: str) -> str:
    if pinned.sandbox_id == own_sandbox:
        return f"its vCPU {pinned.index} (TID {pinned.tid})"
    return f"sandbox {pinned.sandbox_id} vCPU {pinned.index} (TID {pinned.tid})"


def _check_memory(check: SandboxCheck, topology: HostTopology) -> None:
    layout = check.sandbox.layout
    host_ids = CpuSet(node.id for node in topology.nodes)
    backends = {backend.id: backend for backend in layout.backends}
    for node in layout.nodes:
        backend = backends.get(node.memdev or "")
        if backend is None:
            continue
        if backend.host_nodes is None:
            if len(host_ids) > 1:
                check.findings.append(
                    f"guest node {node.id}: memory backend {backend.id} is bound to no host "
                    "node (no host-nodes): its memory may come from any node"
                )
            continue
        absent = backend.host_nodes - host_ids
        if absent:
            check.findings.append(
                f"guest node {node.id}: memory backend {backend.id} binds host nodes "
                f"{backend.host_nodes}, but this host has no node {absent} (nodes {host_ids})"
            )
        if backend.policy not in ("bind", "preferred"):
            check.notes.append(
                f"guest node {node.id}: memory backend {backend.id} has policy "
                f"{backend.policy or 'default'}, not bind: the kernel may place it elsewhere"
            )


def _check_devices(check: SandboxCheck) -> None:
    for device in check.devices:
        if device.verdict in (Verdict.NOT_COVERED, Verdict.MISSING):
            check.findings.append(device.message())
        else:
            check.notes.append(device.message())


def _check_layout(check: SandboxCheck, topology: HostTopology, placement: SandboxPlacement) -> None:
    layout = check.sandbox.layout
    mapping, how = guest_to_host_nodes(layout, topology)
    if layout.nodes and mapping is None:
        check.findings.append(f"guest NUMA nodes cannot be matched to host nodes: {how}")
    for warning in placement.warnings:
        if warning.startswith(NO_INTERSECTION):
            check.findings.append(warning)
        else:
            check.notes.append(warning)
    check.notes.extend(layout.notes)


def _layout_lines(sandbox: Sandbox, placement: SandboxPlacement) -> list[str]:
    layout = sandbox.layout
    smp = layout.smp
    lines = [
        f"{smp.cpus} vCPUs (max {smp.maxcpus}: sockets={smp.sockets} dies={smp.dies} "
        f"cores={smp.cores} threads={smp.threads}), {layout.memory_mib} MiB"
    ]
    backends = {backend.id: backend for backend in layout.backends}
    for node in layout.nodes:
        backend = backends.get(node.memdev or "")
        host = placement.host_nodes.get(node.id)
        memory = f"{backend.size_mib} MiB ({backend.id})" if backend else f"{node.mem_mib} MiB"
        lines.append(
            f"guest node {node.id}: vCPUs {node.cpus or '-'} → host nodes {host or '?'}, "
            f"memory {memory}"
        )
    if not layout.nodes:
        lines.append(f"flat VM: vCPUs on host nodes {placement.host_nodes.get(0) or '?'}")
    return lines


def format_text(report: VerifyReport) -> str:
    lines = []
    for check in report.sandboxes:
        sandbox = check.sandbox
        verdict = "ok" if check.ok else f"{len(check.findings)} findings"
        lines.append(
            f"sandbox {sandbox.sandbox_id}  PID {sandbox.pid}  vCPUs by {check.method}  "
            f"allowed CPUs {check.allowed}: {verdict}"
        )
        lines.extend(f"  {line}" for line in check.layout)
        for vcpu in check.vcpus:
            state = "ok" if vcpu.ok else "WRONG"
            lines.append(
                f"  vCPU {vcpu.index:<3} TID {vcpu.tid:<8} CPUs {vcpu.cpus!s:<10} "
                f"host node {vcpu.host_nodes!s:<4} {state}"
            )
        lines.extend(f"  finding: {finding}" for finding in check.findings)
        lines.extend(f"  note: {note}" for note in check.notes)
    for skipped in report.unmanaged:
        lines.append(f"sandbox {skipped.sandbox_id}  PID {skipped.pid}: not managed")
        lines.append(f"  finding: {skipped.reason}")
    if not report.sandboxes and not report.unmanaged:
        lines.append("no Kata sandboxes found")
    lines.append(f"verify: {len(report.sandboxes)} sandboxes, {report.findings} findings")
    return "\n".join(lines)


def to_json(report: VerifyReport) -> dict[str, Any]:
    return {
        "ok": report.findings == 0,
        "sandboxes": [_sandbox_json(check) for check in report.sandboxes],
        "skipped": [
            {"pid": s.pid, "sandbox_id": s.sandbox_id, "reason": s.reason} for s in report.skipped
        ],
    }


def _sandbox_json(check: SandboxCheck) -> dict[str, Any]:
    return {
        "id": check.sandbox.sandbox_id,
        "pid": check.sandbox.pid,
        "ok": check.ok,
        "vcpu_method": check.method,
        "allowed_cpus": check.allowed.to_list(),
        "vcpus": [
            {
                "index": vcpu.index,
                "tid": vcpu.tid,
                "cpus": vcpu.cpus.to_list(),
                "host_node": vcpu.host_nodes.first() if len(vcpu.host_nodes) == 1 else None,
                "host_nodes": vcpu.host_nodes.to_list(),
                "expected_cpus": vcpu.expected.to_list(),
                "ok": vcpu.ok,
            }
            for vcpu in check.vcpus
        ],
        "devices": [
            {
                "bdf": device.bdf,
                "source": device.source,
                "host_node": device.host_node,
                "guest_nodes": device.guest_nodes.to_list(),
                "verdict": str(device.verdict),
            }
            for device in check.devices
        ],
        "layout": check.layout,
        "findings": check.findings,
        "notes": check.notes,
    }
