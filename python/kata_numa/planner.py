"""Planning a sandbox's guest NUMA topology (`kata-numa plan`, DESIGN §2.4).

Python's part: turn Kata's configuration, the command line, the host's topology and what the
running sandboxes already use into the Rust planner's input (`_native.plan_guest`), then show
the result. The planning itself is Rust (`rust/core/src/plan.rs`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from math import ceil
from pathlib import Path
from typing import Any

from kata_numa._native import (
    MAX_MEMORY_MIB,
    MAX_VCPUS,
    CpuSet,
    GuestLayout,
    HostTopology,
    Plan,
    PlanHostNode,
    parse_size,
    plan_guest,
    scan_vcpus,
)
from kata_numa.errors import ConfigError, ProcessGone, SysfsError, UsageError
from kata_numa.kataconfig import (
    QEMU,
    RUNTIME,
    KataConfig,
    Problem,
    find_config,
    load_config,
    value_problems,
)
from kata_numa.sandbox import Sandbox

log = logging.getLogger("kata_numa.planner")

MIB = 1 << 20
DEFAULT_HUGEPAGE_KIB = 2048
HUGEPAGES_PATH = "/dev/hugepages"
SHM_PATH = "/dev/shm"
#: Kata's `shared_fs` values that need guest memory QEMU can share with a daemon.
SHARED_FS = ("virtio-fs", "virtio-fs-nydus")


def parse_size_mib(text: str, what: str = "--memory") -> int:
    """A memory size in MiB: `4096M`, `64G`, `64Gi`, `1.5G`; a bare number is MiB."""
    size = parse_size(text, MIB)
    if size is None or size <= 0:
        raise UsageError(f"{what} {text!r} is not a size such as 4096M, 64G or 64Gi")
    if size % MIB:
        raise UsageError(f"{what} {text!r} is not a whole number of MiB")
    if size // MIB > MAX_MEMORY_MIB:
        raise UsageError(f"{what} {text!r} is more than 2^40 MiB: not a size a guest can have")
    return size // MIB


def check_vcpus(value: int, what: str) -> int:
    """A vCPU count of the command line (`--vcpus`, `--max-vcpus`): 1 to QEMU's limit."""
    if not 1 <= value <= MAX_VCPUS:
        raise UsageError(
            f"{what} {value}: give a whole number of vCPUs from 1 to {MAX_VCPUS} "
            "(the most QEMU's q35 machine takes)"
        )
    return value


def check_host_node(node: int, topology: HostTopology, what: str) -> int:
    """A host node named on the command line must be one of this host's."""
    ids = CpuSet(n.id for n in topology.nodes)
    if node not in ids:
        raise UsageError(f"{what}: host node {node} is not a node of this host (nodes {ids})")
    return node


def parse_page_size_kib(text: str) -> int:
    """A huge page size such as `2M`, `1G` or `2048k`, in KiB."""
    size = parse_size(text, 1024)
    if size is None or size < MIB or size % MIB:
        raise UsageError(f"--hugepages {text!r} is not a huge page size such as 2M or 1G")
    return size // 1024


@dataclass
class NodeUsage:
    """What other sandboxes already take on one host node."""

    vcpus: int = 0
    memory_mib: int = 0


def parse_used(text: str) -> tuple[int, NodeUsage]:
    """`NODE:VCPUS[:MEMORY]` of `--used`, e.g. `0:8:16G`."""
    parts = text.split(":")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        node, vcpus = int(parts[0]), int(parts[1])
        memory = parse_size_mib(parts[2], "--used memory") if len(parts) == 3 else 0
    except ValueError:
        raise UsageError(f"--used {text!r} is not NODE:VCPUS[:MEMORY] such as 0:8:16G") from None
    if node < 0 or vcpus < 0:
        raise UsageError(f"--used {text!r}: node and vCPUs must not be negative")
    return node, NodeUsage(vcpus, memory)


#: (host nodes, vCPUs, MiB) a sandbox takes: each share is split evenly over its host nodes.
Shares = list[tuple[CpuSet, int, int]]


