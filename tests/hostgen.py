"""Write small sysfs trees the way the kernel lays them out, for tests and examples."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class NodeSpec:
    cpus: str  # kernel list, "" for a memory-only node
    memory_kib: int = 4 << 20
    free_kib: int | None = None
    hugepages: dict[int, tuple[int, int]] = field(default_factory=dict)  # size kB → (nr, free)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _expand(cpus: str) -> list[int]:
    out: list[int] = []
    for part in filter(None, cpus.split(",")):
        first, _, last = part.partition("-")
        out.extend(range(int(first), int(last or first) + 1))
    return out


def make_host(
    root: Path,
    nodes: dict[int, NodeSpec],
    distances: Sequence[Sequence[int]] | None = None,
    online_cpus: str | None = None,
    pci: dict[str, dict[str, str]] | None = None,
) -> Path:
    """Create `root/sys/devices/system/{node,cpu}` (and PCI devices) for the given nodes.

    `distances` rows follow the ascending node IDs; by default 10 on the diagonal, 20 elsewhere.
    `pci` maps a BDF to its files (`numa_node`, `class`, ...).
    """
    system = root / "sys/devices/system"
    ids = sorted(nodes)
    all_cpus = sorted(cpu for spec in nodes.values() for cpu in _expand(spec.cpus))
    node_list = ",".join(str(i) for i in ids)
    _write(system / "node/online", node_list + "\n")
    _write(system / "node/possible", node_list + "\n")
    for row_index, node_id in enumerate(ids):
        spec = nodes[node_id]
        folder = system / f"node/node{node_id}"
        _write(folder / "cpulist", spec.cpus + "\n")
        free = spec.memory_kib // 2 if spec.free_kib is None else spec.free_kib
        _write(
            folder / "meminfo",
            f"Node {node_id} MemTotal: {spec.memory_kib:>12} kB\n"
            f"Node {node_id} MemFree:  {free:>12} kB\n",
        )
        row = distances[row_index] if distances else [10 if j == node_id else 20 for j in ids]
        _write(folder / "distance", " ".join(str(d) for d in row) + "\n")
        for size, (total, free_pages) in spec.hugepages.items():
            pages = folder / f"hugepages/hugepages-{size}kB"
            _write(pages / "nr_hugepages", f"{total}\n")
            _write(pages / "free_hugepages", f"{free_pages}\n")
    cpu_text = _compact(all_cpus)
    _write(system / "cpu/online", (online_cpus if online_cpus is not None else cpu_text) + "\n")
    _write(system / "cpu/possible", cpu_text + "\n")
    for node_id in ids:
        for cpu in _expand(nodes[node_id].cpus):
            topo = system / f"cpu/cpu{cpu}/topology"
            _write(topo / "physical_package_id", f"{node_id}\n")
            _write(topo / "core_id", f"{cpu}\n")
            _write(topo / "thread_siblings_list", f"{cpu}\n")
    for bdf, files in (pci or {}).items():
        device = root / "sys/bus/pci/devices" / bdf
        for name, value in files.items():
            _write(device / name, value + "\n")
    return root


def _compact(cpus: list[int]) -> str:
    runs: list[str] = []
    for cpu in cpus:
        if runs and "-" in runs[-1] and int(runs[-1].split("-")[1]) == cpu - 1:
            runs[-1] = f"{runs[-1].split('-')[0]}-{cpu}"
        elif runs and "-" not in runs[-1] and int(runs[-1]) == cpu - 1:
            runs[-1] = f"{runs[-1]}-{cpu}"
        else:
            runs.append(str(cpu))
    return ",".join(runs)


if __name__ == "__main__":
    import sys

    # The bundled example: a two-node host whose node 0 is CPU 0 and node 1 is CPU 1.
    make_host(
        Path(sys.argv[1]),
        {0: NodeSpec("0", 2 << 20), 1: NodeSpec("1", 2 << 20)},
        distances=[[10, 21], [21, 10]],
    )
