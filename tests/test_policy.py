"""The node-wide ledger and the placement policies (pure: fixture hosts, fake threads)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostgen import NodeSpec, make_host
from kata_numa._native import CpuSet, HostTopology, parse_qemu_args
from kata_numa.policy import (
    NO_INTERSECTION,
    EmulatorPolicy,
    PlacementInput,
    Policy,
    Role,
    SandboxPlacement,
    plan_placement,
)
from kata_numa.sandbox import Sandbox
from kata_numa.topology import read_topology
from kata_numa.vcpus import VcpuThreads


@dataclass(frozen=True)
class FakeTask:
    """What the policy reads of a thread: its id and the mask the kernel holds."""

    tid: int
    cpus_allowed: CpuSet


def on_node(node: int, vcpus: int) -> list[str]:
    """QEMU arguments of one guest node whose memory is bound to host node `node`."""
    return [
        "-smp", str(vcpus), "-m", "256",
        "-object", f"memory-backend-ram,id=m0,size=256M,host-nodes={node},policy=bind",
        "-numa", f"node,nodeid=0,cpus=0-{vcpus - 1},memdev=m0",
    ]  # fmt: skip


def flat(vcpus: int) -> list[str]:
    return ["-smp", str(vcpus), "-m", "256"]


def sandbox(
    sandbox_id: str,
    args: Sequence[str],
    allowed: str,
    masks: Sequence[str] | None = None,
    start: int = 0,
    emulators: int = 1,
) -> PlacementInput:
    """A sandbox whose vCPU i is thread `pid*10+i` holding `masks[i]` (default: `allowed`)."""
    argv = ("qemu-system-x86_64", "-name", f"sandbox-{sandbox_id}", *args)
    layout = parse_qemu_args(list(argv))
    pid = 100 + start
    vcpus = layout.smp.cpus
    masks = masks or [allowed] * vcpus
    threads = VcpuThreads(method="test", expected=vcpus)
    threads.by_index = {i: FakeTask(pid * 10 + i, CpuSet(m)) for i, m in enumerate(masks)}
    threads.others = [FakeTask(pid * 10 + 9 - e, CpuSet(allowed)) for e in range(emulators)]
    box = Sandbox(sandbox_id, pid, start, argv, layout, CpuSet(allowed))
    return PlacementInput(box, threads)


@pytest.fixture
def two_nodes(tmp_path: Path) -> HostTopology:
    """Node 0 is CPUs 0-3, node 1 is CPUs 4-7."""
    return read_topology(make_host(tmp_path, {0: NodeSpec("0-3"), 1: NodeSpec("4-7")}))


def vcpu_masks(placements: list[SandboxPlacement]) -> dict[str, list[str]]:
    return {
        p.sandbox.sandbox_id: [a.cpus.to_list() for a in p.vcpu_assignments] for p in placements
    }


def dedicated_cpus(placements: list[SandboxPlacement]) -> list[int]:
    return [a.cpus.first() or 0 for p in placements for a in p.vcpu_assignments if a.dedicated]


def applied(
    inputs: Sequence[PlacementInput], placements: list[SandboxPlacement]
) -> list[PlacementInput]:
    """The inputs as the kernel holds them after the placements were applied."""
    masks = {a.tid: a.cpus for p in placements for a in p.assignments}
    result = []
    for item in inputs:
        vcpus = dataclasses.replace(item.vcpus)
        vcpus.by_index = {
            i: FakeTask(t.tid, masks.get(t.tid, t.cpus_allowed))
            for i, t in item.vcpus.by_index.items()
        }
        vcpus.others = [
            FakeTask(t.tid, masks.get(t.tid, t.cpus_allowed)) for t in item.vcpus.others
        ]
        result.append(dataclasses.replace(item, vcpus=vcpus))
    return result


def kernel_masks(inputs: Sequence[PlacementInput]) -> dict[int, str]:
    """Every thread's mask as the kernel holds it."""
    tasks = [t for item in inputs for t in [*item.vcpus.by_index.values(), *item.vcpus.others]]
    return {t.tid: t.cpus_allowed.to_list() for t in tasks}


def all_masks(placements: list[SandboxPlacement]) -> dict[int, str]:
    return {a.tid: a.cpus.to_list() for p in placements for a in p.assignments}


