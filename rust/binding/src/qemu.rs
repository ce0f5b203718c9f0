use crate::cpuset::PyCpuSet;
use crate::errors::IntoPyResult;
use kata_numa_core::qemu;
use pyo3::prelude::*;

/// `-smp` after QEMU's defaults are applied.
#[pyclass(module = "kata_numa._native", frozen, get_all)]
#[derive(Clone)]
pub struct Smp {
    cpus: u32,
    maxcpus: u32,
    sockets: u32,
    dies: u32,
    clusters: u32,
    cores: u32,
    threads: u32,
}

#[pyclass(module = "kata_numa._native", frozen, get_all)]
#[derive(Clone)]
pub struct MemoryBackend {
    id: String,
    kind: String,
    size_mib: u64,
    host_nodes: Option<PyCpuSet>,
    policy: Option<String>,
    mem_path: Option<String>,
    share: bool,
    prealloc: bool,
}

#[pyclass(module = "kata_numa._native", frozen, get_all)]
#[derive(Clone)]
pub struct GuestNode {
    id: u32,
    cpus: PyCpuSet,
    memdev: Option<String>,
    mem_mib: u64,
}

#[pyclass(module = "kata_numa._native", frozen, get_all)]
#[derive(Clone)]
pub struct GuestLayout {
    name: Option<String>,
    debug_threads: bool,
    accel: Option<String>,
    machine_memdev: Option<String>,
    smp: Smp,
    memory_mib: u64,
    backends: Vec<MemoryBackend>,
    nodes: Vec<GuestNode>,
    distances: Vec<(u32, u32, u32)>,
    vfio_devices: Vec<String>,
    notes: Vec<String>,
}

impl Smp {
    /// The core's `Smp`, for readers that need the topology (vCPU ids).
    pub fn to_core(&self) -> qemu::Smp {
        qemu::Smp {
            cpus: self.cpus,
            maxcpus: self.maxcpus,
            sockets: self.sockets,
            dies: self.dies,
            clusters: self.clusters,
            cores: self.cores,
            threads: self.threads,
        }
    }
}

impl From<qemu::GuestLayout> for GuestLayout {
    fn from(l: qemu::GuestLayout) -> Self {
        GuestLayout {
            name: l.name,
            debug_threads: l.debug_threads,
            accel: l.accel,
            machine_memdev: l.machine_memdev,
            smp: l.smp.into(),
            memory_mib: l.memory_mib,
            backends: l
                .backends
                .into_iter()
                .map(|b| MemoryBackend {
                    id: b.id,
                    kind: b.kind,
                    size_mib: b.size_mib,
                    host_nodes: b.host_nodes.map(PyCpuSet),
                    policy: b.policy,
                    mem_path: b.mem_path,
                    share: b.share,
                    prealloc: b.prealloc,
                })
                .collect(),
            nodes: l
                .nodes
                .into_iter()
                .map(|n| GuestNode {
                    id: n.id,
                    cpus: n.cpus.into(),
                    memdev: n.memdev,
                    mem_mib: n.mem_mib,
                })
                .collect(),
            distances: l.distances,
            vfio_devices: l.vfio_devices,
            notes: l.notes,
        }
    }
}

/// The guest layout of a QEMU command line (argv with the binary first).
#[pyfunction]
fn parse_qemu_args(argv: Vec<String>) -> PyResult<GuestLayout> {
    // Any process on the node can put any text in its arguments, and the agent reads them
    // all: a parser bug must skip that one process, not end the agent (a panic would reach
    // Python as a BaseException that no `except Exception` stops).
    let parsed = std::panic::catch_unwind(|| qemu::parse_qemu_args(&argv)).unwrap_or_else(|_| {
        Err(kata_numa_core::Error::QemuArgs {
            arg: argv.join(" "),
            reason: "the parser failed on this command line (a kata-numa bug: please report it)"
                .to_string(),
        })
    });
    parsed.py_err().map(GuestLayout::from)
}

/// A QEMU size (`4G`, `2048M`, `512`) in bytes; a bare number is `default_unit` bytes.
#[pyfunction]
#[pyo3(signature = (text, default_unit = 1))]
fn parse_size(text: &str, default_unit: u64) -> Option<u64> {
    qemu::parse_size(text, default_unit)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Smp>()?;
    m.add_class::<MemoryBackend>()?;
    m.add_class::<GuestNode>()?;
    m.add_class::<GuestLayout>()?;
    m.add_function(wrap_pyfunction!(parse_qemu_args, m)?)?;
    m.add_function(wrap_pyfunction!(parse_size, m)?)?;
    Ok(())
}

impl From<qemu::Smp> for Smp {
    fn from(s: qemu::Smp) -> Self {
        Smp {
            cpus: s.cpus,
            maxcpus: s.maxcpus,
            sockets: s.sockets,
            dies: s.dies,
            clusters: s.clusters,
            cores: s.cores,
            threads: s.threads,
        }
    }
}
