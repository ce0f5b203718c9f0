//! Pure core of kata-numa: CPU sets, host topology from sysfs, processes and threads from
//! procfs, and QEMU guest layouts. No Python here; `kata-numa-binding` wraps it.
//!
//! Everything is unsafe-free except [`affinity`], the one module that makes syscalls.
#![deny(unsafe_code)]

pub mod affinity;
pub mod cgroup;
pub mod cpuset;
pub mod error;
pub mod fsutil;
pub mod plan;
pub mod procfs;
pub mod qemu;
pub mod qmp;
pub mod sysfs;
pub mod vcpu;
pub mod vfio;

pub use cpuset::CpuSet;
pub use error::{Error, Result};
