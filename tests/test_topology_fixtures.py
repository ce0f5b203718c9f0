"""Host topology on every captured machine of `shared/fixtures/`.

Three independent references: the raw sysfs facts of `hwloc-linux/SUMMARY.tsv` (plus the raw
files themselves), hwloc's view (its stored outputs, and `lstopo-no-graphics` run on the same
tree), and `numactl --hardware` for the human output. hwloc deliberately shows some machines
differently from raw sysfs; every such difference is written below, per machine, with its
reason (`hwloc-linux/README.md`, "How hwloc's view differs"), and the checks stay exact.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hwloc_view import HwlocView, parse_console, parse_distances_file, parse_xml
from kata_numa import cli
from kata_numa.topology import HostTopology, distance_matrix, format_numactl, read_topology
from machines import HWLOC_LINUX, MACHINES, NRI_SYSFS, MachineStore

HWLOC_290 = HWLOC_LINUX / "hwloc-2.9.0"
NRI_LSTOPO = NRI_SYSFS / "lstopo-2.9.0-generated"
LSTOPO = shutil.which("lstopo-no-graphics")
NUMACTL = shutil.which("numactl")
NRI_NAMES = ["server", "sample2", "4-socket-server-nosnc", "2-socket-4-node-40-core", "desktop"]


# ---------------------------------------------------------------------------------------------
# Raw facts: SUMMARY.tsv


@dataclass(frozen=True)
class Because:
    """Nodes (or CPU nodes) named with the reason hwloc treats them so."""

    nodes: tuple[int, ...]
    reason: str


@dataclass(frozen=True)
class Summary:
    """One row of SUMMARY.tsv (generated from the raw sysfs of each tarball)."""

    fixture: str
    cpu_dirs: int
    cpu_online: str  # "-" when the tree has no cpu/online
    node_ids: list[int]  # [] for "none" (no node folder)
    node_cpu_file: str  # cpulist | cpumap | -
    cpuless: list[int]
    memoryless: list[int]
    distance_values: list[int]
    symmetric: str  # yes | NO | n/a
    offline_flags: int  # CPUs whose cpuN/online says 0
    numa_node_files: int
    numa_node_unknown: int
    hwloc_default_nodes: list[int]


def _ints(text: str) -> list[int]:
    return [] if text in ("-", "none") else [int(word) for word in text.split(",")]


def _read_summary() -> dict[str, Summary]:
    path = HWLOC_LINUX / "SUMMARY.tsv"
    if not path.exists():
        return {}
    rows = {}
    for line in path.read_text().splitlines()[1:]:
        f = line.split("\t")
        files, unknown = (int(n) for n in f[12].split("/"))
        rows[f[0]] = Summary(
            fixture=f[0],
            cpu_dirs=int(f[2]),
            cpu_online=f[3],
            node_ids=_ints(f[5]),
            node_cpu_file=f[6],
            cpuless=_ints(f[7]),
            memoryless=_ints(f[8]),
            distance_values=_ints(f[9]),
            symmetric=f[10],
            offline_flags=int(f[11]),
            numa_node_files=files,
            numa_node_unknown=unknown,
            hwloc_default_nodes=_ints(f[13]),
        )
    return rows


SUMMARY = _read_summary()
HWLOC_NAMES = [name for name in MACHINES if name in SUMMARY]


def test_summary_covers_every_hwloc_machine() -> None:
    if not SUMMARY:
        pytest.skip(f"{HWLOC_LINUX / 'SUMMARY.tsv'} is absent")
    assert sorted(SUMMARY) == sorted(m for m in MACHINES if m not in NRI_NAMES)


def _symmetric(topology: HostTopology) -> bool:
    matrix = distance_matrix(topology)
    return all(matrix[i][j] == matrix[j][i] for i in range(len(matrix)) for j in range(i))


# Distance values in sysfs that no online pair of nodes has.
DROPPED_DISTANCES = {
    "offline-cpu0-node0": Because((21,), "node 1's distance to node 0, which is offline"),
}


@pytest.mark.parametrize("name", HWLOC_NAMES)
def test_raw_facts_of_summary(name: str, sysfs_machines: MachineStore) -> None:
    row = SUMMARY[name]
    root = sysfs_machines.root(name)
    topology = read_topology(root)
    ids = [node.id for node in topology.nodes]

    if row.node_ids:
        assert ids == row.node_ids
    else:  # 2arm-2c: no node folder at all, so one node 0 holds every CPU
        assert ids == [0]
        assert any("no NUMA nodes" in note for note in topology.notes)
        assert topology.nodes[0].cpus == topology.online_cpus
    assert len(topology.cpus) == row.cpu_dirs
    if row.cpu_online != "-":
        assert topology.online_cpus.to_list() == row.cpu_online
    else:  # old kernels: cpuN/online flags, a CPU without one (or with an empty one) is online
        assert len(topology.online_cpus) == row.cpu_dirs - row.offline_flags
    assert [node.id for node in topology.nodes if not node.cpus] == row.cpuless
    assert [node.id for node in topology.nodes if node.memory_kib == 0] == row.memoryless
    values = {d for node in topology.nodes for _, d in node.distances}
    shown = set(row.distance_values) - set(DROPPED_DISTANCES.get(name, Because((), "")).nodes)
    assert values == (shown or {10})  # 2arm-2c: no distance file, only the fallback's own 10
    assert _symmetric(topology) == (row.symmetric in ("yes", "n/a"))
    if row.node_cpu_file == "cpumap":  # old kernel: the CPUs came from decoding the hex masks
        node_dir = root / "sys/devices/system/node"
        assert not list(node_dir.glob("node*/cpulist"))
        assert all(node.cpus for node in topology.nodes if node.id not in row.cpuless)


# ---------------------------------------------------------------------------------------------
# PCI devices: numa_node, -1 is unknown (None), never node 0


@dataclass(frozen=True)
class PciAccounting:
    """Why the PCI devices we read differ from SUMMARY's count of every `numa_node` file."""

    non_pci_known: int = 0  # numa_node files of devices that are not PCI (ACPI, platform)
    unlisted_known: int = 0  # PCI devices in sys/devices without a bus/pci/devices link
    without_file: int = 0  # PCI devices whose folder has no numa_node file: unknown too
    reason: str = ""


