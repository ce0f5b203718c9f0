"""Benchmarks: each one times kata-numa's code and a plain-Python reference doing the same work
in the same run, and reports the ratio (reference time / our time: above 1 means we are faster).

Run with `make bench`; paste the table into benches/RESULTS.md with the date and machine.
"""

from __future__ import annotations

import contextlib
import platform
import statistics
import sys
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cpuref import ref_parse_list
from hostgen import NodeSpec, make_host
from kata_numa import CpuSet
from kata_numa.topology import read_topology


def best_of(function: Callable[[], object], number: int, repeat: int = 7) -> float:
    """Median seconds per call over `repeat` rounds of `number` calls."""
    rounds = timeit.repeat(function, number=number, repeat=repeat)
    return statistics.median(rounds) / number


def py_read_topology(root: Path) -> list[tuple[int, set[int], int, list[int]]]:
    """The same files the Rust reader reads for nodes, in plain Python."""
    node_dir = root / "sys/devices/system/node"
    online = ref_parse_list((root / "sys/devices/system/cpu/online").read_text())
    nodes = []
    for node in sorted(ref_parse_list((node_dir / "online").read_text())):
        folder = node_dir / f"node{node}"
        cpus = ref_parse_list((folder / "cpulist").read_text()) & online
        total = 0
        for line in (folder / "meminfo").read_text().splitlines():
            words = line.split()
            if words[2:3] == ["MemTotal:"]:
                total = int(words[3])
        distances = [int(d) for d in (folder / "distance").read_text().split()]
        nodes.append((node, cpus, total, distances))
    for cpu in sorted(online):
        topology = root / f"sys/devices/system/cpu/cpu{cpu}/topology"
        for name in ("thread_siblings_list", "physical_package_id", "die_id", "core_id"):
            with contextlib.suppress(FileNotFoundError):
                (topology / name).read_text()
    return nodes


def bench_cpuset_parse() -> tuple[str, float, float]:
    text = ",".join(f"{base}-{base + 27}" for base in range(0, 8192, 32))
    ours = best_of(lambda: CpuSet.parse_list(text), 2000)
    reference = best_of(lambda: ref_parse_list(text), 200)
    return "parse a 7168-CPU list of 256 ranges", ours, reference


def bench_cpuset_algebra() -> tuple[str, float, float]:
    a, b = CpuSet("0-4095:3/4"), CpuSet("0-4095:1/2")
    pa, pb = set(a), set(b)
    ours = best_of(lambda: (a | b) - (a & b), 20000)
    reference = best_of(lambda: (pa | pb) - (pa & pb), 500)
    return "union/intersection/difference of 4096-CPU sets", ours, reference


def bench_topology(root: Path) -> tuple[str, float, float]:
    ours = best_of(lambda: read_topology(root), 20)
    reference = best_of(lambda: py_read_topology(root), 20)
    return "read a 64-node, 1024-CPU host (nodes and per-CPU topology)", ours, reference


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        nodes = {n: NodeSpec(f"{16 * n}-{16 * n + 15}") for n in range(64)}
        root = make_host(Path(tmp), nodes)
        results = [bench_cpuset_parse(), bench_cpuset_algebra(), bench_topology(root)]
    print(f"python {platform.python_version()}, {platform.machine()}")
    print("| benchmark | kata-numa | reference (plain Python) | ratio |")
    print("| --- | --- | --- | --- |")
    for name, ours, reference in results:
        times = f"{ours * 1e6:.1f} µs | {reference * 1e6:.1f} µs"
        print(f"| {name} | {times} | {reference / ours:.1f}x |")


if __name__ == "__main__":
    main()
