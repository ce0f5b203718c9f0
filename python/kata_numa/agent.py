"""One pass of the agent: read the host and its sandboxes, decide, pin, report.

Synchronous and blocking by design: the service runs it in a worker thread.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from kata_numa._native import CgroupLayout, HostTopology
from kata_numa.cgroups import Allowed, allowed_cpus, read_layout
from kata_numa.errors import KataNumaError, ProcessGone
from kata_numa.gpu import (
    Device,
    DeviceCheck,
    device_nodes,
    judge,
    locate_devices,
    log_checks,
    sandbox_devices,
)
from kata_numa.pinning import Outcome, PinResult, apply_assignment, is_live_proc
from kata_numa.policy import (
    EmulatorPolicy,
    PlacementInput,
    Policy,
    Role,
    SandboxPlacement,
    plan_placement,
)
from kata_numa.sandbox import Sandbox, Skipped, find_sandboxes, still_running
from kata_numa.topology import read_topology
from kata_numa.vcpus import BACKOFF, VcpuThreads, qmp_socket_for, read_vcpu_threads

log = logging.getLogger("kata_numa.agent")


@dataclass(frozen=True)
class AgentOptions:
    sysfs_root: Path = Path("/")
    proc_root: Path = Path("/proc")
    policy: Policy = Policy.DEDICATED
    qemu_paths: tuple[str, ...] = ()
    dry_run: bool = False
    backoff: tuple[float, ...] = BACKOFF
    #: Folder holding the cgroup hierarchies; None: found from `/proc/self/mountinfo`.
    cgroup_root: Path | None = None
    #: QMP monitor socket path of each sandbox, `{id}`/`{pid}` filled in; None: no QMP.
    qmp_socket: str | None = None
    emulator: EmulatorPolicy = EmulatorPolicy.SPARE
    #: Sandbox IDs to change and report; empty: all. Others still count in the ledger.
    only: tuple[str, ...] = ()


@dataclass
class SandboxState:
    """What one pass read about one sandbox."""

    sandbox: Sandbox
    allowed: Allowed
    vcpus: VcpuThreads
    devices: list[Device]


@dataclass
class SandboxReport:
    placement: SandboxPlacement
    state: SandboxState
    results: list[PinResult] = field(default_factory=list)
    devices: list[DeviceCheck] = field(default_factory=list)

    @property
    def sandbox(self) -> Sandbox:
        return self.placement.sandbox

    @property
    def vcpu_method(self) -> str:
        return self.state.vcpus.method

    @property
    def vcpu_results(self) -> list[PinResult]:
        return [r for r in self.results if r.assignment.role is Role.VCPU]

    def vcpu_map(self) -> str:
        """`0→0 1→0 2→1 3→1`: vCPU index → CPUs the kernel holds (or will hold)."""
        parts = []
        for result in sorted(self.vcpu_results, key=lambda r: r.assignment.vcpu_index or 0):
            cpus = result.actual if result.actual is not None else result.assignment.cpus
            parts.append(f"{result.assignment.vcpu_index}→{cpus}")
        return " ".join(parts)


@dataclass
class PassReport:
    topology: HostTopology
    sandboxes: list[SandboxReport] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    gone: list[Sandbox] = field(default_factory=list)
    dry_run: bool = False

    @property
    def failures(self) -> int:
        """vCPU threads not pinned, plus sandboxes none of whose vCPUs could be placed."""
        failed = sum(r.outcome is Outcome.FAILED for s in self.sandboxes for r in s.results)
        unreadable = sum(s.sandbox_id is not None for s in self.skipped)
        return failed + unreadable + sum(not s.vcpu_results for s in self.sandboxes)


def read_states(
    options: AgentOptions,
    topology: HostTopology,
    sandboxes: Iterable[Sandbox],
    layout: CgroupLayout | None = None,
) -> tuple[list[SandboxState], list[Sandbox], list[Skipped]]:
    """Allowed CPUs, vCPU threads and VFIO devices of each sandbox; those that ended; and those
    whose files could not be read (each one is skipped alone: the others are still placed).
    `layout`: the cgroup hierarchies, when the caller has read them already."""
    if layout is None:
        layout = read_layout(options.proc_root, options.cgroup_root)
    states, gone, unreadable = [], [], []
    for sandbox in sandboxes:
        try:
            allowed = allowed_cpus(options.proc_root, sandbox.pid, topology.online_cpus, layout)
            with_cpus = dataclasses.replace(sandbox, allowed_cpus=allowed.cpus)
            qmp = qmp_socket_for(options.qmp_socket, sandbox)
            vcpus = read_vcpu_threads(options.proc_root, with_cpus, options.backoff, qmp)
            found = sandbox_devices(options.proc_root, options.sysfs_root, sandbox)
            devices = locate_devices(topology, options.sysfs_root, found)
        except ProcessGone:
            gone.append(sandbox)
            continue
        except KataNumaError as exc:
            reason = f"cannot be read: {exc}"
            unreadable.append(Skipped(sandbox.pid, reason, sandbox.sandbox_id))
            continue
        states.append(SandboxState(with_cpus, allowed, vcpus, devices))
    return states, gone, unreadable


def plan_states(
    options: AgentOptions, topology: HostTopology, states: list[SandboxState]
) -> list[tuple[SandboxPlacement, SandboxState, list[DeviceCheck]]]:
    """Placements of every sandbox at once, each with its state and device verdicts."""
    inputs = [PlacementInput(s.sandbox, s.vcpus, device_nodes(s.devices)) for s in states]

    placements = plan_placement(topology, inputs, options.policy, options.emulator)

    by_key = {state.sandbox.key: state for state in states}
    planned = []
    for placement in placements:
        state = by_key[placement.sandbox.key]
        checks = [judge(device, placement.host_nodes) for device in state.devices]
        planned.append((placement, state, checks))
    return planned


def run_pass(options: AgentOptions, topology: HostTopology | None = None) -> PassReport:
    """Scan, plan and pin once (on `topology`, else the one read now). Never raises for a
    vanished process or thread."""
    if topology is None:
        topology = read_topology(options.sysfs_root)
    sandboxes, skipped = find_sandboxes(options.proc_root, options.qemu_paths)
    cgroups = read_layout(options.proc_root, options.cgroup_root)
    states, gone, unreadable = read_states(options, topology, sandboxes, cgroups)
    skipped = skipped + unreadable
    dry_run = options.dry_run or not is_live_proc(options.proc_root)

    planned = plan_states(options, topology, states)

    if options.only:
        skipped = [s for s in skipped if s.sandbox_id is None or s.sandbox_id in options.only]
    report = PassReport(topology, skipped=skipped, gone=gone, dry_run=dry_run)
    for placement, state, checks in planned:
        if options.only and placement.sandbox.sandbox_id not in options.only:
            continue
        entry = SandboxReport(placement, state, devices=checks)
        # The pid must still be the sandbox read at the start of the pass (pid reuse guard).
        alive = still_running(options.proc_root, placement.sandbox)
        for assignment in placement.assignments:
            if alive:
                result = apply_assignment(options.proc_root, assignment, dry_run, cgroups)
                entry.results.append(result)
            else:
                entry.results.append(PinResult(assignment, Outcome.GONE))
        report.sandboxes.append(entry)
    return report


def log_report(
    report: PassReport, quiet_unchanged: bool = False, previous: PassReport | None = None
) -> None:
    """INFO per sandbox placed, WARNING per degraded decision, ERROR per failed thread.

    With `quiet_unchanged`, sandboxes whose masks did not change are not logged again, and
    device verdicts and passed-over processes only when they differ from `previous`.
    """
    seen: set[tuple[int, str]] = set()
    if quiet_unchanged and previous is not None:
        seen = {(s.pid, s.reason) for s in previous.skipped}
    for skipped in report.skipped:
        if (skipped.pid, skipped.reason) in seen:
            continue  # said in the previous pass already
        if skipped.sandbox_id is not None:  # a sandbox, but one that cannot be managed
            fields: dict[str, object] = {"PID": skipped.pid, "SANDBOX_ID": skipped.sandbox_id}
            log.warning(
                "sandbox %s (PID=%d) not managed: %s",
                skipped.sandbox_id,
                skipped.pid,
                skipped.reason,
                extra=fields,
            )
            continue
        fields = {"PID": skipped.pid}
        log.info("skipped process PID=%d: %s", skipped.pid, skipped.reason, extra=fields)
    for sandbox in report.gone:
        log.info("sandbox %s (PID=%d) ended while being read", sandbox.sandbox_id, sandbox.pid)
    before = {}
    if previous is not None:
        before = {entry.sandbox.key: entry.devices for entry in previous.sandboxes}
    for entry in report.sandboxes:
        _log_sandbox(entry, report.dry_run, quiet_unchanged)
        if not quiet_unchanged or entry.devices != before.get(entry.sandbox.key):
            log_checks(entry.sandbox, entry.devices)


def _log_sandbox(entry: SandboxReport, dry_run: bool, quiet_unchanged: bool) -> None:
    sandbox = entry.sandbox
    fields = {"SANDBOX_ID": sandbox.sandbox_id, "PID": sandbox.pid}
    changed = any(r.outcome is Outcome.PINNED for r in entry.results)
    if quiet_unchanged and not changed:
        return
    if entry.state.allowed.note:
        log.info("sandbox %s: %s", sandbox.sandbox_id, entry.state.allowed.note, extra=fields)
    for warning in entry.placement.warnings:
        log.warning("sandbox %s: %s", sandbox.sandbox_id, warning, extra=fields)
    for note in entry.state.vcpus.notes:
        log.debug("sandbox %s: vCPU identification: %s", sandbox.sandbox_id, note, extra=fields)
    for result in entry.results:
        if result.outcome is Outcome.FAILED:
            _log_failure(entry, result, fields)
    vcpus = entry.state.vcpus
    if not vcpus.by_index:
        log.warning(
            "sandbox %s (PID=%d) skipped: no vCPU thread identified (%d expected); to enable "
            "one of the methods: %s",
            sandbox.sandbox_id,
            sandbox.pid,
            vcpus.expected,
            vcpus.advice,
            extra=fields,
        )
        return
    if vcpus.missing:
        log.warning(
            "sandbox %s: %d of %d vCPU threads not identified (%s): left alone",
            sandbox.sandbox_id,
            vcpus.missing,
            vcpus.expected,
            vcpus.missing_reason,
            extra=fields,
        )
    verb = "would place" if dry_run else "placed"
    log.info(
        "sandbox %s %s: PID=%d vCPU→CPU %s (vCPUs by %s, allowed CPUs %s)",
        sandbox.sandbox_id,
        verb,
        sandbox.pid,
        entry.vcpu_map(),
        vcpus.method,
        entry.state.allowed.cpus,
        extra=fields,
    )


def _log_failure(entry: SandboxReport, result: PinResult, fields: dict[str, object]) -> None:
    assignment = result.assignment
    what = "emulator thread"
    if assignment.vcpu_index is not None:
        what = f"vCPU {assignment.vcpu_index}"
    log.error(
        "sandbox %s: %s (TID=%d) not pinned: %s",
        entry.sandbox.sandbox_id,
        what,
        assignment.tid,
        result.error,
        extra={**fields, "TID": assignment.tid},
    )