PCI_ACCOUNTING = {
    "32em64t-2n8c+dax+nvme+mic+dimms": PciAccounting(
        non_pci_known=9, reason="9 ACPI devices under sys/devices/LNXSYSTM:00 have numa_node"
    ),
    "32intel64-2p8co2t+8ve": PciAccounting(
        unlisted_known=1,
        reason="bridge 0000:5f:03.0 is in sys/devices, but the dump lacks its bus/pci link",
    ),
    "fakeheteromemtiers": PciAccounting(
        non_pci_known=16, reason="8 ACPI (LNXSYSTM:00) and 8 platform (hmem) devices"
    ),
    "fakememinitiators-1np2c+1npp+gi": PciAccounting(
        non_pci_known=4, reason="4 ACPI devices under sys/devices/LNXSYSTM:00"
    ),
    "nvidiagpunumanodes": PciAccounting(
        without_file=6, reason="the six GPU folders were trimmed to class and local_cpus"
    ),
}


def _raw_numa_node(path: Path) -> int | None:
    if not path.exists():
        return None
    value = int(path.read_bytes().replace(b"\0", b"").strip())
    return None if value == -1 else value


@pytest.mark.parametrize("name", HWLOC_NAMES)
def test_pci_numa_node_counts(name: str, sysfs_machines: MachineStore) -> None:
    row = SUMMARY[name]
    extra = PCI_ACCOUNTING.get(name, PciAccounting())
    root = sysfs_machines.root(name)
    devices = read_topology(root).pci_devices

    known = [d for d in devices if d.numa_node is not None]
    unknown = [d for d in devices if d.numa_node is None]
    known_files = row.numa_node_files - row.numa_node_unknown
    assert len(known) + extra.non_pci_known + extra.unlisted_known == known_files, extra.reason
    assert len(unknown) - extra.without_file == row.numa_node_unknown, extra.reason
    for device in devices:  # -1 (or no file) is None, never 0
        folder = root / "sys/bus/pci/devices" / device.bdf
        assert device.numa_node == _raw_numa_node(folder / "numa_node"), device.bdf
    missing = [
        d for d in devices if not (root / "sys/bus/pci/devices" / d.bdf / "numa_node").exists()
    ]
    assert len(missing) == extra.without_file


def test_pci_unknown_locality_is_none_not_zero(sysfs_machines: MachineStore) -> None:
    """40intel64-2g2n4c+pcilocality: firmware gives no locality, 36 of 37 files say -1."""
    root = sysfs_machines.root("40intel64-2g2n4c+pcilocality")
    devices = read_topology(root).pci_devices
    minus_one = [
        d
        for d in devices
        if (root / "sys/bus/pci/devices" / d.bdf / "numa_node").read_text().strip() == "-1"
    ]
    assert len(minus_one) == 36
    assert all(d.numa_node is None for d in minus_one)
    data = json.loads(_cli_output(["topology", "--sysfs-root", str(root), "--json"]))
    by_bdf = {d["bdf"]: d["numa_node"] for d in data["pci_devices"]}
    assert all(by_bdf[d.bdf] is None for d in minus_one)


# ---------------------------------------------------------------------------------------------
# hwloc's view, with its differences from raw sysfs accounted for


@dataclass(frozen=True)
class Cgroup:
    """The cpuset the captured process ran in: hwloc hides CPUs and nodes outside it."""

    cpus_file: str
    cpus: str
    mems_file: str
    mems: str


@dataclass(frozen=True)
class HwlocCase:
    id: str
    machine: str
    # Stored lstopo output (text `-v`, or XML); None when only the live run exists.
    reference: Path | None
    env: dict[str, str] = field(default_factory=dict)
    live_options: tuple[str, ...] = ("-v", "-")
    hidden: Because | None = None
    # CPU-less node → the nodes whose CPUs hwloc gives it as locality.
    locality: dict[int, Because] = field(default_factory=dict)
    cgroup: Cgroup | None = None
    # The case that is hwloc's default run, whose nodes SUMMARY.tsv lists.
    summary: bool = True
    # Why hwloc prints no distance matrix for this machine ("" when it does).
    no_matrix: str = ""


