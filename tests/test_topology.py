"""`kata-numa topology` on small generated hosts: bad input and values sysfs does not give."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hostgen import NodeSpec, make_host
from kata_numa import cli
from kata_numa.errors import SysfsError
from kata_numa.topology import read_topology

TWO_NODES = {0: NodeSpec("0-1", 2 << 20), 1: NodeSpec("2-3", 2 << 20)}


@pytest.mark.parametrize(
    ("file", "content", "names"),
    [
        pytest.param("node/node1/distance", "20 x\n", ['"x"', "node1/distance"], id="distance"),
        pytest.param("node/node0/cpulist", "0,1a\n", ["node0/cpulist", "1a"], id="cpulist"),
        pytest.param("node/online", "0-\n", ["node/online"], id="node-online"),
        pytest.param("cpu/online", "zero\n", ["cpu/online", "zero"], id="cpu-online"),
        pytest.param(
            "node/node0/meminfo",
            "Node 0 MemTotal: 12x kB\n",
            ["node0/meminfo", "12x"],
            id="meminfo",
        ),
    ],
)
def test_bad_file_is_named_and_exits_non_zero(
    tmp_path: Path, file: str, content: str, names: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_host(tmp_path, TWO_NODES)
    (root / "sys/devices/system" / file).write_text(content)

    with pytest.raises(SysfsError) as raised:
        read_topology(root)
    assert cli.main(["topology", "--sysfs-root", str(root)]) == cli.EXIT_ERROR

    err = capsys.readouterr().err
    for name in names:
        assert name in str(raised.value)
        assert name in err
    assert raised.value.path.endswith(file)


def test_unknown_distance_is_null_and_question_mark(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A row of a width matching neither the online nor the possible nodes is not guessed."""
    root = make_host(tmp_path, TWO_NODES)
    (root / "sys/devices/system/node/node1/distance").write_text("20 10 30\n")

    assert cli.main(["topology", "--sysfs-root", str(root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [node["distances"] for node in data["nodes"]] == [[10, 20], [None, None]]
    assert any("node1/distance has 3 entries for 2 online nodes" in n for n in data["notes"])

    assert cli.main(["topology", "--sysfs-root", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[lines.index("node distances:") + 3] == "  1:   ?   ?"


def test_hugepages_and_free_memory_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nodes = {
        0: NodeSpec("0", 4 << 20, free_kib=1 << 20, hugepages={2048: (512, 500), 1048576: (2, 1)}),
        1: NodeSpec("", 8 << 20, free_kib=8 << 20),
    }
    root = make_host(tmp_path, nodes, distances=[[10, 17], [17, 10]])

    assert cli.main(["topology", "--sysfs-root", str(root)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "available: 2 nodes (0-1)",
        "node 0 cpus: 0",
        "node 0 size: 4096 MB",
        "node 0 free: 1024 MB",
        "node 0 hugepages 2MB: 512 total, 500 free",
        "node 0 hugepages 1024MB: 2 total, 1 free",
        "node 1 cpus:",
        "node 1 size: 8192 MB",
        "node 1 free: 8192 MB",
        "node distances:",
        "node   0   1",
        "  0:  10  17",
        "  1:  17  10",
    ]
