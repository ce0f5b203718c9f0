//! The CPUs a process may use according to its cgroup cpuset.
//!
//! Where the hierarchies are comes from the reader's `/proc/self/mountinfo` (a tmpfs at
//! `/sys/fs/cgroup` is only the folder that holds v1 mounts) or from a folder the operator
//! names. Which cgroup the process is in comes from `/proc/<pid>/cgroup`. cgroup v1's cpuset
//! controller wins when it is mounted: on a hybrid host the v2 hierarchy then has no cpuset.
//!
//! Files read, walking up to the nearest ancestor while one is missing or empty:
//! v2 `cpuset.cpus.effective`; v1 `cpuset.effective_cpus`, else `cpuset.cpus`.

use crate::cpuset::CpuSet;
use crate::error::{Error, Result};
use crate::fsutil::read_optional;
use crate::procfs;
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupMount {
    /// 1 or 2.
    pub version: u8,
    /// v1 controllers of the hierarchy (`cpuset`, `cpu`, `name=systemd`); empty for v2.
    pub controllers: Vec<String>,
    pub mount_point: PathBuf,
    /// The cgroup the mount shows (field 4 of mountinfo): `/` unless a cgroup namespace or a
    /// bind mount shows a sub-tree.
    pub root: String,
}

/// Where the cpuset files are: the v1 cpuset hierarchy and the v2 hierarchy, either may be
/// missing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupLayout {
    pub cpuset_v1: Option<CgroupMount>,
    pub unified: Option<CgroupMount>,
    /// Where the layout was read from (`/proc/self/mountinfo`, or the operator's folder).
    pub source: PathBuf,
}

/// A process's allowed CPUs and the file they were read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedCpus {
    /// The CPU list of the file (not yet intersected with online CPUs); `None` when no
    /// cgroup of the process, up to the hierarchy's root, has a cpuset file.
    pub cpus: Option<CpuSet>,
    /// The file read, or the last folder looked at when none had one.
    pub source: PathBuf,
    /// 1 or 2; 0 when the process is in no cpuset hierarchy this layout knows.
    pub version: u8,
    /// The process's cgroup path in that hierarchy (`/kubepods/pod.../<id>`).
    pub cgroup: String,
}

/// Undo mountinfo's octal escapes (`\040` is a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(digits)) => {
                let value = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(value as u8);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Cgroup mounts of a mountinfo text (`proc(5)`): fields `id parent dev root mount-point
/// options [optional...] - fstype source super-options`.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut mounts = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else { continue };
        let (Some(root), Some(mount_point)) = (fields.get(3), fields.get(4)) else { continue };
        let (Some(fstype), Some(options)) = (fields.get(dash + 1), fields.get(dash + 3)) else {
            continue;
        };
        let version = match *fstype {
            "cgroup" => 1,
            "cgroup2" => 2,
            _ => continue,
        };
        let controllers = if version == 1 {
            let known = |o: &&str| !matches!(*o, "rw" | "ro") && !o.starts_with("release_agent=");
            options.split(',').filter(known).map(str::to_string).collect()
        } else {
            Vec::new()
        };
        mounts.push(CgroupMount {
            version,
            controllers,
            mount_point: PathBuf::from(unescape(mount_point)),
            root: unescape(root),
        });
    }
    mounts
}

impl CgroupLayout {
    /// The layout a mountinfo text describes; the first mount of each kind wins, preferring
    /// one that shows the whole hierarchy (root `/`).
    pub fn from_mounts(mounts: &[CgroupMount], source: PathBuf) -> CgroupLayout {
        let pick = |wanted: &dyn Fn(&CgroupMount) -> bool| {
            let mut found: Vec<&CgroupMount> = mounts.iter().filter(|m| wanted(m)).collect();
            found.sort_by_key(|m| m.root != "/");
            found.first().map(|m| (*m).clone())
        };
        CgroupLayout {
            cpuset_v1: pick(&|m| m.version == 1 && m.controllers.iter().any(|c| c == "cpuset")),
            unified: pick(&|m| m.version == 2),
            source,
        }
    }

    /// The layout of the reading process: `<proc_root>/self/mountinfo`.
    pub fn from_mountinfo(proc_root: &Path) -> Result<CgroupLayout> {
        let path = proc_root.join("self/mountinfo");
        let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let layout = CgroupLayout::from_mounts(&parse_mountinfo(&text), path.clone());
        if layout.cpuset_v1.is_none() && layout.unified.is_none() {
            return Err(Error::parse(
                &path,
                "no cgroup or cgroup2 mount: mount the cgroup hierarchies or name them with \
                 --cgroup-root",
            ));
        }
        Ok(layout)
    }