def _case(machine: str, output: str | None = None, **settings: Any) -> HwlocCase:
    """A case whose reference is `hwloc-2.9.0/<output or machine>.output`."""
    settings.setdefault("reference", HWLOC_290 / f"{output or machine}.output")
    return HwlocCase(id=settings.pop("id", machine), machine=machine, **settings)


KNL_MCDRAM = "MCDRAM node of an SNC-4 quadrant sits with that quadrant's CPUs (distance 31)"
KNL_NO_MATRIX = (
    "hwloc 2.9 prints no latency matrix for this KNL tree (seen in its stored output); the "
    "raw rows are checked by test_distances_follow_online_node_order"
)
PMEM = "Optane PMem node sits with the DRAM node of its socket (distance 17)"
NVIDIA_KEEP = {"HWLOC_KEEP_NVIDIA_GPU_NUMA_NODES": "1"}
OVERLAP = {"HWLOC_DEBUG_ALLOW_OVERLAPPING_NODE_CPUSETS": "1", "HWLOC_CPUKINDS_MAXFREQ": "1"}

HWLOC_CASES = [
    _case("128arm-2pa2n8cluster4co"),
    # Node 16 has no CPUs; hwloc puts it in a Group of its own, so its cpuset is empty too.
    _case("128ia64-17n4s2c"),
    _case(
        "16amd64-4n4c-cgroup-distance-merge",
        live_options=("-", "-v", "--filter", "all:structure", "--no-icaches"),
        cgroup=Cgroup("dev/cpuset/prout/cpus", "0-3", "dev/cpuset/prout/mems", "2-3"),
    ),
    _case("16amd64-8n2c"),
    _case(
        "16amd64-8n2c-cpusets",
        cgroup=Cgroup("dev/cpuset/dummy/cpus", "0-6,12-15", "dev/cpuset/dummy/mems", "1-4"),
    ),
    _case(
        "16amd64-8n2c-cpusets",
        "16amd64-8n2c-cpusets_noadmin",
        id="16amd64-8n2c-cpusets-disallowed",
        live_options=("-", "-v", "--disallowed"),
        summary=False,
    ),
    _case("16em64t-4s2c2t-offlines"),
    _case("256ia64-64n2s2c"),
    _case("256ppc-8n8s4t"),
    _case("2arm-2c"),
    _case(
        "32amd64-4s2n4c-cgroup2",
        cgroup=Cgroup(
            "cgroup/unified/uid_2008/job_15389/step_0/cpuset.cpus.effective",
            "0-5",
            "cgroup/unified/uid_2008/job_15389/step_0/cpuset.mems.effective",
            "0-5",
        ),
    ),
    _case("32em64t-2n8c+dax+nvme+mic+dimms", "32em64t-2n8c+1mic"),  # XML, --whole-io
    _case("32intel64-2p8co2t+8ve"),
    _case("40intel64-2g2n4c+pcilocality", "40intel64-2g2n4c+pci"),  # XML, forced PCI locality
    _case("48amd64-4pa2n6c-sparse", "48amd64-4d2n6c-sparse"),
    _case("64amd64-4s2n4ca2co"),
    _case(
        "64intel64-fakeKNL-SNC4-hybrid",
        locality={
            4: Because((1,), KNL_MCDRAM),
            5: Because((2,), KNL_MCDRAM),
            6: Because((3,), KNL_MCDRAM),
            7: Because((0,), KNL_MCDRAM),
        },
        no_matrix=KNL_NO_MATRIX,
    ),
    _case(
        "64intel64-fakeKNL-SNC4-hybrid",
        "64intel64-fakeKNL-SNC4-hybrid-msc",
        id="64intel64-fakeKNL-SNC4-hybrid-msc",
        env={"HWLOC_KNL_MSCACHE_L3": "0"},
        locality={
            4: Because((1,), KNL_MCDRAM),
            5: Because((2,), KNL_MCDRAM),
            6: Because((3,), KNL_MCDRAM),
            7: Because((0,), KNL_MCDRAM),
        },
        summary=False,
        no_matrix=KNL_NO_MATRIX,
    ),
    _case(
        "8em64t-2s2ca2c-buggynuma",
        hidden=Because(
            (1, 2, 3, 4, 5, 6, 7),
            "firmware bug: every node lists CPUs 0-7 at distance 10 from all; hwloc merges "
            "them into node 0 and keeps node 0's memory",
        ),
    ),
    _case("96em64t-4no4pa3ca2co", "96em64t-4n4d3ca2co"),
    _case("fakecpuid1f-64intel64-2p4d2n2c2t"),
    _case(
        "fakeheterocpunuma",
        reference=None,
        hidden=Because(
            (4, 5),
            "nodes 4 (CPUs 16-23) and 5 (12-23) overlap node 3 (20-23) without nesting; "
            "hwloc drops them unless HWLOC_DEBUG_ALLOW_OVERLAPPING_NODE_CPUSETS=1",
        ),
        locality={2: Because((0, 1), "CPU-less node 2 sits above nodes 0 and 1 (distance 30)")},
    ),
    _case(
        "fakeheterocpunuma",  # XML with the upstream test's environment: all six nodes
        id="fakeheterocpunuma-overlapping",
        env=OVERLAP,
        locality={2: Because((0, 1), "CPU-less node 2 sits above nodes 0 and 1 (distance 30)")},
        summary=False,
    ),
    _case(
        "fakeheteromemtiers",
        locality={
            4: Because((1,), "HBM of package 1 (exposed as DAX)"),
            6: Because((1,), "NVM of package 1 (DAX)"),
            8: Because((0,), "NVM of package 0 (DAX)"),
            9: Because((2,), "NVM of package 2 (DAX)"),
        },
    ),
    _case(
        "fakememinitiators-1np2c+1npp+gi",
        hidden=Because(
            (0, 1, 2, 3, 4),
            "memoryless CPU nodes 0-3 and generic initiator 4: hwloc keeps their CPUs only",
        ),
        locality={
            5: Because((0,), "HMAT initiator of DRAM node 5 is node 0"),
            6: Because((2,), "HMAT initiator of DRAM node 6 is node 2"),
            7: Because((0, 2), "HMAT initiators of NVM node 7 are nodes 0 and 2"),
            8: Because((1,), "HMAT initiator of DRAM node 8 is node 1"),
            9: Because((3,), "HMAT initiator of DRAM node 9 is node 3"),
            10: Because((1, 3), "HMAT initiators of NVM node 10 are nodes 1 and 3"),
        },
    ),
    # No 2.9.0 output (newer fixture): hwloc master's console, whose sizes are rounded (GiB).
    HwlocCase("memorysidecaches", "memorysidecaches", HWLOC_LINUX / "memorysidecaches.console"),
    _case(
        "nvidiagpunumanodes",
        hidden=Because(
            (250, 251, 252, 253, 254, 255),
            "NVIDIA GPU memory nodes are hidden unless HWLOC_KEEP_NVIDIA_GPU_NUMA_NODES=1",
        ),
    ),
    _case(
        "nvidiagpunumanodes",
        "nvidiagpunumanodes.kept",
        id="nvidiagpunumanodes-kept",
        env=NVIDIA_KEEP,
        locality={
            **{
                n: Because((8,), "V100 on a PCI domain of the node 8 socket")
                for n in (250, 251, 252)
            },
            **{
                n: Because((0,), "V100 on a PCI domain of the node 0 socket")
                for n in (253, 254, 255)
            },
        },
        summary=False,
    ),
    _case("offline-cpu0-node0"),
    *(
        HwlocCase(name, name, NRI_LSTOPO / f"{name}.console", locality=locality, summary=False)
        for name, locality in [
            ("server", {4: Because((0,), PMEM), 5: Because((2,), PMEM)}),
            (
                "sample2",
                {
                    4: Because((0,), PMEM),
                    5: Because((2,), PMEM),
                    6: Because((1,), PMEM),
                    7: Because((3,), PMEM),
                },
            ),
            ("4-socket-server-nosnc", {}),
            ("2-socket-4-node-40-core", {}),
            ("desktop", {}),
        ]
    ),
]


