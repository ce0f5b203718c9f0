"""The guest NUMA planner: hand-checked layouts, invariants against a Python reference, and the
`kata-numa plan` command."""

from __future__ import annotations

import json
import math
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hostgen import NodeSpec, make_host
from kata_numa._native import (
    SKIP_WARNING,
    CpuSet,
    PlanHostNode,
    parse_qemu_args,
    plan_guest,
)
from kata_numa.cli import main
from kata_numa.errors import PlanError, UsageError
from kata_numa.planner import (
    PlanInput,
    make_plan,
    parse_page_size_kib,
    parse_size_mib,
    parse_used,
    to_json,
    usage_of_layouts,
)
from kata_numa.topology import read_topology
from planhosts import hosts, layout

#: Captures of real machines, beside the checkout (DESIGN §4); KATA_NUMA_FIXTURES overrides.
FIXTURES = Path(
    os.environ.get("KATA_NUMA_FIXTURES", Path(__file__).resolve().parents[2] / "shared/fixtures")
)


@dataclass
class Case:
    host: list[PlanHostNode]
    vcpus: int
    memory_mib: int
    #: (host nodes, vCPUs, MiB) per guest node; empty for a flat guest.
    want: list[tuple[str, str, int]]
    #: Host nodes a flat guest is bound to (ignored for a NUMA guest).
    flat_on: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    warning: str | None = None


# Whether a sandbox fits one host node decides right-sizing, so every multi-node case says why
# it needs more than one node: more vCPUs than any node has CPUs, memory larger than any node,
# or an explicit mapping (never right-sized).
CASES = [
    pytest.param(
        Case(hosts(4, 4), 8, 2048, [("0", "0-3", 1024), ("1", "4-7", 1024)]),
        id="cpus-4-4_8-vcpus_split-4+4_(8-vcpus-exceed-any-node)",
    ),
    pytest.param(
        Case(hosts(8, 2), 10, 2048, [("0", "0-7", 1639), ("1", "8-9", 409)]),
        id="cpus-8-2_10-vcpus_split-8+2_(10-vcpus-exceed-any-node)",
    ),
    pytest.param(
        Case(hosts(6, 3, 1), 10, 3000, [("0", "0-5", 1800), ("1", "6-8", 900), ("2", "9", 300)]),
        id="cpus-6-3-1_10-vcpus_split-6+3+1_(10-vcpus-exceed-any-node)",
    ),
    pytest.param(
        Case(
            hosts(100, 1),
            2,
            2048,
            [("0", "0", 1024), ("1", "1", 1024)],
            kwargs={"mapping": ["0", "1"]},
        ),
        id="cpus-100-1_2-vcpus_split-1+1_(explicit-mapping)",
    ),
    pytest.param(
        Case(hosts(4, 4, 4, memory_mib=1024), 2, 2048, [], flat_on="0-2", warning=SKIP_WARNING),
        id="three-nodes_2-vcpus_skip_(2048-MiB-exceed-any-1024-MiB-node)",
    ),
    pytest.param(
        Case(hosts(8, 2), 10, 1000, [("0", "0-7", 800), ("1", "8-9", 200)]),
        id="cpus-8-2_10-vcpus_1000-MiB_800+200_(10-vcpus-exceed-any-node)",
    ),
    pytest.param(
        Case(hosts(4, 4), 8, 4097, [("0", "0-3", 2049), ("1", "4-7", 2048)]),
        id="4097-MiB-on-two-nodes_adds-up_(8-vcpus-exceed-any-node)",
    ),
    pytest.param(
        Case(
            hosts(4, 4, 0),
            8,
            3072,
            [("0", "0-3", 1024), ("1", "4-7", 1024), ("2", "", 1024)],
            kwargs={"mapping": ["0", "1", "2"]},
        ),
        id="memory-only-host-node_gets-memory-no-vcpus_(explicit-mapping)",
    ),
    pytest.param(
        Case(hosts(4, 4, 0), 8, 3072, [("0", "0-3", 1536), ("1", "4-7", 1536)]),
        id="memory-only-host-node_not-mirrored-by-auto_(8-vcpus-exceed-any-node)",
    ),
    pytest.param(
        Case(hosts(4, 4, memory_mib=[4096, 0]), 8, 2048, [("0", "0-3", 2048), ("1", "4-7", 0)]),
        id="cpu-only-host-node_gets-vcpus-no-memdev_(8-vcpus-exceed-any-node)",
    ),
    pytest.param(
        Case(
            hosts(8, 8, used_cpus=[0, 2]),
            4,
            1024,
            [],
            flat_on="1",
            kwargs={"vfio": [("0000:3b:00.0", 1)]},
        ),
        id="right-sized-to-the-device-node_despite-more-free-cpus-elsewhere",
    ),
    pytest.param(
        Case(hosts(8, 8), 4, 12288, [("0", "0-1", 6144), ("1", "2-3", 6144)]),
        id="too-big-for-any-node_keeps-all-nodes_(12-GiB-exceed-8-GiB-nodes)",
    ),
    pytest.param(
        Case(hosts(8, 8, used_cpus=[6, 0]), 4, 1024, [], flat_on="1"),
        id="fits-one-node_most-free_avoids-the-busy-node-0",
    ),
    pytest.param(
        Case(hosts(8, 8, used_cpus=[6, 0]), 4, 1024, [], flat_on="0", kwargs={"policy": "first"}),
        id="fits-one-node_policy-first_keeps-kata-lowest-id",
    ),
    pytest.param(
        Case(
            hosts(2, 2, 2, 2),
            8,
            4096,
            [("0-1", "0-3", 2048), ("2-3", "4-7", 2048)],
            kwargs={"mapping": ["0-1", "2-3"]},
        ),
        id="grouped-mapping_0-1_2-3_verbatim",
    ),
]


