"""Host nodes for the planner, written out directly (no sysfs tree needed)."""

from __future__ import annotations

from typing import Any

from kata_numa._native import CpuSet, Plan, PlanHostNode


def hosts(*cpus: int, memory_mib: int | list[int] = 8192, **per_node: Any) -> list[PlanHostNode]:
    """Host nodes 0.. with `cpus[i]` CPUs each (numbered on), `memory_mib` each (or a list, one
    per node), 10/21 distances. `per_node` maps another field to one value per node."""
    nodes, first = [], 0
    for node_id, count in enumerate(cpus):
        memory = memory_mib[node_id] if isinstance(memory_mib, list) else memory_mib
        fields: dict[str, Any] = {
            "memory_mib": memory,
            "distances": [(o, 10 if o == node_id else 21) for o in range(len(cpus))],
        }
        fields.update({name: values[node_id] for name, values in per_node.items()})
        cpuset = CpuSet(range(first, first + count))
        nodes.append(PlanHostNode(node_id, cpuset, fields.pop("memory_mib"), **fields))
        first += count
    return nodes


def layout(plan: Plan) -> list[tuple[str, str, int]]:
    """(host nodes, vCPUs, MiB) per guest node."""
    return [(n.host_nodes.to_list(), n.vcpus.to_list(), n.memory_mib) for n in plan.nodes]