def _cpus(text: str) -> frozenset[int]:
    """A small kernel-list parser of our own (no strides: cpuset files here have none)."""
    cpus: set[int] = set()
    for part in filter(None, text.replace("\0", "").strip().split(",")):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return frozenset(cpus)


def expected_hwloc_nodes(
    topology: HostTopology, case: HwlocCase, root: Path
) -> dict[int, tuple[frozenset[int], int]]:
    """Our nodes turned into what hwloc shows: node → (CPUs, local memory KiB)."""
    by_id = {node.id: node for node in topology.nodes}
    allowed_cpus = allowed_mems = None
    if case.cgroup:
        assert _cpus((root / case.cgroup.cpus_file).read_text()) == _cpus(case.cgroup.cpus)
        assert _cpus((root / case.cgroup.mems_file).read_text()) == _cpus(case.cgroup.mems)
        allowed_cpus, allowed_mems = _cpus(case.cgroup.cpus), _cpus(case.cgroup.mems)
    hidden = case.hidden.nodes if case.hidden else ()
    expected = {}
    for node in topology.nodes:
        if node.id in hidden or (allowed_mems is not None and node.id not in allowed_mems):
            continue
        cpus = frozenset(node.cpus)
        if node.id in case.locality:
            assert not cpus, f"node {node.id} has CPUs: hwloc would not give it a locality"
            cpus = frozenset(c for n in case.locality[node.id].nodes for c in by_id[n].cpus)
        if allowed_cpus is not None:
            cpus &= allowed_cpus
        expected[node.id] = (cpus, node.memory_kib)
    return expected


