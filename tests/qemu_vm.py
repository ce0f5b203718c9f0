"""Real QEMU processes for tests: started with a QMP socket, stopped (by PID) whatever happens.

The QMP client here is the test's own, independent of the product's Rust one, so that what
the product reads can be checked against what QEMU says.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

QEMU = shutil.which("qemu-system-x86_64")

needs_qemu = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is missing (make deps)")

BASE = ["-machine", "q35", "-nodefaults", "-display", "none", "-monitor", "none", "-serial", "none"]
TCG = ["-accel", "tcg,thread=multi"]

KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01


def kvm_unusable() -> str | None:
    """Why KVM cannot run a VM here, or None when /dev/kvm answers and creates one."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"/dev/kvm cannot be opened: {exc}"
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION)
        if version != 12:
            return f"/dev/kvm speaks KVM API {version}, not 12"
        vm = fcntl.ioctl(fd, KVM_CREATE_VM, 0)
        os.close(vm)
    except OSError as exc:
        return f"/dev/kvm refuses to create a VM: {exc}"
    finally:
        os.close(fd)
    return None


def halting_bios(folder: Path) -> Path:
    """A 64 KiB firmware whose reset vector runs `cli; hlt`: a running guest that stays idle
    (SeaBIOS without a boot disk keeps vCPU 0 busy in guest mode)."""
    image = bytearray(64 * 1024)
    image[0xFFF0:0xFFF4] = b"\xfa\xf4\xeb\xfd"  # cli; hlt; jmp back to the hlt
    path = folder / "halt.bin"
    path.write_bytes(bytes(image))
    return path


def qmp(socket_path: Path, command: str, timeout: float = 5.0) -> object:
    """Run one QMP command and return its `return` value."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path))
        stream = sock.makefile("rw")

        def answer() -> dict[str, object]:
            while True:
                message: dict[str, object] = json.loads(stream.readline())
                if "return" in message or "error" in message:
                    return message

        json.loads(stream.readline())  # greeting
        for execute in ("qmp_capabilities", command):
            stream.write(json.dumps({"execute": execute}) + "\n")
            stream.flush()
            reply = answer()
            if "error" in reply:
                raise AssertionError(f"QMP {execute}: {reply['error']}")
        return reply["return"]


def qmp_vcpu_threads(socket_path: Path) -> dict[int, int]:
    """vCPU index → thread id, as QEMU itself reports them."""
    cpus = qmp(socket_path, "query-cpus-fast")
    assert isinstance(cpus, list)
    return {int(cpu["cpu-index"]): int(cpu["thread-id"]) for cpu in cpus}


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


@contextmanager
def started_qemu(
    command: Sequence[str], ready: Callable[[subprocess.Popen[bytes]], bool], what: str
) -> Iterator[subprocess.Popen[bytes]]:
    """QEMU run as `command`, yielded once `ready(process)`; killed (by its PID) and reaped on
    exit, whatever happens. Fails with QEMU's stderr when it exits first."""
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:

        def check() -> bool:
            if process.poll() is not None:
                err = process.stderr.read().decode() if process.stderr else ""
                raise AssertionError(f"QEMU exited with {process.returncode}: {err}")
            return ready(process)

        wait_for(check, what)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        if process.stderr:
            process.stderr.close()


@contextmanager
def qemu_vm(args: Sequence[str], qmp_socket: Path, vcpus: int) -> Iterator[subprocess.Popen[bytes]]:
    """A QEMU with a QMP socket at `qmp_socket` whose `vcpus` vCPU threads exist; killed (by its
    PID) and reaped on exit, whatever happens."""
    assert QEMU is not None
    command = [QEMU, *BASE, *args, "-qmp", f"unix:{qmp_socket},server=on,wait=off"]

    def ready(_: subprocess.Popen[bytes]) -> bool:
        return qmp_socket.exists() and len(qmp_vcpu_threads(qmp_socket)) == vcpus

    with started_qemu(command, ready, f"QEMU's {vcpus} vCPU threads") as process:
        yield process


def thread_masks(pid: int) -> dict[int, str]:
    """Every thread of `pid` → its `Cpus_allowed_list`."""
    masks = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        for line in status.splitlines():
            if line.startswith("Cpus_allowed_list:"):
                masks[int(task.name)] = line.split(":", 1)[1].strip()
    return masks


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`kata-numa ARGS` in a child process, as an operator runs it."""
    command = [sys.executable, "-m", "kata_numa", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def taskset(tid: int, cpus: str) -> None:
    """Move one thread by hand, as an operator would (`taskset -p -c`)."""
    subprocess.run(["taskset", "-p", "-c", cpus, str(tid)], check=True, capture_output=True)
