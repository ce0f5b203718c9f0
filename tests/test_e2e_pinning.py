"""End to end: a real QEMU sandbox is found and its vCPUs pinned per NUMA node."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from hostgen import NodeSpec, make_host
from qemu_proc import allowed_list, needs_qemu, running_qemu, two_node_args, vcpu_tids
from qemu_vm import run_cli

pytestmark = [pytest.mark.qemu, needs_qemu]

needs_two_cpus = pytest.mark.skipif(
    not {0, 1} <= os.sched_getaffinity(0), reason="needs CPUs 0 and 1 in this process's affinity"
)


@pytest.fixture
def two_node_host(tmp_path: Path) -> Path:
    """A host whose node 0 is CPU 0 and node 1 is CPU 1."""
    return make_host(tmp_path / "host", {0: NodeSpec("0"), 1: NodeSpec("1")})


def run_agent(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("run", "--once", *args)


@needs_two_cpus
def test_vcpus_pinned_to_their_guest_nodes_host_cpus(two_node_host: Path) -> None:
    # --sandbox keeps the agent off any other sandbox on the machine running the tests; the
    # QEMU without -name sandbox-... must be passed over by classification, not by the filter.
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    with (
        running_qemu(two_node_args(name), vcpus=4) as sandbox,
        running_qemu(two_node_args(None), vcpus=4) as plain,
    ):
        plain_before = {tid: allowed_list(plain.pid, tid) for tid in vcpu_tids(plain.pid).values()}

        result = run_agent("--sysfs-root", str(two_node_host), "--sandbox", name)

        assert result.returncode == 0, result.stderr
        tids = vcpu_tids(sandbox.pid)
        assert {i: allowed_list(sandbox.pid, tids[i]) for i in range(4)} == {
            0: "0",
            1: "0",
            2: "1",
            3: "1",
        }
        assert f"sandbox {name} placed" in result.stderr
        assert f"skipped process PID={plain.pid}" in result.stderr
        plain_after = {tid: allowed_list(plain.pid, tid) for tid in vcpu_tids(plain.pid).values()}
        assert plain_after == plain_before


@needs_two_cpus
def test_second_pass_changes_nothing(two_node_host: Path) -> None:
    name = f"stable-{uuid.uuid4().hex[:8]}"
    with running_qemu(two_node_args(name), vcpus=4) as sandbox:
        assert run_agent("--sysfs-root", str(two_node_host), "--sandbox", name).returncode == 0
        tids = vcpu_tids(sandbox.pid)
        first = {i: allowed_list(sandbox.pid, tid) for i, tid in tids.items()}

        second = run_agent("--sysfs-root", str(two_node_host), "--sandbox", name)

        assert second.returncode == 0, second.stderr
        assert {i: allowed_list(sandbox.pid, tid) for i, tid in tids.items()} == first


@needs_two_cpus
def test_two_sandboxes_never_double_up_while_a_cpu_is_free(tmp_path: Path) -> None:
    host = make_host(tmp_path / "host", {0: NodeSpec("0-1")})  # one node, CPUs 0 and 1
    one_vcpu = ["-smp", "1", "-m", "128"]
    names = [f"{x}-{uuid.uuid4().hex[:8]}" for x in "ab"]
    with (
        running_qemu(["-name", f"sandbox-{names[0]},debug-threads=on", *one_vcpu], vcpus=1) as a,
        running_qemu(["-name", f"sandbox-{names[1]},debug-threads=on", *one_vcpu], vcpus=1) as b,
    ):
        only = [arg for name in names for arg in ("--sandbox", name)]
        assert run_agent("--sysfs-root", str(host), *only).returncode == 0

        cpu_a = allowed_list(a.pid, vcpu_tids(a.pid)[0])
        cpu_b = allowed_list(b.pid, vcpu_tids(b.pid)[0])
        assert {cpu_a, cpu_b} == {"0", "1"}
