"""Read hwloc's view of NUMA nodes from its text (`lstopo -v -`) and XML outputs.

Test helper only: it turns an lstopo output into node OS index → (CPUs, local memory) and a
distance matrix by OS index, so tests can compare it with our own sysfs reader. Written for
the outputs of hwloc 2.9 (sizes in KB) and of hwloc master (sizes in KiB/MiB/GiB, rounded).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

# `NUMANode(MCDRAM) L#1 (P#7 local=2097152KB total=...)`; 2.9 prints KB, master KiB..TiB.
_NODE = re.compile(
    r"NUMANode(?:\((?P<subtype>[^)]*)\))? L#(?P<logical>\d+) \(P#(?P<os>\d+) "
    r"local=(?P<size>\d+)(?P<unit>KB|KiB|MiB|GiB|TiB)"
)
_PU = re.compile(r"PU L#\d+ \(P#(?P<os>\d+)\)")
_MATRIX = re.compile(
    r"Relative latency matrix \(name NUMALatency kind \d+\) between \d+ "
    r"NUMANodes \(depth -?\d+\) by (?P<indexing>logical|physical) indexes:"
)
_UNIT_KIB = {"KB": 1, "KiB": 1, "MiB": 1 << 10, "GiB": 1 << 20, "TiB": 1 << 30}
# Objects that hold memory, not CPUs: a NUMA node's CPUs are those of its nearest other parent.
_MEMORY_TYPES = ("NUMANode", "MemCache")


@dataclass(frozen=True)
class HwlocNode:
    os_index: int
    cpus: frozenset[int]
    local_kib: int
    # KiB per printed unit: 1 when the size is exact, 2**20 for a size printed in GiB...
    unit_kib: int = 1
    subtype: str | None = None

    def memory_matches(self, kib: int) -> bool:
        """Whether `kib` prints as this node's size (hwloc master rounds to the nearest unit)."""
        return round(kib / self.unit_kib) == self.local_kib // self.unit_kib


@dataclass(frozen=True)
class HwlocView:
    nodes: dict[int, HwlocNode]
    # NUMALatency by OS index, `(from, to) → value`; empty when the output has no matrix.
    distances: dict[tuple[int, int], int] = field(default_factory=dict)


def _level(line: str) -> int:
    return (len(line) - len(line.lstrip(" "))) // 2


def _object_type(line: str) -> str:
    return re.split(r"[ (]", line.strip(), maxsplit=1)[0]


def parse_console(text: str) -> HwlocView:
    """Parse `lstopo -v -` (or `--of console -v`) text; a matrix printed by logical or
    physical indexes (`-p`) is mapped to OS indexes."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Machine"))
    end = next(
        (i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), len(lines)
    )
    tree = lines[start:end]
    nodes: dict[int, HwlocNode] = {}
    logical_to_os: dict[int, int] = {}
    for index, line in enumerate(tree):
        match = _NODE.search(line)
        if not match or _object_type(line).split("(")[0] != "NUMANode":
            continue
        os_index = int(match["os"])
        logical_to_os[int(match["logical"])] = os_index
        unit = _UNIT_KIB[match["unit"]]
        nodes[os_index] = HwlocNode(
            os_index=os_index,
            cpus=_cpus_under_parent(tree, index),
            local_kib=int(match["size"]) * unit,
            unit_kib=unit,
            subtype=match["subtype"],
        )
    return HwlocView(nodes, _parse_matrix(lines[end:], logical_to_os))


def _cpus_under_parent(tree: list[str], index: int) -> frozenset[int]:
    """PUs below the nearest ancestor of `tree[index]` that is not a memory object."""
    level = _level(tree[index])
    parent = index
    while parent > 0:
        parent -= 1
        if _level(tree[parent]) < level:
            level = _level(tree[parent])
            if _object_type(tree[parent]).split("(")[0] not in _MEMORY_TYPES:
                break
    cpus = set()
    for line in tree[parent + 1 :]:
        if _level(line) <= level:
            break
        if pu := _PU.search(line):
            cpus.add(int(pu["os"]))
    return frozenset(cpus)


def _parse_matrix(lines: list[str], logical_to_os: dict[int, int]) -> dict[tuple[int, int], int]:
    for at, line in enumerate(lines):
        match = _MATRIX.match(line)
        if not match:
            continue
        header = lines[at + 1].split()
        assert header[0] == "index", f"unexpected matrix header {lines[at + 1]!r}"
        columns = [int(word) for word in header[1:]]
        to_os = (lambda i: logical_to_os[i]) if match["indexing"] == "logical" else (lambda i: i)
        matrix = {}
        for row_line in lines[at + 2 : at + 2 + len(columns)]:
            row, *values = (int(word) for word in row_line.split())
            for column, value in zip(columns, values, strict=True):
                matrix[(to_os(row), to_os(column))] = value
        return matrix
    return {}


def parse_distances_file(text: str) -> dict[tuple[int, int], int]:
    """A `lstopo --distances -p` output (the nri-plugins `*.distances.txt` files)."""
    return _parse_matrix(text.splitlines(), {})


def _bitmap(text: str) -> frozenset[int]:
    """hwloc's bitmap format: 32-bit groups `0x...`, most significant first."""
    value = int("".join(group.removeprefix("0x").rjust(8, "0") for group in text.split(",")), 16)
    return frozenset(bit for bit in range(value.bit_length()) if value >> bit & 1)


def parse_xml(text: str) -> HwlocView:
    """Parse `lstopo --of xml` (v2): NUMANode objects and the NUMALatency `distances2`."""
    root = ET.fromstring(text)
    nodes = {}
    for obj in root.iter("object"):
        if obj.get("type") != "NUMANode":
            continue
        os_index = int(obj.attrib["os_index"])
        nodes[os_index] = HwlocNode(
            os_index=os_index,
            cpus=_bitmap(obj.attrib["cpuset"]),
            local_kib=int(obj.get("local_memory", "0")) // 1024,
            subtype=obj.get("subtype"),
        )
    distances: dict[tuple[int, int], int] = {}
    for block in root.iter("distances2"):
        if block.get("type") != "NUMANode" or block.get("name", "NUMALatency") != "NUMALatency":
            continue
        assert block.get("indexing") == "os", "only OS-indexed distances are expected"
        ids = [
            int(word) for element in block.iter("indexes") for word in (element.text or "").split()
        ]
        values = [
            int(w) for element in block.iter("u64values") for w in (element.text or "").split()
        ]
        assert len(values) == len(ids) ** 2, f"{len(values)} distances for {len(ids)} nodes"
        for position, value in enumerate(values):
            distances[(ids[position // len(ids)], ids[position % len(ids)])] = value
    return HwlocView(nodes, distances)
