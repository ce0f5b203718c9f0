//! Which thread of a QEMU process runs which vCPU.
//!
//! Two ways that need nothing from the operator, tried in this order by [`scan_vcpus`]:
//! 1. thread names `CPU <n>/KVM`, which QEMU gives only with `-name ...,debug-threads=on`;
//! 2. the KVM vCPU descriptor a thread is blocked on: `/proc/<pid>/task/<tid>/syscall` shows
//!    `ioctl(fd, KVM_RUN)` and `/proc/<pid>/fd/<fd>` reads `anon_inode:kvm-vcpu:<id>`. On x86
//!    the id is the APIC ID, which differs from the vCPU index when a topology level is not a
//!    power of two in size.
//!
//! The third way, a QMP monitor the operator configured, lives in [`crate::qmp`]. Nothing here
//! guesses from thread order: a vCPU that no method names stays unknown.

use crate::error::{Error, Result};
use crate::procfs::{self, Task, PF_USER_WORKER};
use crate::qemu::Smp;
use std::collections::BTreeMap;
use std::path::Path;

/// `KVM_RUN`, `_IO(KVMIO, 0x80)`: the same request number on every architecture.
pub const KVM_RUN: u64 = 0xae80;

/// The number of `ioctl` in the syscall table of the host (what `syscall` files show).
#[cfg(target_arch = "x86_64")]
pub const IOCTL_SYSCALL: i64 = 16;
#[cfg(target_arch = "x86")]
pub const IOCTL_SYSCALL: i64 = 54;
#[cfg(not(any(target_arch = "x86_64", target_arch = "x86")))]
pub const IOCTL_SYSCALL: i64 = 29; // the generic table: aarch64, riscv64, loongarch64

const KVM_VCPU_PREFIX: &str = "anon_inode:kvm-vcpu:";

/// How a KVM vCPU id relates to QEMU's vCPU index on the guest's architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestArch {
    /// x86: the id is the APIC ID built from the `-smp` topology.
    X86,
    /// arm, riscv, loongarch: the id is the vCPU index.
    Indexed,
    /// An architecture whose id scheme this module does not know (ppc64, s390x).
    Unknown,
}

impl GuestArch {
    /// From the QEMU binary (`qemu-system-x86_64`); a binary named otherwise (a path from
    /// Kata's configuration) is taken to run guests of the host's architecture.
    pub fn of_binary(binary: &str) -> GuestArch {
        let name = binary.rsplit('/').next().unwrap_or(binary);
        let target = name.strip_prefix("qemu-system-").unwrap_or(std::env::consts::ARCH);
        match target {
            "x86_64" | "i386" | "x86" => GuestArch::X86,
            "aarch64" | "arm" | "riscv64" | "riscv32" | "loongarch64" => GuestArch::Indexed,
            _ => GuestArch::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GuestArch::X86 => "x86",
            GuestArch::Indexed => "indexed",
            GuestArch::Unknown => "unknown",
        }
    }
}

/// Bits of an x86 APIC ID that hold a topology level of `count` items: the count rounded up
/// to a power of two (QEMU's `apicid_bitwidth_for_count`).
fn apic_bits(count: u32) -> u32 {
    if count <= 1 {
        0
    } else {
        u32::BITS - (count - 1).leading_zeros()
    }
}

/// The APIC ID QEMU gives vCPU `index` of an x86 guest: from the lowest bits up, thread, core,
/// module (QEMU's `clusters`), die and socket, each level padded to a power of two.
pub fn x86_apic_id(index: u32, smp: &Smp) -> u32 {
    let threads = smp.threads.max(1);
    let cores = smp.cores.max(1);
    let modules = smp.clusters.max(1);
    let dies = smp.dies.max(1);
    let thread = index % threads;
    let core = (index / threads) % cores;
    let module = (index / (threads * cores)) % modules;
    let die = (index / (threads * cores * modules)) % dies;
    let socket = index / (threads * cores * modules * dies);
    let core_shift = apic_bits(threads);
    let module_shift = core_shift + apic_bits(cores);
    let die_shift = module_shift + apic_bits(modules);
    let socket_shift = die_shift + apic_bits(dies);
    thread | core << core_shift | module << module_shift | die << die_shift | socket << socket_shift
}