@pytest.mark.parametrize(
    "args", [pytest.param(on_node(0, 2), id="bound-to-node-0"), pytest.param(flat(2), id="flat")]
)
def test_two_sandboxes_get_four_different_cpus(two_nodes: HostTopology, args: list[str]) -> None:
    inputs = [sandbox("a", args, "0-7", start=1), sandbox("b", args, "0-7", start=2)]

    placements = plan_placement(two_nodes, inputs)

    cpus = dedicated_cpus(placements)
    assert len(cpus) == 4
    assert len(set(cpus)) == 4
    if args == on_node(0, 2):
        assert set(cpus) == {0, 1, 2, 3}


def test_fewer_allowed_cpus_in_the_node_than_vcpus(two_nodes: HostTopology) -> None:
    inputs = [sandbox("a", on_node(0, 4), "2-7")]

    (placement,) = plan_placement(two_nodes, inputs)

    assert [a.cpus.to_list() for a in placement.vcpu_assignments] == ["2", "3", "2-3", "2-3"]
    assert [a.dedicated for a in placement.vcpu_assignments] == [True, True, False, False]
    assert any("share the node's allowed CPUs" in w for w in placement.warnings)


def test_restart_changes_no_mask(two_nodes: HostTopology) -> None:
    inputs = [
        sandbox("a", on_node(0, 4), "2-7", start=1),
        sandbox("b", on_node(0, 2), "0-7", start=2, emulators=2),
        sandbox("c", flat(3), "0-7", start=3),
    ]
    first = plan_placement(two_nodes, inputs)

    second = plan_placement(two_nodes, applied(inputs, first))

    assert all_masks(second) == all_masks(first)
    assert vcpu_masks(first) == {
        "a": ["2", "3", "2-3", "2-3"],
        "b": ["0", "1"],
        "c": ["4", "5", "6"],
    }


def test_a_younger_sandbox_keeps_the_cpu_it_holds(two_nodes: HostTopology) -> None:
    """The ledger is rebuilt from the kernel: pins survive, whatever the age order says."""
    inputs = [
        sandbox("old", on_node(0, 1), "0-7", start=1),  # new, unpinned
        sandbox("young", on_node(0, 1), "0-7", ["0"], start=2),  # already on CPU 0
    ]

    placements = plan_placement(two_nodes, inputs)

    assert vcpu_masks(placements) == {"old": ["1"], "young": ["0"]}


def test_two_sandboxes_on_one_cpu_are_separated(two_nodes: HostTopology) -> None:
    inputs = [
        sandbox("a", on_node(0, 1), "0-7", ["2"], start=1),
        sandbox("b", on_node(0, 1), "0-7", ["2"], start=2),
    ]

    placements = plan_placement(two_nodes, inputs)

    assert vcpu_masks(placements) == {"a": ["2"], "b": ["0"]}


def test_a_flat_vm_displaced_by_an_older_one_moves_to_a_free_node(two_nodes: HostTopology) -> None:
    inputs = [
        sandbox("a", on_node(0, 4), "0-7", ["0", "1", "2", "3"], start=1),
        sandbox("b", flat(1), "0-7", ["3"], start=2),  # moved onto a's CPU by hand
    ]

    placements = plan_placement(two_nodes, inputs)

    assert vcpu_masks(placements) == {"a": ["0", "1", "2", "3"], "b": ["4"]}
    assert placements[1].host_nodes == {0: CpuSet("1")}


def test_node_without_allowed_cpus_falls_back_to_the_allowed_set(two_nodes: HostTopology) -> None:
    (placement,) = plan_placement(two_nodes, [sandbox("a", on_node(0, 2), "6-7")])

    assert [a.cpus.to_list() for a in placement.vcpu_assignments] == ["6", "7"]
    assert any(w.startswith(NO_INTERSECTION) for w in placement.warnings)


def test_node_policy_gives_each_vcpu_the_node_mask(two_nodes: HostTopology) -> None:
    (placement,) = plan_placement(two_nodes, [sandbox("a", on_node(1, 2), "0-6")], Policy.NODE)

    assert [a.cpus.to_list() for a in placement.vcpu_assignments] == ["4-6", "4-6"]
    assert not any(a.dedicated for a in placement.vcpu_assignments)


def smt_host(tmp_path: Path) -> HostTopology:
    """One node of two cores with two threads each: (0,1) and (2,3)."""
    root = make_host(tmp_path, {0: NodeSpec("0-3")})
    for cpu, siblings in {0: "0-1", 1: "0-1", 2: "2-3", 3: "2-3"}.items():
        path = root / f"sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list"
        path.write_text(siblings + "\n")
        (path.parent / "core_id").write_text(f"{cpu // 2}\n")
    return read_topology(root)


