"""vCPU threads: by name, by KVM descriptor (x86 APIC IDs), by QMP; never by thread order."""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostgen import NodeSpec, make_host
from kata_numa import vcpus as vcpus_module
from kata_numa._native import parse_qemu_args, read_process, x86_apic_id
from kata_numa.agent import AgentOptions, log_report, run_pass
from kata_numa.errors import ProcessGone
from kata_numa.log import setup_logging
from kata_numa.sandbox import Sandbox, classify
from kata_numa.vcpus import read_vcpu_threads
from kata_numa.verify import verify
from procgen import (
    FUTEX,
    PPOLL,
    RUNNING,
    USER_WORKER_FLAGS,
    Proc,
    Thread,
    kvm_run,
    make_process,
    qemu_argv,
    write_thread,
)
from qemu_vm import halting_bios, kvm_unusable, needs_qemu, qemu_vm, qmp_vcpu_threads, run_cli

PID = 4000
SMP_6 = ["-smp", "6,sockets=2,cores=3", "-m", "512"]
#: APIC IDs QEMU gives the six vCPUs of -smp 6,sockets=2,cores=3 (cores round up to 4).
APIC_6 = [0, 1, 2, 4, 5, 6]


def sandbox_of(proc_root: Path, pid: int = PID) -> Sandbox:
    found = classify(read_process(str(proc_root), pid))
    assert isinstance(found, Sandbox)
    return found


def kvm_sandbox(proc_root: Path, syscalls: dict[int, str | None] | None = None) -> dict[int, int]:
    """A six-vCPU KVM sandbox whose vCPU threads are listed out of vCPU order; returns the
    vCPU index → tid the fixture means. `syscalls` overrides a vCPU's `syscall` line."""
    tids = {0: 4013, 1: 4011, 2: 4015, 3: 4012, 4: 4010, 5: 4014}  # not in index order
    fds = {12 + index: f"anon_inode:kvm-vcpu:{APIC_6[index]}" for index in range(6)}
    fds |= {3: "/dev/kvm", 9: "anon_inode:kvm-vm", 10: "anon_inode:[eventfd]"}
    threads = [Thread(PID, syscall=PPOLL), Thread(4001, syscall=FUTEX)]
    for index, tid in tids.items():
        line = (syscalls or {}).get(index, kvm_run(12 + index))
        threads.append(Thread(tid, syscall=line))
    # KVM's recovery worker shows the syscall line of the thread that made it (vCPU 0's).
    threads.append(Thread(4020, "kvm-nx-lpage-re", syscall=kvm_run(12), flags=USER_WORKER_FLAGS))
    make_process(proc_root, Proc(PID, qemu_argv(*SMP_6), threads, fds))
    return tids


def test_apic_ids_of_a_topology_with_three_cores() -> None:
    layout = parse_qemu_args(qemu_argv(*SMP_6))
    assert [x86_apic_id(index, layout.smp) for index in range(6)] == APIC_6


def test_thread_names(tmp_path: Path) -> None:
    threads = [Thread(PID), Thread(4002, "CPU 1/KVM"), Thread(4001, "CPU 0/KVM"), Thread(4003)]
    argv = qemu_argv("-smp", "2")
    argv[2] = "sandbox-abc,debug-threads=on"
    make_process(tmp_path, Proc(PID, argv, threads))

    found = read_vcpu_threads(tmp_path, sandbox_of(tmp_path), backoff=())

    assert found.method == "thread-names"
    assert {index: task.tid for index, task in found.by_index.items()} == {0: 4001, 1: 4002}
    assert sorted(task.tid for task in found.others) == [PID, 4003]


def test_a_thread_named_beyond_maxcpus_is_no_vcpu(tmp_path: Path) -> None:
    threads = [Thread(PID), Thread(4001, "CPU 0/KVM"), Thread(4005, "CPU 5/KVM")]
    argv = qemu_argv("-smp", "2")
    argv[2] = "sandbox-abc,debug-threads=on"
    make_process(tmp_path, Proc(PID, argv, threads))

    found = read_vcpu_threads(tmp_path, sandbox_of(tmp_path), backoff=())

    assert {index: task.tid for index, task in found.by_index.items()} == {0: 4001}
    assert any("CPU 5/KVM" in note and "not a vCPU" in note for note in found.notes)