/// KVM vCPU id → vCPU index for every possible vCPU (`maxcpus`) of the layout.
pub fn kvm_id_to_index(smp: &Smp, arch: GuestArch) -> BTreeMap<u32, u32> {
    let indexes = 0..smp.maxcpus.max(smp.cpus);
    match arch {
        GuestArch::X86 => indexes.map(|i| (x86_apic_id(i, smp), i)).collect(),
        GuestArch::Indexed => indexes.map(|i| (i, i)).collect(),
        GuestArch::Unknown => BTreeMap::new(),
    }
}

/// What `/proc/<pid>/task/<tid>/syscall` says about a thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyscallState {
    /// `running`: on a CPU now (for a vCPU thread, usually in guest mode).
    Running,
    /// `-1 <sp> <pc>`: blocked in the kernel outside a system call.
    NotInSyscall,
    /// `<nr> <arg0> ... <arg5> <sp> <pc>`: blocked in system call `nr`.
    Blocked { number: i64, args: Vec<u64> },
}

impl SyscallState {
    /// Parse the file's one line; `None` when it is not in the kernel's format.
    pub fn parse(text: &str) -> Option<SyscallState> {
        let text = text.trim();
        if text == "running" {
            return Some(SyscallState::Running);
        }
        let mut fields = text.split_whitespace();
        let number: i64 = fields.next()?.parse().ok()?;
        let values = fields
            .map(|f| u64::from_str_radix(f.strip_prefix("0x")?, 16).ok())
            .collect::<Option<Vec<u64>>>()?;
        match (number, values.len()) {
            (n, 2) if n < 0 => Some(SyscallState::NotInSyscall),
            (n, 8) if n >= 0 => {
                Some(SyscallState::Blocked { number: n, args: values[..6].to_vec() })
            }
            _ => None,
        }
    }

    /// The descriptor of `ioctl(fd, KVM_RUN)`, when that is what the thread is blocked in.
    pub fn kvm_run_fd(&self) -> Option<u32> {
        match self {
            SyscallState::Blocked { number, args } if *number == IOCTL_SYSCALL => {
                (args.get(1) == Some(&KVM_RUN)).then(|| u32::try_from(args[0]).ok()).flatten()
            }
            _ => None,
        }
    }
}

/// `anon_inode:kvm-vcpu:<id>` → id.
pub fn kvm_vcpu_id(link: &str) -> Option<u32> {
    link.strip_prefix(KVM_VCPU_PREFIX)?.parse().ok()
}

/// How the vCPU threads were told apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    ThreadNames,
    KvmDescriptors,
    Qmp,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::ThreadNames => "thread-names",
            Method::KvmDescriptors => "kvm-descriptors",
            Method::Qmp => "qmp",
        }
    }
}

/// One read of a process's threads and what they tell about its vCPUs.
#[derive(Clone, Debug, Default)]
pub struct VcpuScan {
    /// Every thread of the process (vCPUs and the others).
    pub tasks: Vec<Task>,
    /// vCPU index → thread id, for the vCPUs that were identified.
    pub vcpus: BTreeMap<u32, i32>,
    pub method: Option<Method>,
    /// KVM vCPU descriptors the process holds: 0 under TCG or before KVM created them.
    pub kvm_vcpu_fds: usize,
    /// Threads on a CPU when read (`running`): they may be vCPUs in guest mode.
    pub running: Vec<i32>,
    /// What could not be told, and why (ambiguous claims, unreadable files).
    pub notes: Vec<String>,
}

/// Read the threads of `pid` and identify its vCPUs by name, else by KVM descriptor.
///
/// A thread or descriptor that vanishes meanwhile is left out; only a vanished process is an
/// error ([`Error::Gone`]). Run it again (with back-off) while vCPUs are missing: threads in
/// guest mode or of a paused VM are not blocked in `KVM_RUN` at the moment of reading.
pub fn scan_vcpus(proc_root: &Path, pid: i32, smp: &Smp, arch: GuestArch) -> Result<VcpuScan> {
    let tasks = procfs::read_tasks(proc_root, pid)?;
    let mut scan = VcpuScan { tasks, ..VcpuScan::default() };
    for task in &scan.tasks {
        match procfs::vcpu_index_from_name(&task.name) {
            Some(index) if index < smp.maxcpus => {
                scan.vcpus.entry(index).or_insert(task.tid);
            }
            Some(_) => scan.notes.push(format!(
                "thread {} is named {:?}, but -smp allows vCPUs 0-{} only: not a vCPU",
                task.tid,
                task.name,
                smp.maxcpus.saturating_sub(1)
            )),
            None => {}
        }
    }
    if !scan.vcpus.is_empty() {
        scan.method = Some(Method::ThreadNames);
        return Ok(scan);
    }
    scan_descriptors(proc_root, pid, smp, arch, &mut scan)?;
    Ok(scan)
}

