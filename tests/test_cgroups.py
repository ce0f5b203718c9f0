"""Allowed CPUs from cgroup cpusets: v2, v1, hybrid hosts, fixture trees and the real v1 cpuset."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cpusets import last_cpu_cpuset
from kata_numa._native import CpuSet
from kata_numa.cgroups import allowed_cpus, read_layout
from kata_numa.errors import SysfsError
from procgen import (
    Proc,
    Thread,
    cgroup2_mount,
    cpuset_v1_mount,
    make_process,
    qemu_argv,
    tmpfs_mount,
    write_mountinfo,
)
from qemu_vm import TCG, needs_qemu, qemu_vm, qmp_vcpu_threads, run_cli, thread_masks

PID = 5000
ONLINE = CpuSet("0-7")
POD = "/kubepods/burstable/pod1234/kata-abc"  # as /proc/<pid>/cgroup says it
POD_DIR = POD.lstrip("/")  # below the fixture's mount point


def write_files(folder: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = folder / relative.lstrip("/")  # never an absolute path: it would leave `folder`
        assert path.is_relative_to(folder), path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def host(tmp_path: Path, mounts: list[str], cgroup: str, files: dict[str, str]) -> Path:
    """A fixture host: `proc/` with the sandbox's `cgroup` file and the agent's mountinfo, and
    the cgroup `files` below `cg/` (paths relative to it)."""
    proc_root = tmp_path / "proc"
    make_process(proc_root, Proc(PID, qemu_argv(), [Thread(PID)], cgroup=cgroup))
    write_mountinfo(proc_root, mounts)
    write_files(tmp_path / "cg", files)
    return proc_root


def v2(tmp_path: Path, files: dict[str, str]) -> Path:
    mounts = [cgroup2_mount(tmp_path / "cg")]
    return host(tmp_path, mounts, f"0::{POD}\n", files)


CASES = {
    "v2-empty-cpus-inherits-effective": (
        "v2",
        {
            "cgroup.controllers": "cpuset cpu memory\n",
            f"{POD_DIR}/cpuset.cpus": "\n",
            f"{POD_DIR}/cpuset.cpus.effective": "2-5\n",
        },
        "2-5",
        f"{POD_DIR}/cpuset.cpus.effective",
    ),
    "v2-no-cpuset-files-below-a-parent": (
        "v2",
        {
            "cgroup.controllers": "cpuset cpu memory\n",
            "kubepods/cpuset.cpus.effective": "0-7\n",
            f"{POD_DIR}/cgroup.procs": f"{PID}\n",
        },
        "0-7",
        "kubepods/cpuset.cpus.effective",
    ),
    "v2-empty-effective-walks-up": (
        "v2",
        {
            "cgroup.controllers": "cpuset\n",
            "kubepods/burstable/cpuset.cpus.effective": "4-6\n",
            f"{POD_DIR}/cpuset.cpus.effective": "\n",
        },
        "4-6",
        "kubepods/burstable/cpuset.cpus.effective",
    ),
}


@pytest.mark.parametrize(("kind", "files", "cpus", "source"), CASES.values(), ids=CASES.keys())
def test_v2(tmp_path: Path, kind: str, files: dict[str, str], cpus: str, source: str) -> None:
    proc_root = v2(tmp_path, files)

    allowed = allowed_cpus(proc_root, PID, ONLINE, read_layout(proc_root))

    assert allowed.cpus == CpuSet(cpus)
    assert allowed.source == str(tmp_path / "cg" / source)


V1_CASES = {
    "effective-cpus": (
        {"kata/abc/cpuset.effective_cpus": "1,3\n", "kata/abc/cpuset.cpus": "1-3\n"},
        "1,3",
    ),
    "only-cpuset-cpus": ({"kata/abc/cpuset.cpus": "1-3\n"}, "1-3"),
    "from-the-parent": ({"kata/cpuset.effective_cpus": "6-7\n", "kata/abc/tasks": ""}, "6-7"),
}


@pytest.mark.parametrize(("files", "cpus"), V1_CASES.values(), ids=V1_CASES.keys())
def test_v1(tmp_path: Path, files: dict[str, str], cpus: str) -> None:
    mounts = [tmpfs_mount(tmp_path / "cg"), cpuset_v1_mount(tmp_path / "cg/cpuset")]
    cgroup = "4:memory:/kata/abc\n3:cpuset:/kata/abc\n1:cpu,cpuacct:/\n"
    base = {"cpuset/cpuset.cpus": "0-7\n", "cpuset/cpuset.effective_cpus": "0-7\n"}
    cpuset_files = {f"cpuset/{name}": text for name, text in files.items()}
    proc_root = host(tmp_path, mounts, cgroup, base | cpuset_files)

    allowed = allowed_cpus(proc_root, PID, ONLINE, read_layout(proc_root))

    assert allowed.cpus == CpuSet(cpus)


def hybrid(tmp_path: Path) -> Path:
    """cpuset in v1 beside a v2 mount (this machine's layout): v1 holds the answer."""
    cg = tmp_path / "cg"
    mounts = [tmpfs_mount(cg), cpuset_v1_mount(cg / "cpuset"), cgroup2_mount(cg / "unified")]
    cgroup = "9:name=systemd:/kata/abc\n3:cpuset:/kata/abc\n0::/kata/abc\n"
    files = {
        "cpuset/cpuset.cpus": "0-7\n",
        "cpuset/kata/abc/cpuset.effective_cpus": "5\n",
        "unified/cgroup.controllers": "\n",  # no cpuset controller: it is bound to v1
        "unified/kata/abc/cgroup.procs": f"{PID}\n",
    }
    return host(tmp_path, mounts, cgroup, files)


def test_hybrid(tmp_path: Path) -> None:
    proc_root = hybrid(tmp_path)
    layout = read_layout(proc_root)

    allowed = allowed_cpus(proc_root, PID, ONLINE, layout)

    assert layout.cpuset_v1 == str(tmp_path / "cg/cpuset")
    assert layout.unified == str(tmp_path / "cg/unified")
    assert allowed.cpus == CpuSet("5")
    assert allowed.source.endswith("cpuset/kata/abc/cpuset.effective_cpus")


def test_cgroup_root_overrides_mountinfo(tmp_path: Path) -> None:
    proc_root = hybrid(tmp_path)
    write_mountinfo(proc_root, [tmpfs_mount(tmp_path / "cg")])  # nothing usable there

    with pytest.raises(SysfsError, match="--cgroup-root"):
        read_layout(proc_root)
    allowed = allowed_cpus(proc_root, PID, ONLINE, read_layout(proc_root, tmp_path / "cg"))

    assert allowed.cpus == CpuSet("5")


def test_cgroup_root_without_hierarchies_names_the_folder(tmp_path: Path) -> None:
    with pytest.raises(SysfsError, match=str(tmp_path)):
        read_layout(tmp_path, tmp_path)


def test_cgroup_root_that_does_not_exist_says_so(tmp_path: Path) -> None:
    with pytest.raises(SysfsError, match=f"{tmp_path / 'missing'}: the folder does not exist"):
        read_layout(tmp_path, tmp_path / "missing")


BAD_ROOTS = {
    "run-missing": (["run", "--once"], "/nonexistent"),
    "verify-missing": (["verify"], "/nonexistent"),
    "run-a-file": (["run", "--once"], "/etc/hostname"),
}


@pytest.mark.parametrize(("command", "root"), BAD_ROOTS.values(), ids=BAD_ROOTS.keys())
def test_cli_rejects_a_cgroup_root_that_is_no_folder(
    tmp_path: Path, command: list[str], root: str
) -> None:
    """Rejected when the command starts, not on every pass of the service."""
    result = run_cli(*command, "--cgroup-root", root, "--proc-root", str(tmp_path))

    assert result.returncode == 2
    assert f"argument --cgroup-root: {root!r} is not a folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_offline_cpus_are_left_out(tmp_path: Path) -> None:
    files = {"cgroup.controllers": "cpuset\n", f"{POD_DIR}/cpuset.cpus.effective": "2-9\n"}
    proc_root = v2(tmp_path, files)

    allowed = allowed_cpus(proc_root, PID, ONLINE, read_layout(proc_root))

    assert allowed.cpus == CpuSet("2-7")
    assert allowed.note is not None and "8-9" in allowed.note


def test_no_cpuset_anywhere_allows_every_online_cpu(tmp_path: Path) -> None:
    proc_root = v2(tmp_path, {"cgroup.controllers": "cpu memory\n"})

    allowed = allowed_cpus(proc_root, PID, ONLINE, read_layout(proc_root))

    assert allowed.cpus == ONLINE
    assert allowed.note is not None and "no cpuset" in allowed.note


def test_bad_cpuset_file_names_the_file(tmp_path: Path) -> None:
    files = {"cgroup.controllers": "cpuset\n", f"{POD_DIR}/cpuset.cpus.effective": "2-x\n"}
    proc_root = v2(tmp_path, files)

    with pytest.raises(SysfsError, match=r"cpuset\.cpus\.effective"):
        allowed_cpus(proc_root, PID, ONLINE, read_layout(proc_root))


NAMESPACE = "host's cgroup namespace"

#: /proc/<pid>/cgroup lines whose path is no cgroup below the mount, and what the error says.
ESCAPES = {
    "leaves-the-mount": ("0::/../../../etc\n", '"/../../../etc"', NAMESPACE),
    "private-cgroup-namespace": (f"0::/../..{POD}\n", f'"/../..{POD}"', NAMESPACE),
    "dot-component": (f"0::/kubepods/./{POD_DIR}\n", '"/kubepods/./', NAMESPACE),
    "relative-path": (f"0::{POD_DIR}\n", f'"{POD_DIR}"', "not an absolute path"),
    "empty-path": ("0::\n", '""', "not an absolute path"),
    "garbage-line": ("::\n", '"::"', "hierarchy-id:controllers:path"),
    "no-hierarchy-id": (f"x::{POD}\n", f'"x::{POD}"', "hierarchy-id:controllers:path"),
    "two-fields": ("0:/kata\n", '"0:/kata"', "hierarchy-id:controllers:path"),
}


@pytest.mark.parametrize(("cgroup", "shown", "why"), ESCAPES.values(), ids=ESCAPES.keys())
def test_a_cgroup_path_outside_the_mount_is_an_error(
    tmp_path: Path, cgroup: str, shown: str, why: str
) -> None:
    """Never the CPUs of another cgroup (the mount root's, here) for a path that leaves it."""
    files = {"cgroup.controllers": "cpuset\n", "cpuset.cpus.effective": "0-7\n"}
    files[f"{POD_DIR}/cpuset.cpus.effective"] = "2-3\n"
    proc_root = host(tmp_path, [cgroup2_mount(tmp_path / "cg")], cgroup, files)

    with pytest.raises(SysfsError) as raised:
        allowed_cpus(proc_root, PID, ONLINE, read_layout(proc_root))

    message = str(raised.value)
    assert str(proc_root / str(PID) / "cgroup") in message
    assert shown in message
    assert why in message


def test_v1_cpuset_path_outside_the_mount_is_an_error(tmp_path: Path) -> None:
    mounts = [tmpfs_mount(tmp_path / "cg"), cpuset_v1_mount(tmp_path / "cg/cpuset")]
    cgroup = "3:cpuset:/../kata/abc\n1:cpu,cpuacct:/\n"
    files = {"cpuset/cpuset.cpus": "0-7\n", "cpuset/cpuset.effective_cpus": "0-7\n"}
    proc_root = host(tmp_path, mounts, cgroup, files)

    with pytest.raises(SysfsError, match=r'"/\.\./kata/abc".*cgroup namespace'):
        allowed_cpus(proc_root, PID, ONLINE, read_layout(proc_root))


def test_a_cgroup_outside_a_mounted_sub_tree_is_an_error(tmp_path: Path) -> None:
    """A mount that shows only /kubepods (a container's view) cannot show /system.slice."""
    cg = tmp_path / "cg"
    mount = f"29 23 0:26 /kubepods {cg} rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate"
    files = {"cgroup.controllers": "cpuset\n", "cpuset.cpus.effective": "0-7\n"}
    proc_root = host(tmp_path, [mount], "0::/system.slice/kata.scope\n", files)

    with pytest.raises(SysfsError, match=r'"/system\.slice/kata\.scope" is outside "/kubepods"'):
        allowed_cpus(proc_root, PID, ONLINE, read_layout(proc_root))


def test_a_cgroup_inside_a_mounted_sub_tree(tmp_path: Path) -> None:
    cg = tmp_path / "cg"
    mount = f"29 23 0:26 /kubepods {cg} rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate"
    files = {"cgroup.controllers": "cpuset\n", "pod1/x/cpuset.cpus.effective": "6\n"}
    proc_root = host(tmp_path, [mount], "0::/kubepods/pod1/x\n", files)

    allowed = allowed_cpus(proc_root, PID, ONLINE, read_layout(proc_root))

    assert allowed.cpus == CpuSet("6")


# --- the real v1 cpuset controller of this machine -------------------------------------------


@pytest.fixture
def cpuset_cgroup() -> Iterator[Path]:
    """A cpuset cgroup holding the highest online CPU only; removed after its processes end."""
    with last_cpu_cpuset() as folder:
        yield folder


@needs_qemu
@pytest.mark.qemu
def test_real_qemu_in_a_v1_cpuset_is_pinned_only_inside_it(
    tmp_path: Path, cpuset_cgroup: Path
) -> None:
    inside = CpuSet(cpuset_cgroup.joinpath("cpuset.cpus").read_text())
    name = f"cpuset-{uuid.uuid4().hex[:8]}"
    args = [*TCG, "-S", "-name", f"sandbox-{name},debug-threads=on", "-smp", "2", "-m", "64"]

    with qemu_vm(args, tmp_path / "qmp.sock", vcpus=2) as vm:
        (cpuset_cgroup / "cgroup.procs").write_text(f"{vm.pid}\n")
        layout = read_layout("/proc")
        allowed = allowed_cpus("/proc", vm.pid, CpuSet(os.sched_getaffinity(0)), layout)
        result = run_cli("run", "--once", "--sandbox", name)
        masks = thread_masks(vm.pid)
        vcpu_tids = qmp_vcpu_threads(tmp_path / "qmp.sock").values()

    assert allowed.cpus == inside
    assert allowed.source == str(cpuset_cgroup / "cpuset.effective_cpus")
    assert result.returncode == 0, result.stderr
    assert f"sandbox {name} placed" in result.stderr
    assert all(CpuSet(masks[tid]) == inside for tid in vcpu_tids), masks
    assert all(CpuSet(mask).issubset(inside) for mask in masks.values()), masks