def check_against_hwloc(
    topology: HostTopology, case: HwlocCase, root: Path, view: HwlocView
) -> None:
    expected = expected_hwloc_nodes(topology, case, root)
    assert sorted(view.nodes) == sorted(expected)
    for node_id, (cpus, memory_kib) in expected.items():
        seen = view.nodes[node_id]
        assert (node_id, sorted(seen.cpus)) == (node_id, sorted(cpus))
        assert seen.memory_matches(memory_kib), (node_id, seen.local_kib, memory_kib)
    if len(expected) > 1 and not case.no_matrix:
        assert view.distances, "hwloc printed no distance matrix to compare with"
    ours = {node.id: dict(node.distances) for node in topology.nodes}
    for (src, dst), value in view.distances.items():
        assert ours[src][dst] == value, (src, dst)


def _parse_reference(path: Path) -> HwlocView:
    text = path.read_text()
    return parse_xml(text) if text.lstrip().startswith("<?xml") else parse_console(text)


STORED_CASES = [pytest.param(case, id=case.id) for case in HWLOC_CASES if case.reference]


@pytest.mark.parametrize("case", STORED_CASES)
def test_nodes_match_stored_hwloc_output(case: HwlocCase, sysfs_machines: MachineStore) -> None:
    assert case.reference is not None
    if not case.reference.exists():
        pytest.skip(f"{case.reference} is absent")
    root = sysfs_machines.root(case.machine)
    check_against_hwloc(read_topology(root), case, root, _parse_reference(case.reference))


def run_lstopo(root: Path, options: tuple[str, ...], env: dict[str, str]) -> str:
    """Debian's lstopo on a captured tree, as `hwloc-linux/README.md` says to run it."""
    assert LSTOPO is not None
    settings = {
        **os.environ,
        "LANG": "C",
        "LC_ALL": "C",
        "HWLOC_DONT_ADD_VERSION_INFO": "1",
        "HWLOC_XML_EXPORT_SUPPORT": "0",
        "HWLOC_DEBUG_SORT_CHILDREN": "1",
        **env,
    }
    command = [LSTOPO, "--if", "fsroot", "--input", str(root), *options]
    done = subprocess.run(command, env=settings, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


needs_lstopo = pytest.mark.skipif(
    LSTOPO is None, reason="lstopo-no-graphics is not installed (Debian hwloc-nox; make deps)"
)


@needs_lstopo
@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in HWLOC_CASES])
def test_nodes_match_lstopo(case: HwlocCase, sysfs_machines: MachineStore) -> None:
    root = sysfs_machines.root(case.machine)
    view = parse_console(run_lstopo(root, case.live_options, case.env))
    check_against_hwloc(read_topology(root), case, root, view)


@pytest.mark.parametrize(
    "case", [pytest.param(case, id=case.id) for case in HWLOC_CASES if case.summary]
)
def test_accounting_gives_summary_hwloc_nodes(
    case: HwlocCase, sysfs_machines: MachineStore
) -> None:
    """SUMMARY.tsv's last column is the node set of one default lstopo run: our nodes, less
    the ones the accounting hides, must be exactly those."""
    if case.machine not in SUMMARY:
        pytest.skip("SUMMARY.tsv is absent")
    root = sysfs_machines.root(case.machine)
    expected = expected_hwloc_nodes(read_topology(root), case, root)
    assert sorted(expected) == sorted(SUMMARY[case.machine].hwloc_default_nodes)


def test_every_machine_has_a_default_hwloc_case() -> None:
    if not SUMMARY:
        pytest.skip(f"{HWLOC_LINUX / 'SUMMARY.tsv'} is absent")
    assert sorted({c.machine for c in HWLOC_CASES if c.summary}) == sorted(SUMMARY)
    assert {c.machine for c in HWLOC_CASES} == set(MACHINES)


# ---------------------------------------------------------------------------------------------
# Distances


# Rows whose width is not the number of online nodes, and the nodes their columns stand for.
ROW_COLUMNS = {
    "offline-cpu0-node0": Because(
        (0, 1), "hand edit: node 0 went offline but node 1's row kept both possible nodes"
    ),
}


def raw_distance_rows(root: Path, name: str) -> dict[int, dict[int, int]]:
    """Each online node's `distance` row, column j being the j-th online node."""
    node_dir = root / "sys/devices/system/node"
    if (node_dir / "online").exists():
        online = sorted(_cpus((node_dir / "online").read_text()))
    else:  # old kernels: every node folder is an online node
        online = sorted(int(path.name[4:]) for path in node_dir.glob("node[0-9]*"))
    rows = {}
    for node in online:
        row = [int(w) for w in (node_dir / f"node{node}/distance").read_text().split()]
        columns = ROW_COLUMNS[name].nodes if name in ROW_COLUMNS else online
        assert len(row) == len(columns), f"node{node}/distance: {row}"
        rows[node] = {c: d for c, d in zip(columns, row, strict=True) if c in online}
    return rows


@pytest.mark.parametrize("name", [n for n in MACHINES if n != "2arm-2c"])
def test_distances_follow_online_node_order(name: str, sysfs_machines: MachineStore) -> None:
    root = sysfs_machines.root(name)
    topology = read_topology(root)
    ours = {node.id: dict(node.distances) for node in topology.nodes}
    assert ours == raw_distance_rows(root, name)
    for node in topology.nodes:  # the diagonal is the local distance
        assert dict(node.distances)[node.id] == 10


