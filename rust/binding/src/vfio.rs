use crate::errors::IntoPyResult;
use kata_numa_core::vfio;
use pyo3::prelude::*;
use std::path::PathBuf;

/// A PCI device a process holds open through VFIO.
#[pyclass(module = "kata_numa._native", frozen, get_all)]
#[derive(Clone)]
pub struct VfioDevice {
    bdf: String,
    /// The descriptor's target: `/dev/vfio/<group>` or `/dev/vfio/devices/vfio<N>`.
    source: String,
}

/// Devices behind the open `/dev/vfio/*` descriptors of `pid` (sysfs read below `sysfs_root`).
#[pyfunction]
fn open_vfio_devices(
    py: Python<'_>,
    proc_root: PathBuf,
    sysfs_root: PathBuf,
    pid: i32,
) -> PyResult<Vec<VfioDevice>> {
    let devices = py.detach(|| vfio::open_vfio_devices(&proc_root, &sysfs_root, pid)).py_err()?;
    Ok(devices.into_iter().map(|d| VfioDevice { bdf: d.bdf, source: d.source }).collect())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<VfioDevice>()?;
    m.add_function(wrap_pyfunction!(open_vfio_devices, m)?)?;
    Ok(())
}