    /// The layout below a folder the operator names (`--cgroup-root /host/sys/fs/cgroup`):
    /// a v2 hierarchy (`cgroup.controllers`) there or in `unified/`, and a v1 cpuset
    /// hierarchy there (`cpuset.cpus`) or in `cpuset/`.
    pub fn from_root(dir: &Path) -> Result<CgroupLayout> {
        match fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(Error::parse(dir, "not a folder")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let missing = std::io::Error::new(e.kind(), "the folder does not exist");
                return Err(Error::io(dir, missing));
            }
            Err(e) => return Err(Error::io(dir, e)),
        }
        let mount = |version: u8, path: PathBuf| {
            let controllers = if version == 1 { vec!["cpuset".to_string()] } else { Vec::new() };
            CgroupMount { version, controllers, mount_point: path, root: "/".to_string() }
        };
        let unified = [dir.to_path_buf(), dir.join("unified")]
            .into_iter()
            .find(|d| d.join("cgroup.controllers").is_file())
            .map(|d| mount(2, d));
        let cpuset_v1 = [dir.to_path_buf(), dir.join("cpuset")]
            .into_iter()
            .find(|d| d.join("cpuset.cpus").is_file() && !d.join("cgroup.controllers").exists())
            .map(|d| mount(1, d));
        if unified.is_none() && cpuset_v1.is_none() {
            return Err(Error::parse(
                dir,
                "neither a cgroup v2 hierarchy (cgroup.controllers, here or in unified/) nor a \
                 v1 cpuset hierarchy (cpuset.cpus, here or in cpuset/)",
            ));
        }
        Ok(CgroupLayout { cpuset_v1, unified, source: dir.to_path_buf() })
    }
}

/// `/proc/<pid>/cgroup` lines `hierarchy-id:controllers:path` → (controllers, path); the
/// reason when a line is not in that form.
pub fn parse_proc_cgroup(text: &str) -> std::result::Result<Vec<(Vec<String>, String)>, String> {
    text.lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let mut parts = line.splitn(3, ':');
            let (id, controllers, path) = (parts.next(), parts.next(), parts.next());
            let (Some(id), Some(controllers), Some(path)) = (id, controllers, path) else {
                return Err(format!("line {line:?} is not hierarchy-id:controllers:path"));
            };
            if id.parse::<u32>().is_err() {
                return Err(format!("line {line:?} is not hierarchy-id:controllers:path"));
            }
            let controllers =
                controllers.split(',').filter(|c| !c.is_empty()).map(str::to_string).collect();
            Ok((controllers, path.to_string()))
        })
        .collect()
}

/// Why a cgroup path of `/proc/<pid>/cgroup` names no cgroup below the hierarchy's root, if
/// it does not. In a private cgroup namespace the kernel shows cgroups outside the namespace
/// as `/../..`: read below the mount, they would be another cgroup.
fn check_cgroup_path(cgroup: &str) -> std::result::Result<(), String> {
    if !cgroup.starts_with('/') {
        return Err(format!("cgroup path {cgroup:?} is not an absolute path"));
    }
    if cgroup.split('/').any(|part| part == ".." || part == ".") {
        return Err(format!(
            "cgroup path {cgroup:?} leaves the root of the hierarchy, as the kernel shows \
             cgroups outside the reader's cgroup namespace: the agent must run in the host's \
             cgroup namespace (cgroupns=host) to read sandboxes' cpusets"
        ));
    }
    Ok(())
}

/// The CPUs process `pid` may use, from its cpuset cgroup (`/proc/<pid>/cgroup`).
pub fn read_allowed_cpus(proc_root: &Path, pid: i32, layout: &CgroupLayout) -> Result<AllowedCpus> {
    let path = proc_root.join(format!("{pid}/cgroup"));
    allowed_cpus_of(&path, pid, None, layout)
}

/// The CPUs thread `tid` of `pid` may use, from the thread's own cpuset cgroup
/// (`/proc/<pid>/task/<tid>/cgroup`): cgroup v1 lets each thread have its own.
pub fn read_thread_allowed_cpus(
    proc_root: &Path,
    pid: i32,
    tid: i32,
    layout: &CgroupLayout,
) -> Result<AllowedCpus> {
    let path = procfs::task_dir(proc_root, pid, tid).join("cgroup");
    allowed_cpus_of(&path, pid, Some(tid), layout)
}

fn allowed_cpus_of(
    path: &Path,
    pid: i32,
    tid: Option<i32>,
    layout: &CgroupLayout,
) -> Result<AllowedCpus> {
    let text = String::from_utf8_lossy(&procfs::read_proc_file(pid, tid, path)?).into_owned();
    let lines = parse_proc_cgroup(&text).map_err(|reason| Error::parse(path, reason))?;
    let v1 = lines.iter().find(|(c, _)| c.iter().any(|c| c == "cpuset"));
    let v2 = lines.iter().find(|(c, _)| c.is_empty());
    let (mount, cgroup, files): (&CgroupMount, &str, &[&str]) = match (&layout.cpuset_v1, v1) {
        (Some(mount), Some((_, cgroup))) => {
            (mount, cgroup, &["cpuset.effective_cpus", "cpuset.cpus"])
        }
        _ => match (&layout.unified, v2) {
            (Some(mount), Some((_, cgroup))) => (mount, cgroup, &["cpuset.cpus.effective"]),
            _ => {
                let (cpus, source) = (None, path.to_path_buf());
                return Ok(AllowedCpus { cpus, source, version: 0, cgroup: String::new() });
            }
        },
    };
    check_cgroup_path(cgroup).map_err(|reason| Error::parse(path, reason))?;
    let dir = cgroup_dir(mount, cgroup).map_err(|reason| Error::parse(path, reason))?;
    let (cpus, source) = walk_up(mount, dir, files)?;
    Ok(AllowedCpus { cpus, source, version: mount.version, cgroup: cgroup.to_string() })
}