def test_offline_node_row_is_read_by_possible_nodes(sysfs_machines: MachineStore) -> None:
    """offline-cpu0-node0: row `21 10` of node 1 covers possible nodes 0-1; libnuma reads
    it as 21 to itself, we take column 1 and say so."""
    topology = read_topology(sysfs_machines.root("offline-cpu0-node0"))
    assert [(n.id, n.distances) for n in topology.nodes] == [(1, [(1, 10)])]
    assert any("lists the possible nodes" in note for note in topology.notes)


@pytest.mark.parametrize(
    "name", ["server", "sample2", "4-socket-server-nosnc", "2-socket-4-node-40-core"]
)
def test_distances_match_lstopo_distances_file(name: str, sysfs_machines: MachineStore) -> None:
    reference = NRI_LSTOPO / f"{name}.distances.txt"
    if not reference.exists():
        pytest.skip(f"{reference} is absent")
    matrix = parse_distances_file(reference.read_text())
    topology = read_topology(sysfs_machines.root(name))
    ours = {(n.id, other): d for n in topology.nodes for other, d in n.distances}
    assert ours == matrix


def test_asymmetric_distances_stay_asymmetric(sysfs_machines: MachineStore) -> None:
    """fakeheterocpunuma: d(2→3) = 40 but d(3→2) = 50, in sysfs and in hwloc's XML."""
    root = sysfs_machines.root("fakeheterocpunuma")
    topology = read_topology(root)
    ours = {(n.id, other): d for n in topology.nodes for other, d in n.distances}
    assert (ours[(2, 3)], ours[(3, 2)]) == (40, 50)
    reference = HWLOC_290 / "fakeheterocpunuma.output"
    if reference.exists():
        assert parse_xml(reference.read_text()).distances == ours
    data = json.loads(_cli_output(["topology", "--sysfs-root", str(root), "--json"]))
    index = {node["id"]: i for i, node in enumerate(data["nodes"])}
    assert data["nodes"][index[2]]["distances"][index[3]] == 40
    assert data["nodes"][index[3]]["distances"][index[2]] == 50


# ---------------------------------------------------------------------------------------------
# Reader bugs the fixtures revealed, one test each, named by the fixture


def test_empty_cpu_online_flags_count_as_online(sysfs_machines: MachineStore) -> None:
    """128ia64-17n4s2c: every cpuN/online is an empty file (the capture could not read it);
    the reader used to fail on it."""
    topology = read_topology(sysfs_machines.root("128ia64-17n4s2c"))
    assert topology.online_cpus.to_list() == "0-127"
    assert any("cpuN/online is empty for CPUs 0-127" in note for note in topology.notes)


@pytest.mark.parametrize(
    ("name", "smt"),
    [
        pytest.param("16em64t-4s2c2t-offlines", 2, id="16em64t-4s2c2t-offlines-mask-only"),
        pytest.param("32intel64-2p8co2t+8ve", 2, id="32intel64-2p8co2t+8ve-list"),
        pytest.param("server", 2, id="server-list"),
        pytest.param("256ia64-64n2s2c", 1, id="256ia64-64n2s2c-mask-only"),
    ],
)
def test_smt_siblings_match_hwloc_cores(name: str, smt: int, sysfs_machines: MachineStore) -> None:
    """Old kernels have only the `thread_siblings` mask; the reader used to ignore it and give
    each CPU itself alone. Siblings (online ones) must be hwloc's Core objects."""
    root = sysfs_machines.root(name)
    topology = read_topology(root)
    online = set(topology.online_cpus)
    siblings = {frozenset(set(c.siblings) & online) for c in topology.cpus if c.id in online}
    assert max(len(s) for s in siblings) == smt
    reference = next((c.reference for c in HWLOC_CASES if c.machine == name), None)
    if reference is None or not reference.exists():
        pytest.skip(f"no stored hwloc output for {name}")
    assert siblings == _hwloc_cores(reference.read_text())


def _hwloc_cores(text: str) -> set[frozenset[int]]:
    """PU sets of the `Core` objects of a `lstopo -v` text."""
    cores: list[set[int]] = []
    level = -1
    for line in text.splitlines():
        indent = (len(line) - len(line.lstrip(" "))) // 2
        word = line.strip().split(" ", 1)[0]
        if word == "Core":
            cores.append(set())
            level = indent
        elif word == "PU" and cores and indent > level:
            cores[-1].add(int(line.split("P#")[1].split(")")[0]))
        elif indent <= level:
            level = -1
    return {frozenset(core) for core in cores}


def test_missing_memfree_is_unknown_not_zero(sysfs_machines: MachineStore) -> None:
    """fakeheterocpunuma: nodeN/meminfo holds MemTotal only; free memory is unknown (numactl
    prints `<not available>`), it was shown as 0 MB."""
    root = sysfs_machines.root("fakeheterocpunuma")
    topology = read_topology(root)
    assert [(n.memory_kib, n.free_kib) for n in topology.nodes] == [(1048576, None)] * 6
    assert "node 0 free: <not available>" in format_numactl(topology).splitlines()
    data = json.loads(_cli_output(["topology", "--sysfs-root", str(root), "--json"]))
    assert [n["free_kib"] for n in data["nodes"]] == [None] * 6