@pytest.mark.parametrize("case", CASES)
def test_planner_table(case: Case) -> None:
    plan = plan_guest(case.host, case.vcpus, case.memory_mib, **case.kwargs)

    assert layout(plan) == case.want, plan.decisions
    assert plan.is_flat == (not case.want)
    if not case.want:
        assert plan.host_nodes.to_list() == case.flat_on
        assert f"host-nodes={case.flat_on},policy=bind" in " ".join(plan.qemu_args)
    if case.warning:
        assert case.warning in plan.warnings
    assert sum(n.memory_mib for n in plan.nodes) in (0, case.memory_mib)
    assert plan.decisions


@pytest.mark.parametrize(
    ("cpus", "vcpus", "shape"),
    [
        pytest.param((4, 4), 8, (2, 4), id="equal-split_one-socket-per-node"),
        pytest.param((16, 16), 80, (2, 40), id="80-vcpus_two-sockets-of-40"),
        pytest.param((8, 2), 10, (5, 2), id="8+2_five-sockets-of-2"),
        pytest.param((6, 3, 1), 10, (10, 1), id="6+3+1_ten-sockets-of-1"),
    ],
)
def test_smp_keeps_every_guest_node_whole_sockets(
    cpus: tuple[int, ...], vcpus: int, shape: tuple[int, int]
) -> None:
    plan = plan_guest(hosts(*cpus), vcpus, 100_000)
    smp = plan.smp
    assert (smp.sockets, smp.cores, smp.threads, smp.maxcpus) == (*shape, 1, vcpus)
    sockets_of = [{v // smp.cores for v in node.vcpus} for node in plan.nodes]
    assert sum(len(s) for s in sockets_of) == smp.sockets, "a socket in two guest nodes"
    if smp.sockets != len(plan.nodes):
        assert any("straddle" in d for d in plan.decisions)


def test_confidential_keeps_exact_count_and_warns() -> None:
    plan = plan_guest(hosts(6, 3, 1), 10, 3000, max_vcpus=16, confidential=True)
    smp = plan.smp
    assert (smp.cpus, smp.maxcpus, smp.sockets, smp.cores) == (10, 10, 10, 1)
    assert [n.vcpus.to_list() for n in plan.nodes] == ["0-5", "6-8", "9"]
    assert any("guest_memfd" in w for w in plan.warnings)


def test_equal_confidential_nodes_are_one_socket_each() -> None:
    plan = plan_guest(hosts(4, 4), 8, 2048, confidential=True)
    assert (plan.smp.sockets, plan.smp.cores, plan.smp.maxcpus) == (2, 4, 8)


def test_boot_vcpus_that_leave_a_node_empty_are_warned() -> None:
    plan = plan_guest(hosts(4, 4), 4, 16384, max_vcpus=8)
    assert layout(plan) == [("0", "0-3", 8192), ("1", "4-7", 8192)]
    assert any("only vCPUs 0-3 start at boot" in w for w in plan.warnings)


def test_right_sizing_spreads_sandboxes_with_usage() -> None:
    first = plan_guest(hosts(8, 8), 6, 2048)
    used = [6 if node in first.host_nodes else 0 for node in (0, 1)]
    second = plan_guest(hosts(8, 8, used_cpus=used), 6, 2048)
    assert first.host_nodes.to_list() == "0"
    assert second.host_nodes.to_list() == "1"


def test_hugepages_move_to_a_node_that_has_them() -> None:
    host = hosts(8, 8, hugepages_free=[[(2048, 10)], [(2048, 2048)]])
    plan = plan_guest(host, 4, 2048, mem_path="/dev/hugepages", hugepage_kib=2048)
    assert plan.host_nodes.to_list() == "1"
    assert any("10 free 2048 KiB huge pages" in d for d in plan.decisions)


def test_hugepages_refused_with_the_reason() -> None:
    host = hosts(4, 4, hugepages_free=[[(2048, 2048)], [(2048, 10)]])
    with pytest.raises(PlanError, match=r"guest node 1 needs 512 huge pages of 2048 KiB"):
        plan_guest(host, 8, 2048, mem_path="/dev/hugepages", hugepage_kib=2048)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"mapping": ["0", "0-x"]}, r"entry 1 \(\"0-x\"\) is not a node list", id="bad"
        ),
        pytest.param(
            {"mapping": ["0", "7"]}, r"names host node 7, which the host lacks", id="gone"
        ),
        pytest.param({"max_vcpus": 2}, r"max vCPUs 2 is below the 4 vCPUs", id="max-below"),
        pytest.param({"hugepage_kib": 1 << 20}, r"not a whole number of 1024 MiB", id="1G-pages"),
        pytest.param({"policy": "random"}, r"policy \"random\"", id="policy"),
    ],
)
def test_bad_requests_name_the_value(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        plan_guest(hosts(4, 4), 4, 1000, **kwargs)


def test_devices_get_expander_buses_per_guest_node() -> None:
    vfio = [("0000:3b:00.0", 0), ("0000:af:00.0", 1), ("0000:b0:00.0", 1), ("0000:01:00.0", None)]
    plan = plan_guest(hosts(4, 4), 8, 2048, vfio=vfio)
    args = plan.qemu_args
    assert "pxb-pcie,id=numa-pxb0,bus=pcie.0,bus_nr=128,numa_node=0" in args
    assert "pxb-pcie,id=numa-pxb1,bus=pcie.0,bus_nr=192,numa_node=1" in args
    assert "pcie-root-port,id=numa-rp2,bus=numa-pxb1,chassis=102,slot=0" in args
    assert "pcie-root-port,id=numa-rp3,bus=pcie.0,chassis=103,slot=0" in args
    assert [d.guest_node for d in plan.devices] == [0, 1, 1, None]
    assert any("bdf=0000:af:00.0 host-numa=1 guest-numa=1" in d for d in plan.decisions)
    assert any("0000:01:00.0: NUMA locality unknown" in w for w in plan.warnings)
    assert parse_qemu_args(["qemu", *args]).vfio_devices == [d for d, _ in vfio]


def test_device_outside_the_mapping_is_not_covered() -> None:
    plan = plan_guest(hosts(4, 4, 4), 8, 2048, mapping=["0", "1"], vfio=[("0000:3b:00.0", 2)])
    assert any(w.startswith("VFIO device on host NUMA node not covered") for w in plan.warnings)


# --- Invariants over random hosts and sandboxes, against a small Python reference planner ---


class RefError(Exception):
    pass


def ref_split(total: int, weights: list[int]) -> list[int]:
    s = sum(weights)
    if s == 0:
        return [0] * len(weights)
    floors = [total * w // s for w in weights]
    fractions = [total * w % s for w in weights]
    shares = [max(1, f) if w else 0 for f, w in zip(floors, weights, strict=True)]
    order = sorted((i for i, w in enumerate(weights) if w), key=lambda i: (-fractions[i], i))
    while sum(shares) < total:
        for i in order:
            if sum(shares) < total:
                shares[i] += 1
    while sum(shares) > total:
        i = max((i for i, n in enumerate(shares) if n > 1), key=lambda i: (shares[i], -i))
        shares[i] -= 1
    return shares


def ref_split_memory(total: int, weights: list[int]) -> list[int]:
    s = sum(weights)
    shares = [max(1, total * w // s) if w else 0 for w in weights]
    if sum(shares) < total:
        heaviest = max(range(len(weights)), key=lambda i: (weights[i], -i))
        shares[heaviest] += total - sum(shares)
    while sum(shares) > total:
        i = max((i for i, n in enumerate(shares) if n > 1), key=lambda i: (shares[i], -i))
        shares[i] -= 1
    return shares


@dataclass
class Ref:
    flat: bool
    host_nodes: str
    nodes: list[tuple[str, str, int]]
    smp: tuple[int, int, int, int]
    distances: list[list[int]]


def ref_plan(
    host: list[PlanHostNode],
    vcpus: int,
    max_vcpus: int,
    memory: int,
    mapping: list[str] | None,
    devices: list[int | None],
    confidential: bool,
    policy: str,
    page_kib: int | None,
) -> Ref:
    """DESIGN §2.4 written out plainly, as an independent check of the Rust planner."""
    by_id = {n.id: n for n in host}
    page = page_kib // 1024 if page_kib else 1
    if memory % page:
        raise RefError("memory not whole pages")
    top = vcpus if confidential else max_vcpus

    def ncpus(group: list[int]) -> int:
        return sum(len(by_id[h].cpus) for h in group)

    def mem(group: list[int]) -> int:
        return sum(by_id[h].memory_mib for h in group)

    def pages_free(group: list[int]) -> int:
        return sum(f for h in group for k, f in by_id[h].hugepages_free if k == page_kib)

    def check_pages(group: list[int], mib: int) -> None:
        if page_kib and group and mib * 1024 // page_kib > pages_free(group):
            raise RefError("huge pages")

    def flat(group: list[int]) -> Ref:
        check_pages([h for h in group if by_id[h].memory_mib > 0], memory)
        return Ref(True, CpuSet(group).to_list(), [], (vcpus, top, 1, top), [])

    if mapping is not None:
        groups = [sorted(CpuSet(entry)) for entry in mapping]
        if any(ncpus(g) == 0 and mem(g) == 0 for g in groups):
            raise RefError("empty node")
    else:
        groups = [[n.id] for n in host if n.cpus]
        if len(groups) == 1:
            return flat(groups[0])
        known = {d for d in devices if d is not None}
        if len(known) <= 1:
            candidates = [by_id[g[0]] for g in groups if not known or g[0] in known]

            def free_cpus(n: PlanHostNode) -> int:
                return max(0, len(n.cpus) - n.used_cpus)

            def uncommitted(n: PlanHostNode) -> int:
                return max(0, n.memory_mib - n.used_memory_mib)

            def fits(n: PlanHostNode) -> bool:
                by_size = policy == "first"
                cpus = len(n.cpus) if by_size else free_cpus(n)
                room = n.memory_mib if by_size else uncommitted(n)
                pages_ok = not page_kib or pages_free([n.id]) >= memory * 1024 // page_kib
                return cpus >= top and room >= memory and pages_ok

            fitting = [n for n in candidates if fits(n)]
            if fitting and policy == "first":
                return flat([fitting[0].id])
            if fitting:

                def rank(n: PlanHostNode) -> tuple[int, int, int]:
                    room = pages_free([n.id]) if page_kib else min(n.free_mib, uncommitted(n))
                    return (free_cpus(n), room, -n.id)

                return flat([max(fitting, key=rank).id])
    with_cpus = sum(1 for g in groups if ncpus(g))
    if with_cpus == 0:
        raise RefError("no CPUs")
    if top < with_cpus:
        return flat(sorted({h for g in groups for h in g}))
    counts = ref_split(top, [ncpus(g) for g in groups])
    cores = math.gcd(*counts)
    smp = (vcpus, top, top // cores, cores)
    ranges, start = [], 0
    for n in counts:
        ranges.append(CpuSet(range(start, start + n)).to_list())
        start += n
    weights = [
        0 if mem(g) == 0 else (top if n == 0 else n * with_cpus)
        for g, n in zip(groups, counts, strict=True)
    ]
    holders = sum(1 for w in weights if w)
    if holders == 0 or memory // page < holders:
        raise RefError("memory")
    sizes = [u * page for u in ref_split_memory(memory // page, weights)]
    for g, size in zip(groups, sizes, strict=True):
        check_pages([h for h in g if by_id[h].memory_mib > 0], size)
    distances = []
    for gi in groups:
        row = []
        for gj in groups:
            if gi is gj:
                row.append(10)
                continue
            d = dict(by_id[gi[0]].distances).get(gj[0])
            if gi[0] == gj[0] or d == 10:
                row.append(11)  # guest kernels reject remote distances of 10 or less
            else:
                row.append(20 if d is None or d < 10 else d)  # unknown or invalid
        distances.append(row)
    nodes = [(CpuSet(g).to_list(), r, s) for g, r, s in zip(groups, ranges, sizes, strict=True)]
    host_nodes = CpuSet({h for g in groups for h in g}).to_list()
    return Ref(False, host_nodes, nodes, smp, distances)


@st.composite
def sandboxes(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(1, 5))
    cpus = draw(st.lists(st.integers(0, 12), min_size=count, max_size=count))
    if not any(cpus):
        cpus[0] = 1
    memory = draw(st.lists(st.sampled_from([0, 512, 4096, 8192]), min_size=count, max_size=count))
    if not any(memory):
        memory[-1] = 4096
    symmetric = draw(st.booleans())
    matrix = [[10] * count for _ in range(count)]
    for i in range(count):
        for j in range(count):
            if i < j or (i > j and not symmetric):
                matrix[i][j] = draw(st.integers(10, 40))
            elif i > j:
                matrix[i][j] = matrix[j][i]
    page_kib = draw(st.sampled_from([None, None, 2048]))
    host = hosts(
        *cpus,
        memory_mib=memory,
        distances=[[(j, matrix[i][j]) for j in range(count)] for i in range(count)],
        free_mib=[draw(st.integers(0, m)) for m in memory],
        used_cpus=[draw(st.integers(0, c)) for c in cpus],
        used_memory_mib=[draw(st.integers(0, m)) for m in memory],
        hugepages_free=[[(2048, draw(st.integers(0, 5000)))] for _ in cpus],
    )
    vcpus = draw(st.integers(1, 40))
    mapping = None
    if draw(st.booleans()):
        entries = draw(
            st.lists(
                st.sets(st.integers(0, count - 1), min_size=1, max_size=2), min_size=1, max_size=4
            )
        )
        mapping = [CpuSet(e).to_list() for e in entries]
    return {
        "host": host,
        "vcpus": vcpus,
        "max_vcpus": vcpus + draw(st.integers(0, 9)),
        "memory": draw(st.integers(1, 6000)) * (2 if page_kib else 1),
        "mapping": mapping,
        "devices": draw(st.lists(st.sampled_from([None, *range(count)]), max_size=2)),
        "confidential": draw(st.booleans()),
        "policy": draw(st.sampled_from(["most-free", "first"])),
        "page_kib": page_kib,
    }


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sandboxes())
def test_planner_invariants_and_reference(s: dict[str, Any]) -> None:
    backend = {"mem_path": "/dev/hugepages", "hugepage_kib": s["page_kib"]} if s["page_kib"] else {}
    vfio = [(f"0000:{i + 1:02x}:00.0", node) for i, node in enumerate(s["devices"])]
    try:
        reference: Ref | None = ref_plan(
            s["host"],
            s["vcpus"],
            s["max_vcpus"],
            s["memory"],
            s["mapping"],
            s["devices"],
            s["confidential"],
            s["policy"],
            s["page_kib"],
        )
    except RefError:
        reference = None
    try:
        plan = plan_guest(
            s["host"],
            s["vcpus"],
            s["memory"],
            max_vcpus=s["max_vcpus"],
            mapping=s["mapping"],
            vfio=vfio,
            confidential=s["confidential"],
            policy=s["policy"],
            **backend,
        )
    except PlanError as exc:
        assert reference is None, f"Rust refused what the reference plans: {exc}"
        event("refused")
        return
    event("flat" if plan.is_flat else f"{len(plan.nodes)} guest nodes")
    assert reference is not None, f"the reference refuses what Rust planned: {plan.decisions}"
    if s["policy"] == "most-free" and any("fits host node" in d for d in plan.decisions):
        short = [w for w in plan.warnings if "which has" in w and "not committed" in w]
        assert not short, "a node that fits has the memory not committed to other sandboxes"

    smp = plan.smp
    assert smp.sockets * smp.cores * smp.threads == smp.maxcpus
    assert smp.cpus == s["vcpus"] <= smp.maxcpus
    layout_back = parse_qemu_args(["qemu-system-x86_64", *plan.qemu_args])
    assert all(b.size_mib > 0 for b in layout_back.backends), "zero-size memory backend"
    assert layout_back.memory_mib == s["memory"]
    assert (layout_back.smp.maxcpus, layout_back.smp.sockets) == (smp.maxcpus, smp.sockets)
    if not plan.is_flat:
        seen = [v for node in plan.nodes for v in node.vcpus]
        assert sorted(seen) == list(range(smp.maxcpus)), "each vCPU in exactly one node"
        sockets = [{v // smp.cores for v in node.vcpus} for node in plan.nodes]
        assert sum(map(len, sockets)) == smp.sockets, "each node is whole sockets"
        assert sum(node.memory_mib for node in plan.nodes) == s["memory"]
        assert [(n.id, n.cpus) for n in layout_back.nodes] == [(n.id, n.vcpus) for n in plan.nodes]
        d = plan.distances
        assert all(d[i][i] == 10 for i in range(len(d)))
        assert all(d[i][j] > 10 for i in range(len(d)) for j in range(len(d)) if i != j)
        given_dist = {(a, b): v for a, b, v in layout_back.distances}
        for i in range(len(d)):
            for j in range(i + 1, len(d)):
                assert (i, j) in given_dist or (j, i) in given_dist
                if d[i][j] != d[j][i]:
                    assert given_dist[(i, j)] == d[i][j] and given_dist[(j, i)] == d[j][i]
    got = Ref(
        plan.is_flat,
        plan.host_nodes.to_list(),
        layout(plan),
        (smp.cpus, smp.maxcpus, smp.sockets, smp.cores),
        plan.distances,
    )
    assert got == reference


# --- Python glue and the command line ---


@pytest.mark.parametrize(
    ("text", "mib"),
    [
        ("4096M", 4096),
        ("64G", 65536),
        ("64Gi", 65536),
        ("64GiB", 65536),
        ("1.5G", 1536),
        ("2048", 2048),
        ("1T", 1 << 20),
    ],
)
def test_sizes(text: str, mib: int) -> None:
    assert parse_size_mib(text) == mib


@pytest.mark.parametrize("text", ["12x", "0", "-4G", "0.5M", ""])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(UsageError, match="--memory"):
        parse_size_mib(text)


def test_page_sizes_and_used() -> None:
    assert (parse_page_size_kib("2M"), parse_page_size_kib("1G")) == (2048, 1 << 20)
    with pytest.raises(UsageError):
        parse_page_size_kib("4k")
    node, used = parse_used("1:8:16G")
    assert (node, used.vcpus, used.memory_mib) == (1, 8, 16384)
    with pytest.raises(UsageError, match="NODE:VCPUS"):
        parse_used("one:8")


def test_usage_of_running_layouts() -> None:
    numa = parse_qemu_args(
        [
            "qemu",
            "-name",
            "sandbox-a",
            "-m",
            "4G",
            "-smp",
            "4,maxcpus=8",
            *plan_guest(hosts(4, 4), 4, 4096, max_vcpus=8, mapping=["0", "1"]).qemu_args[4:],
        ]
    )
    flat = parse_qemu_args(["qemu", *plan_guest(hosts(8, 8), 2, 1024).qemu_args])
    usage, notes = usage_of_layouts([numa, flat, parse_qemu_args(["qemu", "-smp", "2"])])
    assert {n: (u.vcpus, u.memory_mib) for n, u in usage.items()} == {0: (6, 3072), 1: (0, 2048)}
    assert len(notes) == 1


@pytest.fixture
def two_node_host(tmp_path: Path) -> Path:
    pci = {
        "0000:3b:00.0": {"numa_node": "1", "class": "0x030200"},
        "0000:5e:00.0": {"numa_node": "-1", "class": "0x030200"},
    }
    return make_host(
        tmp_path / "host",
        {0: NodeSpec("0-7", 8 << 20), 1: NodeSpec("8-15", 8 << 20)},
        distances=[[10, 21], [21, 10]],
        pci=pci,
    )


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_plan_json(two_node_host: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        capsys,
        "plan",
        "--vcpus",
        "10",
        "--memory",
        "12Gi",
        "--sysfs-root",
        str(two_node_host),
        "--json",
    )
    data = json.loads(out)
    assert code == 0
    assert data["guest_nodes"] == [
        {"id": 0, "host_nodes": "0", "vcpus": "0-4", "memory_mib": 6144},
        {"id": 1, "host_nodes": "1", "vcpus": "5-9", "memory_mib": 6144},
    ]
    assert data["smp"] == {"cpus": 10, "maxcpus": 10, "sockets": 2, "cores": 5, "threads": 1}
    assert data["distances"] == [[10, 21], [21, 10]]
    assert data["host_nodes"] == "0-1"
    assert "-numa" in data["qemu_args"] and "dist,src=0,dst=1,val=21" in data["qemu_args"]
    assert any("not read: the sysfs root is another host's" in d for d in data["decisions"])


def test_cli_plan_flat_json(two_node_host: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        capsys,
        "plan",
        "--vcpus",
        "4",
        "--memory",
        "2G",
        "--vfio",
        "3b:00.0",
        "--sysfs-root",
        str(two_node_host),
        "--json",
    )
    data = json.loads(out)
    assert (code, data["guest_nodes"], data["host_nodes"]) == (0, [], "1")
    assert (
        "memory-backend-ram,id=numa-mem0,size=2048M,host-nodes=1,policy=bind" in data["qemu_args"]
    )
    assert any("fits host node 1" in d for d in data["decisions"])


def test_cli_plan_human(two_node_host: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        capsys,
        "plan",
        "--vcpus",
        "4",
        "--memory",
        "2G",
        "--mapping",
        "0",
        "--mapping",
        "1",
        "--used",
        "1:2:1G",
        "--sysfs-root",
        str(two_node_host),
    )
    assert code == 0
    assert "guest node  host nodes  vCPUs  memory" in out
    assert "0           0           0-1    1024 MiB" in out
    assert "  -numa node,nodeid=1,cpus=2-3,memdev=numa-mem1" in out
    assert "other sandboxes use 2 vCPUs and 1024 MiB on host node 1" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["--memory", "12x"], "--memory '12x' is not a size", id="size"),
        pytest.param(["--mapping", "0", "--mapping", "0,x"], "numa_mapping entry 1", id="map"),
        pytest.param(["--vfio", "0000:99:00.0"], "no PCI device 0000:99:00.0", id="vfio"),
        pytest.param(["--kata-config", "/nonexistent.toml"], "/nonexistent.toml", id="config"),
    ],
)
def test_cli_plan_errors(
    two_node_host: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = run_cli(
        capsys, "plan", "--vcpus", "4", "--sysfs-root", str(two_node_host), *argv
    )
    assert code == 2
    assert message in err


def test_plan_uses_the_kata_configuration(two_node_host: Path, tmp_path: Path) -> None:
    config_file = tmp_path / "configuration-qemu.toml"
    config_file.write_text(
        "[hypervisor.qemu]\nenable_numa = true\ndefault_vcpus = 4\n"
        'default_memory = 4096\nnuma_mapping = ["0", "1"]\n'
        'shared_fs = "virtio-fs"\n[runtime]\n'
        "static_sandbox_resource_mgmt = true\n"
    )
    from kata_numa.kataconfig import load_config

    result = make_plan(PlanInput(), read_topology(two_node_host), load_config(config_file), {})
    data = to_json(result)
    assert [n["vcpus"] for n in data["guest_nodes"]] == ["0-1", "2-3"]
    assert data["smp"]["cpus"] == 4
    assert (
        "memory-backend-file,id=numa-mem0,size=2048M,mem-path=/dev/shm,host-nodes=0,"
        "policy=bind,share=on"
    ) in data["qemu_args"]
    assert not data["warnings"]


@pytest.fixture(scope="module")
def two_socket_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tarball = FIXTURES / "hwloc-linux/32intel64-2p8co2t+8ve.tar.bz2"
    if not tarball.exists():
        pytest.skip(f"fixture {tarball} is not on this machine")
    target = tmp_path_factory.mktemp("fixture")
    with tarfile.open(tarball) as archive:
        archive.extractall(target, filter="data")
    (top,) = target.iterdir()
    return top


def test_done_when_80_vcpus_64g_on_a_real_two_socket_host(
    two_socket_fixture: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        capsys,
        "plan",
        "--vcpus",
        "80",
        "--memory",
        "64G",
        "--sysfs-root",
        str(two_socket_fixture),
        "--json",
    )
    data = json.loads(out)
    assert code == 0
    assert data["guest_nodes"] == [
        {"id": 0, "host_nodes": "0", "vcpus": "0-39", "memory_mib": 32768},
        {"id": 1, "host_nodes": "1", "vcpus": "40-79", "memory_mib": 32768},
    ]
    assert data["smp"] == {"cpus": 80, "maxcpus": 80, "sockets": 2, "cores": 40, "threads": 1}
    assert data["distances"] == [[10, 21], [21, 10]]
    assert data["qemu_args"] == [
        "-m",
        "65536M",
        "-smp",
        "80,maxcpus=80,sockets=2,cores=40,threads=1",
        "-object",
        "memory-backend-ram,id=numa-mem0,size=32768M,host-nodes=0,policy=bind",
        "-object",
        "memory-backend-ram,id=numa-mem1,size=32768M,host-nodes=1,policy=bind",
        "-numa",
        "node,nodeid=0,cpus=0-39,memdev=numa-mem0",
        "-numa",
        "node,nodeid=1,cpus=40-79,memdev=numa-mem1",
        "-numa",
        "dist,src=0,dst=1,val=21",
    ]
    # 80 vCPUs on 16 CPUs per node; node 1 has 48359 MiB, of which 10459 MiB free in the capture.
    assert any("40 vCPUs for 16 free CPUs of host node 0" in w for w in data["warnings"])
    assert any(
        "32768 MiB to host node 1: that much is not committed to other sandboxes, but only "
        "10459 MiB is free now (MemFree)" in w
        for w in data["warnings"]
    )


# --- Bad values on the command line: a message naming the option and value, exit 2 ---

EXAMPLE_HOST = Path(__file__).resolve().parents[1] / "examples/hosts/two-node"


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        pytest.param(["--vcpus", "-3", "--memory", "1G"], ["--vcpus -3"], id="negative-vcpus"),
        pytest.param(["--vcpus", "0"], ["--vcpus 0"], id="zero-vcpus"),
        pytest.param(["--max-vcpus", "-1"], ["--max-vcpus -1"], id="negative-max-vcpus"),
        pytest.param(["--vcpus", "100000"], ["--vcpus 100000", "288"], id="vcpus-over-q35"),
        pytest.param(["--max-vcpus", "100000"], ["--max-vcpus 100000", "288"], id="max-over-q35"),
        pytest.param(["--vcpus", str(1 << 40)], [f"--vcpus {1 << 40}"], id="vcpus-over-u32"),
        pytest.param(["--memory", ""], ["--memory ''"], id="empty-memory"),
        pytest.param(["--memory", "2000000T"], ["--memory '2000000T'", "2^40"], id="absurd-size"),
        pytest.param(["--hugepages", ""], ["--hugepages ''"], id="empty-hugepages"),
        pytest.param(["--used", "5:2"], ["--used '5:2'", "host node 5"], id="used-unknown-node"),
        pytest.param(["--vfio", "0000:3b:00.0@9"], ["@9", "host node 9"], id="vfio-unknown-node"),
    ],
)
def test_cli_plan_bad_values_are_named(
    capsys: pytest.CaptureFixture[str], argv: list[str], needles: list[str]
) -> None:
    base = ["plan", "--sysfs-root", str(EXAMPLE_HOST)]
    if "--vcpus" not in argv:
        base += ["--vcpus", "2"]
    code, out, err = run_cli(capsys, *base, *argv)
    assert (code, out) == (2, ""), err
    assert err.startswith("kata-numa: error: ")
    for needle in needles:
        assert needle in err


# --- Capacity: "fits" and the memory warnings use the same words for the same numbers ---


def test_fit_and_memory_free_now_do_not_contradict(capsys: pytest.CaptureFixture[str]) -> None:
    # examples/hosts/two-node: each node has MemTotal 2048 MiB and MemFree 1024 MiB.
    code, out, _ = run_cli(
        capsys, "plan", "--sysfs-root", str(EXAMPLE_HOST), "--vcpus", "1", "--memory", "1500M"
    )
    assert code == 0
    fit = next(line for line in out.splitlines() if "fits host node 0" in line)
    assert "2048 MiB not committed to other sandboxes" in fit, fit
    assert "1024 MiB free" not in fit, fit
    memory = [line for line in out.splitlines() if "binds 1500 MiB" in line]
    assert len(memory) == 1, out
    assert "not committed to other sandboxes" in memory[0]
    assert "only 1024 MiB is free now (MemFree)" in memory[0]


def test_committed_memory_passes_a_node_over(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        capsys,
        "plan",
        "--sysfs-root",
        str(EXAMPLE_HOST),
        "--vcpus",
        "1",
        "--memory",
        "1500M",
        "--used",
        "0:0:1G",
        "--json",
    )
    data = json.loads(out)
    assert (code, data["host_nodes"]) == (0, "1")
    fit = next(d for d in data["decisions"] if "fits host node 1" in d)
    assert "node 0: 1024 MiB not committed to other sandboxes for 1500 MiB" in fit


def test_memory_beyond_what_is_not_committed_is_warned() -> None:
    # The device pins the guest to node 1, where other sandboxes hold 7 of 8 GiB.
    host = hosts(8, 8, used_memory_mib=[0, 7168])
    plan = plan_guest(host, 16, 4096, vfio=[("0000:3b:00.0", 1)], mapping=["1"])
    assert any(
        "binds 4096 MiB to host node 1, which has 1024 MiB not committed to other sandboxes" in w
        for w in plan.warnings
    ), plan.warnings


def test_more_memory_than_the_whole_host_is_warned() -> None:
    plan = plan_guest(hosts(4, 4), 8, 20000)
    assert any("more than the host's 16384 MiB" in w for w in plan.warnings), plan.warnings


# --- QEMU's limits: vCPUs, memory size, guest nodes, host-nodes ---


@pytest.mark.parametrize(
    ("vcpus", "kwargs", "message"),
    [
        pytest.param(289, {}, r"289 vCPUs.*288", id="vcpus"),
        pytest.param(4, {"max_vcpus": 289}, r"max vCPUs 289.*288", id="max-vcpus"),
    ],
)
def test_more_vcpus_than_qemu_takes_are_refused(
    vcpus: int, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(PlanError, match=message):
        plan_guest(hosts(200, 200), vcpus, 4096, **kwargs)


def test_confidential_max_vcpus_over_the_limit_is_not_used() -> None:
    plan = plan_guest(hosts(4, 4), 4, 1024, max_vcpus=1000, confidential=True)
    assert plan.smp.maxcpus == 4


def test_absurd_memory_is_refused() -> None:
    with pytest.raises(PlanError, match=r"more than 2\^40 MiB"):
        plan_guest(hosts(4, 4), 2, (1 << 40) + 1)


def test_many_host_nodes_few_vcpus_skip_multi_numa() -> None:
    # 1024 nodes of one CPU: 4 vCPUs fit no single node, and 4 < 1024 guest nodes.
    host = hosts(*[1] * 1024, distances=[[] for _ in range(1024)])
    plan = plan_guest(host, 4, 1024)
    assert plan.is_flat
    assert SKIP_WARNING in plan.warnings
    # QEMU's host-nodes takes node numbers below 128: no binding rather than a refused one.
    assert not any("host-nodes=" in arg for arg in plan.qemu_args), plan.qemu_args
    assert any("below 128" in w for w in plan.warnings), plan.warnings
    right_size = next(d for d in plan.decisions if "does not fit any single host node" in d)
    assert len(right_size) < 400, right_size


def test_many_host_nodes_many_vcpus_suggest_a_mapping() -> None:
    host = hosts(*[1] * 200, distances=[[] for _ in range(200)])
    with pytest.raises(PlanError, match=r"200 guest nodes.*128.*--mapping 0-1 --mapping 2-3"):
        plan_guest(host, 200, 4096)


def test_explicit_mapping_beyond_host_node_127_is_refused() -> None:
    host = hosts(*[1] * 130, distances=[[] for _ in range(130)])
    with pytest.raises(PlanError, match=r"host node 129.*below 128"):
        plan_guest(host, 2, 1024, mapping=["0", "129"])


# --- Memory on CPU-less nodes, invalid host distances ---


def test_memory_only_on_cpu_less_nodes_gets_a_mapping_hint() -> None:
    # Nodes 0-1 have CPUs and no memory; 2 is nearest to 0, 3 to 1.
    rows = [[10, 20, 11, 17], [20, 10, 17, 11], [11, 17, 10, 20], [17, 11, 20, 10]]
    host = hosts(
        2,
        2,
        0,
        0,
        memory_mib=[0, 0, 8192, 8192],
        distances=[list(enumerate(row)) for row in rows],
    )
    with pytest.raises(PlanError) as caught:
        plan_guest(host, 4, 2048)
    message = str(caught.value)
    assert 'numa_mapping ["0,2", "1,3"]' in message and "--mapping 0,2 --mapping 1,3" in message
    plan = plan_guest(host, 4, 2048, mapping=["0,2", "1,3"])
    assert layout(plan) == [("0,2", "0-1", 1024), ("1,3", "2-3", 1024)]


def test_memory_initiators_fixture_gets_the_nearest_memory_nodes(sysfs_machines: Any) -> None:
    root = sysfs_machines.root("fakememinitiators-1np2c+1npp+gi")
    with pytest.raises(PlanError, match=r'numa_mapping \["0,5", "1,8", "2,6", "3,9"\]'):
        make_plan(PlanInput(vcpus=8, memory_mib=4096), read_topology(root), None, {})
    wish = PlanInput(vcpus=8, memory_mib=4096, mapping=["0,5", "1,8", "2,6", "3,9"])
    plan = make_plan(wish, read_topology(root), None, {}).plan
    assert [n.memory_nodes.to_list() for n in plan.nodes] == ["5", "8", "6", "9"]


@pytest.mark.parametrize(
    ("distance", "guest", "needle"),
    [
        pytest.param(
            0, 20, "distance from host node 0 to host node 1 is 0, which is invalid", id="0"
        ),
        pytest.param(10, 11, "host nodes 0 and 1 are at distance 10", id="10"),
    ],
)
def test_invalid_host_distances_say_so(distance: int, guest: int, needle: str) -> None:
    rows = [[(0, 10), (1, distance)], [(0, distance), (1, 10)]]
    plan = plan_guest(hosts(4, 4, distances=rows), 8, 2048)
    assert plan.distances == [[10, guest], [guest, 10]]
    assert any(needle in w for w in plan.warnings), plan.warnings
    assert not any("both start at" in w for w in plan.warnings), plan.warnings


# --- Huge pages of another size need their own hugetlbfs mount ---


@pytest.fixture
def one_gig_pages_host(tmp_path: Path) -> Path:
    pages = {1 << 20: (8, 8)}
    return make_host(
        tmp_path / "host",
        {0: NodeSpec("0-7", 16 << 20, hugepages=pages), 1: NodeSpec("8-15", 16 << 20)},
    )


@pytest.mark.parametrize(
    ("extra", "mount"),
    [
        pytest.param([], "/dev/hugepages1G", id="default-mount-names-the-size"),
        pytest.param(["--hugepages-path", "/mnt/huge-1g"], "/mnt/huge-1g", id="named-mount"),
    ],
)
def test_one_gig_pages_use_a_mount_of_that_size(
    one_gig_pages_host: Path, capsys: pytest.CaptureFixture[str], extra: list[str], mount: str
) -> None:
    code, out, err = run_cli(
        capsys,
        "plan",
        "--sysfs-root",
        str(one_gig_pages_host),
        "--vcpus",
        "2",
        "--memory",
        "2G",
        "--hugepages",
        "1G",
        "--json",
        *extra,
    )
    assert code == 0, err
    data = json.loads(out)
    backend = next(a for a in data["qemu_args"] if a.startswith("memory-backend-file"))
    assert f"mem-path={mount}," in backend
    assert any(
        f"hugetlbfs mounted at {mount}" in d and "pagesize=1G" in d for d in data["decisions"]
    )


# --- Running sandboxes without a host-nodes binding count where their vCPUs are pinned ---


def test_unbound_sandbox_counts_by_its_pinned_vcpus(tmp_path: Path) -> None:
    from kata_numa.planner import usage_of_sandboxes
    from kata_numa.sandbox import find_sandboxes
    from procgen import Proc, Thread, make_process, qemu_argv

    proc = tmp_path / "proc"
    flat = qemu_argv("-smp", "2", "-m", "1024", sandbox="pinned")
    threads = [Thread(40), Thread(41, "CPU 0/KVM", "8"), Thread(42, "CPU 1/KVM", "9")]
    make_process(proc, Proc(40, flat, threads))
    loose = qemu_argv("-smp", "2", "-m", "512", sandbox="loose")
    threads = [Thread(50), Thread(51, "CPU 0/KVM", "0-15"), Thread(52, "CPU 1/KVM", "0-15")]
    make_process(proc, Proc(50, loose, threads))
    topology = read_topology(
        make_host(tmp_path / "host", {0: NodeSpec("0-7"), 1: NodeSpec("8-15")})
    )

    sandboxes, _ = find_sandboxes(proc)
    usage, notes = usage_of_sandboxes(proc, sandboxes, topology)

    assert {n: (u.vcpus, u.memory_mib) for n, u in usage.items()} == {1: (2, 1024)}
    assert any("pinned" in n and "2 vCPUs on host node 1" in n for n in notes), notes
    assert any("loose" in n and "not counted" in n for n in notes), notes
