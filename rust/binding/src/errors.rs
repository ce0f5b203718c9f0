//! The one place core errors become Python exceptions. The classes live in
//! `kata_numa.errors`, so Python code owns (and documents) them.

use kata_numa_core::Error;
use pyo3::prelude::*;
use pyo3::types::PyDict;

pub fn to_py_err(err: Error) -> PyErr {
    Python::attach(|py| match build(py, &err) {
        Ok(exc) => exc,
        Err(import_failure) => import_failure,
    })
}

fn build(py: Python<'_>, err: &Error) -> PyResult<PyErr> {
    let module = py.import("kata_numa.errors")?;
    let kwargs = PyDict::new(py);
    let class = match err {
        Error::CpuSet { input, position, .. } => {
            kwargs.set_item("text", input)?;
            kwargs.set_item("position", position)?;
            "CpuSetError"
        }
        Error::Io { path, source } => {
            kwargs.set_item("path", path.to_string_lossy())?;
            kwargs.set_item("errno", source.raw_os_error())?;
            "SysfsError"
        }
        Error::Parse { path, .. } => {
            kwargs.set_item("path", path.to_string_lossy())?;
            "SysfsError"
        }
        Error::Gone { pid, tid, path } => {
            kwargs.set_item("pid", pid)?;
            kwargs.set_item("tid", tid)?;
            kwargs.set_item("path", path.to_string_lossy())?;
            "ProcessGone"
        }
        Error::QemuArgs { arg, .. } => {
            kwargs.set_item("arg", arg)?;
            "QemuArgsError"
        }
        Error::Affinity { tid, source } => {
            kwargs.set_item("tid", tid)?;
            kwargs.set_item("errno", source.raw_os_error())?;
            "AffinityError"
        }
        Error::Plan { .. } => "PlanError",
        Error::Qmp { socket, .. } => {
            kwargs.set_item("socket", socket.to_string_lossy())?;
            "QmpError"
        }
    };
    let exc = module.getattr(class)?.call((err.to_string(),), Some(&kwargs))?;
    Ok(PyErr::from_value(exc))
}

pub trait IntoPyResult<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for kata_numa_core::Result<T> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_py_err)
    }
}
