"""Finding Kata sandboxes: QEMU processes whose command line holds `-name sandbox-<id>`."""

from __future__ import annotations

import itertools
import logging
import os
import re
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


def is_qemu(argv: Sequence[str], qemu_paths: Iterable[str] = ()) -> bool:
    """`qemu-system-*` by name, or a binary the operator (or Kata's `path`) names."""
    if not argv:
        return False
    binary = argv[0]
    return os.path.basename(binary).startswith("qemu-system-") or binary in set(qemu_paths)


def guest_name(argv: Sequence[str]) -> str | None:
    """The guest name of the last `-name` option (QEMU uses the last one), else None."""
    name = None
    for option, value in itertools.pairwise(argv):
        if option not in ("-name", "--name"):
            continue
        name = value.split(",", 1)[0].removeprefix("guest=")
        for part in value.split(","):
            if part.startswith("guest="):
                name = part.removeprefix("guest=")
    return name


def sandbox_id_of(argv: Sequence[str]) -> str | None:
    """The `<id>` of `-name sandbox-<id>` (or `-name guest=sandbox-<id>,...`), else None."""
    name = guest_name(argv)
    if name is not None and name.startswith(SANDBOX_PREFIX) and len(name) > len(SANDBOX_PREFIX):
        return name.removeprefix(SANDBOX_PREFIX)
    return None


#: What Kata puts in a sandbox id (container ids: hex; pod sandboxes: letters, digits, `-`).
#: Anything else (a newline, say) is refused, so that ids are safe in logs and file names.
SANDBOX_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def classify(process: Process, qemu_paths: Iterable[str] = ()) -> Sandbox | Skipped | None:
    """A Sandbox, a Skipped QEMU process with its reason, or None for anything else."""
    if not is_qemu(process.argv, qemu_paths):
        return None
    sandbox_id = sandbox_id_of(process.argv)
    if sandbox_id is None:
        return Skipped(process.pid, "QEMU without -name sandbox-<id>: not a Kata sandbox")
    if not SANDBOX_ID.fullmatch(sandbox_id):
        reason = f"sandbox id {sandbox_id[:64]!r} holds characters Kata never uses: not managed"
        return Skipped(process.pid, reason)
    try:
        layout = parse_qemu_args(process.argv)
    except QemuArgsError as exc:
        return Skipped(process.pid, f"sandbox {sandbox_id}: {exc}")
    return Sandbox(sandbox_id, process.pid, process.start_time, tuple(process.argv), layout)


def find_sandboxes(
    proc_root: str | Path = "/proc", qemu_paths: Iterable[str] = ()
) -> tuple[list[Sandbox], list[Skipped]]:
    """Scan `proc_root` for Kata sandboxes; also return the QEMU processes passed over."""
    paths = tuple(qemu_paths)
    sandboxes: list[Sandbox] = []
    skipped: list[Skipped] = []
    for process in read_processes(str(proc_root)):
        found = classify(process, paths)
        if isinstance(found, Sandbox):
            sandboxes.append(found)
        elif isinstance(found, Skipped):
            skipped.append(found)
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
