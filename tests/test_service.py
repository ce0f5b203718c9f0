"""`kata-numa run` as a long-running service: periodic passes, SIGHUP, SIGTERM."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostgen import NodeSpec, make_host
from qemu_proc import FAKE_EXE, FakeQemu, allowed_list, vcpu_tids


class Agent:
    """`kata-numa run` in a child process, its log lines collected as they come."""

    def __init__(self, *args: str) -> None:
        # --qemu-path: the sandboxes here are FakeQemu processes (Python running as QEMU).
        command = [sys.executable, "-m", "kata_numa", "run", "--qemu-path", FAKE_EXE, *args]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no log line with {text!r}; seen: {''.join(self.seen)}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def sandbox() -> Iterator[tuple[str, FakeQemu]]:
    name = f"svc-{uuid.uuid4().hex[:8]}"
    fake = FakeQemu(f"sandbox-{name}", vcpus=2)
    try:
        yield name, fake
    finally:
        fake.close()


def test_sighup_repairs_drift_and_sigterm_stops_cleanly(
    tmp_path: Path, sandbox: tuple[str, FakeQemu]
) -> None:
    name, fake = sandbox
    host = make_host(tmp_path / "host", {0: NodeSpec("0-1")})
    agent = Agent("--sysfs-root", str(host), "--sandbox", name, "--interval", "3600")
    try:
        agent.wait_for(f"sandbox {name} placed")
        tid = vcpu_tids(fake.pid)[0]
        pinned = allowed_list(fake.pid, tid)
        os.sched_setaffinity(tid, {0, 1})  # an operator (or a shim) moves the vCPU

        agent.process.send_signal(signal.SIGHUP)

        agent.wait_for(f"sandbox {name} placed")
        assert allowed_list(fake.pid, tid) == pinned
        agent.process.send_signal(signal.SIGTERM)
        assert agent.process.wait(timeout=30) == 0
        agent.wait_for("agent stopped")
    finally:
        agent.stop()


def test_a_sandbox_that_ends_between_passes_is_not_an_error(
    tmp_path: Path, sandbox: tuple[str, FakeQemu]
) -> None:
    name, fake = sandbox
    host = make_host(tmp_path / "host", {0: NodeSpec("0-1")})
    agent = Agent("--sysfs-root", str(host), "--sandbox", name, "--interval", "0.2")
    try:
        agent.wait_for(f"sandbox {name} placed")
        fake.close()
        time.sleep(1)  # several passes without the sandbox
        assert agent.process.poll() is None
        agent.process.send_signal(signal.SIGTERM)
        assert agent.process.wait(timeout=30) == 0
        agent.wait_for("agent stopped")
        assert not [line for line in agent.seen if line.startswith(("ERROR", "Traceback"))]
    finally:
        agent.stop()


def test_broken_sysfs_keeps_the_last_good_topology(tmp_path: Path) -> None:
    host = make_host(tmp_path / "host", {0: NodeSpec("0-1")})
    first, late = (f"{what}-{uuid.uuid4().hex[:8]}" for what in ("first", "late"))
    sandboxes = [FakeQemu(f"sandbox-{first}", vcpus=1)]
    agent = Agent(
        "--sysfs-root", str(host), "--sandbox", first, "--sandbox", late, "--interval", "3600"
    )
    try:
        agent.wait_for(f"sandbox {first} placed")
        (host / "sys/devices/system/node/node0/cpulist").write_text("0-1x\n")
        sandboxes.append(FakeQemu(f"sandbox-{late}", vcpus=1))

        agent.process.send_signal(signal.SIGHUP)

        warning = agent.wait_for("keeping the last good one")
        assert "node0/cpulist" in warning
        agent.wait_for(f"sandbox {late} placed")  # on the CPU the first one leaves free
        assert agent.process.poll() is None
    finally:
        agent.stop()
        for fake in sandboxes:
            fake.close()


def test_a_passed_over_qemu_is_logged_once_not_every_pass(
    tmp_path: Path, sandbox: tuple[str, FakeQemu]
) -> None:
    name, _ = sandbox
    host = make_host(tmp_path / "host", {0: NodeSpec("0-1")})
    plain = FakeQemu(f"plain-{uuid.uuid4().hex[:8]}", vcpus=1)
    agent = Agent("--sysfs-root", str(host), "--sandbox", name, "--interval", "0.2")
    try:
        agent.wait_for(f"skipped process PID={plain.pid}")
        for _ in range(3):  # three more passes
            agent.process.send_signal(signal.SIGHUP)
            time.sleep(0.3)
        agent.process.send_signal(signal.SIGTERM)
        agent.wait_for("agent stopped")
        assert not [line for line in agent.seen if f"skipped process PID={plain.pid}" in line][1:]
    finally:
        agent.stop()
        plain.close()