fn scan_descriptors(
    proc_root: &Path,
    pid: i32,
    smp: &Smp,
    arch: GuestArch,
    scan: &mut VcpuScan,
) -> Result<()> {
    let fds: BTreeMap<u32, u32> = procfs::read_fd_links(proc_root, pid)?
        .into_iter()
        .filter_map(|(fd, link)| kvm_vcpu_id(&link).map(|id| (fd, id)))
        .collect();
    scan.kvm_vcpu_fds = fds.len();
    if fds.is_empty() {
        return Ok(());
    }
    let index_of = kvm_id_to_index(smp, arch);
    if index_of.is_empty() {
        scan.notes.push(format!(
            "KVM vCPU ids of a {} guest cannot be turned into vCPU indexes",
            arch.as_str()
        ));
        return Ok(());
    }
    let mut claims: BTreeMap<u32, Vec<i32>> = BTreeMap::new();
    for task in &scan.tasks {
        match thread_kvm_fd(proc_root, pid, task.tid) {
            Ok(Some(ThreadAt::KvmRun(fd))) => {
                let id = match fds.get(&fd) {
                    Some(&id) => Some(id),
                    // Opened after the listing: read that one link.
                    None => {
                        procfs::read_fd_link(proc_root, pid, fd)?.as_deref().and_then(kvm_vcpu_id)
                    }
                };
                if let Some(id) = id {
                    claims.entry(id).or_default().push(task.tid);
                }
            }
            Ok(Some(ThreadAt::Running)) => scan.running.push(task.tid),
            Ok(None) => {}
            Err(e) if e.is_gone() => {
                let dir = proc_root.join(format!("{pid}/task"));
                if !dir.exists() {
                    return Err(Error::Gone { pid, tid: None, path: dir });
                }
            }
            Err(e) => scan.notes.push(e.to_string()),
        }
    }
    for (id, tids) in claims {
        let tid = match ordinary_threads(proc_root, pid, &tids)?.as_slice() {
            [tid] => *tid,
            [] => continue,
            many => {
                scan.notes
                    .push(format!("threads {many:?} all wait on KVM vCPU id {id}: left unknown"));
                continue;
            }
        };
        match index_of.get(&id) {
            Some(&index) => {
                scan.vcpus.insert(index, tid);
            }
            None => scan.notes.push(format!(
                "KVM vCPU id {id} (thread {tid}) is no vCPU of -smp {}: sockets={} dies={} \
                 clusters={} cores={} threads={}",
                smp.maxcpus, smp.sockets, smp.dies, smp.clusters, smp.cores, smp.threads
            )),
        }
    }
    if !scan.vcpus.is_empty() {
        scan.method = Some(Method::KvmDescriptors);
    }
    Ok(())
}

enum ThreadAt {
    KvmRun(u32),
    Running,
}

fn thread_kvm_fd(proc_root: &Path, pid: i32, tid: i32) -> Result<Option<ThreadAt>> {
    let path = procfs::task_dir(proc_root, pid, tid).join("syscall");
    let text = match procfs::read_proc_file(pid, Some(tid), &path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(Error::Io { path, source }) => {
            let hint = "reading it needs ptrace access to the process: CAP_SYS_PTRACE";
            return Err(Error::parse(path, format!("{source} ({hint})")));
        }
        Err(e) => return Err(e),
    };
    let state = SyscallState::parse(&text)
        .ok_or_else(|| Error::parse(&path, format!("not a syscall line: {:?}", text.trim())))?;
    Ok(match state {
        SyscallState::Running => Some(ThreadAt::Running),
        state => state.kvm_run_fd().map(ThreadAt::KvmRun),
    })
}

