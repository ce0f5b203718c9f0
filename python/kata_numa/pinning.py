"""Applying vCPU masks with `sched_setaffinity`, guarded so that nothing outside a sandbox's
allowed CPUs, no empty mask, and no thread that is not the sandbox's is ever written."""

from __future__ import annotations

import enum
import errno
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from kata_numa._native import (
    AllowedCpus,
    CgroupLayout,
    CpuSet,
    get_affinity,
    read_task,
    set_affinity,
)
from kata_numa.cgroups import read_layout, thread_cpuset
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
    proc_root: str | Path,
    assignment: Assignment,
    dry_run: bool = False,
    cgroups: CgroupLayout | None = None,
) -> PinResult:
    """Set one vCPU thread's affinity if it differs, then read back what the kernel holds.

    When the kernel refuses or narrows the mask, the error names the thread's own cpuset, read
    with `cgroups` (default: the layout of `<proc_root>/self/mountinfo`).
    """
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
    except AffinityError as exc:
        error = str(exc)
        if exc.errno == errno.EINVAL:
            error = _refused(proc_root, assignment, cgroups, exc)
        return PinResult(assignment, Outcome.FAILED, error=error)
    except KataNumaError as exc:
        return PinResult(assignment, Outcome.FAILED, error=str(exc))
    if actual != assignment.cpus:
        error = f"kernel holds {actual} after setting {assignment.cpus}"
        error += _narrowed(proc_root, assignment, cgroups)
        return PinResult(assignment, Outcome.FAILED, actual, error)
    return PinResult(assignment, Outcome.PINNED, actual)


def _task_cgroup(proc_root: str | Path, assignment: Assignment) -> Path:
    return Path(proc_root, str(assignment.pid), "task", str(assignment.tid), "cgroup")


def _own_cpuset(
    proc_root: str | Path, assignment: Assignment, cgroups: CgroupLayout | None
) -> AllowedCpus | str:
    """The thread's own cpuset, or why it cannot be read."""
    try:
        layout = cgroups if cgroups is not None else read_layout(proc_root)
        return thread_cpuset(proc_root, assignment.pid, assignment.tid, layout)
    except KataNumaError as exc:
        return str(exc)


def _allows_only(proc_root: str | Path, assignment: Assignment, own: AllowedCpus) -> str:
    return (
        f"the thread's own cpuset {own.source} allows only CPUs {own.cpus} "
        f"(cgroup {own.cgroup} of the thread, see {_task_cgroup(proc_root, assignment)})"
    )


def _narrowed(proc_root: str | Path, assignment: Assignment, cgroups: CgroupLayout | None) -> str:
    """Why the kernel holds fewer CPUs than were set, when the thread's own cpuset tells."""
    own = _own_cpuset(proc_root, assignment, cgroups)
    if isinstance(own, str) or own.cpus is None or assignment.cpus.issubset(own.cpus):
        return ""
    return f": {_allows_only(proc_root, assignment, own)}"


def _refused(
    proc_root: str | Path,
    assignment: Assignment,
    cgroups: CgroupLayout | None,
    exc: AffinityError,
) -> str:
    """sched_setaffinity's EINVAL: no CPU of the mask is in the thread's cpuset, which may be
    narrower than its process's (cgroup v1 lets a thread have a cpuset of its own)."""
    own = _own_cpuset(proc_root, assignment, cgroups)

    refused = f"the kernel refused CPUs {assignment.cpus}"
    if isinstance(own, str) or own.cpus is None:
        why = own if isinstance(own, str) else f"no cpuset file for the thread: {own.source}"
        return (
            f"{refused}: the thread's own cpuset (cgroup of the thread, see "
            f"{_task_cgroup(proc_root, assignment)}) does not allow them ({why})"
        )
    if not own.cpus & assignment.cpus:
        return f"{refused}: {_allows_only(proc_root, assignment, own)}"
    return f"{exc} (the thread's own cpuset {own.source} allows CPUs {own.cpus})"