def test_a_hot_plugged_vcpu_in_guest_mode_is_never_an_emulator_thread(tmp_path: Path) -> None:
    """Kata boots with `-smp 1,maxcpus=4` and hot-plugs vCPUs; vCPU 2 runs in guest mode."""
    fds = {12 + i: f"anon_inode:kvm-vcpu:{i}" for i in range(3)} | {3: "/dev/kvm"}
    threads = [
        Thread(PID, syscall=PPOLL),
        Thread(4010, syscall=kvm_run(12)),
        Thread(4011, syscall=kvm_run(13)),
        Thread(4012, syscall=RUNNING),
    ]
    make_process(tmp_path, Proc(PID, qemu_argv("-smp", "1,maxcpus=4", "-m", "512"), threads, fds))

    found = read_vcpu_threads(tmp_path, sandbox_of(tmp_path), backoff=())

    assert {index: task.tid for index, task in found.by_index.items()} == {0: 4010, 1: 4011}
    assert found.expected == 3 and not found.complete
    assert found.others == [], "the running thread may be vCPU 2: it is nobody's emulator"


def test_kvm_descriptors_turn_apic_ids_into_vcpu_indexes(tmp_path: Path) -> None:
    expected = kvm_sandbox(tmp_path)

    found = read_vcpu_threads(tmp_path, sandbox_of(tmp_path), backoff=())

    assert found.method == "kvm-descriptors"
    assert {index: task.tid for index, task in found.by_index.items()} == expected
    assert found.complete
    assert sorted(task.tid for task in found.others) == [PID, 4001, 4020]


@pytest.mark.parametrize(
    ("vcpu", "line"),
    [
        pytest.param(3, RUNNING, id="running"),
        pytest.param(3, FUTEX, id="paused-futex"),
        # vCPU 0 runs, but KVM's worker still shows vCPU 0's last KVM_RUN: it must not count.
        pytest.param(0, RUNNING, id="worker-with-a-stale-line"),
    ],
)
def test_a_vcpu_outside_kvm_run_stays_unknown(tmp_path: Path, vcpu: int, line: str) -> None:
    expected = kvm_sandbox(tmp_path, {vcpu: line})

    found = read_vcpu_threads(tmp_path, sandbox_of(tmp_path), backoff=())

    assert {index: task.tid for index, task in found.by_index.items()} == {
        index: tid for index, tid in expected.items() if index != vcpu
    }
    assert found.missing == 1
    assert found.others == [], "emulator threads cannot be told while a vCPU is unknown"


def test_back_off_reads_again_until_the_vcpu_is_in_kvm_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = kvm_sandbox(tmp_path, {3: RUNNING})
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        # The vCPU leaves guest mode and blocks in KVM_RUN while the agent waits.
        sleeps.append(seconds)
        if len(sleeps) == 2:
            write_thread(tmp_path, PID, Thread(expected[3], syscall=kvm_run(15)))

    monkeypatch.setattr(vcpus_module.time, "sleep", sleep)

    found = read_vcpu_threads(tmp_path, sandbox_of(tmp_path), backoff=(0.01, 0.02, 0.04, 0.08))

    assert sleeps == [0.01, 0.02]
    assert found.complete
    assert found.by_index[3].tid == expected[3]


def test_a_thread_that_ended_is_left_out(tmp_path: Path) -> None:
    expected = kvm_sandbox(tmp_path, {5: None})  # its syscall file is gone: the thread ended

    found = read_vcpu_threads(tmp_path, sandbox_of(tmp_path), backoff=())

    assert sorted(found.by_index) == [0, 1, 2, 3, 4]
    assert found.by_index[4].tid == expected[4]


def test_a_process_that_ended_raises_process_gone(tmp_path: Path) -> None:
    kvm_sandbox(tmp_path)
    sandbox = sandbox_of(tmp_path)
    for path in sorted((tmp_path / str(PID)).rglob("*"), reverse=True):
        path.unlink() if not path.is_dir() or path.is_symlink() else path.rmdir()
    (tmp_path / str(PID)).rmdir()

    with pytest.raises(ProcessGone):
        read_vcpu_threads(tmp_path, sandbox, backoff=())


def test_two_ordinary_threads_on_one_descriptor_leave_that_vcpu_unknown(tmp_path: Path) -> None:
    expected = kvm_sandbox(tmp_path)
    write_thread(tmp_path, PID, Thread(4001, syscall=kvm_run(13)))  # also claims vCPU 1's fd

    found = read_vcpu_threads(tmp_path, sandbox_of(tmp_path), backoff=())

    assert 1 not in found.by_index
    assert found.by_index[0].tid == expected[0]
    assert any("vCPU id 1" in note for note in found.notes)


