"""Start and stop real QEMU processes for tests (TCG, paused with -S)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from qemu_vm import started_qemu

QEMU = shutil.which("qemu-system-x86_64")
FAKE = Path(__file__).parent / "fake_qemu.py"
#: What a FakeQemu really runs (its /proc/<pid>/exe): the agent must be told it is a QEMU
#: (`--qemu-path`), as an operator tells it of Kata's QEMU binary.
FAKE_EXE = os.path.realpath(sys.executable)


class FakeQemu:
    """A Python stand-in for QEMU (`fake_qemu.py`) whose vCPU threads the test can end."""

    def __init__(
        self, name: str, vcpus: int, args: Sequence[str] | None = None, debug_threads: bool = True
    ) -> None:
        """`args` replaces the default `-smp <vcpus> -m 64`; its `-smp` must say `vcpus`."""
        shape = ["-smp", str(vcpus), "-m", "64"] if args is None else list(args)
        flag = ",debug-threads=on" if debug_threads else ""
        argv = ["qemu-system-x86_64", str(FAKE), "-name", f"{name}{flag}", *shape]
        self.process = subprocess.Popen(
            argv,
            executable=sys.executable,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "ready"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop_thread(self, index: int) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"stop {index}\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == f"stopped {index}"

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


needs_qemu = pytest.mark.skipif(
    QEMU is None, reason="qemu-system-x86_64 is not installed (make deps)"
)

BASE = [
    "-S",
    "-accel",
    "tcg,thread=multi",
    "-machine",
    "q35",
    "-nodefaults",
    "-display",
    "none",
    "-monitor",
    "none",
    "-serial",
    "none",
]


def two_node_args(sandbox: str | None, vcpus: int = 4, memory_mib: int = 256) -> list[str]:
    """QEMU arguments for a guest of two NUMA nodes, vCPUs split evenly, no host binding."""
    half = vcpus // 2
    args = ["-smp", f"{vcpus},sockets=2,cores={half}", "-m", str(memory_mib)]
    for node in (0, 1):
        args += ["-object", f"memory-backend-ram,id=mem{node},size={memory_mib // 2}M"]
    args += [
        "-numa",
        f"node,nodeid=0,cpus=0-{half - 1},memdev=mem0",
        "-numa",
        f"node,nodeid=1,cpus={half}-{vcpus - 1},memdev=mem1",
    ]
    if sandbox is not None:
        args = ["-name", f"sandbox-{sandbox},debug-threads=on", *args]
    else:
        args = ["-name", "plain-vm,debug-threads=on", *args]
    return args


def thread_names(pid: int) -> dict[int, str]:
    names = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            names[int(task.name)] = (task / "comm").read_text().strip()
        except FileNotFoundError:
            continue
    return names


def allowed_list(pid: int, tid: int) -> str:
    for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no Cpus_allowed_list for {pid}/{tid}")


def vcpu_tids(pid: int) -> dict[int, int]:
    """vCPU index → tid, from QEMU's thread names (debug-threads=on)."""
    out = {}
    for tid, name in thread_names(pid).items():
        if name.startswith("CPU ") and "/" in name:
            out[int(name[4:].split("/")[0])] = tid
    return out


@contextmanager
def running_qemu(args: Sequence[str], vcpus: int) -> Iterator[subprocess.Popen[bytes]]:
    """A QEMU that has created its `vcpus` vCPU threads; killed on exit, whatever happens."""
    assert QEMU is not None

    def ready(process: subprocess.Popen[bytes]) -> bool:
        return len(vcpu_tids(process.pid)) >= vcpus

    with started_qemu([QEMU, *BASE, *args], ready, f"QEMU's {vcpus} vCPU threads") as process:
        yield process
