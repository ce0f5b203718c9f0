"""Real QEMU takes the planner's arguments and reports the planned layout back.

Plans are made for fake multi-node hosts; their memory bindings are pointed at host node 0
(the only node a test machine may have) before QEMU starts, paused (-S) under TCG. QEMU's own
report (HMP `info numa`, QMP `query-hotpluggable-cpus`, `query-cpus-fast`, `query-memdev`)
must match the plan.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from kata_numa._native import Plan, plan_guest
from planhosts import hosts
from qemurun import Qmp, Runner, qemu_binary

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(qemu_binary() is None, reason="qemu-system-x86_64 is not installed"),
]


def on_node0(args: list[str]) -> list[str]:
    """The plan's arguments with every memory binding moved to host node 0."""
    return [re.sub(r"host-nodes=[^,]+(,host-nodes=[^,]+)*", "host-nodes=0", a) for a in args]


def without_vfio(args: list[str]) -> list[str]:
    """Drop `-device vfio-pci,...` (no device to pass through here); keep buses and ports."""
    kept: list[str] = []
    for arg in args:
        if arg.startswith("vfio-pci,") and kept and kept[-1] == "-device":
            kept.pop()
        else:
            kept.append(arg)
    return kept


def asymmetric(*cpus: int) -> dict[str, Any]:
    n = len(cpus)
    rows = [[(j, 10 if i == j else 20 + 10 * (i > j) + i + j) for j in range(n)] for i in range(n)]
    return {"distances": rows}


PLANS = {
    "equal-4+4": (hosts(4, 4), 8, 1024, {}),
    "unequal-8+2": (hosts(8, 2), 10, 1000, {}),
    "padded-6+3+1-maxcpus-12": (hosts(6, 3, 1), 10, 600, {}),
    "hotplug-room-4-of-8": (hosts(4, 4), 4, 2048, {"max_vcpus": 8, "mapping": ["0", "1"]}),
    "grouped-0-1_2-3": (hosts(2, 2, 2, 2), 8, 1024, {"mapping": ["0-1", "2-3"]}),
    "memory-only-node": (hosts(4, 4, 0), 8, 768, {"mapping": ["0", "1", "2"]}),
    "cpu-only-node": (hosts(4, 4, memory_mib=[4096, 0]), 8, 512, {}),
    "asymmetric-3": (hosts(2, 2, 2, **asymmetric(2, 2, 2)), 6, 600, {"mapping": ["0", "1", "2"]}),
    "confidential-6+3+1": (hosts(6, 3, 1), 10, 600, {"confidential": True}),
    "flat-right-sized": (hosts(8, 8), 4, 512, {}),
    "flat-skipped": (hosts(4, 4, 4, memory_mib=256), 2, 512, {}),
    "vfio-expanders": (
        hosts(4, 4),
        8,
        512,
        {"vfio": [("0000:3b:00.0", 0), ("0000:af:00.0", 1), ("0000:b0:00.0", 1)]},
    ),
}


def info_numa(qmp: Qmp) -> dict[int, tuple[list[int], int]]:
    """`info numa`: node → (present vCPUs, MiB)."""
    text = qmp.hmp("info numa")
    nodes: dict[int, tuple[list[int], int]] = {}
    for match in re.finditer(r"node (\d+) cpus:([ \d]*)\r?\nnode \1 size: (\d+) MB", text):
        nodes[int(match[1])] = ([int(c) for c in match[2].split()], int(match[3]))
    count = int(re.match(r"(\d+) nodes", text)[1])  # type: ignore[index]
    assert len(nodes) == count, text
    return nodes