def test_no_method_available(tmp_path: Path) -> None:
    """TCG without thread names or a QMP socket: nothing to tell vCPUs apart by."""
    argv = qemu_argv("-smp", "2", "-accel", "tcg")
    threads = [Thread(PID, syscall=PPOLL), Thread(4001), Thread(4002), Thread(4003)]
    make_process(tmp_path, Proc(PID, argv, threads))

    found = read_vcpu_threads(tmp_path, sandbox_of(tmp_path), backoff=(5.0,))

    assert found.method == "none"
    assert found.by_index == {}
    assert found.others == []


def test_missing_qmp_socket_is_a_note(tmp_path: Path) -> None:
    make_process(tmp_path, Proc(PID, qemu_argv("-smp", "2", "-accel", "tcg"), [Thread(PID)]))

    found = read_vcpu_threads(
        tmp_path, sandbox_of(tmp_path), backoff=(), qmp_socket=tmp_path / "none.sock"
    )

    assert found.by_index == {}
    assert any("none.sock" in note for note in found.notes)


@pytest.fixture
def fake_monitor(tmp_path: Path) -> Iterator[tuple[Path, dict[int, int]]]:
    """A QMP monitor that answers query-cpus-fast with the vCPU → thread map the test sets."""
    path = tmp_path / "qmp.sock"
    answer: dict[int, int] = {}
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    server.settimeout(10)

    def serve() -> None:
        connection, _ = server.accept()
        with connection, connection.makefile("rw") as stream:
            stream.write('{"QMP": {"version": {}, "capabilities": []}}\r\n')
            stream.flush()
            for line in stream:
                command = json.loads(line)["execute"]
                reply: object = {}
                if command == "query-cpus-fast":
                    reply = [{"cpu-index": i, "thread-id": t} for i, t in answer.items()]
                stream.write(json.dumps({"return": reply}) + "\r\n")
                stream.flush()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, answer
    server.close()
    thread.join(timeout=10)


def test_qmp_names_vcpus_when_nothing_else_does(
    tmp_path: Path, fake_monitor: tuple[Path, dict[int, int]]
) -> None:
    socket_path, answer = fake_monitor
    threads = [Thread(PID, syscall=PPOLL), Thread(4001), Thread(4002), Thread(4003)]
    make_process(tmp_path, Proc(PID, qemu_argv("-smp", "2", "-accel", "tcg"), threads))
    answer.update({0: 4003, 1: 4001})

    found = read_vcpu_threads(tmp_path, sandbox_of(tmp_path), backoff=(), qmp_socket=socket_path)

    assert found.method == "qmp"
    assert {index: task.tid for index, task in found.by_index.items()} == {0: 4003, 1: 4001}
    assert sorted(task.tid for task in found.others) == [PID, 4002]


def test_qmp_thread_of_another_process_is_refused(
    tmp_path: Path, fake_monitor: tuple[Path, dict[int, int]]
) -> None:
    socket_path, answer = fake_monitor
    threads = [Thread(PID), Thread(4001), Thread(4002)]
    make_process(tmp_path, Proc(PID, qemu_argv("-smp", "2", "-accel", "tcg"), threads))
    answer.update({0: 4001, 1: 9999})

    found = read_vcpu_threads(tmp_path, sandbox_of(tmp_path), backoff=(), qmp_socket=socket_path)

    assert {index: task.tid for index, task in found.by_index.items()} == {0: 4001}
    assert any("9999" in note for note in found.notes)


SHARED = {
    # -accel tcg,thread=single: one `ALL CPUs/TCG` thread runs every vCPU.
    "single-threaded-tcg": (2, {0: 4001, 1: 4001}, {}, "vCPUs 0-1 on one thread (TID 4001"),
    "two-of-four-share": (
        4,
        {0: 4001, 1: 4001, 2: 4002, 3: 4003},
        {2: 4002, 3: 4003},
        "vCPUs 0-1 on one thread (TID 4001",
    ),
}


