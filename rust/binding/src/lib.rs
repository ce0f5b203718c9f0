//! `kata_numa._native`: the PyO3 face of `kata-numa-core`. Thin by design: conversions,
//! the one error mapping (`errors.rs`), and releasing the interpreter around file I/O.

use pyo3::prelude::*;

mod cgroup;
mod cpuset;
mod errors;
mod plan;
mod procfs;
mod qemu;
mod topology;
mod vcpu;
mod vfio;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    cpuset::register(m)?;
    topology::register(m)?;
    procfs::register(m)?;
    qemu::register(m)?;
    plan::register(m)?;
    vcpu::register(m)?;
    cgroup::register(m)?;
    vfio::register(m)?;
    Ok(())
}
