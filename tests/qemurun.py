"""Run QEMU for a test: start it, talk QMP to it, stop it. Tests stop every QEMU they start
through the `Runner` of a fixture, by the Popen object (so only our own PIDs), even on failure.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

QEMU = "qemu-system-x86_64"


def qemu_binary() -> str | None:
    return shutil.which(QEMU)


class Qmp:
    """A minimal QMP client over a UNIX socket: one command at a time, events skipped."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.reader = self.sock.makefile("r", encoding="utf-8")
        json.loads(self.reader.readline())  # the greeting
        self.command("qmp_capabilities")

    def command(self, name: str, **arguments: Any) -> Any:
        request: dict[str, Any] = {"execute": name}
        if arguments:
            request["arguments"] = arguments
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        while True:
            reply = json.loads(self.reader.readline())
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise RuntimeError(f"QMP {name}: {reply['error']}")

    def hmp(self, line: str) -> str:
        result: str = self.command("human-monitor-command", **{"command-line": line})
        return result

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


class Runner:
    """Starts QEMU processes and remembers them so `stop_all` ends each one."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.clients: list[Qmp] = []

    def start(self, args: Sequence[str], name: str = "vm", wait: float = 30.0) -> Qmp:
        """QEMU with `args`, paused (`-S`), no display or default devices, under TCG, with a
        QMP socket; returns a connected client. Fails with QEMU's own stderr if it exits."""
        qmp_path = self.workdir / f"{name}.qmp"
        stderr = (self.workdir / f"{name}.stderr").open("wb")
        argv = [
            QEMU,
            "-machine",
            "q35",
            "-accel",
            "tcg",
            "-S",
            "-display",
            "none",
            "-nodefaults",
            "-qmp",
            f"unix:{qmp_path},server=on,wait=off",
            *args,
        ]
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
        )
        self.processes.append(process)
        deadline = time.monotonic() + wait
        while not qmp_path.exists():
            if process.poll() is not None:
                message = (self.workdir / f"{name}.stderr").read_text()
                raise AssertionError(f"QEMU exited with {process.returncode}: {message}\n{argv}")
            if time.monotonic() > deadline:
                raise AssertionError(f"QEMU made no QMP socket in {wait} s: {argv}")
            time.sleep(0.05)
        client = Qmp(qmp_path)
        self.clients.append(client)
        return client

    def boot(self, args: Sequence[str], log: Path, timeout: float) -> str:
        """Run a guest to its end (it powers itself off) with the serial console in `log`;
        returns the console text. Kills QEMU when `timeout` passes."""
        argv = [
            QEMU,
            "-machine",
            "q35",
            "-accel",
            "tcg",
            "-display",
            "none",
            "-nodefaults",
            "-no-reboot",
            "-serial",
            f"file:{log}",
            *args,
        ]
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.processes.append(process)
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as expired:
            self._stop(process)
            text = log.read_text(errors="replace") if log.exists() else ""
            raise AssertionError(
                f"guest did not power off in {timeout} s; console:\n{text}"
            ) from expired
        text = log.read_text(errors="replace") if log.exists() else ""
        if process.returncode != 0:
            raise AssertionError(
                f"QEMU exited with {process.returncode}: "
                f"{stderr.decode(errors='replace')}\nconsole:\n{text}"
            )
        return text

    def refused(self, args: Sequence[str], timeout: float = 30.0) -> str:
        """QEMU's error text for `args` (paused, TCG, no display) that QEMU must refuse at start;
        fails if QEMU starts instead (and stops it)."""
        argv = [QEMU, "-machine", "q35", "-accel", "tcg", "-S", "-display", "none", "-nodefaults"]
        process = subprocess.Popen(
            [*argv, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.processes.append(process)
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as expired:
            self._stop(process)
            raise AssertionError(f"QEMU started with {args}; expected it to refuse") from expired
        assert process.returncode != 0, f"QEMU accepted {args}"
        return stderr.decode(errors="replace")

    @staticmethod
    def _stop(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def stop_all(self) -> None:
        for client in self.clients:
            with contextlib.suppress(OSError):  # the socket may be gone with its QEMU
                client.close()
        for process in self.processes:
            self._stop(process)
