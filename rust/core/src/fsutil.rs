//! Small readers shared by the sysfs and procfs modules.

use crate::error::{Error, Result};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Largest file read: sysfs and procfs files are a few KiB; a command line is at most a few
/// MiB (ARG_MAX). Anything larger is not what the kernel writes there.
pub const MAX_FILE_BYTES: usize = 8 << 20;

/// `fs::read` without its `statx` and `lseek` for a size hint (`read_to_end` on a `File`
/// makes them too): sysfs and procfs files are small and report a size of 4096 or 0 anyway,
/// and one topology read opens about a thousand of them. Only regular files are read (opened
/// without blocking, so a FIFO planted where a file should be cannot stall the agent), and at
/// most [`MAX_FILE_BYTES`] (a link to `/dev/zero` cannot exhaust memory).
fn read_small(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    let mut bytes = vec![0; 4096];
    let mut len = 0;
    loop {
        if len == bytes.len() {
            if len >= MAX_FILE_BYTES {
                let message = format!("larger than {MAX_FILE_BYTES} bytes");
                return Err(io::Error::new(io::ErrorKind::InvalidData, message));
            }
            bytes.resize(2 * len, 0);
        }
        match file.read(&mut bytes[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    bytes.truncate(len);
    Ok(bytes)
}

/// Read a text file, dropping NUL bytes (some captured trees carry them) and surrounding
/// white space.
pub fn read_trimmed(path: &Path) -> Result<String> {
    let bytes = read_small(path).map_err(|e| Error::io(path, e))?;
    Ok(clean(&bytes))
}

/// Like [`read_trimmed`], but a missing file is `None`.
pub fn read_optional(path: &Path) -> Result<Option<String>> {
    match read_small(path) {
        Ok(bytes) => Ok(Some(clean(&bytes))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

pub fn read_int_optional(path: &Path) -> Result<Option<i64>> {
    let Some(text) = read_optional(path)? else { return Ok(None) };
    text.parse::<i64>()
        .map(Some)
        .map_err(|_| Error::parse(path, format!("expected an integer, found {text:?}")))
}

fn clean(bytes: &[u8]) -> String {
    let text: Vec<u8> = bytes.iter().copied().filter(|&b| b != 0).collect();
    String::from_utf8_lossy(&text).trim().to_string()
}

/// Numbered entries of a folder such as `node0`, `node1`, `cpu12`, in ascending order.
pub fn numbered_entries(dir: &Path, prefix: &str) -> Result<Vec<u32>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else { continue };
        if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(id) = rest.parse() {
                ids.push(id);
            }
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// The last component of a symbolic link's target (`driver` → `vfio-pci`), or `None` when
/// the link does not exist.
pub fn link_name(path: &Path) -> Result<Option<String>> {
    match fs::read_link(path) {
        Ok(target) => Ok(target.file_name().map(|n| n.to_string_lossy().into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_fifos_are_not_read() {
        let tmp = tempfile::tempdir().unwrap();
        let zero = tmp.path().join("numa_node");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(read_trimmed(&zero).unwrap_err().to_string().contains("not a regular file"));
        let fifo = tmp.path().join("fifo");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(status.success());
        assert!(read_optional(&fifo).is_err());
    }
}
