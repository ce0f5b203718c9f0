use crate::cpuset::PyCpuSet;
use crate::errors::IntoPyResult;
use kata_numa_core::sysfs;
use pyo3::prelude::*;
use std::path::PathBuf;

/// Huge pages of one size on one node (`nodeN/hugepages/hugepages-<size>kB`).
#[pyclass(module = "kata_numa._native", frozen, get_all)]
#[derive(Clone)]
pub struct HugePages {
    size_kib: u64,
    total: u64,
    free: u64,
}

#[pyclass(module = "kata_numa._native", frozen, get_all)]
#[derive(Clone)]
pub struct NumaNode {
    id: u32,
    cpus: PyCpuSet,
    memory_kib: u64,
    free_kib: u64,
    distances: Vec<(u32, u32)>,
    hugepages: Vec<HugePages>,
}

#[pyclass(module = "kata_numa._native", frozen, get_all)]
#[derive(Clone)]
pub struct Cpu {
    id: u32,
    package: Option<i64>,
    die: Option<i64>,
    core: Option<i64>,
    siblings: PyCpuSet,
}

#[pyclass(module = "kata_numa._native", frozen, get_all)]
#[derive(Clone)]
pub struct PciDevice {
    bdf: String,
    numa_node: Option<u32>,
    class_code: u32,
    vendor: u32,
    device: u32,
    driver: Option<String>,
    iommu_group: Option<u32>,
    is_gpu: bool,
}

#[pyclass(module = "kata_numa._native", frozen, get_all)]
pub struct HostTopology {
    nodes: Vec<NumaNode>,
    online_cpus: PyCpuSet,
    cpus: Vec<Cpu>,
    pci_devices: Vec<PciDevice>,
    notes: Vec<String>,
}

impl From<sysfs::PciDevice> for PciDevice {
    fn from(d: sysfs::PciDevice) -> Self {
        PciDevice {
            is_gpu: d.is_gpu(),
            bdf: d.bdf,
            numa_node: d.numa_node,
            class_code: d.class,
            vendor: d.vendor,
            device: d.device,
            driver: d.driver,
            iommu_group: d.iommu_group,
        }
    }
}

impl From<sysfs::HostTopology> for HostTopology {
    fn from(t: sysfs::HostTopology) -> Self {
        let nodes = t
            .nodes
            .into_iter()
            .map(|n| NumaNode {
                id: n.id,
                cpus: n.cpus.into(),
                memory_kib: n.memory_kib,
                free_kib: n.free_kib,
                distances: n.distances,
                hugepages: n
                    .hugepages
                    .into_iter()
                    .map(|h| HugePages { size_kib: h.size_kib, total: h.total, free: h.free })
                    .collect(),
            })
            .collect();
        let cpus = t
            .cpus
            .into_iter()
            .map(|c| Cpu {
                id: c.id,
                package: c.package,
                die: c.die,
                core: c.core,
                siblings: c.siblings.into(),
            })
            .collect();
        HostTopology {
            nodes,
            online_cpus: t.online_cpus.into(),
            cpus,
            pci_devices: t.pci_devices.into_iter().map(PciDevice::from).collect(),
            notes: t.notes,
        }
    }
}

/// Read the host's NUMA topology below `root` (`/` on a live host).
#[pyfunction]
fn read_host_topology(py: Python<'_>, root: PathBuf) -> PyResult<HostTopology> {
    py.detach(|| sysfs::read_host_topology(&root)).py_err().map(HostTopology::from)
}

/// Read one PCI device folder (`<root>/sys/bus/pci/devices/<bdf>`).
#[pyfunction]
fn read_pci_device(py: Python<'_>, root: PathBuf, bdf: String) -> PyResult<PciDevice> {
    let path = root.join("sys/bus/pci/devices").join(&bdf);
    py.detach(|| sysfs::read_pci_device(&path, bdf)).py_err().map(PciDevice::from)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<HugePages>()?;
    m.add_class::<NumaNode>()?;
    m.add_class::<Cpu>()?;
    m.add_class::<PciDevice>()?;
    m.add_class::<HostTopology>()?;
    m.add_function(wrap_pyfunction!(read_host_topology, m)?)?;
    m.add_function(wrap_pyfunction!(read_pci_device, m)?)?;
    Ok(())
}