@pytest.mark.parametrize("name", list(PLANS))
def test_qemu_reports_the_planned_layout(runner: Runner, name: str) -> None:
    host, vcpus, memory, kwargs = PLANS[name]
    plan: Plan = plan_guest(host, vcpus, memory, **kwargs)
    qmp = runner.start(without_vfio(on_node0(plan.qemu_args)), name)

    numa = info_numa(qmp)
    slots = qmp.command("query-hotpluggable-cpus")
    present = qmp.command("query-cpus-fast")
    memdevs = {m["id"]: m for m in qmp.command("query-memdev")}

    smp = plan.smp
    assert len(slots) == smp.maxcpus
    assert len(present) == smp.cpus
    for cpu in present:
        index = cpu["cpu-index"]
        assert cpu["props"]["socket-id"] == index // smp.cores, cpu
        assert cpu["props"]["core-id"] == index % smp.cores, cpu
    if plan.is_flat:
        assert numa == {}
        assert all("node-id" not in slot["props"] for slot in slots)
        (backend,) = memdevs.values()
        assert backend["size"] == memory << 20 and backend["policy"] == "bind"
        return
    node_of = {}
    for slot in slots:
        props = slot["props"]
        index = (props["socket-id"] * smp.cores + props["core-id"]) * smp.threads
        node_of[index + props.get("thread-id", 0)] = props["node-id"]
    assert node_of == {v: n.id for n in plan.nodes for v in n.vcpus}
    nodes_of_socket: dict[int, set[int]] = {}
    for slot in slots:
        nodes_of_socket.setdefault(slot["props"]["socket-id"], set()).add(slot["props"]["node-id"])
    assert all(len(nodes) == 1 for nodes in nodes_of_socket.values()), nodes_of_socket
    assert sorted(numa) == [n.id for n in plan.nodes]
    for node in plan.nodes:
        cpus, size = numa[node.id]
        assert cpus == [v for v in node.vcpus if v < smp.cpus]
        assert size == node.memory_mib
        if node.memory_mib:
            backend = memdevs[f"numa-mem{node.id}"]
            assert (backend["size"], backend["policy"], backend["host-nodes"]) == (
                node.memory_mib << 20,
                "bind",
                [0],
            )
        else:
            assert f"numa-mem{node.id}" not in memdevs
    for bus in [d for d in plan.devices if d.guest_node is not None]:
        pxb = f"/machine/peripheral/numa-pxb{bus.guest_node}"
        assert qmp.command("qom-get", path=pxb, property="numa_node") == bus.guest_node
        assert qmp.command("qom-get", path=pxb, property="bus_nr") < 256


# --- The planner's limits are the installed QEMU's ---


def test_vcpu_limit_is_q35_cpu_max_of_this_qemu(runner: Runner) -> None:
    from kata_numa._native import MAX_VCPUS

    qmp = runner.start([], "machines")
    (q35,) = [m for m in qmp.command("query-machines") if m.get("alias") == "q35"]
    assert q35["cpu-max"] == MAX_VCPUS


def test_host_nodes_from_the_limit_up_are_refused_by_qemu(runner: Runner) -> None:
    from kata_numa._native import MAX_NUMA_NODES

    backend = f"memory-backend-ram,id=m,size=16M,host-nodes={MAX_NUMA_NODES},policy=bind"
    error = runner.refused(["-object", backend])
    assert f"Invalid host-nodes value: {MAX_NUMA_NODES}" in error


@pytest.mark.parametrize(
    ("cpus", "vcpus", "x2apic"),
    [
        pytest.param((128, 127), 255, False, id="255-vcpus-apic-ids-to-254"),
        pytest.param((128, 128), 256, True, id="256-vcpus-apic-id-255"),
    ],
)
def test_apic_ids_over_254_are_warned_as_qemu_refuses_them_under_tcg(
    runner: Runner, cpus: tuple[int, int], vcpus: int, x2apic: bool
) -> None:
    plan = plan_guest(hosts(*cpus), 1, 512, max_vcpus=vcpus, mapping=["0", "1"])
    warned = any("x2APIC" in w for w in plan.warnings)
    assert warned == x2apic, plan.warnings
    args = on_node0(plan.qemu_args)
    if x2apic:
        assert "requires kernel irqchip and X2APIC API support" in runner.refused(args)
    else:
        qmp = runner.start(args, "xapic")
        assert len(qmp.command("query-hotpluggable-cpus")) == vcpus
