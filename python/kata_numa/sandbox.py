"""Finding Kata sandboxes: QEMU processes whose command line holds `-name sandbox-<id>`."""

from __future__ import annotations

import itertools
import logging
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kata_numa._native import (
    CpuSet,
    GuestLayout,
    Process,
    parse_qemu_args,
    read_process,
    read_processes,
)
from kata_numa.errors import ProcessGone, QemuArgsError

log = logging.getLogger("kata_numa.sandbox")

SANDBOX_PREFIX = "sandbox-"


@dataclass(frozen=True)
class Sandbox:
    """One running Kata sandbox VM."""

    sandbox_id: str
    pid: int
    start_time: int
    argv: tuple[str, ...]
    layout: GuestLayout
    #: CPUs the sandbox may run on (its cpuset ∩ online CPUs).
    allowed_cpus: CpuSet = field(default_factory=CpuSet)

    @property
    def key(self) -> tuple[int, int]:
        """(pid, start time): names this process even after the pid is reused."""
        return (self.pid, self.start_time)


@dataclass(frozen=True)
class Skipped:
    """A QEMU process that is not managed, and why."""

    pid: int
    reason: str
    #: Set when it looks like a Kata sandbox that could not be read: a failure, not a pass-over.
    sandbox_id: str | None = None


#: Names of QEMU binaries Kata runs (Debian/Ubuntu `qemu-system-<arch>`, RHEL `qemu-kvm`).
QEMU_NAMES = ("qemu-system-", "qemu-kvm")


def is_qemu(binary: str, qemu_paths: Iterable[str] = ()) -> bool:
    """`qemu-system-*` or `qemu-kvm` by name, or a binary the operator (or Kata's `path`) names."""
    return os.path.basename(binary).startswith(QEMU_NAMES) or binary in set(qemu_paths)


def sandbox_id_of(argv: Sequence[str]) -> str | None:
    """The `<id>` of `-name sandbox-<id>` (or `-name guest=sandbox-<id>,...`), else None.

    QEMU's own option rules apply: the last `-name` counts, and the value of another option
    (`-pidfile -name`) is never taken for one.
    """
    try:
        name = parse_qemu_args(list(argv)).name
    except QemuArgsError:
        name = None
    if name is not None and name.startswith(SANDBOX_PREFIX) and len(name) > len(SANDBOX_PREFIX):
        return name.removeprefix(SANDBOX_PREFIX)
    return None


def _claimed_sandbox_id(argv: Sequence[str]) -> str | None:
    """The sandbox id a command line QEMU's rules cannot read seems to name (for reports)."""
    for option, value in reversed(list(itertools.pairwise(argv))):
        if option in ("-name", "--name"):
            name = value.split(",", 1)[0].removeprefix("guest=")
            claimed = name.removeprefix(SANDBOX_PREFIX)
            if name.startswith(SANDBOX_PREFIX) and SANDBOX_ID.fullmatch(claimed):
                return claimed
            return None
    return None


#: What Kata puts in a sandbox id (container ids: hex; pod sandboxes: letters, digits, `-`).
#: Anything else (a newline, say) is refused, so that ids are safe in logs and file names.
SANDBOX_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def exe_problem(proc_root: str | Path, pid: int) -> str | None:
    """Why the binary a process runs cannot be trusted as a system QEMU, or None: it must be
    owned by root and writable by nobody else (a copy in a user's folder is neither)."""
    try:
        info = os.stat(Path(proc_root) / str(pid) / "exe")  # the running binary's own inode
    except OSError as exc:
        return f"cannot inspect its binary ({exc.strerror})"
    if info.st_uid != 0 or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"its binary belongs to uid {info.st_uid} or is writable by others: not trusted"
    return None


def classify(
    process: Process, qemu_paths: Iterable[str] = (), proc_root: str | Path | None = None
) -> Sandbox | Skipped | None:
    """A Sandbox, a Skipped QEMU process with its reason, or None for anything else.

    Both what the process says it runs (argv[0]) and what it really runs (`/proc/<pid>/exe`,
    which it cannot choose) must be QEMU: a process that only calls itself QEMU is no sandbox.
    With `proc_root`, a binary found by its name (not named by the operator) must also be
    root's and writable by nobody else.
    """
    paths = tuple(qemu_paths)
    if not process.argv or not is_qemu(process.argv[0], paths):
        return None
    if process.exe is None:
        return Skipped(process.pid, "cannot read its /proc/<pid>/exe to confirm it runs QEMU")
    if not is_qemu(process.exe, paths):
        return Skipped(process.pid, f"calls itself QEMU but runs {process.exe}: not managed")
    if proc_root is not None and process.exe not in paths:
        problem = exe_problem(proc_root, process.pid)
        if problem is not None:
            return Skipped(process.pid, f"runs {process.exe}, but {problem}")
    try:
        layout = parse_qemu_args(process.argv)
    except QemuArgsError as exc:
        claimed = _claimed_sandbox_id(process.argv)
        return Skipped(process.pid, f"unreadable QEMU command line: {exc}", claimed)
    name = layout.name or ""
    if not name.startswith(SANDBOX_PREFIX) or len(name) == len(SANDBOX_PREFIX):
        return Skipped(process.pid, "QEMU without -name sandbox-<id>: not a Kata sandbox")
    sandbox_id = name.removeprefix(SANDBOX_PREFIX)
    if not SANDBOX_ID.fullmatch(sandbox_id):
        reason = f"sandbox id {sandbox_id[:64]!r} holds characters Kata never uses: not managed"
        return Skipped(process.pid, reason)
    return Sandbox(sandbox_id, process.pid, process.start_time, tuple(process.argv), layout)


def find_sandboxes(
    proc_root: str | Path = "/proc", qemu_paths: Iterable[str] = ()
) -> tuple[list[Sandbox], list[Skipped]]:
    """Scan `proc_root` for Kata sandboxes; also return the QEMU processes passed over."""
    paths = tuple(qemu_paths)
    sandboxes: list[Sandbox] = []
    skipped: list[Skipped] = []
    for process in read_processes(str(proc_root)):
        found = classify(process, paths, proc_root)
        if isinstance(found, Sandbox):
            sandboxes.append(found)
        elif isinstance(found, Skipped):
            skipped.append(found)
    pids_of: dict[str, list[int]] = {}
    for sandbox in sandboxes:
        pids_of.setdefault(sandbox.sandbox_id, []).append(sandbox.pid)
    for sandbox_id, pids in pids_of.items():
        if len(pids) > 1:  # Kata never runs two: which one is the sandbox cannot be told
            reason = f"sandbox id {sandbox_id} is used by PIDs {pids}: none of them is managed"
            skipped.extend(Skipped(pid, reason, sandbox_id) for pid in pids)
    sandboxes = [s for s in sandboxes if len(pids_of[s.sandbox_id]) == 1]
    sandboxes.sort(key=lambda s: (s.start_time, s.pid))
    return sandboxes, skipped


def still_running(proc_root: str | Path, sandbox: Sandbox) -> bool:
    """True while the sandbox's pid still names the same process (pid reuse guard)."""
    try:
        process = read_process(str(proc_root), sandbox.pid)
    except ProcessGone:
        return False
    return (
        process.start_time == sandbox.start_time
        and sandbox_id_of(process.argv) == sandbox.sandbox_id
    )