SMT_CASES = {
    "whole-free-core-first": ([("a", ["0"])], "b", ["2"]),
    "no-whole-core-left": ([("a", ["0"]), ("c", ["2"])], "b", ["1"]),
    "own-siblings-are-fine": ([], "b", ["0", "1"]),
}


@pytest.mark.parametrize(("pinned", "new_id", "expected"), SMT_CASES.values(), ids=SMT_CASES.keys())
def test_smt_siblings_of_other_sandboxes_avoided(
    tmp_path: Path, pinned: list[tuple[str, list[str]]], new_id: str, expected: list[str]
) -> None:
    topology = smt_host(tmp_path)
    inputs = [sandbox(sid, flat(len(m)), "0-3", m, start=i) for i, (sid, m) in enumerate(pinned)]
    inputs.append(sandbox(new_id, flat(len(expected)), "0-3", start=10))

    placements = plan_placement(topology, inputs)

    assert vcpu_masks(placements)[new_id] == expected


def test_least_used_cpu_first(two_nodes: HostTopology) -> None:
    """A free CPU where other sandboxes' emulator threads run is taken last."""
    older = sandbox("a", on_node(0, 2), "0-7", ["0", "1"], start=1, emulators=3)
    older.vcpus.others = [FakeTask(t.tid, CpuSet("2")) for t in older.vcpus.others]
    inputs = [older, sandbox("b", on_node(0, 1), "0-7", start=2)]

    placements = plan_placement(two_nodes, inputs)

    assert vcpu_masks(placements)["b"] == ["3"]


EMULATOR_CASES = {
    "spare-cpus-of-own-node": (EmulatorPolicy.SPARE, on_node(0, 2), "0-7", "2-3"),
    "spare-elsewhere": (EmulatorPolicy.SPARE, on_node(0, 2), "0-1,6", "6"),
    "untouched": (EmulatorPolicy.UNTOUCHED, on_node(0, 2), "0-7", None),
    # Every allowed CPU holds a vCPU: the emulator threads share the node's allowed CPUs (not
    # left on whatever spare CPU an earlier pass gave them, which another vCPU may hold now).
    "no-spare-cpu": (EmulatorPolicy.SPARE, on_node(0, 2), "0-1", "0-1"),
}


@pytest.mark.parametrize(
    ("policy", "args", "allowed", "expected"), EMULATOR_CASES.values(), ids=EMULATOR_CASES.keys()
)
def test_emulator_threads(
    two_nodes: HostTopology,
    policy: EmulatorPolicy,
    args: list[str],
    allowed: str,
    expected: str | None,
) -> None:
    (placement,) = plan_placement(
        two_nodes, [sandbox("a", args, allowed, emulators=2)], emulator=policy
    )

    emulators = [a for a in placement.assignments if a.role is Role.EMULATOR]
    if expected is None:
        assert emulators == []
    else:
        assert [a.cpus.to_list() for a in emulators] == [expected, expected]
        assert all(not a.dedicated for a in emulators)


def test_emulator_threads_untouched_while_a_vcpu_is_unknown(two_nodes: HostTopology) -> None:
    item = sandbox("a", on_node(0, 2), "0-7")
    item.vcpus.expected = 3  # one vCPU thread was not identified
    item.vcpus.others = []

    (placement,) = plan_placement(two_nodes, [item])

    assert [a.role for a in placement.assignments] == [Role.VCPU, Role.VCPU]


# --- properties over random nodes of sandboxes ------------------------------------------------

masks_of = st.sampled_from(["0-7", "0", "1", "2", "3", "4", "5", "0-3", "4-7", "2-3"])


@st.composite
def random_inputs(draw: st.DrawFn) -> list[PlacementInput]:
    inputs = []
    for number in range(draw(st.integers(1, 4))):
        vcpus = draw(st.integers(1, 4))
        args = draw(st.sampled_from([on_node(0, vcpus), on_node(1, vcpus), flat(vcpus)]))
        allowed = draw(st.sampled_from(["0-7", "2-7", "0-3", "4-7", "1,5", "3"]))
        masks = [draw(masks_of) for _ in range(vcpus)]
        masks = [m if CpuSet(m).issubset(CpuSet(allowed)) else allowed for m in masks]
        inputs.append(sandbox(f"s{number}", args, allowed, masks, start=number))
    return inputs


