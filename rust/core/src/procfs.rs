//! Processes and threads from a procfs tree (`/proc` on a live host).
//!
//! A process or thread can end between any two reads: that is reported as [`Error::Gone`]
//! (or the entry is skipped when listing), never as a failure.

use crate::cpuset::CpuSet;
use crate::error::{Error, Result};
use crate::fsutil::numbered_entries;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    pub pid: i32,
    /// Start time in clock ticks after boot (field 22 of `/proc/<pid>/stat`): with the pid it
    /// names one process, whatever reuses the pid later.
    pub start_time: u64,
    /// `comm` from `/proc/<pid>/stat` (at most 15 bytes).
    pub comm: String,
    /// `/proc/<pid>/cmdline` split at NUL bytes; empty for kernel threads.
    pub argv: Vec<String>,
    /// The executable (`/proc/<pid>/exe`) with a ` (deleted)` suffix (binary replaced on disk
    /// since) removed; `None` when the link cannot be read (kernel thread, no permission).
    /// Unlike `argv[0]`, the process cannot choose what it says.
    pub exe: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    pub pid: i32,
    pub tid: i32,
    /// Thread name (`/proc/<pid>/task/<tid>/comm`), e.g. `CPU 0/KVM`.
    pub name: String,
    /// `Cpus_allowed_list` of the thread's `status`.
    pub cpus_allowed: CpuSet,
    /// One-letter state of `status` (`R`, `S`, ...).
    pub state: String,
}

/// Turn an I/O error on a process's file into `Gone` when it means the process ended.
pub(crate) fn proc_error(pid: i32, tid: Option<i32>, path: &Path, e: io::Error) -> Error {
    let gone = e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH);
    if gone {
        Error::Gone { pid, tid, path: path.to_path_buf() }
    } else {
        Error::io(path, e)
    }
}

pub(crate) fn read_proc_file(pid: i32, tid: Option<i32>, path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| proc_error(pid, tid, path, e))
}

pub fn list_pids(proc_root: &Path) -> Result<Vec<i32>> {
    Ok(numbered_entries(proc_root, "")?.into_iter().map(|p| p as i32).collect())
}

/// Read one process: stat (comm, start time) and command line.
pub fn read_process(proc_root: &Path, pid: i32) -> Result<Process> {
    let dir = proc_root.join(pid.to_string());
    let stat_path = dir.join("stat");
    let stat = String::from_utf8_lossy(&read_proc_file(pid, None, &stat_path)?).into_owned();
    let (comm, fields) =
        split_stat(&stat).ok_or_else(|| Error::parse(&stat_path, "no (comm) field"))?;
    // Fields after comm start with field 3 (state); starttime is field 22.
    let start_time = fields
        .get(19)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| Error::parse(&stat_path, "no start time in field 22"))?;
    let cmdline = read_proc_file(pid, None, &dir.join("cmdline"))?;
    let argv = cmdline
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>();
    let argv = match argv.as_slice() {
        [.., last] if last.is_empty() => argv[..argv.len() - 1].to_vec(),
        _ => argv,
    };
    let exe = fs::read_link(dir.join("exe")).ok().map(|path| {
        let text = path.to_string_lossy().into_owned();
        text.strip_suffix(" (deleted)").map(str::to_string).unwrap_or(text)
    });
    Ok(Process { pid, start_time, comm: comm.to_string(), argv, exe })
}

/// `pid (comm) S 1 2 ...` → (`comm`, the fields after it). comm may hold spaces and
/// parentheses, so the last `)` ends it.
fn split_stat(stat: &str) -> Option<(&str, Vec<&str>)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    Some((comm, stat[close + 1..].split_whitespace().collect()))
}