def test_online_cpus_of_an_offline_node_are_noted(sysfs_machines: MachineStore) -> None:
    """offline-cpu0-node0: node 0 is offline, yet its CPUs 4-20 (even) are online: they belong
    to no node we can place on, and hwloc shows them outside every NUMA node too."""
    topology = read_topology(sysfs_machines.root("offline-cpu0-node0"))
    assert topology.online_cpus.to_list() == "4-20"
    assert topology.nodes[0].cpus.to_list() == "5,7,9,11,13,15,17,19"
    assert "online CPUs 4,6,8,10,12,14,16,18,20 belong to no online node" in topology.notes


def test_node_cpus_are_cut_to_online_cpus(sysfs_machines: MachineStore) -> None:
    """nvidiagpunumanodes: node 8 lists CPUs 88-175, only 88-103 exist and are online."""
    root = sysfs_machines.root("nvidiagpunumanodes")
    assert (root / "sys/devices/system/node/node8/cpulist").read_text().strip() == "88-175"
    topology = read_topology(root)
    assert {n.id: n.cpus.to_list() for n in topology.nodes if n.cpus} == {0: "0-15", 8: "88-103"}


def test_has_cpu_is_not_trusted(sysfs_machines: MachineStore) -> None:
    """offline-cpu0-node0: node/has_cpu is empty (hand edit), node 1 still has its CPUs."""
    root = sysfs_machines.root("offline-cpu0-node0")
    assert (root / "sys/devices/system/node/has_cpu").read_text().strip() == ""
    assert read_topology(root).nodes[0].cpus


@pytest.mark.parametrize(
    ("name", "file"),
    [
        ("128arm-2pa2n8cluster4co", "node/node0/cpulist"),
        ("128arm-2pa2n8cluster4co", "cpu/cpu0/topology/thread_siblings_list"),
        ("40intel64-2g2n4c+pcilocality", "node/online"),
        ("8em64t-2s2ca2c-buggynuma", "node/online"),
        ("64amd64-4s2n4ca2co", "node/possible"),
    ],
)
def test_nul_bytes_are_ignored(name: str, file: str, sysfs_machines: MachineStore) -> None:
    root = sysfs_machines.root(name)
    raw = (root / "sys/devices/system" / file).read_bytes()
    assert b"\0" in raw
    topology = read_topology(root)
    value = _cpus(raw.decode())
    if file.startswith("node/node0"):
        assert set(topology.nodes[0].cpus) == value
    elif file.startswith("cpu/cpu0"):
        assert set(topology.cpus[0].siblings) == value
    elif file == "node/online":
        assert {n.id for n in topology.nodes} == value
    else:
        assert {n.id for n in topology.nodes} <= value


# ---------------------------------------------------------------------------------------------
# The command: --json and the numactl view


