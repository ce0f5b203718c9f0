"""One pass of the agent: read the host and its sandboxes, decide, pin, report.

Synchronous and blocking by design: the service runs it in a worker thread.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from kata_numa._native import HostTopology
from kata_numa.cgroups import allowed_cpus
from kata_numa.errors import ProcessGone
from kata_numa.pinning import Outcome, PinResult, apply_assignment, is_live_proc
from kata_numa.policy import PlacementInput, Policy, SandboxPlacement, plan_placement
from kata_numa.sandbox import Sandbox, Skipped, find_sandboxes
from kata_numa.topology import read_topology
from kata_numa.vcpus import BACKOFF, read_vcpu_threads

log = logging.getLogger("kata_numa.agent")


@dataclass(frozen=True)
class AgentOptions:
    sysfs_root: Path = Path("/")
    proc_root: Path = Path("/proc")
    policy: Policy = Policy.DEDICATED
    qemu_paths: tuple[str, ...] = ()
    dry_run: bool = False
    backoff: tuple[float, ...] = BACKOFF


@dataclass
class SandboxReport:
    placement: SandboxPlacement
    results: list[PinResult] = field(default_factory=list)
    vcpu_method: str = "none"

    @property
    def sandbox(self) -> Sandbox:
        return self.placement.sandbox

    def vcpu_map(self) -> str:
        """`0→0 1→0 2→1 3→1`: vCPU index → CPUs the kernel holds (or will hold)."""
        parts = []
        for result in sorted(self.results, key=lambda r: r.assignment.vcpu_index):
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
        return sum(r.outcome is Outcome.FAILED for s in self.sandboxes for r in s.results)


def _prepare(
    options: AgentOptions, topology: HostTopology, sandboxes: Iterable[Sandbox]
) -> tuple[list[PlacementInput], list[Sandbox], dict[str, str]]:
    inputs, gone, methods = [], [], {}
    for sandbox in sandboxes:
        try:
            allowed = allowed_cpus(options.proc_root, sandbox.pid, topology.online_cpus)
            with_cpus = dataclasses.replace(sandbox, allowed_cpus=allowed)
            vcpus = read_vcpu_threads(options.proc_root, with_cpus, options.backoff)
        except ProcessGone:
            gone.append(sandbox)
            continue
        methods[sandbox.sandbox_id] = vcpus.method
        inputs.append(PlacementInput(with_cpus, vcpus))
    return inputs, gone, methods


def run_pass(options: AgentOptions) -> PassReport:
    """Scan, plan and pin once. Never raises for a vanished process or thread."""
    topology = read_topology(options.sysfs_root)
    sandboxes, skipped = find_sandboxes(options.proc_root, options.qemu_paths)
    inputs, gone, methods = _prepare(options, topology, sandboxes)
    dry_run = options.dry_run or not is_live_proc(options.proc_root)

    placements = plan_placement(topology, inputs, options.policy)

    report = PassReport(topology, skipped=skipped, gone=gone, dry_run=dry_run)
    for placement in placements:
        entry = SandboxReport(
            placement, vcpu_method=methods.get(placement.sandbox.sandbox_id, "none")
        )
        for assignment in placement.assignments:
            entry.results.append(apply_assignment(options.proc_root, assignment, dry_run))
        report.sandboxes.append(entry)
    return report


def log_report(report: PassReport, quiet_unchanged: bool = False) -> None:
    """INFO per sandbox placed, WARNING per degraded decision, ERROR per failed thread."""
    for skipped in report.skipped:
        log.info(
            "skipped process PID=%d: %s", skipped.pid, skipped.reason, extra={"PID": skipped.pid}
        )
    for sandbox in report.gone:
        log.info("sandbox %s (PID=%d) ended while being read", sandbox.sandbox_id, sandbox.pid)
    for entry in report.sandboxes:
        _log_sandbox(entry, report.dry_run, quiet_unchanged)


def _log_sandbox(entry: SandboxReport, dry_run: bool, quiet_unchanged: bool) -> None:
    sandbox = entry.sandbox
    fields = {"SANDBOX_ID": sandbox.sandbox_id, "PID": sandbox.pid}
    for warning in entry.placement.warnings:
        log.warning("sandbox %s: %s", sandbox.sandbox_id, warning, extra=fields)
    for result in entry.results:
        if result.outcome is Outcome.FAILED:
            tid = result.assignment.tid
            log.error(
                "sandbox %s: vCPU %d (TID=%d) not pinned: %s",
                sandbox.sandbox_id,
                result.assignment.vcpu_index,
                tid,
                result.error,
                extra={**fields, "TID": tid},
            )
    if not entry.results:
        expected = sandbox.layout.smp.cpus
        log.warning(
            "sandbox %s (PID=%d): no vCPU threads identified (%d expected); start QEMU with "
            "-name sandbox-<id>,debug-threads=on",
            sandbox.sandbox_id,
            sandbox.pid,
            expected,
            extra=fields,
        )
        return
    changed = any(r.outcome is Outcome.PINNED for r in entry.results)
    if quiet_unchanged and not changed:
        return
    verb = "would place" if dry_run else "placed"
    log.info(
        "sandbox %s %s: PID=%d vCPU→CPU %s",
        sandbox.sandbox_id,
        verb,
        sandbox.pid,
        entry.vcpu_map(),
        extra=fields,
    )