/// The threads among `tids` that are the process's own. Kernel workers of the process
/// (`PF_USER_WORKER`, such as `kvm-nx-lpage-recovery`) show the `syscall` line of the thread
/// that made them, whatever that thread does now, so they never tell a vCPU.
fn ordinary_threads(proc_root: &Path, pid: i32, tids: &[i32]) -> Result<Vec<i32>> {
    let mut ordinary = Vec::new();
    for &tid in tids {
        match procfs::read_task_flags(proc_root, pid, tid) {
            Ok(flags) if flags & PF_USER_WORKER != 0 => {}
            Ok(_) => ordinary.push(tid),
            Err(e) if e.is_gone() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(ordinary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smp(cpus: u32, sockets: u32, dies: u32, cores: u32, threads: u32) -> Smp {
        let maxcpus = sockets * dies * cores * threads;
        Smp { cpus, maxcpus, sockets, dies, clusters: 1, cores, threads }
    }

    #[test]
    fn apic_ids_round_levels_up_to_powers_of_two() {
        let six = smp(6, 2, 1, 3, 1);
        let ids: Vec<u32> = (0..6).map(|i| x86_apic_id(i, &six)).collect();
        assert_eq!(ids, vec![0, 1, 2, 4, 5, 6]);
        let threads = smp(12, 2, 1, 3, 2); // thread 1 bit, core 2 bits
        let ids: Vec<u32> = (0..6).map(|i| x86_apic_id(i, &threads)).collect();
        assert_eq!(ids, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(x86_apic_id(6, &threads), 8);
        let dies = smp(12, 2, 3, 2, 1); // core 1 bit, die 2 bits: socket at bit 3
        assert_eq!(x86_apic_id(2, &dies), 2);
        assert_eq!(x86_apic_id(5, &dies), 5);
        assert_eq!(x86_apic_id(6, &dies), 8);
        let flat = smp(4, 1, 1, 4, 1);
        assert_eq!((0..4).map(|i| x86_apic_id(i, &flat)).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn kvm_ids_map_back_to_indexes() {
        let map = kvm_id_to_index(&smp(6, 2, 1, 3, 1), GuestArch::X86);
        assert_eq!(map.get(&4), Some(&3));
        assert_eq!(map.get(&3), None);
        let map = kvm_id_to_index(&smp(6, 2, 1, 3, 1), GuestArch::Indexed);
        assert_eq!(map.get(&3), Some(&3));
        assert!(kvm_id_to_index(&smp(2, 1, 1, 2, 1), GuestArch::Unknown).is_empty());
    }

    #[test]
    fn syscall_lines() {
        let line = "16 0xc 0xae80 0x0 0x0 0x55d5 0xff 0x7f23318bb530 0x7f2332";
        let state = SyscallState::parse(line).unwrap();
        assert_eq!(state.kvm_run_fd(), if IOCTL_SYSCALL == 16 { Some(12) } else { None });
        assert_eq!(SyscallState::parse("running\n"), Some(SyscallState::Running));
        assert_eq!(SyscallState::parse("-1 0x7ffd 0x7f00"), Some(SyscallState::NotInSyscall));
        let futex = SyscallState::parse("202 0x55 0x80 0x0 0x0 0x0 0x0 0x7f 0x7f").unwrap();
        assert_eq!(futex.kvm_run_fd(), None);
        assert_eq!(SyscallState::parse("16 0xc"), None);
        assert_eq!(SyscallState::parse("x 0x1 0x2"), None);
    }

    #[test]
    fn arch_of_binary() {
        assert_eq!(GuestArch::of_binary("/usr/bin/qemu-system-x86_64"), GuestArch::X86);
        assert_eq!(GuestArch::of_binary("qemu-system-aarch64"), GuestArch::Indexed);
        assert_eq!(GuestArch::of_binary("qemu-system-ppc64"), GuestArch::Unknown);
    }

    #[test]
    fn vcpu_links() {
        assert_eq!(kvm_vcpu_id("anon_inode:kvm-vcpu:6"), Some(6));
        assert_eq!(kvm_vcpu_id("anon_inode:kvm-vm"), None);
    }
}