def bound_shares(layout: GuestLayout) -> Shares:
    """What a sandbox binds, from its QEMU arguments: a guest node's share goes to the host
    nodes of its memory backend, a flat VM's to its one bound backend; empty when unbound."""
    backends = {backend.id: backend for backend in layout.backends}
    shares: Shares = []
    for node in layout.nodes:
        backend = backends.get(node.memdev or "")
        if backend is None or not backend.host_nodes:
            return []
        started = sum(1 for vcpu in node.cpus if vcpu < layout.smp.cpus)
        shares.append((backend.host_nodes, started, backend.size_mib))
    bound = [b for b in layout.backends if b.host_nodes]
    if not layout.nodes and len(bound) == 1 and bound[0].host_nodes:
        shares = [(bound[0].host_nodes, layout.smp.cpus, layout.memory_mib)]
    return shares


def _add_shares(usage: dict[int, NodeUsage], shares: Shares) -> None:
    for hosts, vcpus, memory in shares:
        for host in hosts:
            entry = usage.setdefault(host, NodeUsage())
            entry.vcpus += ceil(vcpus / len(hosts))
            entry.memory_mib += memory // len(hosts)


def usage_of_layouts(layouts: Iterable[GuestLayout]) -> tuple[dict[int, NodeUsage], list[str]]:
    """vCPUs and memory running sandboxes bind to each host node, from their QEMU arguments
    (`bound_shares`). Sandboxes without such bindings are not counted, with a note."""
    usage: dict[int, NodeUsage] = {}
    notes: list[str] = []
    for layout in layouts:
        shares = bound_shares(layout)
        if not shares:
            notes.append(f"sandbox {layout.name or '?'} has no host-nodes binding: not counted")
        _add_shares(usage, shares)
    return usage, notes


def usage_of_sandboxes(
    proc_root: Path, sandboxes: Iterable[Sandbox], topology: HostTopology
) -> tuple[dict[int, NodeUsage], list[str]]:
    """Like `usage_of_layouts`, and a sandbox without host-nodes bindings counts on the host
    node its vCPU threads may run on (`/proc/<pid>/task/<tid>/status` Cpus_allowed_list inside
    one node: pinned there, or the host has one node), with a note."""
    usage: dict[int, NodeUsage] = {}
    notes: list[str] = []
    for sandbox in sandboxes:
        shares = bound_shares(sandbox.layout)
        if not shares:
            shares, note = held_shares(proc_root, sandbox, topology)
            notes.append(note)
        _add_shares(usage, shares)
    return usage, notes