@pytest.mark.parametrize(("vcpus", "reply", "identified", "note"), SHARED.values(), ids=SHARED)
def test_vcpus_that_qmp_puts_on_one_thread_are_no_vcpus(
    tmp_path: Path,
    fake_monitor: tuple[Path, dict[int, int]],
    vcpus: int,
    reply: dict[int, int],
    identified: dict[int, int],
    note: str,
) -> None:
    socket_path, answer = fake_monitor
    threads = [Thread(PID, syscall=PPOLL), Thread(4001), Thread(4002), Thread(4003)]
    make_process(tmp_path, Proc(PID, qemu_argv("-smp", str(vcpus), "-accel", "tcg"), threads))
    answer.update(reply)

    found = read_vcpu_threads(tmp_path, sandbox_of(tmp_path), backoff=(), qmp_socket=socket_path)

    assert {index: task.tid for index, task in found.by_index.items()} == identified
    assert any(note in n and "cannot be pinned apart" in n for n in found.notes), found.notes
    assert found.others == [], "emulator threads cannot be told while a vCPU is unknown"
    if not identified:
        assert found.method == "none"
        assert note in found.advice
        assert "--qmp-socket" not in found.advice, "the monitor was asked already"


QMP_FINDINGS = {
    "shared-thread": ({0: 4001, 1: 4001, 2: 4002, 3: 4003}, "vCPUs 0-1 on one thread"),
    "monitor-lists-fewer": ({2: 4002, 3: 4003}, "the QMP monitor named 2 of 4 vCPUs"),
}


@pytest.mark.parametrize(("reply", "reason"), QMP_FINDINGS.values(), ids=QMP_FINDINGS)
def test_verify_finding_of_a_qmp_sandbox_gives_the_monitors_reason(
    tmp_path: Path, fake_monitor: tuple[Path, dict[int, int]], reply: dict[int, int], reason: str
) -> None:
    socket_path, answer = fake_monitor
    host = make_host(tmp_path / "host", {0: NodeSpec("0-3")})
    (host / "cgroup.controllers").write_text("cpuset\n")
    threads = [Thread(PID, syscall=PPOLL), Thread(4001), Thread(4002), Thread(4003)]
    argv = qemu_argv("-smp", "4", "-accel", "tcg")
    make_process(tmp_path / "proc", Proc(PID, argv, threads))
    answer.update(reply)
    options = AgentOptions(
        sysfs_root=host,
        proc_root=tmp_path / "proc",
        cgroup_root=host,
        backoff=(),
        qmp_socket=str(socket_path),
    )

    (check,) = verify(options, "abc").sandboxes

    assert check.method == "qmp"
    missing = [f for f in check.findings if "vCPU threads not identified" in f]
    assert len(missing) == 1, check.findings
    finding = missing[0]
    assert finding.startswith("2 of 4 vCPU threads not identified"), finding
    assert reason in finding
    assert "KVM_RUN" not in finding


@needs_qemu
@pytest.mark.qemu
def test_real_single_threaded_tcg_has_no_vcpu_to_pin(tmp_path: Path) -> None:
    qmp_socket = tmp_path / "qmp.sock"
    args = ["-accel", "tcg,thread=single", "-S", "-name", "sandbox-single", "-smp", "2"]

    with qemu_vm([*args, "-m", "64"], qmp_socket, vcpus=2) as vm:
        truth = qmp_vcpu_threads(qmp_socket)
        sandbox = sandbox_of(Path("/proc"), vm.pid)
        found = read_vcpu_threads("/proc", sandbox, backoff=(), qmp_socket=qmp_socket)

    assert len(set(truth.values())) == 1, f"QEMU 7.2 runs single TCG on one thread: {truth}"
    assert found.by_index == {}
    assert any("vCPUs 0-1 on one thread" in note for note in found.notes), found.notes


@needs_qemu
@pytest.mark.qemu
def test_real_kvm_qemu_by_descriptors_matches_qmp(tmp_path: Path) -> None:
    reason = kvm_unusable()
    if reason is not None:
        pytest.skip(reason)
    qmp_socket = tmp_path / "qmp.sock"
    bios = halting_bios(tmp_path)
    args = [
        "-accel",
        "kvm",
        "-bios",
        str(bios),
        "-name",
        "sandbox-kvm-ids",
        *SMP_6[:2],
        "-m",
        "128",
    ]

    with qemu_vm(args, qmp_socket, vcpus=6) as vm:
        truth = qmp_vcpu_threads(qmp_socket)
        sandbox = sandbox_of(Path("/proc"), vm.pid)
        found = read_vcpu_threads("/proc", sandbox)

    assert sandbox.layout.debug_threads is False
    assert found.method == "kvm-descriptors", found.notes
    assert {index: task.tid for index, task in found.by_index.items()} == truth