/// Every process whose files could be read; processes that end while listed are skipped.
pub fn read_processes(proc_root: &Path) -> Result<Vec<Process>> {
    let mut processes = Vec::new();
    for pid in list_pids(proc_root)? {
        match read_process(proc_root, pid) {
            Ok(process) => processes.push(process),
            Err(e) if e.is_gone() => continue,
            // Unreadable entries (permission, hidepid) are not ours to manage either.
            Err(Error::Io { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(processes)
}

pub fn task_dir(proc_root: &Path, pid: i32, tid: i32) -> PathBuf {
    proc_root.join(format!("{pid}/task/{tid}"))
}

/// Read one thread's name, state and allowed CPUs.
pub fn read_task(proc_root: &Path, pid: i32, tid: i32) -> Result<Task> {
    let dir = task_dir(proc_root, pid, tid);
    let comm = read_proc_file(pid, Some(tid), &dir.join("comm"))?;
    let name = String::from_utf8_lossy(&comm).trim_end_matches('\n').to_string();
    let status_path = dir.join("status");
    let status =
        String::from_utf8_lossy(&read_proc_file(pid, Some(tid), &status_path)?).into_owned();
    let mut cpus_allowed = None;
    let mut state = String::new();
    for line in status.lines() {
        if let Some(value) = line.strip_prefix("Cpus_allowed_list:") {
            let set =
                CpuSet::parse_list(value).map_err(|e| Error::parse(&status_path, e.to_string()))?;
            cpus_allowed = Some(set);
        } else if let Some(value) = line.strip_prefix("State:") {
            state = value.split_whitespace().next().unwrap_or("").to_string();
        }
    }
    let cpus_allowed =
        cpus_allowed.ok_or_else(|| Error::parse(&status_path, "no Cpus_allowed_list line"))?;
    Ok(Task { pid, tid, name, cpus_allowed, state })
}

/// Every thread of a process. Threads that end while listed are skipped; a process that
/// ended is [`Error::Gone`].
pub fn read_tasks(proc_root: &Path, pid: i32) -> Result<Vec<Task>> {
    let dir = proc_root.join(format!("{pid}/task"));
    if let Err(e) = fs::metadata(&dir) {
        return Err(proc_error(pid, None, &dir, e));
    }
    let mut tasks = Vec::new();
    for tid in numbered_entries(&dir, "")? {
        match read_task(proc_root, pid, tid as i32) {
            Ok(task) => tasks.push(task),
            Err(e) if e.is_gone() => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(tasks)
}

/// The vCPU index of a QEMU thread named `CPU <n>/KVM`, `CPU <n>/TCG` (or another
/// accelerator), as QEMU names them with `-name ...,debug-threads=on`.
pub fn vcpu_index_from_name(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("CPU ")?;
    let (index, accel) = rest.split_once('/')?;
    if accel.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    index.parse().ok()
}

/// `PF_USER_WORKER` of `include/linux/sched.h`: a thread the kernel runs on behalf of the
/// process (vhost workers, KVM's `kvm-nx-lpage-recovery`), listed in its `task` folder.
pub const PF_USER_WORKER: u32 = 0x0000_4000;

/// The `flags` field (9) of `/proc/<pid>/task/<tid>/stat`: `PF_*` bits of the thread.
pub fn read_task_flags(proc_root: &Path, pid: i32, tid: i32) -> Result<u32> {
    let path = task_dir(proc_root, pid, tid).join("stat");
    let stat = String::from_utf8_lossy(&read_proc_file(pid, Some(tid), &path)?).into_owned();
    let (_, fields) = split_stat(&stat).ok_or_else(|| Error::parse(&path, "no (comm) field"))?;
    // Fields after comm start with field 3 (state); flags is field 9.
    fields
        .get(6)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| Error::parse(&path, "no flags in field 9"))
}

/// Open descriptors of a process and what each names (`readlink /proc/<pid>/fd/<fd>`:
/// `/dev/vfio/12`, `anon_inode:kvm-vcpu:4`, `socket:[123]`), in descriptor order.
/// Descriptors closed while listed are left out; a process that ended is [`Error::Gone`].
pub fn read_fd_links(proc_root: &Path, pid: i32) -> Result<Vec<(u32, String)>> {
    let dir = proc_root.join(format!("{pid}/fd"));
    let entries = fs::read_dir(&dir).map_err(|e| proc_error(pid, None, &dir, e))?;
    let mut links = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| proc_error(pid, None, &dir, e))?;
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        match fs::read_link(entry.path()) {
            Ok(target) => links.push((fd, target.to_string_lossy().into_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(proc_error(pid, None, &entry.path(), e)),
        }
    }
    links.sort_unstable_by_key(|(fd, _)| *fd);
    Ok(links)
}

/// The link target of one descriptor (`/proc/<pid>/fd/<fd>`), `None` when it was closed.
pub fn read_fd_link(proc_root: &Path, pid: i32, fd: u32) -> Result<Option<String>> {
    let path = proc_root.join(format!("{pid}/fd/{fd}"));
    match fs::read_link(&path) {
        Ok(target) => Ok(Some(target.to_string_lossy().into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // The descriptor was closed, or the whole process ended: tell them apart.
            match fs::metadata(proc_root.join(format!("{pid}/fd"))) {
                Ok(_) => Ok(None),
                Err(e) => Err(proc_error(pid, None, &path, e)),
            }
        }
        Err(e) => Err(proc_error(pid, None, &path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_comm() {
        let stat = "42 (qemu (x) y) S 1 42 42 0 -1 4194560 0 0 0 0 1 2 0 0 20 0 9 0 777 0";
        let (comm, fields) = split_stat(stat).unwrap();
        assert_eq!(comm, "qemu (x) y");
        assert_eq!(fields[19], "777");
    }

    #[test]
    fn vcpu_names() {
        assert_eq!(vcpu_index_from_name("CPU 0/KVM"), Some(0));
        assert_eq!(vcpu_index_from_name("CPU 17/TCG"), Some(17));
        assert_eq!(vcpu_index_from_name("CPU x/KVM"), None);
        assert_eq!(vcpu_index_from_name("qemu-system-x86"), None);
        assert_eq!(vcpu_index_from_name("CPU 3/"), None);
    }
}