/// The folder of `cgroup` (an absolute path without `.` or `..`) below the mount, which shows
/// the sub-tree at `mount.root`; the reason when the cgroup is outside that sub-tree.
fn cgroup_dir(mount: &CgroupMount, cgroup: &str) -> std::result::Result<PathBuf, String> {
    let root = mount.root.trim_end_matches('/');
    let relative = cgroup.strip_prefix(root).filter(|r| r.is_empty() || r.starts_with('/'));
    let Some(relative) = relative else {
        return Err(format!(
            "cgroup {cgroup:?} is outside {:?}, the part of the hierarchy mounted at {}: the \
             agent must see the whole hierarchy (run it in the host's cgroup namespace, or name \
             the hierarchies with --cgroup-root)",
            mount.root,
            mount.mount_point.display()
        ));
    };
    Ok(mount.mount_point.join(relative.trim_start_matches('/')))
}

fn walk_up(mount: &CgroupMount, dir: PathBuf, files: &[&str]) -> Result<(Option<CpuSet>, PathBuf)> {
    let mut dir = dir;
    loop {
        for name in files {
            let path = dir.join(name);
            let Some(text) = read_optional(&path)? else { continue };
            let cpus = CpuSet::parse_list(&text).map_err(|e| Error::parse(&path, e.to_string()))?;
            if !cpus.is_empty() {
                return Ok((Some(cpus), path));
            }
        }
        if dir == mount.mount_point || !dir.starts_with(&mount.mount_point) {
            return Ok((None, dir));
        }
        match dir.parent() {
            Some(parent) => dir = parent.to_path_buf(),
            None => return Ok((None, dir)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_mountinfo() {
        let mounts = parse_mountinfo(HYBRID);
        assert_eq!(mounts.len(), 4, "the tmpfs is no cgroup");
        let layout = CgroupLayout::from_mounts(&mounts, PathBuf::from("mountinfo"));
        assert_eq!(layout.cpuset_v1.unwrap().mount_point, PathBuf::from("/sys/fs/cgroup/cpuset"));
        assert_eq!(layout.unified.unwrap().mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn unified_mountinfo_with_optional_fields_and_escapes() {
        let text =
            "29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n\
                    30 23 0:27 /kubepods /host\\040cg rw shared:5 master:1 - cgroup2 none rw\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts[0].mount_point, PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(mounts[1].mount_point, PathBuf::from("/host cg"));
        assert_eq!(mounts[1].root, "/kubepods");
        let layout = CgroupLayout::from_mounts(&mounts, PathBuf::new());
        assert!(layout.cpuset_v1.is_none());
        assert_eq!(layout.unified.unwrap().root, "/");
    }

    #[test]
    fn proc_cgroup_lines() {
        let text = "3:cpuset:/kata/x\n1:cpu,cpuacct:/\n0::/kubepods/pod1/x\n";
        let lines = parse_proc_cgroup(text).unwrap();
        assert_eq!(lines[0], (vec!["cpuset".to_string()], "/kata/x".to_string()));
        assert_eq!(lines[1].0, vec!["cpu".to_string(), "cpuacct".to_string()]);
        assert_eq!(lines[2], (Vec::new(), "/kubepods/pod1/x".to_string()));
        for bad in ["::\n", "0:/x\n", "x::/y\n", "12\n"] {
            assert!(parse_proc_cgroup(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cgroup_paths_that_leave_the_root() {
        for good in ["/", "/kubepods/pod1/x", "/a..b/.c"] {
            assert_eq!(check_cgroup_path(good), Ok(()), "{good}");
        }
        for bad in ["", "kubepods", "/..", "/../../kubepods/x", "/a/./b", "/a/../b"] {
            assert!(check_cgroup_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cgroup_below_a_mount_of_a_sub_tree() {
        let mount = CgroupMount {
            version: 2,
            controllers: Vec::new(),
            mount_point: PathBuf::from("/sys/fs/cgroup"),
            root: "/kubepods".to_string(),
        };
        let dir = |cgroup| cgroup_dir(&mount, cgroup);
        assert_eq!(dir("/kubepods/pod1"), Ok(PathBuf::from("/sys/fs/cgroup/pod1")));
        assert_eq!(dir("/kubepods"), Ok(PathBuf::from("/sys/fs/cgroup")));
        assert!(dir("/kubepodsX").unwrap_err().contains("outside \"/kubepods\""));
        assert!(dir("/system.slice/x").is_err());
        let whole = CgroupMount { root: "/".to_string(), ..mount };
        assert_eq!(cgroup_dir(&whole, "/kubepodsX"), Ok(PathBuf::from("/sys/fs/cgroup/kubepodsX")));
    }
}