def max_matching(placements: list[SandboxPlacement]) -> int:
    """The most vCPUs that could each have a CPU of their own (a plain augmenting-path
    matching of vCPUs to the CPUs they may use), for comparison with the planner."""
    wanted = [list(p.wanted[i]) for p in placements for i in sorted(p.wanted)]
    holder: dict[int, int] = {}

    def augment(vcpu: int, seen: set[int]) -> bool:
        for cpu in wanted[vcpu]:
            if cpu not in seen:
                seen.add(cpu)
                if cpu not in holder or augment(holder[cpu], seen):
                    holder[cpu] = vcpu
                    return True
        return False

    return sum(augment(vcpu, set()) for vcpu in range(len(wanted)))


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(inputs=random_inputs())
def test_placement_invariants(two_nodes: HostTopology, inputs: list[PlacementInput]) -> None:
    placements = plan_placement(two_nodes, inputs)

    cpus = dedicated_cpus(placements)
    assert len(cpus) == len(set(cpus)), "a CPU is dedicated twice"
    assert len(cpus) == max_matching(placements), "fewer dedicated vCPUs than possible"
    for placement in placements:
        dedicated_here = CpuSet(cpus)
        for a in placement.assignments:
            assert a.cpus, "empty mask"
            assert a.cpus.issubset(a.allowed), "mask outside the allowed CPUs"
            if a.role is Role.VCPU and not a.dedicated:
                wanted = placement.wanted[a.vcpu_index or 0]
                assert wanted.issubset(dedicated_here), "shares while a CPU of its node is free"
            if a.role is Role.EMULATOR and a.allowed - dedicated_here:
                assert a.cpus.isdisjoint(dedicated_here), "emulator thread on a vCPU's CPU"


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(inputs=random_inputs())
def test_second_pass_changes_nothing(two_nodes: HostTopology, inputs: list[PlacementInput]) -> None:
    after_first = applied(inputs, plan_placement(two_nodes, inputs))

    second = plan_placement(two_nodes, after_first)

    assert kernel_masks(applied(after_first, second)) == kernel_masks(after_first)


# Regressions from a tester's findings: each value below is the right one.


@pytest.fixture
def cpu_per_node(tmp_path: Path) -> HostTopology:
    """Node 0 is CPU 0, node 1 is CPU 1 (the bundled example host)."""
    return read_topology(make_host(tmp_path, {0: NodeSpec("0"), 1: NodeSpec("1")}))


def test_two_flat_vms_go_to_different_nodes(cpu_per_node: HostTopology) -> None:
    inputs = [sandbox("a", flat(1), "0-1"), sandbox("b", flat(1), "0-1", start=1)]

    masks = vcpu_masks(plan_placement(cpu_per_node, inputs))

    assert sorted(masks.values()) == [["0"], ["1"]]


def test_vcpu_with_a_missing_host_node_does_not_take_a_cpu_another_vcpu_needs(
    cpu_per_node: HostTopology,
) -> None:
    args = [
        "-smp", "2,sockets=2", "-m", "256",
        "-object", "memory-backend-ram,id=m0,size=128M,host-nodes=5,policy=bind",
        "-object", "memory-backend-ram,id=m1,size=128M,host-nodes=0,policy=bind",
        "-numa", "node,nodeid=0,cpus=0,memdev=m0",
        "-numa", "node,nodeid=1,cpus=1,memdev=m1",
    ]  # fmt: skip
    (placement,) = plan_placement(cpu_per_node, [sandbox("gap", args, "0-1")])

    assert [a.cpus.to_list() for a in placement.vcpu_assignments] == ["1", "0"]
    assert any("host node 5" in w and "not a node of this host" in w for w in placement.warnings)


def test_emulator_threads_leave_a_cpu_another_sandbox_now_holds(cpu_per_node: HostTopology) -> None:
    """Sandbox a's emulator sat alone on CPU 1 (spare then); sandbox b's vCPU now holds CPU 1."""
    a = sandbox("a", flat(1), "0-1", ["0"], start=1, emulators=2)
    a.vcpus.others = [FakeTask(t.tid, CpuSet("1")) for t in a.vcpus.others]
    b = sandbox("b", flat(1), "0-1", start=2)

    placements = plan_placement(cpu_per_node, [a, b])

    assert vcpu_masks(placements) == {"a": ["0"], "b": ["1"]}
    emulators = [x for x in placements[0].assignments if x.role is Role.EMULATOR]
    assert [x.cpus.to_list() for x in emulators] == ["0", "0"]
