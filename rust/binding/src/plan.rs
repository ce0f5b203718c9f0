//! The guest NUMA planner (`kata_numa_core::plan`) for Python: host nodes in, a plan out.

use crate::cpuset::PyCpuSet;
use crate::errors::IntoPyResult;
use crate::qemu::Smp;
use kata_numa_core::plan;
use pyo3::prelude::*;

/// One host NUMA node as the planner sees it, with what other sandboxes already use there.
#[pyclass(module = "kata_numa._native", frozen, get_all)]
#[derive(Clone)]
pub struct PlanHostNode {
    id: u32,
    cpus: PyCpuSet,
    memory_mib: u64,
    free_mib: u64,
    distances: Vec<(u32, u32)>,
    hugepages_free: Vec<(u64, u64)>,
    used_cpus: u32,
    used_memory_mib: u64,
}

#[pymethods]
impl PlanHostNode {
    /// `free_mib` defaults to `memory_mib`; `hugepages_free` holds (page size KiB, free pages).
    #[new]
    #[pyo3(signature = (
        id, cpus, memory_mib, *, free_mib = None, distances = Vec::new(),
        hugepages_free = Vec::new(), used_cpus = 0, used_memory_mib = 0
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        id: u32,
        cpus: PyCpuSet,
        memory_mib: u64,
        free_mib: Option<u64>,
        distances: Vec<(u32, u32)>,
        hugepages_free: Vec<(u64, u64)>,
        used_cpus: u32,
        used_memory_mib: u64,
    ) -> Self {
        PlanHostNode {
            id,
            cpus,
            memory_mib,
            free_mib: free_mib.unwrap_or(memory_mib),
            distances,
            hugepages_free,
            used_cpus,
            used_memory_mib,
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "PlanHostNode(id={}, cpus='{}', memory_mib={}, used_cpus={}, used_memory_mib={})",
            self.id,
            self.cpus.0.to_list(),
            self.memory_mib,
            self.used_cpus,
            self.used_memory_mib
        )
    }
}

impl From<&PlanHostNode> for plan::HostNode {
    fn from(n: &PlanHostNode) -> Self {
        plan::HostNode {
            id: n.id,
            cpus: n.cpus.0.clone(),
            memory_mib: n.memory_mib,
            free_mib: n.free_mib,
            distances: n.distances.clone(),
            hugepages_free: n.hugepages_free.clone(),
            used_cpus: n.used_cpus,
            used_memory_mib: n.used_memory_mib,
        }
    }
}

#[pyclass(module = "kata_numa._native", frozen, get_all)]
#[derive(Clone)]
pub struct PlannedNode {
    id: u32,
    host_nodes: PyCpuSet,
    vcpus: PyCpuSet,
    memory_mib: u64,
    memory_nodes: PyCpuSet,
}

#[pyclass(module = "kata_numa._native", frozen, get_all)]
#[derive(Clone)]
pub struct PlannedDevice {
    bdf: String,
    host_node: Option<u32>,
    guest_node: Option<u32>,
    root_port: String,
}

/// A planned guest topology: layout, reasons, warnings and QEMU arguments.
#[pyclass(module = "kata_numa._native", frozen, get_all)]
pub struct Plan {
    nodes: Vec<PlannedNode>,
    host_nodes: PyCpuSet,
    flat_memory_nodes: PyCpuSet,
    smp: Smp,
    memory_mib: u64,
    mem_path: Option<String>,
    hugepage_kib: Option<u64>,
    share: bool,
    prealloc: bool,
    distances: Vec<Vec<u32>>,
    devices: Vec<PlannedDevice>,
    decisions: Vec<String>,
    warnings: Vec<String>,
    /// Option and value as separate items, ready to append to a QEMU argv.
    qemu_args: Vec<String>,
    is_flat: bool,
}

impl From<plan::Plan> for Plan {
    fn from(p: plan::Plan) -> Self {
        let qemu_args = p.qemu_args();
        let is_flat = p.is_flat();
        Plan {
            nodes: p
                .nodes
                .into_iter()
                .map(|n| PlannedNode {
                    id: n.id,
                    host_nodes: n.host_nodes.into(),
                    vcpus: n.vcpus.into(),
                    memory_mib: n.memory_mib,
                    memory_nodes: n.memory_nodes.into(),
                })
                .collect(),
            host_nodes: p.host_nodes.into(),
            flat_memory_nodes: p.flat_memory_nodes.into(),
            smp: p.smp.into(),
            memory_mib: p.memory_mib,
            mem_path: p.backend.mem_path,
            hugepage_kib: p.backend.hugepage_kib,
            share: p.backend.share,
            prealloc: p.backend.prealloc,
            distances: p.distances,
            devices: p
                .devices
                .into_iter()
                .map(|d| PlannedDevice {
                    bdf: d.bdf,
                    host_node: d.host_node,
                    guest_node: d.guest_node,
                    root_port: d.root_port,
                })
                .collect(),
            decisions: p.decisions,
            warnings: p.warnings,
            qemu_args,
            is_flat,
        }
    }
}

/// Plan the guest NUMA topology of one sandbox (DESIGN §2.4). `vfio` holds (BDF, host node
/// or None when sysfs says -1); `mapping` is Kata's `numa_mapping` (None: auto).
#[pyfunction]
#[pyo3(signature = (
    host, vcpus, memory_mib, *, max_vcpus = None, mapping = None, vfio = Vec::new(),
    mem_path = None, hugepage_kib = None, share = false, prealloc = false,
    confidential = false, policy = "most-free"
))]
#[allow(clippy::too_many_arguments)]
fn plan_guest(
    host: Vec<PyRef<'_, PlanHostNode>>,
    vcpus: u32,
    memory_mib: u64,
    max_vcpus: Option<u32>,
    mapping: Option<Vec<String>>,
    vfio: Vec<(String, Option<u32>)>,
    mem_path: Option<String>,
    hugepage_kib: Option<u64>,
    share: bool,
    prealloc: bool,
    confidential: bool,
    policy: &str,
) -> PyResult<Plan> {
    let request = plan::PlanRequest {
        host: host.iter().map(|n| plan::HostNode::from(&**n)).collect(),
        vcpus,
        max_vcpus: max_vcpus.unwrap_or(vcpus),
        memory_mib,
        backend: plan::MemoryBackend { mem_path, hugepage_kib, share, prealloc },
        mapping,
        vfio: vfio
            .into_iter()
            .map(|(bdf, host_node)| plan::VfioDevice { bdf, host_node })
            .collect(),
        confidential,
        policy: plan::Policy::parse(policy).py_err()?,
    };
    plan::plan_guest(&request).py_err().map(Plan::from)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PlanHostNode>()?;
    m.add_class::<PlannedNode>()?;
    m.add_class::<PlannedDevice>()?;
    m.add_class::<Plan>()?;
    m.add("SKIP_WARNING", plan::SKIP_WARNING)?;
    m.add("MAX_VCPUS", plan::MAX_VCPUS)?;
    m.add("MAX_MEMORY_MIB", plan::MAX_MEMORY_MIB)?;
    m.add("MAX_NUMA_NODES", plan::MAX_NUMA_NODES)?;
    m.add_function(wrap_pyfunction!(plan_guest, m)?)?;
    Ok(())
}
