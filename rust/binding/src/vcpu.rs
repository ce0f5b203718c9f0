use crate::errors::IntoPyResult;
use crate::procfs::Task;
use crate::qemu::Smp;
use kata_numa_core::{qmp, vcpu};
use pyo3::prelude::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// One read of a QEMU process's threads and the vCPUs they were found to run.
#[pyclass(module = "kata_numa._native", frozen, get_all)]
#[derive(Clone)]
pub struct VcpuScan {
    tasks: Vec<Task>,
    /// vCPU index → thread id.
    vcpus: BTreeMap<u32, i32>,
    /// `thread-names` or `kvm-descriptors`; `None` when neither told a vCPU.
    method: Option<&'static str>,
    kvm_vcpu_fds: usize,
    running: Vec<i32>,
    notes: Vec<String>,
}

/// Threads of `pid` and its vCPUs, by thread name, else by the KVM descriptor each vCPU
/// thread is blocked on. `binary` (the QEMU path) tells how KVM numbers the guest's vCPUs.
#[pyfunction]
fn scan_vcpus(
    py: Python<'_>,
    proc_root: PathBuf,
    pid: i32,
    smp: PyRef<'_, Smp>,
    binary: &str,
) -> PyResult<VcpuScan> {
    let smp = smp.to_core();
    let arch = vcpu::GuestArch::of_binary(binary);
    let scan = py.detach(|| vcpu::scan_vcpus(&proc_root, pid, &smp, arch)).py_err()?;
    Ok(VcpuScan {
        tasks: scan.tasks.into_iter().map(Task::from).collect(),
        vcpus: scan.vcpus,
        method: scan.method.map(vcpu::Method::as_str),
        kvm_vcpu_fds: scan.kvm_vcpu_fds,
        running: scan.running,
        notes: scan.notes,
    })
}

/// vCPU index → thread id from a QMP monitor (`query-cpus-fast`); connects, asks, closes,
/// all within `timeout` seconds.
#[pyfunction]
#[pyo3(signature = (socket, timeout = 2.0))]
fn query_vcpu_threads(
    py: Python<'_>,
    socket: PathBuf,
    timeout: f64,
) -> PyResult<BTreeMap<u32, i32>> {
    let timeout = Duration::from_secs_f64(timeout.clamp(0.001, 600.0));
    py.detach(|| qmp::query_vcpu_threads(&socket, timeout)).py_err()
}

/// The APIC ID QEMU gives vCPU `index` of an x86 guest of this `-smp` topology.
#[pyfunction]
fn x86_apic_id(index: u32, smp: PyRef<'_, Smp>) -> u32 {
    vcpu::x86_apic_id(index, &smp.to_core())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<VcpuScan>()?;
    m.add_function(wrap_pyfunction!(scan_vcpus, m)?)?;
    m.add_function(wrap_pyfunction!(query_vcpu_threads, m)?)?;
    m.add_function(wrap_pyfunction!(x86_apic_id, m)?)?;
    Ok(())
}
