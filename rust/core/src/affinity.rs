//! The one module that makes syscalls: `sched_setaffinity` and `sched_getaffinity` on a
//! thread id, with a mask of any width (the libc `cpu_set_t` stops at 1024 CPUs).
#![allow(unsafe_code)]

use crate::cpuset::CpuSet;
use crate::error::{Error, Result};
use std::io;
use std::path::PathBuf;

fn gone(pid: i32, tid: i32) -> Error {
    Error::Gone { pid, tid: Some(tid), path: PathBuf::from(format!("/proc/{pid}/task/{tid}")) }
}

/// Current affinity of thread `tid` (of process `pid`, used only in messages).
pub fn get_affinity(pid: i32, tid: i32) -> Result<CpuSet> {
    let mut words = 16usize; // 1024 CPUs; doubled while the kernel says EINVAL (too small).
    loop {
        let mut buffer = vec![0u64; words];
        let bytes = words * std::mem::size_of::<u64>();
        // SAFETY: the buffer holds `bytes` writable bytes for the whole call.
        let rc =
            unsafe { libc::syscall(libc::SYS_sched_getaffinity, tid, bytes, buffer.as_mut_ptr()) };
        if rc >= 0 {
            return Ok(CpuSet::from_words(buffer));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ESRCH) => return Err(gone(pid, tid)),
            Some(libc::EINVAL) if words < 1 << 14 => words *= 2,
            _ => return Err(Error::Affinity { tid, source: err }),
        }
    }
}

/// Set the affinity of thread `tid`. An empty mask is refused here, before the kernel sees it.
pub fn set_affinity(pid: i32, tid: i32, cpus: &CpuSet) -> Result<()> {
    if cpus.is_empty() {
        let source = io::Error::new(io::ErrorKind::InvalidInput, "refusing an empty CPU mask");
        return Err(Error::Affinity { tid, source });
    }
    let words = cpus.words();
    let bytes = std::mem::size_of_val(words);
    // SAFETY: `words` is a live slice of `bytes` readable bytes for the whole call.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setaffinity, tid, bytes, words.as_ptr()) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ESRCH) => Err(gone(pid, tid)),
        _ => Err(Error::Affinity { tid, source: err }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_thread_round_trip() {
        let pid = std::process::id() as i32;
        let tid = unsafe { libc::gettid() };
        let before = get_affinity(pid, tid).unwrap();
        assert!(!before.is_empty());
        let one: CpuSet = [before.first().unwrap()].into_iter().collect();
        set_affinity(pid, tid, &one).unwrap();
        assert_eq!(get_affinity(pid, tid).unwrap(), one);
        set_affinity(pid, tid, &before).unwrap();
        assert!(set_affinity(pid, tid, &CpuSet::new()).is_err());
    }
}
