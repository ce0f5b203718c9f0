//! PCI devices a process holds through VFIO, from its open descriptors: hot-plugged GPUs
//! appear here and nowhere on the QEMU command line.
//!
//! `/dev/vfio/<group>` (legacy container API) → every device of IOMMU group `<group>`
//! (`/sys/kernel/iommu_groups/<group>/devices/`); `/dev/vfio/devices/vfio<N>` (the iommufd
//! cdev API) → the one device behind `/sys/class/vfio-dev/vfio<N>/device`.

use crate::error::{Error, Result};
use crate::fsutil::link_name;
use crate::procfs;
use std::fs;
use std::io;
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VfioDevice {
    /// PCI address, `0000:3b:00.0`.
    pub bdf: String,
    /// The descriptor it was found through, `/dev/vfio/12` or `/dev/vfio/devices/vfio0`.
    pub source: String,
}

/// What a `/proc/<pid>/fd` link names, for VFIO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VfioNode {
    Group(u32),
    Cdev(u32),
}

pub fn vfio_node(link: &str) -> Option<VfioNode> {
    fn number(text: &str) -> Option<u32> {
        let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        digits.then(|| text.parse().ok()).flatten()
    }
    if let Some(rest) = link.strip_prefix("/dev/vfio/devices/vfio") {
        return number(rest).map(VfioNode::Cdev);
    }
    number(link.strip_prefix("/dev/vfio/")?).map(VfioNode::Group)
}

/// Devices of IOMMU group `group` below `sysfs_root`, sorted; empty when the group is gone.
pub fn iommu_group_devices(sysfs_root: &Path, group: u32) -> Result<Vec<String>> {
    let dir = sysfs_root.join(format!("sys/kernel/iommu_groups/{group}/devices"));
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    let mut devices = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(&dir, e))?;
        devices.push(entry.file_name().to_string_lossy().into_owned());
    }
    devices.sort();
    Ok(devices)
}

/// The PCI address behind VFIO cdev `vfio<n>`, `None` when it is gone.
pub fn cdev_device(sysfs_root: &Path, n: u32) -> Result<Option<String>> {
    link_name(&sysfs_root.join(format!("sys/class/vfio-dev/vfio{n}/device")))
}

/// Every PCI device process `pid` holds open through VFIO, once each, in address order.
pub fn open_vfio_devices(proc_root: &Path, sysfs_root: &Path, pid: i32) -> Result<Vec<VfioDevice>> {
    let mut devices: Vec<VfioDevice> = Vec::new();
    for (_, link) in procfs::read_fd_links(proc_root, pid)? {
        let bdfs = match vfio_node(&link) {
            Some(VfioNode::Group(group)) => iommu_group_devices(sysfs_root, group)?,
            Some(VfioNode::Cdev(n)) => cdev_device(sysfs_root, n)?.into_iter().collect(),
            None => continue,
        };
        for bdf in bdfs {
            if !devices.iter().any(|d| d.bdf == bdf) {
                devices.push(VfioDevice { bdf, source: link.clone() });
            }
        }
    }
    devices.sort_by(|a, b| a.bdf.cmp(&b.bdf));
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn vfio_links() {
        assert_eq!(vfio_node("/dev/vfio/12"), Some(VfioNode::Group(12)));
        assert_eq!(vfio_node("/dev/vfio/devices/vfio3"), Some(VfioNode::Cdev(3)));
        assert_eq!(vfio_node("/dev/vfio/vfio"), None, "the container is no device");
        assert_eq!(vfio_node("/dev/vfio/devices/vfiox"), None);
        assert_eq!(vfio_node("anon_inode:kvm-vcpu:0"), None);
    }

    #[test]
    fn devices_from_descriptors() {
        let dir = tempfile::tempdir().unwrap();
        let (proc_root, sys) = (dir.path().join("proc"), dir.path().join("host"));
        let fd = proc_root.join("42/fd");
        fs::create_dir_all(&fd).unwrap();
        for (n, target) in
            [(3, "/dev/vfio/vfio"), (4, "/dev/vfio/7"), (5, "/dev/vfio/devices/vfio0")]
        {
            symlink(target, fd.join(n.to_string())).unwrap();
        }
        let group = sys.join("sys/kernel/iommu_groups/7/devices");
        fs::create_dir_all(group.join("0000:3b:00.0")).unwrap();
        fs::create_dir_all(group.join("0000:3b:00.1")).unwrap();
        let cdev = sys.join("sys/class/vfio-dev/vfio0");
        fs::create_dir_all(&cdev).unwrap();
        symlink("../../../0000:af:00.0", cdev.join("device")).unwrap();
        let devices = open_vfio_devices(&proc_root, &sys, 42).unwrap();
        let found: Vec<(&str, &str)> =
            devices.iter().map(|d| (d.bdf.as_str(), d.source.as_str())).collect();
        assert_eq!(
            found,
            vec![
                ("0000:3b:00.0", "/dev/vfio/7"),
                ("0000:3b:00.1", "/dev/vfio/7"),
                ("0000:af:00.0", "/dev/vfio/devices/vfio0"),
            ]
        );
        assert!(open_vfio_devices(&proc_root, &sys, 43).unwrap_err().is_gone());
    }
}