def held_shares(proc_root: Path, sandbox: Sandbox, topology: HostTopology) -> tuple[Shares, str]:
    """vCPUs of an unbound sandbox on each host node whose CPUs hold all the allowed CPUs of an
    identified vCPU thread; its memory is taken to be where its vCPUs are (the kernel allocates
    a page on the node of the thread that first touches it). One reading: no waiting for vCPU
    threads that do not exist yet."""
    layout = sandbox.layout
    about = f"sandbox {sandbox.sandbox_id} has no host-nodes binding"
    try:
        binary = sandbox.argv[0] if sandbox.argv else ""
        scan = scan_vcpus(proc_root, sandbox.pid, layout.smp, binary)
    except (ProcessGone, SysfsError) as exc:
        return [], f"{about} and its vCPU threads cannot be read ({exc}): not counted"
    allowed = {task.tid: task.cpus_allowed for task in scan.tasks}
    per_node: dict[int, int] = {}
    for tid in scan.vcpus.values():
        cpus = allowed.get(tid)
        inside = [n.id for n in topology.nodes if cpus and n.cpus and cpus.issubset(n.cpus)]
        if len(inside) == 1:
            per_node[inside[0]] = per_node.get(inside[0], 0) + 1
    if not per_node:
        return [], f"{about} and no vCPU thread of it is held inside one host node: not counted"
    counted = sum(per_node.values())
    shares = [
        (CpuSet([node]), vcpus, layout.memory_mib * vcpus // counted)
        for node, vcpus in sorted(per_node.items())
    ]
    where = ", ".join(
        f"{vcpus} vCPUs on host node {node}" for node, vcpus in sorted(per_node.items())
    )
    return shares, (
        f"{about}: counted where its vCPU threads may run ({where}: their allowed CPUs lie "
        f"there), its {layout.memory_mib} MiB taken to be with them"
    )


def host_nodes(topology: HostTopology, usage: dict[int, NodeUsage]) -> list[PlanHostNode]:
    """The planner's view of each host node."""
    return [
        PlanHostNode(
            node.id,
            node.cpus,
            node.memory_kib // 1024,
            # Unknown MemFree (some captures lack it): count the whole node as free.
            free_mib=(node.memory_kib if node.free_kib is None else node.free_kib) // 1024,
            distances=list(node.distances),
            hugepages_free=[(p.size_kib, p.free) for p in node.hugepages],
            used_cpus=usage.get(node.id, NodeUsage()).vcpus,
            used_memory_mib=usage.get(node.id, NodeUsage()).memory_mib,
        )
        for node in topology.nodes
    ]


def resolve_vfio(spec: str, topology: HostTopology) -> tuple[str, int | None]:
    """`BDF` (host node from sysfs) or `BDF@NODE` (`@-1`: unknown) of `--vfio`."""
    bdf, at, node_text = spec.partition("@")
    bdf = bdf.lower() if bdf.count(":") == 2 else f"0000:{bdf.lower()}"
    if at:
        try:
            node = int(node_text)
        except ValueError:
            raise UsageError(f"--vfio {spec!r}: the node after @ must be a number") from None
        if node < 0:
            return bdf, None
        return bdf, check_host_node(node, topology, f"--vfio {spec!r}")
    for device in topology.pci_devices:
        if device.bdf == bdf:
            return bdf, device.numa_node
    raise UsageError(
        f"--vfio {spec!r}: no PCI device {bdf} under sys/bus/pci/devices of the "
        "sysfs root; write BDF@NODE to plan for a device elsewhere"
    )


@dataclass
class PlanInput:
    """The command line's wishes; None means: from Kata's configuration, else Kata's default."""

    vcpus: int | None = None
    memory_mib: int | None = None
    max_vcpus: int | None = None
    mapping: list[str] | None = None
    vfio: list[str] = field(default_factory=list)
    hugepage_kib: int | None = None
    #: hugetlbfs mount of the huge pages; None: the usual one for the page size.
    hugepage_path: str | None = None
    shared: bool = False
    prealloc: bool = False
    confidential: bool = False
    policy: str = "most-free"
    used: list[str] = field(default_factory=list)


@dataclass
class PlanResult:
    plan: Plan
    #: Sentences about where the input came from, shown before the planner's own.
    decisions: list[str]
    warnings: list[str]
    config: KataConfig | None = None


def load_kata_config(path: Path | None, sysfs_root: Path) -> tuple[KataConfig | None, str]:
    """The named configuration, or (for the live host only) the one Kata would find."""
    if path is None and sysfs_root != Path("/"):
        return None, (
            "Kata configuration not read: the sysfs root is another host's; "
            "name one with --kata-config"
        )
    try:
        base = find_config(path)
    except ConfigError:
        if path is not None:
            raise
        return None, "no Kata configuration found: command-line values and Kata's defaults"
    config = load_config(base)
    count = len(config.dropins)
    dropins = f" with {count} drop-in{'s' if count > 1 else ''}" if count else ""
    return config, f"Kata configuration {base}{dropins}"


def make_plan(
    wish: PlanInput,
    topology: HostTopology,
    config: KataConfig | None,
    usage: dict[int, NodeUsage],
    notes: Sequence[str] = (),
) -> PlanResult:
    """Combine command line, configuration and usage, and run the planner.

    Raises UsageError for a bad command-line value and ConfigError for a bad value of the Kata
    configuration that the plan would use (`kataconfig.value_problems`), each naming it."""
    decisions = list(notes)
    warnings: list[str] = []
    if config is not None:
        _refuse_bad_values(value_problems(config, topology), wish)
    get = (lambda section, key: config.get(section, key)) if config else _defaults
    vcpus = _vcpus(wish, get(QEMU, "default_vcpus"), decisions)
    memory = wish.memory_mib if wish.memory_mib is not None else get(QEMU, "default_memory")
    max_vcpus = _max_vcpus(wish, vcpus, get(QEMU, "default_maxvcpus"), decisions)
    mapping = wish.mapping
    if mapping is None and config is not None and get(QEMU, "numa_mapping"):
        mapping = list(get(QEMU, "numa_mapping"))
        shown = ", ".join(f'"{entry}"' for entry in mapping)
        decisions.append(f"numa_mapping [{shown}] from the Kata configuration")
    if config is not None and not get(QEMU, "enable_numa"):
        warnings.append(
            "enable_numa is false in the Kata configuration: Kata would start "
            "this sandbox flat; the plan shows what NUMA would give"
        )
    if (
        config is not None
        and get(QEMU, "enable_numa")
        and not get(RUNTIME, "static_sandbox_resource_mgmt")
    ):
        warnings.append(
            "static_sandbox_resource_mgmt is false: Kata sizes the VM at start only "
            "with it, and multi-node NUMA needs that (see kata-numa check-config)"
        )
    backend = _backend(wish, get, decisions)
    for node, used in sorted(usage.items()):
        decisions.append(
            f"other sandboxes use {used.vcpus} vCPUs and {used.memory_mib} MiB on host node {node}"
        )
    plan = plan_guest(
        host_nodes(topology, usage),
        vcpus,
        memory,
        max_vcpus=max_vcpus,
        mapping=mapping,
        vfio=[resolve_vfio(spec, topology) for spec in wish.vfio],
        confidential=wish.confidential or bool(get(QEMU, "confidential_guest")),
        policy=wish.policy,
        **backend,
    )
    return PlanResult(plan, decisions, warnings, config)


_KATA_DEFAULTS: dict[str, Any] = {
    "default_vcpus": 1,
    "default_memory": 2048,
    "default_maxvcpus": 0,
    "numa_mapping": [],
    "enable_numa": False,
    "enable_hugepages": False,
    "enable_mem_prealloc": False,
    "shared_fs": "",
    "file_mem_backend": "",
    "confidential_guest": False,
    "static_sandbox_resource_mgmt": False,
}


def _defaults(section: str, key: str) -> Any:
    return _KATA_DEFAULTS[key]


#: What the command line overrides: a bad configuration value under it does not matter here.
_OVERRIDES = {
    "default_vcpus": "vcpus",
    "default_memory": "memory_mib",
    "default_maxvcpus": "max_vcpus",
    "numa_mapping": "mapping",
    "enable_hugepages": "hugepage_kib",
}


def _refuse_bad_values(problems: Iterable[Problem], wish: PlanInput) -> None:
    """Refuse a plan built on a wrong value: it could not say what Kata would start."""
    wrong = [
        p
        for p in problems
        if p.level == "error"
        and p.key in _KATA_DEFAULTS
        and getattr(wish, _OVERRIDES.get(p.key, ""), None) is None
    ]
    if wrong:
        listed = "; ".join(f"{p.path or 'Kata configuration'}: {p.message}" for p in wrong)
        raise ConfigError(
            f"{listed}; fix the Kata configuration (kata-numa check-config shows all of it)",
            path=str(wrong[0].path or ""),
            key=wrong[0].key,
        )


def _vcpus(wish: PlanInput, configured: float, decisions: list[str]) -> int:
    if wish.vcpus is not None:
        return check_vcpus(wish.vcpus, "--vcpus")
    if configured == 0:
        decisions.append("default_vcpus = 0: Kata starts 1 vCPU")
        return 1
    return ceil(configured)


def _max_vcpus(wish: PlanInput, vcpus: int, configured: int, decisions: list[str]) -> int:
    if wish.max_vcpus is not None:
        return check_vcpus(wish.max_vcpus, "--max-vcpus")
    if configured > MAX_VCPUS:
        decisions.append(
            f"default_maxvcpus {configured} is more than the {MAX_VCPUS} vCPUs QEMU's q35 "
            f"machine takes: max vCPUs {MAX_VCPUS} (Kata, too, caps it)"
        )
        return MAX_VCPUS
    if configured >= vcpus:
        decisions.append(f"max vCPUs {configured} from default_maxvcpus")
        return configured
    if configured:
        decisions.append(
            f"default_maxvcpus {configured} is below the {vcpus} vCPUs asked for: max vCPUs {vcpus}"
        )
    return vcpus


def page_size_text(page_kib: int) -> str:
    """`2M`, `1G`: a huge page size as hugetlbfs's `pagesize=` takes it."""
    return f"{page_kib >> 20}G" if page_kib % (1 << 20) == 0 else f"{page_kib >> 10}M"


def hugetlbfs_mount(page_kib: int) -> str:
    """Where a hugetlbfs of that page size is usually mounted: `/dev/hugepages` for the default
    2 MiB pages (systemd mounts it), `/dev/hugepages1G` and so on for other sizes."""
    if page_kib == DEFAULT_HUGEPAGE_KIB:
        return HUGEPAGES_PATH
    return f"{HUGEPAGES_PATH}{page_size_text(page_kib)}"


def _backend(wish: PlanInput, get: Any, decisions: list[str]) -> dict[str, Any]:
    hugepage_kib = wish.hugepage_kib
    why = "--hugepages"
    if hugepage_kib is None and get(QEMU, "enable_hugepages"):
        hugepage_kib = DEFAULT_HUGEPAGE_KIB
        why = "enable_hugepages (name another size with --hugepages)"
    if hugepage_kib is None and wish.hugepage_path is not None:
        raise UsageError(
            f"--hugepages-path {wish.hugepage_path!r} needs huge pages: add --hugepages SIZE"
        )
    shared = wish.shared or get(QEMU, "shared_fs") in SHARED_FS
    prealloc = wish.prealloc or bool(get(QEMU, "enable_mem_prealloc"))
    if hugepage_kib is not None:
        path = wish.hugepage_path or hugetlbfs_mount(hugepage_kib)
        size = page_size_text(hugepage_kib)
        decisions.append(
            f"{why}: huge pages of {size} ({hugepage_kib} KiB) from the hugetlbfs mounted at "
            f"{path}, which must exist (mount -t hugetlbfs -o pagesize={size} none {path}); "
            "name another mount with --hugepages-path"
        )
        return {
            "mem_path": path,
            "hugepage_kib": hugepage_kib,
            "share": True,
            "prealloc": True,
        }
    if shared:
        return {
            "mem_path": get(QEMU, "file_mem_backend") or SHM_PATH,
            "share": True,
            "prealloc": prealloc,
        }
    return {"prealloc": prealloc}


def to_json(result: PlanResult) -> dict[str, Any]:
    """The object of `kata-numa plan --json`."""
    plan = result.plan
    smp = plan.smp
    return {
        "guest_nodes": [
            {
                "id": node.id,
                "host_nodes": node.host_nodes.to_list(),
                "vcpus": node.vcpus.to_list(),
                "memory_mib": node.memory_mib,
            }
            for node in plan.nodes
        ],
        "smp": {
            "cpus": smp.cpus,
            "maxcpus": smp.maxcpus,
            "sockets": smp.sockets,
            "cores": smp.cores,
            "threads": smp.threads,
        },
        "memory_mib": plan.memory_mib,
        "distances": plan.distances,
        "qemu_args": plan.qemu_args,
        "host_nodes": plan.host_nodes.to_list(),
        "devices": [
            {"bdf": d.bdf, "host_node": d.host_node, "guest_node": d.guest_node}
            for d in plan.devices
        ],
        "warnings": [*result.warnings, *plan.warnings],
        "decisions": [*result.decisions, *plan.decisions],
    }


def qemu_lines(args: Sequence[str]) -> list[str]:
    """QEMU arguments one option per line: `-numa node,nodeid=0,...`."""
    lines: list[str] = []
    for arg in args:
        if arg.startswith("-") or not lines:
            lines.append(arg)
        else:
            lines[-1] += f" {arg}"
    return lines


def describe(result: PlanResult) -> str:
    """The human text of `kata-numa plan`."""
    plan = result.plan
    smp = plan.smp
    noun = "node" if len(plan.host_nodes) == 1 else "nodes"
    lines = [
        f"{smp.cpus} vCPUs (maxcpus {smp.maxcpus}), {plan.memory_mib} MiB, bound to host "
        f"{noun} {plan.host_nodes or 'none'}"
    ]
    if plan.is_flat:
        lines.append("flat guest (no guest NUMA nodes)")
    else:
        rows = [("guest node", "host nodes", "vCPUs", "memory")]
        rows += [
            (
                str(n.id),
                n.host_nodes.to_list(),
                n.vcpus.to_list() or "-",
                f"{n.memory_mib} MiB" if n.memory_mib else "-",
            )
            for n in plan.nodes
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines += [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows
        ]
    lines.append("decisions:")
    lines += [f"  - {sentence}" for sentence in [*result.decisions, *plan.decisions]]
    warnings = [*result.warnings, *plan.warnings]
    if warnings:
        lines.append("warnings:")
        lines += [f"  - {warning}" for warning in warnings]
    lines.append("QEMU arguments:")
    lines += [f"  {line}" for line in qemu_lines(plan.qemu_args)]
    return "\n".join(lines)
