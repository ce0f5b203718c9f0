"""The command line's answers to bad input and to sandboxes it cannot place."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from hostgen import NodeSpec, make_host
from qemu_proc import FAKE_EXE, FakeQemu
from qemu_vm import run_cli


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["topology", "--sysfs-root", "/nonexistent"], "--sysfs-root", id="no-sysfs"),
        pytest.param(["topology", "--sysfs-root", "/tmp"], "not a sysfs tree", id="not-sysfs"),
        pytest.param(["sandboxes", "--proc-root", "/nonexistent"], "--proc-root", id="no-proc"),
        pytest.param(["run", "--once", "--proc-root", "/etc/hostname"], "not a folder", id="file"),
        pytest.param(["run", "--interval", "nan"], "--interval", id="interval-nan"),
        pytest.param(["run", "--interval", "1e-9"], "at least", id="interval-tiny"),
        pytest.param(["run", "--interval", "soon"], "seconds", id="interval-word"),
        pytest.param(["run", "--interval", "-1"], "at least", id="interval-negative"),
    ],
)
def test_bad_options_exit_2_naming_them(args: list[str], message: str) -> None:
    result = run_cli(*args)

    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_run_once_fails_when_no_vcpu_of_a_sandbox_can_be_identified(tmp_path: Path) -> None:
    host = make_host(tmp_path / "host", {0: NodeSpec("0-1")})
    name = f"nameless-{uuid.uuid4().hex[:8]}"
    fake = FakeQemu(f"sandbox-{name}", vcpus=2, debug_threads=False)
    try:
        result = run_cli(
            "run", "--once", "--sysfs-root", str(host), "--sandbox", name, "--qemu-path", FAKE_EXE
        )
    finally:
        fake.close()

    assert result.returncode == 1, result.stderr
    assert "no vCPU thread identified" in result.stderr


def test_a_reader_that_goes_away_is_no_error(tmp_path: Path) -> None:
    """`kata-numa topology --json | head -c 1` on a big host: stdout closes early."""
    host = make_host(tmp_path / "host", {n: NodeSpec(str(n)) for n in range(256)})
    command = f"{sys.executable} -m kata_numa topology --json --sysfs-root {host} | head -c 1"
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=False)

    assert "Traceback" not in result.stderr
    assert result.stdout == "{"
