//! The core's one error type. The binding crate converts each variant to the matching
//! exception class of `kata_numa.errors` in a single place.

use std::fmt;
use std::io;
use std::path::PathBuf;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug)]
pub enum Error {
    /// A CPU list or mask that is not in the kernel's format.
    CpuSet { input: String, position: usize, reason: String },
    /// A file that could not be read (other than a vanished process).
    Io { path: PathBuf, source: io::Error },
    /// A file whose content is not what the kernel writes there.
    Parse { path: PathBuf, reason: String },
    /// A process or thread that ended while we read or changed it: an expected race.
    Gone { pid: i32, tid: Option<i32>, path: PathBuf },
    /// A QEMU command line this parser cannot make sense of.
    QemuArgs { arg: String, reason: String },
    /// `sched_setaffinity`/`sched_getaffinity` refused for a reason other than a vanished thread.
    Affinity { tid: i32, source: io::Error },
    /// A guest layout that cannot be planned as asked.
    Plan { reason: String },
    /// A QMP monitor that could not be reached or answered what QMP never answers.
    Qmp { socket: PathBuf, reason: String },
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub fn parse(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Parse { path: path.into(), reason: reason.into() }
    }

    pub fn is_gone(&self) -> bool {
        matches!(self, Error::Gone { .. })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::CpuSet { input, position, reason } => write!(
                f,
                "invalid CPU set {input:?} at character {position}: {reason} \
                 (expected a kernel list such as 0-3,8,10-15 or a mask such as ff,ffffffff)"
            ),
            Error::Io { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            Error::Parse { path, reason } => {
                write!(f, "unexpected content in {}: {reason}", path.display())
            }
            Error::Gone { pid, tid: Some(tid), path } => {
                write!(f, "thread {tid} of process {pid} is gone ({})", path.display())
            }
            Error::Gone { pid, tid: None, path } => {
                write!(f, "process {pid} is gone ({})", path.display())
            }
            Error::QemuArgs { arg, reason } => {
                // A command line can be megabytes long: name the start of the argument only.
                let shown: String = arg.chars().take(200).collect();
                let more = if shown.len() < arg.len() { "..." } else { "" };
                write!(f, "QEMU argument {shown:?}{more}: {reason}")
            }
            Error::Affinity { tid, source } => {
                write!(f, "cannot change the CPU affinity of thread {tid}: {source}")
            }
            Error::Plan { reason } => write!(f, "cannot plan the guest topology: {reason}"),
            Error::Qmp { socket, reason } => {
                write!(f, "QMP monitor {}: {reason}", socket.display())
            }
        }
    }
}

impl std::error::Error for Error {}
