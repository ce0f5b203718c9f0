use crate::cpuset::PyCpuSet;
use crate::errors::IntoPyResult;
use kata_numa_core::cgroup;
use pyo3::prelude::*;
use std::path::PathBuf;

/// Where the cpuset files of this host are: the v1 cpuset and the v2 hierarchies.
#[pyclass(module = "kata_numa._native", frozen)]
#[derive(Clone)]
pub struct CgroupLayout(cgroup::CgroupLayout);

#[pymethods]
impl CgroupLayout {
    /// Mount point of the v1 cpuset hierarchy, if any.
    #[getter]
    fn cpuset_v1(&self) -> Option<String> {
        self.0.cpuset_v1.as_ref().map(|m| m.mount_point.to_string_lossy().into_owned())
    }

    /// Mount point of the v2 hierarchy, if any.
    #[getter]
    fn unified(&self) -> Option<String> {
        self.0.unified.as_ref().map(|m| m.mount_point.to_string_lossy().into_owned())
    }

    /// `/proc/self/mountinfo`, or the folder the operator named.
    #[getter]
    fn source(&self) -> String {
        self.0.source.to_string_lossy().into_owned()
    }
}

#[pyclass(module = "kata_numa._native", frozen, get_all)]
#[derive(Clone)]
pub struct AllowedCpus {
    /// The cpuset file's CPUs; `None` when no cgroup of the process has one.
    cpus: Option<PyCpuSet>,
    source: String,
    version: u8,
    cgroup: String,
}

/// The cgroup layout from `<proc_root>/self/mountinfo`, or below `cgroup_root` when given.
#[pyfunction]
#[pyo3(signature = (proc_root, cgroup_root = None))]
fn read_cgroup_layout(
    py: Python<'_>,
    proc_root: PathBuf,
    cgroup_root: Option<PathBuf>,
) -> PyResult<CgroupLayout> {
    let layout = py.detach(|| match cgroup_root {
        Some(dir) => cgroup::CgroupLayout::from_root(&dir),
        None => cgroup::CgroupLayout::from_mountinfo(&proc_root),
    });
    layout.py_err().map(CgroupLayout)
}

/// The CPUs process `pid` may use according to its cpuset cgroup; with `tid`, those of that
/// thread's own cgroup (`/proc/<pid>/task/<tid>/cgroup`).
#[pyfunction]
#[pyo3(signature = (proc_root, pid, layout, tid = None))]
fn read_allowed_cpus(
    py: Python<'_>,
    proc_root: PathBuf,
    pid: i32,
    layout: PyRef<'_, CgroupLayout>,
    tid: Option<i32>,
) -> PyResult<AllowedCpus> {
    let layout = layout.0.clone();
    let allowed = py
        .detach(|| match tid {
            Some(tid) => cgroup::read_thread_allowed_cpus(&proc_root, pid, tid, &layout),
            None => cgroup::read_allowed_cpus(&proc_root, pid, &layout),
        })
        .py_err()?;
    Ok(AllowedCpus {
        cpus: allowed.cpus.map(PyCpuSet),
        source: allowed.source.to_string_lossy().into_owned(),
        version: allowed.version,
        cgroup: allowed.cgroup,
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<CgroupLayout>()?;
    m.add_class::<AllowedCpus>()?;
    m.add_function(wrap_pyfunction!(read_cgroup_layout, m)?)?;
    m.add_function(wrap_pyfunction!(read_allowed_cpus, m)?)?;
    Ok(())
}
