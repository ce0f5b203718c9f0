use crate::cpuset::PyCpuSet;
use crate::errors::IntoPyResult;
use kata_numa_core::{affinity, procfs};
use pyo3::prelude::*;
use std::path::PathBuf;

#[pyclass(module = "kata_numa._native", frozen, get_all)]
#[derive(Clone)]
pub struct Process {
    pid: i32,
    start_time: u64,
    comm: String,
    argv: Vec<String>,
    exe: Option<String>,
}

#[pyclass(module = "kata_numa._native", frozen, get_all)]
#[derive(Clone)]
pub struct Task {
    pid: i32,
    tid: i32,
    name: String,
    cpus_allowed: PyCpuSet,
    state: String,
    /// vCPU index from the thread name, when QEMU names its threads.
    vcpu_index: Option<u32>,
}

impl From<procfs::Process> for Process {
    fn from(p: procfs::Process) -> Self {
        Process { pid: p.pid, start_time: p.start_time, comm: p.comm, argv: p.argv, exe: p.exe }
    }
}

impl From<procfs::Task> for Task {
    fn from(t: procfs::Task) -> Self {
        Task {
            vcpu_index: procfs::vcpu_index_from_name(&t.name),
            pid: t.pid,
            tid: t.tid,
            name: t.name,
            cpus_allowed: t.cpus_allowed.into(),
            state: t.state,
        }
    }
}

/// Every readable process below `proc_root`; processes that end meanwhile are left out.
#[pyfunction]
fn read_processes(py: Python<'_>, proc_root: PathBuf) -> PyResult<Vec<Process>> {
    let processes = py.detach(|| procfs::read_processes(&proc_root)).py_err()?;
    Ok(processes.into_iter().map(Process::from).collect())
}

#[pyfunction]
fn read_process(py: Python<'_>, proc_root: PathBuf, pid: i32) -> PyResult<Process> {
    py.detach(|| procfs::read_process(&proc_root, pid)).py_err().map(Process::from)
}

/// Every thread of `pid`; threads that end meanwhile are left out.
#[pyfunction]
fn read_tasks(py: Python<'_>, proc_root: PathBuf, pid: i32) -> PyResult<Vec<Task>> {
    let tasks = py.detach(|| procfs::read_tasks(&proc_root, pid)).py_err()?;
    Ok(tasks.into_iter().map(Task::from).collect())
}

#[pyfunction]
fn read_task(py: Python<'_>, proc_root: PathBuf, pid: i32, tid: i32) -> PyResult<Task> {
    py.detach(|| procfs::read_task(&proc_root, pid, tid)).py_err().map(Task::from)
}

#[pyfunction]
fn vcpu_index_from_name(name: &str) -> Option<u32> {
    procfs::vcpu_index_from_name(name)
}

/// `sched_getaffinity(tid)`.
#[pyfunction]
fn get_affinity(pid: i32, tid: i32) -> PyResult<PyCpuSet> {
    affinity::get_affinity(pid, tid).py_err().map(PyCpuSet)
}

/// `sched_setaffinity(tid, cpus)`; refuses an empty set.
#[pyfunction]
fn set_affinity(pid: i32, tid: i32, cpus: &PyCpuSet) -> PyResult<()> {
    affinity::set_affinity(pid, tid, &cpus.0).py_err()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Process>()?;
    m.add_class::<Task>()?;
    m.add_function(wrap_pyfunction!(read_processes, m)?)?;
    m.add_function(wrap_pyfunction!(read_process, m)?)?;
    m.add_function(wrap_pyfunction!(read_tasks, m)?)?;
    m.add_function(wrap_pyfunction!(read_task, m)?)?;
    m.add_function(wrap_pyfunction!(vcpu_index_from_name, m)?)?;
    m.add_function(wrap_pyfunction!(get_affinity, m)?)?;
    m.add_function(wrap_pyfunction!(set_affinity, m)?)?;
    Ok(())
}
