"""A real guest kernel gets exactly the planned NUMA topology.

A Debian kernel (`make guest-kernel` unpacks it into .cache/guest-kernel) boots under TCG with
a busybox initramfs built here; its /init prints every node's cpulist, distance row and
MemTotal to the serial console between markers and powers off. Each boot takes several
seconds, so there are three: two equal nodes, unequal nodes, asymmetric distances.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from kata_numa._native import Plan, plan_guest
from planhosts import hosts
from qemurun import Runner, qemu_binary
from test_plan_qemu import on_node0

CACHE = Path(__file__).resolve().parents[1] / ".cache"
KERNEL = Path(os.environ.get("KATA_NUMA_GUEST_KERNEL", CACHE / "guest-kernel/vmlinuz"))
BUSYBOX = Path("/bin/busybox")
#: MemTotal of a node may fall short of the plan by the kernel's own per-node reservations
#: (the struct page array alone is 1.6 % of the node) ...
MEMORY_TOLERANCE = 0.03
#: ... and, on the node holding it, by the kernel image (it sits at 16 MiB with nokaslr).
BOOT_TIMEOUT = 180.0
PT_INTERP = 3

pytestmark = [
    pytest.mark.guest,
    pytest.mark.skipif(qemu_binary() is None, reason="qemu-system-x86_64 is not installed"),
    pytest.mark.skipif(
        not KERNEL.is_file(),
        reason=f"no guest kernel at {KERNEL}: run "
        "`make guest-kernel` (Debian linux-image-*-amd64, unpacked)",
    ),
    pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio is not installed"),
]

INIT = """#!/bin/busybox sh
b=/bin/busybox
$b mount -t proc proc /proc
$b mount -t sysfs sysfs /sys
echo KNUMA-BEGIN
echo "ONLINE $($b cat /sys/devices/system/node/online)"
for d in /sys/devices/system/node/node*; do
  n=${d##*node}
  echo "NODE $n CPULIST $($b cat $d/cpulist)"
  echo "NODE $n DISTANCE $($b cat $d/distance)"
  echo "NODE $n MEMTOTAL $($b awk '/MemTotal/ {print $4}' $d/meminfo)"
done
$b awk '/Kernel (code|bss)/ {print "KERNEL", $1}' /proc/iomem
echo KNUMA-END
$b poweroff -f
"""


def is_static_elf(path: Path) -> bool:
    """A 64-bit little-endian ELF without a PT_INTERP program header (no dynamic loader)."""
    data = path.read_bytes()
    if data[:6] != b"\x7fELF\x02\x01":
        return False
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    types = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]
    return PT_INTERP not in types


@pytest.fixture(scope="module")
def initramfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not BUSYBOX.is_file() or not is_static_elf(BUSYBOX):
        pytest.skip(f"{BUSYBOX} is missing or not static: install busybox-static")
    tree = tmp_path_factory.mktemp("initramfs")
    for folder in ("bin", "proc", "sys", "dev"):
        (tree / folder).mkdir()
    shutil.copy2(BUSYBOX, tree / "bin/busybox")
    (tree / "init").write_text(INIT)
    (tree / "init").chmod(0o755)
    image = tree.parent / "initramfs.cpio"
    names = subprocess.run(["find", "."], cwd=tree, check=True, capture_output=True).stdout
    with image.open("wb") as out:
        subprocess.run(
            ["cpio", "-o", "-H", "newc", "-R", "0:0", "--quiet"],
            cwd=tree,
            input=names,
            stdout=out,
            check=True,
        )
    return image


@dataclass
class GuestNode:
    cpulist: str
    distance: list[int]
    memtotal_kib: int


def read_console(text: str) -> tuple[dict[int, GuestNode], tuple[int, int]]:
    """Nodes and the kernel image's (start, end) physical addresses from the console."""
    match = re.search(r"KNUMA-BEGIN\r?\n(.*?)KNUMA-END", text, re.S)
    assert match, f"no report on the console:\n{text[-3000:]}"
    fields: dict[tuple[int, str], str] = {}
    kernel: list[tuple[int, int]] = []
    for line in match[1].splitlines():
        words = line.strip().split(" ", 3)
        if words[0] == "NODE":
            fields[(int(words[1]), words[2])] = words[3] if len(words) > 3 else ""
        elif words[0] == "KERNEL":
            start, end = words[1].split("-")
            kernel.append((int(start, 16), int(end, 16)))
    nodes = {
        node: GuestNode(
            fields[(node, "CPULIST")],
            [int(d) for d in fields[(node, "DISTANCE")].split()],
            int(fields[(node, "MEMTOTAL")]),
        )
        for node, key in fields
        if key == "CPULIST"
    }
    return nodes, (min(s for s, _ in kernel), max(e for _, e in kernel))


GUEST_PLANS = {
    "two-equal-nodes": (hosts(2, 2), 4, 2048, {}),
    # 3 + 1 vCPUs in 2 sockets of 2 cores: socket 1 straddles the two guest nodes.
    "unequal-nodes": (hosts(3, 1), 4, 2048, {}),
    "asymmetric-distances": (
        hosts(
            1,
            1,
            1,
            distances=[
                [(0, 10), (1, 20), (2, 30)],
                [(0, 25), (1, 10), (2, 20)],
                [(0, 35), (1, 15), (2, 10)],
            ],
        ),
        3,
        1536,
        {"mapping": ["0", "1", "2"]},
    ),
}


@pytest.mark.parametrize("name", list(GUEST_PLANS))
def test_guest_sees_the_plan(runner: Runner, initramfs: Path, tmp_path: Path, name: str) -> None:
    host, vcpus, memory, kwargs = GUEST_PLANS[name]
    plan: Plan = plan_guest(host, vcpus, memory, **kwargs)
    assert len(plan.nodes) > 1, plan.decisions
    boot = [
        "-kernel",
        str(KERNEL),
        "-initrd",
        str(initramfs),
        "-append",
        "console=ttyS0 loglevel=5 panic=-1 nokaslr",
    ]

    console = runner.boot(
        [*boot, *on_node0(plan.qemu_args)], tmp_path / "console.log", BOOT_TIMEOUT
    )

    assert "WARNING:" not in console, console  # e.g. a socket straddling two nodes
    nodes, (image_start, image_end) = read_console(console)
    assert sorted(nodes) == [n.id for n in plan.nodes]
    node_start = 0
    for planned in plan.nodes:
        seen = nodes[planned.id]
        assert seen.cpulist == planned.vcpus.to_list()
        assert seen.distance == plan.distances[planned.id]
        planned_kib = planned.memory_mib * 1024
        node_end = node_start + (planned.memory_mib << 20)
        allowance = MEMORY_TOLERANCE * planned_kib
        if node_start <= image_start < node_end:
            allowance += (image_end - image_start + 1) / 1024
        assert planned_kib - allowance <= seen.memtotal_kib <= planned_kib, (
            f"guest node {planned.id}: MemTotal {seen.memtotal_kib} kB for {planned_kib} kB "
            f"planned (allowance {allowance:.0f} kB)"
        )
        node_start = node_end
