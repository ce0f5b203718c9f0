"""Types of the Rust extension `kata_numa._native` (checked against the built module in CI)."""

from collections.abc import Iterable, Iterator
from os import PathLike
from typing import final

_Path = str | PathLike[str]

@final
class CpuSet:
    """An immutable set of CPU (or NUMA node) numbers in the kernel's list and mask formats."""

    def __new__(cls, cpus: Iterable[int] | str | None = None) -> CpuSet: ...
    @staticmethod
    def parse_list(text: str) -> CpuSet: ...
    @staticmethod
    def parse_mask(text: str) -> CpuSet: ...
    def to_list(self) -> str: ...
    def to_mask(self) -> str: ...
    def first(self) -> int | None: ...
    def last(self) -> int | None: ...
    def issubset(self, other: CpuSet) -> bool: ...
    def isdisjoint(self, other: CpuSet) -> bool: ...
    def __len__(self) -> int: ...
    def __bool__(self) -> bool: ...
    def __contains__(self, cpu: int, /) -> bool: ...
    def __iter__(self) -> Iterator[int]: ...
    def __or__(self, other: CpuSet, /) -> CpuSet: ...
    def __and__(self, other: CpuSet, /) -> CpuSet: ...
    def __sub__(self, other: CpuSet, /) -> CpuSet: ...
    def __xor__(self, other: CpuSet, /) -> CpuSet: ...
    def __le__(self, other: CpuSet, /) -> bool: ...
    def __lt__(self, other: CpuSet, /) -> bool: ...
    def __ge__(self, other: CpuSet, /) -> bool: ...
    def __gt__(self, other: CpuSet, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class HugePages:
    size_kib: int
    total: int
    free: int

@final
class NumaNode:
    id: int
    cpus: CpuSet
    memory_kib: int
    free_kib: int | None
    distances: list[tuple[int, int]]
    hugepages: list[HugePages]

@final
class Cpu:
    id: int
    package: int | None
    die: int | None
    core: int | None
    siblings: CpuSet

@final
class PciDevice:
    bdf: str
    numa_node: int | None
    class_code: int
    vendor: int
    device: int
    driver: str | None
    iommu_group: int | None
    is_gpu: bool

@final
class HostTopology:
    nodes: list[NumaNode]
    online_cpus: CpuSet
    cpus: list[Cpu]
    pci_devices: list[PciDevice]
    notes: list[str]

def read_host_topology(root: _Path) -> HostTopology: ...
def read_pci_device(root: _Path, bdf: str) -> PciDevice: ...

@final
class Process:
    pid: int
    start_time: int
    comm: str
    argv: list[str]
    exe: str | None

@final
class Task:
    pid: int
    tid: int
    name: str
    cpus_allowed: CpuSet
    state: str
    vcpu_index: int | None

def read_processes(proc_root: _Path) -> list[Process]: ...
def read_process(proc_root: _Path, pid: int) -> Process: ...
def read_tasks(proc_root: _Path, pid: int) -> list[Task]: ...
def read_task(proc_root: _Path, pid: int, tid: int) -> Task: ...
def vcpu_index_from_name(name: str) -> int | None: ...
def get_affinity(pid: int, tid: int) -> CpuSet: ...
def set_affinity(pid: int, tid: int, cpus: CpuSet) -> None: ...

@final
class Smp:
    cpus: int
    maxcpus: int
    sockets: int
    dies: int
    clusters: int
    cores: int
    threads: int

@final
class MemoryBackend:
    id: str
    kind: str
    size_mib: int
    host_nodes: CpuSet | None
    policy: str | None
    mem_path: str | None
    share: bool
    prealloc: bool

@final
class GuestNode:
    id: int
    cpus: CpuSet
    memdev: str | None
    mem_mib: int

@final
class GuestLayout:
    name: str | None
    debug_threads: bool
    accel: str | None
    machine_memdev: str | None
    smp: Smp
    memory_mib: int
    backends: list[MemoryBackend]
    nodes: list[GuestNode]
    distances: list[tuple[int, int, int]]
    vfio_devices: list[str]
    notes: list[str]

def parse_qemu_args(argv: list[str]) -> GuestLayout: ...
def parse_size(text: str, default_unit: int = 1) -> int | None: ...

SKIP_WARNING: str
#: QEMU's limits the planner keeps to: vCPUs of q35, guest nodes and host-nodes numbers.
MAX_VCPUS: int
MAX_NUMA_NODES: int
#: Memory sizes above this many MiB are refused.
MAX_MEMORY_MIB: int

@final
class PlanHostNode:
    """One host NUMA node for the planner, with what other sandboxes already use there."""

    id: int
    cpus: CpuSet
    memory_mib: int
    free_mib: int
    distances: list[tuple[int, int]]
    hugepages_free: list[tuple[int, int]]
    used_cpus: int
    used_memory_mib: int
    def __new__(
        cls,
        id: int,
        cpus: CpuSet,
        memory_mib: int,
        *,
        free_mib: int | None = None,
        distances: list[tuple[int, int]] = ...,
        hugepages_free: list[tuple[int, int]] = ...,
        used_cpus: int = 0,
        used_memory_mib: int = 0,
    ) -> PlanHostNode: ...

@final
class PlannedNode:
    id: int
    host_nodes: CpuSet
    vcpus: CpuSet
    memory_mib: int
    memory_nodes: CpuSet

@final
class PlannedDevice:
    bdf: str
    host_node: int | None
    guest_node: int | None
    root_port: str

@final
class Plan:
    nodes: list[PlannedNode]
    host_nodes: CpuSet
    flat_memory_nodes: CpuSet
    smp: Smp
    memory_mib: int
    mem_path: str | None
    hugepage_kib: int | None
    share: bool
    prealloc: bool
    distances: list[list[int]]
    devices: list[PlannedDevice]
    decisions: list[str]
    warnings: list[str]
    qemu_args: list[str]
    is_flat: bool

def plan_guest(
    host: list[PlanHostNode],
    vcpus: int,
    memory_mib: int,
    *,
    max_vcpus: int | None = None,
    mapping: list[str] | None = None,
    vfio: list[tuple[str, int | None]] = ...,
    mem_path: str | None = None,
    hugepage_kib: int | None = None,
    share: bool = False,
    prealloc: bool = False,
    confidential: bool = False,
    policy: str = "most-free",
) -> Plan: ...

@final
class VcpuScan:
    tasks: list[Task]
    vcpus: dict[int, int]
    method: str | None
    kvm_vcpu_fds: int
    running: list[int]
    notes: list[str]

def scan_vcpus(proc_root: _Path, pid: int, smp: Smp, binary: str) -> VcpuScan: ...
def query_vcpu_threads(socket: _Path, timeout: float = 2.0) -> dict[int, int]: ...
def x86_apic_id(index: int, smp: Smp) -> int: ...

@final
class CgroupLayout:
    @property
    def cpuset_v1(self) -> str | None: ...
    @property
    def unified(self) -> str | None: ...
    @property
    def source(self) -> str: ...

@final
class AllowedCpus:
    cpus: CpuSet | None
    source: str
    version: int
    cgroup: str

def read_cgroup_layout(proc_root: _Path, cgroup_root: _Path | None = None) -> CgroupLayout: ...
def read_allowed_cpus(
    proc_root: _Path, pid: int, layout: CgroupLayout, tid: int | None = None
) -> AllowedCpus: ...

@final
class VfioDevice:
    bdf: str
    source: str

def open_vfio_devices(proc_root: _Path, sysfs_root: _Path, pid: int) -> list[VfioDevice]: ...
