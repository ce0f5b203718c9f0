"""cpuset.mems translation: host NUMA nodes → guest nodes of one sandbox (DESIGN §2.8)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostgen import NodeSpec, make_host
from kata_numa._native import CpuSet
from kata_numa.mems import translate_mems
from procgen import Proc, Thread, bound_nodes, make_process, qemu_argv
from qemu_vm import run_cli

ONE_TO_ONE = {0: CpuSet("0"), 1: CpuSet("1")}
GROUPED = {0: CpuSet("0-1"), 1: CpuSet("2-3")}  # numa_mapping = ["0-1", "2-3"]

CASES = {
    "one-to-one": (ONE_TO_ONE, "0,1", "0-1", 0),
    "grouped": (GROUPED, "0,3", "0-1", 0),
    "grouped-one-host-node": (GROUPED, "2", "1", 0),
    "partly-unmapped": (ONE_TO_ONE, "1,5", "1", 1),
    "unmapped-stays-unset": (ONE_TO_ONE, "5", None, 1),
    "empty-stays-unset": (ONE_TO_ONE, "", None, 1),
}


@pytest.mark.parametrize(
    ("mapping", "mems", "guests", "warnings"), CASES.values(), ids=CASES.keys()
)
def test_translate(
    mapping: dict[int, CpuSet], mems: str, guests: str | None, warnings: int
) -> None:
    result = translate_mems(CpuSet(mems), mapping)

    assert result.guest_nodes == (None if guests is None else CpuSet(guests))
    assert len(result.warnings) == warnings


def test_unmapped_warning_names_the_nodes() -> None:
    result = translate_mems(CpuSet("5"), ONE_TO_ONE)

    assert result.warnings == [
        "host nodes 5 map to no guest node (guest→host: 0→0, 1→1); cpuset.mems left unset"
    ]


@given(
    mapping=st.dictionaries(st.integers(0, 7), st.sets(st.integers(0, 7), min_size=1), max_size=8),
    mems=st.sets(st.integers(0, 9)),
)
def test_a_guest_node_is_in_when_any_of_its_host_nodes_is(
    mapping: dict[int, set[int]], mems: set[int]
) -> None:
    result = translate_mems(CpuSet(mems), {g: CpuSet(h) for g, h in mapping.items()})

    expected = {guest for guest, hosts in mapping.items() if hosts & mems}
    if expected:
        assert result.guest_nodes == CpuSet(expected)
    else:
        assert result.guest_nodes is None, "an empty or unmapped value is never returned"
        assert result.warnings


@pytest.fixture
def node_with_sandbox(tmp_path: Path) -> tuple[Path, Path]:
    """A five-node host and a sandbox whose guest nodes bind host nodes 0-1 and 2-3."""
    nodes = {n: NodeSpec(f"{2 * n}-{2 * n + 1}") for n in range(5)}
    host = make_host(tmp_path / "host", nodes)
    argv = qemu_argv(*bound_nodes("0-1", "2-3"), sandbox="mems")
    make_process(tmp_path / "proc", Proc(7000, argv, [Thread(7000)]))
    return host, tmp_path / "proc"


CLI_CASES = {
    "grouped": ("0,3", 0, "0-1", ""),
    "unmapped": ("4", 1, "", "left unset"),
    "host-lacks-the-node": ("7", 2, "", "MEMS '7' names host nodes 7 this host lacks"),
    "host-lacks-some": ("0,7-8", 2, "", "host nodes 7-8 this host lacks (its nodes are 0-4)"),
    "empty": ("", 2, "", "MEMS is empty"),
    "blank": (" \n", 2, "", "MEMS is empty"),
    "not-a-list": ("0,x", 2, "", "MEMS '0,x': 'x' at character 2 is not a node number"),
    "backwards": ("3-1", 2, "", "'3-1' at character 0 is not a node number or range"),
}


@pytest.mark.parametrize(("mems", "code", "out", "err"), CLI_CASES.values(), ids=CLI_CASES.keys())
def test_command(
    node_with_sandbox: tuple[Path, Path], mems: str, code: int, out: str, err: str
) -> None:
    host, proc_root = node_with_sandbox
    roots = ["--sysfs-root", str(host), "--proc-root", str(proc_root)]

    result = run_cli("translate-mems", "--sandbox", "mems", mems, *roots)

    assert result.returncode == code, result.stderr
    assert result.stdout.strip() == out
    assert err in result.stderr
    assert "ff,ffffffff" not in result.stderr, "MEMS is a node list, never a CPU mask"
    assert "Traceback" not in result.stderr


def test_command_with_a_binding_to_a_node_the_host_lacks(tmp_path: Path) -> None:
    """A backend bound to host node 7 on a four-node host: asking for node 7 is no answer."""
    host = make_host(tmp_path / "host", {n: NodeSpec(str(n)) for n in range(4)})
    argv = qemu_argv(*bound_nodes("0", "7"), sandbox="mems")
    make_process(tmp_path / "proc", Proc(7000, argv, [Thread(7000)]))
    roots = ["--sysfs-root", str(host), "--proc-root", str(tmp_path / "proc")]

    result = run_cli("translate-mems", "--sandbox", "mems", "7", *roots)

    assert result.returncode == 2, result.stdout
    assert result.stdout == ""
    assert "host nodes 7 this host lacks (its nodes are 0-3)" in result.stderr


def test_command_with_an_unknown_sandbox(node_with_sandbox: tuple[Path, Path]) -> None:
    host, proc_root = node_with_sandbox
    roots = ["--sysfs-root", str(host), "--proc-root", str(proc_root)]

    result = run_cli("translate-mems", "--sandbox", "nope", "0", *roots)

    assert result.returncode == 2
    assert "no Kata sandbox 'nope'" in result.stderr