def _cli_output(argv: list[str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "kata_numa", *argv], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("name", list(MACHINES))
def test_topology_json(
    name: str, sysfs_machines: MachineStore, capsys: pytest.CaptureFixture[str]
) -> None:
    root = sysfs_machines.root(name)
    assert cli.main(["topology", "--sysfs-root", str(root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)

    topology = read_topology(root)
    assert [node["id"] for node in data["nodes"]] == [node.id for node in topology.nodes]
    for item, node in zip(data["nodes"], topology.nodes, strict=True):
        assert type(item["id"]) is int
        assert type(item["memory_kib"]) is int and item["memory_kib"] == node.memory_kib
        assert item["cpus"] == node.cpus.to_list()
        assert item["cpus"] != "" or not node.cpus
        assert all(type(d) is int for d in item["distances"])
        assert item["distances"] == [dict(node.distances)[n.id] for n in topology.nodes]


def test_topology_json_by_subprocess(sysfs_machines: MachineStore) -> None:
    """The installed entry point, end to end, on a machine with memory-only nodes."""
    root = sysfs_machines.root("nvidiagpunumanodes")
    data = json.loads(_cli_output(["topology", "--sysfs-root", str(root), "--json"]))
    nodes = {node["id"]: node for node in data["nodes"]}
    assert sorted(nodes) == [0, 8, 250, 251, 252, 253, 254, 255]
    assert nodes[250] == {**nodes[250], "cpus": "", "memory_kib": 15728640}
    assert nodes[0]["distances"] == [10, 40, 80, 80, 80, 80, 80, 80]


# `numactl --hardware` (2.0.16, Debian bookworm) run on these trees, in a private mount
# namespace with the tree's sys/devices/system bound over /sys/devices/system; numactl ends
# each distance line with a blank, we do not.
NUMACTL_48AMD64 = """\
available: 8 nodes (0-2,33-34,45,72-73)
node 0 cpus: 0 1 2 3 4 5
node 0 size: 8189 MB
node 0 free: 7918 MB
node 1 cpus: 6 7 8 9 10 11
node 1 size: 16384 MB
node 1 free: 16111 MB
node 2 cpus: 12 13 14 15 16 17
node 2 size: 8192 MB
node 2 free: 7817 MB
node 33 cpus: 18 19 20 21 22 23
node 33 size: 16384 MB
node 33 free: 16090 MB
node 34 cpus: 24 25 26 27 28 29
node 34 size: 8192 MB
node 34 free: 8027 MB
node 45 cpus: 30 31 32 33 34 35
node 45 size: 16384 MB
node 45 free: 16111 MB
node 72 cpus: 36 37 38 39 40 41
node 72 size: 8192 MB
node 72 free: 8029 MB
node 73 cpus: 42 43 44 45 46 47
node 73 size: 16384 MB
node 73 free: 16092 MB
node distances:
node   0   1   2  33  34  45  72  73
  0:  10  16  16  22  16  22  16  22
  1:  16  10  22  16  16  22  22  16
  2:  16  22  10  16  16  16  16  16
 33:  22  16  16  10  16  16  22  22
 34:  16  16  16  16  10  16  16  22
 45:  22  22  16  16  16  10  22  16
 72:  16  22  16  22  16  22  10  16
 73:  22  16  16  22  22  16  16  10
"""

NUMACTL_NVIDIA_DISTANCES = """\
node distances:
node   0   8  250  251  252  253  254  255
  0:  10  40  80  80  80  80  80  80
  8:  40  10  80  80  80  80  80  80
 250:  80  80  10  80  80  80  80  80
 251:  80  80  80  10  80  80  80  80
 252:  80  80  80  80  10  80  80  80
 253:  80  80  80  80  80  10  80  80
 254:  80  80  80  80  80  80  10  80
 255:  80  80  80  80  80  80  80  10
"""


def test_numactl_view_sparse_nodes(sysfs_machines: MachineStore) -> None:
    root = sysfs_machines.root("48amd64-4pa2n6c-sparse")
    assert format_numactl(read_topology(root)) + "\n" == NUMACTL_48AMD64


def test_numactl_view_memory_only_nodes(sysfs_machines: MachineStore) -> None:
    text = format_numactl(read_topology(sysfs_machines.root("nvidiagpunumanodes")))
    lines = text.splitlines()
    assert lines[0] == "available: 8 nodes (0,8,250-255)"
    assert lines[lines.index("node 250 cpus:") + 1] == "node 250 size: 15360 MB"
    start = lines.index("node distances:")
    assert "\n".join(lines[start : start + 10]) + "\n" == NUMACTL_NVIDIA_DISTANCES
    gpus = "0004:05:00.0 0004:06:00.0 0006:00:00.0 0007:00:00.0 0035:04:00.0 0035:05:00.0"
    assert f"gpus with unknown node (numa_node -1 or none): {gpus}" in lines


def _numactl_on(root: Path) -> str:
    """`numactl --hardware` on a captured tree: its sys/devices/system bound over ours in a
    private mount namespace (root only; nothing outside the namespace sees the mount)."""
    if NUMACTL is None or shutil.which("unshare") is None:
        pytest.skip("numactl or unshare is not installed (Debian numactl; make deps)")
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, text=True)
    if os.geteuid() != 0 or probe.returncode != 0:
        pytest.skip(f"cannot make a private mount namespace here: {probe.stderr.strip()}")
    script = 'mount --bind "$1" /sys/devices/system || exit 97; exec "$2" --hardware'
    system = str(root / "sys/devices/system")
    command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]
    done = subprocess.run([*command, system, NUMACTL], capture_output=True, text=True, timeout=60)
    if done.returncode == 97:
        pytest.skip(f"cannot bind-mount a capture over /sys/devices/system: {done.stderr}")
    assert done.returncode == 0, done.stderr
    return done.stdout


# Machines whose numactl output we print line for line. Lines we add (huge pages, GPUs, the
# reader's notes) are left out of the comparison; machines where we differ on purpose
# (2arm-2c, offline-cpu0-node0: see format_numactl) are not listed.
NUMACTL_SAME = [
    "16amd64-8n2c",
    "32amd64-4s2n4c-cgroup2",
    "48amd64-4pa2n6c-sparse",
    "nvidiagpunumanodes",  # memory-only GPU nodes 250-255, wider distance columns
    "fakeheterocpunuma",  # no MemFree: "<not available>"
    "64intel64-fakeKNL-SNC4-hybrid",
    "server",
    "desktop",
]
OUR_LINES = (" hugepages ", " gpus: ", "gpus with unknown node", "note: ")


@pytest.mark.parametrize("name", NUMACTL_SAME)
def test_topology_command_prints_what_numactl_prints(
    name: str, sysfs_machines: MachineStore, capsys: pytest.CaptureFixture[str]
) -> None:
    root = sysfs_machines.root(name)
    expected = _numactl_on(root)
    assert cli.main(["topology", "--sysfs-root", str(root)]) == 0
    out = capsys.readouterr().out.splitlines()
    ours = [line for line in out if not any(mark in line for mark in OUR_LINES)]
    assert ours == [line.rstrip() for line in expected.splitlines()]
