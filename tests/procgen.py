"""Write small procfs trees the way the kernel lays them out, for tests.

Each process gets `stat`, `cmdline`, `cgroup`, `fd/` (symbolic links whose targets are what
`readlink` shows on a live host) and `task/<tid>/{comm,stat,status,syscall}`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: `flags` (field 9 of stat) of an ordinary QEMU thread and of a kernel worker of the process.
THREAD_FLAGS = 0x400040
USER_WORKER_FLAGS = 0x84040C0

#: A thread waiting on a futex (202 on x86_64): a vCPU of a paused VM, or an emulator thread.
FUTEX = "202 0x55d5d6cc37a8 0x80 0x0 0x0 0x0 0x0 0x7f23321fe668 0x7f2332aa1234"
#: A thread in ppoll (271): QEMU's main loop.
PPOLL = "271 0x556e8084c8a0 0x4 0x7ffcf9ec41a0 0x0 0x8 0x0 0x7ffcf9ec4150 0x7f2333aa1234"
RUNNING = "running"


def kvm_run(fd: int) -> str:
    """`syscall` of a thread blocked in ioctl(fd, KVM_RUN) on x86_64."""
    return f"16 0x{fd:x} 0xae80 0x0 0x0 0x556e7b939290 0xff 0x7f23318bb530 0x7f2333aa1234"


@dataclass
class Thread:
    tid: int
    name: str = "qemu-system-x86"
    cpus: str = "0-7"
    #: Content of `syscall`; None leaves the file out (a thread that ended meanwhile).
    syscall: str | None = FUTEX
    flags: int = THREAD_FLAGS


@dataclass
class Proc:
    pid: int
    argv: Sequence[str]
    threads: list[Thread] = field(default_factory=list)
    #: fd number → link target (`anon_inode:kvm-vcpu:4`, `/dev/vfio/12`).
    fds: dict[int, str] = field(default_factory=dict)
    cgroup: str = "0::/\n"
    start_time: int = 1000
    #: Target of the `exe` link: what the process really runs.
    exe: str = "/usr/bin/qemu-system-x86_64"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _stat(pid: int, comm: str, flags: int, start_time: int) -> str:
    fields = ["0"] * 50  # fields 3.. of stat
    fields[0] = "S"
    fields[1] = "1"
    fields[6] = str(flags)
    fields[19] = str(start_time)
    return f"{pid} ({comm}) {' '.join(fields)}\n"


def _status(name: str, cpus: str) -> str:
    return (
        f"Name:\t{name}\nState:\tS (sleeping)\nTgid:\t1\n"
        f"Cpus_allowed:\tff\nCpus_allowed_list:\t{cpus}\n"
    )


def write_thread(proc_root: Path, pid: int, thread: Thread, start_time: int = 1000) -> None:
    task = proc_root / str(pid) / "task" / str(thread.tid)
    _write(task / "comm", thread.name + "\n")
    _write(task / "stat", _stat(thread.tid, thread.name, thread.flags, start_time))
    _write(task / "status", _status(thread.name, thread.cpus))
    if thread.syscall is not None:
        _write(task / "syscall", thread.syscall + "\n")
    elif (task / "syscall").exists():
        (task / "syscall").unlink()


def make_process(proc_root: Path, proc: Proc) -> Path:
    """Create `proc_root/<pid>`; the first thread should be the main thread (tid = pid)."""
    folder = proc_root / str(proc.pid)
    name = os.path.basename(proc.argv[0])[:15] if proc.argv else "?"
    _write(folder / "stat", _stat(proc.pid, name, THREAD_FLAGS, proc.start_time))
    _write(folder / "cmdline", "".join(arg + "\0" for arg in proc.argv))
    _write(folder / "cgroup", proc.cgroup)
    (folder / "fd").mkdir(parents=True, exist_ok=True)
    if (folder / "exe").is_symlink():
        (folder / "exe").unlink()
    (folder / "exe").symlink_to(proc.exe)
    for fd, target in proc.fds.items():
        link = folder / "fd" / str(fd)
        if link.is_symlink():
            link.unlink()
        link.symlink_to(target)
    for thread in proc.threads:
        write_thread(proc_root, proc.pid, thread, proc.start_time)
    return folder


def set_cpus(proc_root: Path, pid: int, tid: int, cpus: str) -> None:
    """Change what a fixture thread's `status` says it may run on (as pinning would)."""
    status = proc_root / str(pid) / "task" / str(tid) / "status"
    name = status.read_text().split("\n", 1)[0].removeprefix("Name:\t")
    status.write_text(_status(name, cpus))


def write_mountinfo(proc_root: Path, lines: Sequence[str]) -> None:
    """`proc_root/self/mountinfo`, as the agent reads its own."""
    _write(proc_root / "self/mountinfo", "".join(line + "\n" for line in lines))


def cgroup2_mount(mount_point: Path) -> str:
    return f"29 23 0:26 / {mount_point} rw,nosuid,nodev shared:4 - cgroup2 cgroup2 rw,nsdelegate"


def cpuset_v1_mount(mount_point: Path) -> str:
    return f"34 31 0:31 / {mount_point} rw,relatime - cgroup cgroup rw,cpuset"


def tmpfs_mount(mount_point: Path) -> str:
    return f"31 23 0:28 / {mount_point} rw,relatime - tmpfs tmpfs rw,mode=755"


def qemu_argv(
    *args: str, sandbox: str = "abc", binary: str = "/usr/bin/qemu-system-x86_64"
) -> list[str]:
    """A Kata-like QEMU command line, without debug-threads unless asked for."""
    return [binary, "-name", f"sandbox-{sandbox}", "-machine", "q35,accel=kvm", *args]


def bound_nodes(*hosts: str, vcpus_per_node: int = 2, mib_per_node: int = 256) -> list[str]:
    """QEMU arguments of one guest node per entry of `hosts`, each with `vcpus_per_node` vCPUs
    (one socket each) and its memory bound to those host nodes (`"1"` or `"0-1"`)."""
    count = len(hosts)
    args = ["-smp", f"{count * vcpus_per_node},sockets={count},cores={vcpus_per_node}"]
    args += ["-m", str(count * mib_per_node)]
    for guest, host in enumerate(hosts):
        size, first = f"{mib_per_node}M", guest * vcpus_per_node
        backend = f"memory-backend-ram,id=m{guest},size={size},host-nodes={host},policy=bind"
        cpus = f"{first}-{first + vcpus_per_node - 1}"
        args += ["-object", backend, "-numa", f"node,nodeid={guest},cpus={cpus},memdev=m{guest}"]
    return args