def test_agent_skips_a_sandbox_it_cannot_read_and_says_how_to_enable_a_method(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = make_host(tmp_path / "host", {0: NodeSpec("0-3")})
    (host / "cgroup.controllers").write_text("cpuset\n")
    threads = [Thread(PID, syscall=PPOLL), Thread(4001), Thread(4002)]
    make_process(tmp_path / "proc", Proc(PID, qemu_argv("-smp", "2", "-accel", "tcg"), threads))
    options = AgentOptions(
        sysfs_root=host, proc_root=tmp_path / "proc", cgroup_root=host, backoff=()
    )
    setup_logging("INFO")
    monkeypatch.setattr(logging.getLogger("kata_numa"), "propagate", True)

    with caplog.at_level(logging.WARNING, logger="kata_numa"):
        report = run_pass(options)
        log_report(report)

    (entry,) = report.sandboxes
    assert entry.results == []
    (warning,) = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert "no vCPU thread identified (2 expected)" in warning
    for method in ("debug-threads=on", "CAP_SYS_PTRACE", "--qmp-socket"):
        assert method in warning


class StalledMonitor:
    """A QMP monitor that greets, then sends an event every 0.5 s and never a `return` (a QEMU
    whose main loop is stuck, or a monitor shared with a client that holds it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stop = threading.Event()
        self.connected = threading.Event()
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(4)
        self.server.settimeout(0.2)
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                connection, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by close()
            self.connected.set()
            worker = threading.Thread(target=self._chatter, args=(connection,), daemon=True)
            self.threads.append(worker)
            worker.start()

    def _chatter(self, connection: socket.socket) -> None:
        with connection:
            try:
                connection.sendall(b'{"QMP": {"version": {}, "capabilities": []}}\r\n')
                while not self.stop.wait(0.5):
                    connection.sendall(b'{"event": "RTC_CHANGE", "timestamp": {}}\r\n')
            except OSError:
                return  # the client went away

    def close(self) -> None:
        self.stop.set()
        self.server.close()
        for thread in self.threads:
            thread.join(timeout=10)


@pytest.fixture
def stalled_monitor(tmp_path: Path) -> Iterator[StalledMonitor]:
    monitor = StalledMonitor(tmp_path / "stalled.sock")
    try:
        yield monitor
    finally:
        monitor.close()


def tcg_node(tmp_path: Path) -> list[str]:
    """A one-node host and a TCG sandbox without thread names; its CLI roots."""
    host = make_host(tmp_path / "host", {0: NodeSpec("0-3")})
    (host / "cgroup.controllers").write_text("cpuset\n")
    threads = [Thread(PID, syscall=PPOLL), Thread(4001), Thread(4002)]
    make_process(tmp_path / "proc", Proc(PID, qemu_argv("-smp", "2", "-accel", "tcg"), threads))
    roots = ["--sysfs-root", str(host), "--proc-root", str(tmp_path / "proc")]
    return [*roots, "--cgroup-root", str(host)]


def test_verify_gives_up_on_a_stalled_monitor(
    tmp_path: Path, stalled_monitor: StalledMonitor
) -> None:
    roots = tcg_node(tmp_path)

    result = run_cli("verify", "abc", *roots, "--qmp-socket", str(stalled_monitor.path), timeout=20)

    assert result.returncode == 1, result.stderr
    findings = [line for line in result.stdout.splitlines() if "finding:" in line]
    assert len(findings) == 1, result.stdout
    assert "no complete answer within 2 s" in findings[0]
    assert str(stalled_monitor.path) in findings[0]
    assert "pass its path with --qmp-socket" not in result.stdout, "it was passed"


def test_run_stops_on_sigterm_while_a_monitor_stalls(
    tmp_path: Path, stalled_monitor: StalledMonitor
) -> None:
    roots = tcg_node(tmp_path)
    command = [sys.executable, "-m", "kata_numa", "run", "--interval", "60", *roots]
    command += ["--qmp-socket", str(stalled_monitor.path)]
    agent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert stalled_monitor.connected.wait(20), "the agent never asked the monitor"
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=20)
    finally:
        if agent.poll() is None:
            agent.kill()
        agent.communicate()

    assert agent.returncode == 0, err
    assert "kata-numa agent stopped" in err
