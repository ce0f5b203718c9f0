"""Applying vCPU masks with `sched_setaffinity`, guarded so that nothing outside a sandbox's
allowed CPUs, no empty mask, and no thread that is not the sandbox's is ever written."""

from __future__ import annotations

import enum
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from kata_numa._native import CpuSet, get_affinity, read_task, set_affinity
from kata_numa.errors import AffinityError, KataNumaError, ProcessGone
from kata_numa.policy import Assignment

log = logging.getLogger("kata_numa.pinning")


class Outcome(enum.StrEnum):
    UNCHANGED = "unchanged"  # the kernel already held the mask
    PINNED = "pinned"
    GONE = "gone"  # thread or process ended: normal
    FAILED = "failed"
    DRY_RUN = "dry-run"


@dataclass(frozen=True)
class PinResult:
    assignment: Assignment
    outcome: Outcome
    #: What the kernel holds after the change (read back), when known.
    actual: CpuSet | None = None
    error: str = ""


def is_live_proc(proc_root: str | Path) -> bool:
    """True when `proc_root` is this host's procfs, so its pids are real threads."""
    try:
        return os.path.samefile(proc_root, "/proc")
    except OSError:
        return False


def check_mask(assignment: Assignment) -> str | None:
    """The reason a mask must not be written, or None when it is safe."""
    if not assignment.cpus:
        return "empty CPU mask"
    if not assignment.cpus.issubset(assignment.allowed):
        outside = assignment.cpus - assignment.allowed
        return f"CPUs {outside} are outside the sandbox's allowed CPUs {assignment.allowed}"
    return None


def apply_assignment(
    proc_root: str | Path, assignment: Assignment, dry_run: bool = False
) -> PinResult:
    """Set one vCPU thread's affinity if it differs, then read back what the kernel holds."""
    refusal = check_mask(assignment)
    if refusal is not None:
        return PinResult(assignment, Outcome.FAILED, error=f"refused: {refusal}")
    pid, tid = assignment.pid, assignment.tid
    try:
        # The thread must still belong to the sandbox's process: tids are reused too.
        read_task(str(proc_root), pid, tid)
        if dry_run:
            return PinResult(assignment, Outcome.DRY_RUN)
        current = get_affinity(pid, tid)
        if current == assignment.cpus:
            return PinResult(assignment, Outcome.UNCHANGED, current)
        set_affinity(pid, tid, assignment.cpus)
        actual = get_affinity(pid, tid)
    except ProcessGone:
        return PinResult(assignment, Outcome.GONE)
    except (AffinityError, KataNumaError) as exc:
        return PinResult(assignment, Outcome.FAILED, error=str(exc))
    if actual != assignment.cpus:
        error = f"kernel holds {actual} after setting {assignment.cpus}"
        return PinResult(assignment, Outcome.FAILED, actual, error)
    return PinResult(assignment, Outcome.PINNED, actual)
