//! Host NUMA topology from a sysfs tree rooted at any folder (`/` on a live host).
//!
//! Files read, below `<root>/sys/devices/system/`:
//! `node/online` (or the `nodeN` folders), `node/possible`, `nodeN/cpulist` (or `cpumap`),
//! `nodeN/meminfo`, `nodeN/distance`, `nodeN/hugepages/hugepages-<size>kB/{nr,free}_hugepages`,
//! `cpu/online` (or each `cpuN/online`), `cpuN/topology/*`; and `<root>/sys/bus/pci/devices/*`.
//! A tree without `node/` (a board without NUMA) is one node 0 sized by `<root>/proc/meminfo`.
//!
//! Captured trees are not always what a live kernel writes (empty files, NUL bytes, rows of
//! another width, hand edits): what the reader had to assume is said in [`HostTopology::notes`].

use crate::cpuset::CpuSet;
use crate::error::{Error, Result};
use crate::fsutil::{link_name, numbered_entries, read_int_optional, read_optional};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HugePages {
    pub size_kib: u64,
    pub total: u64,
    pub free: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NumaNode {
    pub id: u32,
    /// Online CPUs of the node (`cpulist` ∩ online CPUs); empty for a memory-only node.
    pub cpus: CpuSet,
    /// `Node N MemTotal` of `nodeN/meminfo`, KiB; 0 for a CPU-only node.
    pub memory_kib: u64,
    /// `Node N MemFree`, KiB; `None` when `meminfo` does not say.
    pub free_kib: Option<u64>,
    /// Distance to each online node, in ascending node order: `(node id, distance)`.
    /// Empty when the row could not be matched to the online nodes.
    pub distances: Vec<(u32, u32)>,
    pub hugepages: Vec<HugePages>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cpu {
    pub id: u32,
    pub package: Option<i64>,
    pub die: Option<i64>,
    pub core: Option<i64>,
    /// SMT siblings including the CPU itself (`thread_siblings_list`, or the `thread_siblings`
    /// mask of old kernels).
    pub siblings: CpuSet,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciDevice {
    /// Bus/device/function address, `0000:3b:00.0`.
    pub bdf: String,
    /// `numa_node`; `None` when the file says -1 or is missing (locality unknown).
    pub numa_node: Option<u32>,
    /// PCI class code, `0x030200`.
    pub class: u32,
    pub vendor: u32,
    pub device: u32,
    pub driver: Option<String>,
    pub iommu_group: Option<u32>,
}

impl PciDevice {
    /// Display controllers (class 0x03) and 3D/processing accelerators (0x12) count as GPUs.
    pub fn is_gpu(&self) -> bool {
        matches!(self.class >> 16, 0x03 | 0x12)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostTopology {
    /// Online nodes in ascending ID order (IDs may be sparse: `0,1,4,5`).
    pub nodes: Vec<NumaNode>,
    pub online_cpus: CpuSet,
    /// Every CPU with a `cpuN` folder (present), online or not.
    pub cpus: Vec<Cpu>,
    pub pci_devices: Vec<PciDevice>,
    /// Notes on what the tree lacked and how it was read (no node folder, distance rows of
    /// another width, ...).
    pub notes: Vec<String>,
}

/// Read the NUMA topology of the host whose sysfs is below `root` (`/` on a live host): its
/// online nodes in ascending ID order, each cut down to the online CPUs, and its PCI devices.
/// A file that holds what the kernel never writes is an error naming the file.
pub fn read_host_topology(root: &Path) -> Result<HostTopology> {
    let system = root.join("sys/devices/system");
    let mut notes = Vec::new();
    let (online, cpus) = read_cpus(&system.join("cpu"), &mut notes)?;
    let node_dir = system.join("node");
    let node_ids = read_node_ids(&node_dir, &mut notes)?;
    let nodes = if node_ids.is_empty() {
        let cpus = online.clone().unwrap_or_default();
        notes.push(format!("{} has no NUMA nodes: one node 0 holds every CPU", node_dir.display()));
        vec![single_node(root, &cpus)?]
    } else {
        let possible = read_list_optional(&node_dir.join("possible"))?;
        let mut nodes = Vec::with_capacity(node_ids.len());
        for &id in &node_ids {
            let node = read_node(&node_dir, id, &node_ids, possible.as_ref(), &mut notes)?;
            nodes.push(node);
        }
        nodes
    };
    let online_cpus = settle_online_cpus(online, &nodes, &mut notes);
    let nodes = nodes
        .into_iter()
        .map(|node| NumaNode { cpus: node.cpus.intersection(&online_cpus), ..node })
        .collect();
    let pci_devices = read_pci_devices(&root.join("sys/bus/pci/devices"))?;
    Ok(HostTopology { nodes, online_cpus, cpus, pci_devices, notes })
}

fn read_list_optional(path: &Path) -> Result<Option<CpuSet>> {
    match read_optional(path)? {
        Some(text) => {
            CpuSet::parse_list(&text).map(Some).map_err(|e| Error::parse(path, e.to_string()))
        }
        None => Ok(None),
    }
}

fn read_mask_optional(path: &Path) -> Result<Option<CpuSet>> {
    match read_optional(path)? {
        Some(text) => {
            CpuSet::parse_mask(&text).map(Some).map_err(|e| Error::parse(path, e.to_string()))
        }
        None => Ok(None),
    }
}

/// Online nodes from `node/online`; without it (old kernels) every `nodeN` folder.
fn read_node_ids(node_dir: &Path, notes: &mut Vec<String>) -> Result<Vec<u32>> {
    if let Some(online) = read_list_optional(&node_dir.join("online"))? {
        if !online.is_empty() {
            return Ok(online.iter().collect());
        }
        notes.push(format!("{} is empty: nodes taken from the nodeN folders", node_dir.display()));
    }
    numbered_entries(node_dir, "node")
}

/// Online CPUs from `cpu/online`, else from the `cpuN/online` flags of old kernels; `None`
/// when the tree has neither the file nor any `cpuN` folder.
fn read_cpus(cpu_dir: &Path, notes: &mut Vec<String>) -> Result<(Option<CpuSet>, Vec<Cpu>)> {
    let present = numbered_entries(cpu_dir, "cpu")?;
    let online = match read_list_optional(&cpu_dir.join("online"))? {
        Some(online) => Some(online),
        None if present.is_empty() => None,
        None => Some(online_from_flags(cpu_dir, &present, notes)?),
    };
    let files = TopologyFiles::probe(cpu_dir, &present);
    let mut cpus = Vec::with_capacity(present.len());
    for &id in &present {
        cpus.push(read_cpu(&cpu_dir.join(format!("cpu{id}/topology")), id, files)?);
    }
    Ok((online, cpus))
}

/// Old kernels have no `cpu/online` but a `cpuN/online` flag (`1` or `0`) for each CPU that
/// can go offline; a CPU without the flag (cpu0 on x86) is always online. An empty flag (a
/// capture that could not read it) says nothing, so that CPU counts as online too.
fn online_from_flags(cpu_dir: &Path, present: &[u32], notes: &mut Vec<String>) -> Result<CpuSet> {
    let mut online = CpuSet::new();
    let mut unreadable = CpuSet::new();
    for &id in present {
        let path = cpu_dir.join(format!("cpu{id}/online"));
        match read_optional(&path)?.as_deref() {
            Some("0") => continue,
            Some("1") | None => {}
            Some("") => unreadable.insert(id),
            Some(other) => {
                return Err(Error::parse(path, format!("expected 0 or 1, found {other:?}")));
            }
        }
        online.insert(id);
    }
    if !unreadable.is_empty() {
        notes.push(format!(
            "{}/cpuN/online is empty for CPUs {}: counted as online",
            cpu_dir.display(),
            unreadable.to_list()
        ));
    }
    Ok(online)
}

/// Which of the files that came with newer kernels `cpuN/topology/` holds. The kernel writes
/// the same set for every CPU, so they are looked for once rather than missed 256 times.
#[derive(Clone, Copy)]
struct TopologyFiles {
    /// `thread_siblings_list` (2.6.26 on); before it only the `thread_siblings` mask.
    siblings_list: bool,
    /// `die_id` (5.2 on).
    die_id: bool,
}

impl TopologyFiles {
    /// Looks at the first CPU that has a `topology` folder (an offline CPU may have none).
    fn probe(cpu_dir: &Path, present: &[u32]) -> Self {
        let folder = present
            .iter()
            .map(|id| cpu_dir.join(format!("cpu{id}/topology")))
            .find(|folder| folder.is_dir());
        match folder {
            Some(folder) => TopologyFiles {
                siblings_list: folder.join("thread_siblings_list").exists(),
                die_id: folder.join("die_id").exists(),
            },
            None => TopologyFiles { siblings_list: false, die_id: false },
        }
    }
}

fn read_cpu(topology: &Path, id: u32, files: TopologyFiles) -> Result<Cpu> {
    let mut siblings = None;
    if files.siblings_list {
        siblings = read_list_optional(&topology.join("thread_siblings_list"))?;
    }
    if siblings.is_none() {
        siblings = read_mask_optional(&topology.join("thread_siblings"))?;
    }
    let die = if files.die_id { read_int_optional(&topology.join("die_id"))? } else { None };
    Ok(Cpu {
        id,
        package: read_int_optional(&topology.join("physical_package_id"))?,
        die,
        core: read_int_optional(&topology.join("core_id"))?,
        siblings: siblings.unwrap_or_else(|| [id].into_iter().collect()),
    })
}

/// The online CPUs every node is cut down to. A tree that says nothing about CPUs takes the
/// nodes' own lists; online CPUs outside every online node (their node is offline) are noted.
fn settle_online_cpus(
    online: Option<CpuSet>,
    nodes: &[NumaNode],
    notes: &mut Vec<String>,
) -> CpuSet {
    let in_nodes = nodes.iter().fold(CpuSet::new(), |all, node| all.union(&node.cpus));
    let Some(online) = online else {
        notes.push("no cpu/online and no cpuN folders: every CPU the nodes list is online".into());
        return in_nodes;
    };
    let homeless = online.difference(&in_nodes);
    if !homeless.is_empty() {
        notes.push(format!("online CPUs {} belong to no online node", homeless.to_list()));
    }
    online
}

/// One online node. Its CPUs are still the raw `cpulist` here: the caller cuts them down to
/// the online CPUs (a node may list CPUs that are offline or not even present).
fn read_node(
    node_dir: &Path,
    id: u32,
    online_nodes: &[u32],
    possible: Option<&CpuSet>,
    notes: &mut Vec<String>,
) -> Result<NumaNode> {
    let dir = node_dir.join(format!("node{id}"));
    if !dir.is_dir() {
        notes.push(format!("node {id} is online but {} is missing", dir.display()));
    }
    let cpus = read_node_cpus(&dir)?;
    let meminfo = read_meminfo(&dir.join("meminfo"), &format!("Node {id} "))?;
    let distances = read_distances(&dir.join("distance"), id, online_nodes, possible, notes)?;
    let hugepages = read_hugepages(&dir.join("hugepages"))?;
    let memory_kib = meminfo.total.unwrap_or(0);
    Ok(NumaNode { id, cpus, memory_kib, free_kib: meminfo.free, distances, hugepages })
}

/// `cpulist`, else the `cpumap` mask of old kernels (32-bit groups; the first group may be
/// short when NR_CPUS is not a multiple of 32), else the `cpuN` links of the folder.
fn read_node_cpus(dir: &Path) -> Result<CpuSet> {
    if let Some(cpus) = read_list_optional(&dir.join("cpulist"))? {
        return Ok(cpus);
    }
    if let Some(cpus) = read_mask_optional(&dir.join("cpumap"))? {
        return Ok(cpus);
    }
    Ok(numbered_entries(dir, "cpu")?.into_iter().collect())
}

#[derive(Default)]
struct MemInfo {
    total: Option<u64>,
    free: Option<u64>,
}

/// `MemTotal` and `MemFree` in KiB from a `meminfo` whose lines start with `prefix`
/// (`Node 0 ` in `nodeN/meminfo`, nothing in `/proc/meminfo`). A missing file says nothing.
fn read_meminfo(path: &Path, prefix: &str) -> Result<MemInfo> {
    let Some(text) = read_optional(path)? else { return Ok(MemInfo::default()) };
    let mut info = MemInfo::default();
    for line in text.lines() {
        let Some(rest) = line.trim_start().strip_prefix(prefix) else { continue };
        let mut words = rest.split_whitespace();
        let (Some(key), Some(value)) = (words.next(), words.next()) else { continue };
        let slot = match key {
            "MemTotal:" => &mut info.total,
            "MemFree:" => &mut info.free,
            _ => continue,
        };
        let kib = value
            .parse::<u64>()
            .map_err(|_| Error::parse(path, format!("{key} {value:?} is not a number of kB")))?;
        *slot = Some(kib);
    }
    Ok(info)
}

/// A node's `distance` row lists one value per online node, in ascending node order, so
/// column j is the j-th online node, not node j (IDs may be sparse). Rows of the width of the
/// possible nodes (a hand-edited tree with an offline node) are matched to those instead.
fn read_distances(
    path: &Path,
    id: u32,
    online_nodes: &[u32],
    possible: Option<&CpuSet>,
    notes: &mut Vec<String>,
) -> Result<Vec<(u32, u32)>> {
    let Some(text) = read_optional(path)? else {
        notes.push(format!("{} is missing: distances of node {id} unknown", path.display()));
        return Ok(Vec::new());
    };
    let mut row = Vec::new();
    for word in text.split_whitespace() {
        let value = word
            .parse::<u32>()
            .map_err(|_| Error::parse(path, format!("distance {word:?} is not a number")))?;
        row.push(value);
    }
    if row.len() == online_nodes.len() {
        return Ok(online_nodes.iter().copied().zip(row).collect());
    }
    if let Some(possible) = possible.filter(|p| p.len() == row.len()) {
        let by_node: BTreeMap<u32, u32> = possible.iter().zip(row).collect();
        notes.push(format!("{} lists the possible nodes, not the online ones", path.display()));
        return Ok(online_nodes.iter().filter_map(|n| by_node.get(n).map(|d| (*n, *d))).collect());
    }
    notes.push(format!(
        "{} has {} entries for {} online nodes: distances of node {id} unknown",
        path.display(),
        row.len(),
        online_nodes.len()
    ));
    Ok(Vec::new())
}

fn read_hugepages(dir: &Path) -> Result<Vec<HugePages>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut pages = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(size) = name.strip_prefix("hugepages-").and_then(|s| s.strip_suffix("kB")) else {
            continue;
        };
        let Ok(size_kib) = size.parse::<u64>() else { continue };
        let total = read_int_optional(&entry.path().join("nr_hugepages"))?.unwrap_or(0);
        let free = read_int_optional(&entry.path().join("free_hugepages"))?.unwrap_or(0);
        pages.push(HugePages { size_kib, total: total.max(0) as u64, free: free.max(0) as u64 });
    }
    pages.sort_by_key(|p| p.size_kib);
    Ok(pages)
}

/// A board without `sys/devices/system/node`: one node 0 with every online CPU and the
/// memory of `proc/meminfo`.
fn single_node(root: &Path, online_cpus: &CpuSet) -> Result<NumaNode> {
    let meminfo = read_meminfo(&root.join("proc/meminfo"), "")?;
    Ok(NumaNode {
        id: 0,
        cpus: online_cpus.clone(),
        memory_kib: meminfo.total.unwrap_or(0),
        free_kib: meminfo.free,
        distances: vec![(0, 10)],
        hugepages: Vec::new(),
    })
}

fn read_pci_devices(dir: &Path) -> Result<Vec<PciDevice>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut devices = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let bdf = entry.file_name().to_string_lossy().into_owned();
        devices.push(read_pci_device(&entry.path(), bdf)?);
    }
    devices.sort_by(|a, b| a.bdf.cmp(&b.bdf));
    Ok(devices)
}

pub fn read_pci_device(path: &Path, bdf: String) -> Result<PciDevice> {
    let hex = |name: &str| -> Result<u32> {
        let file: PathBuf = path.join(name);
        match read_optional(&file)? {
            Some(text) => u32::from_str_radix(text.trim_start_matches("0x"), 16)
                .map_err(|_| Error::parse(&file, format!("expected a hex number, found {text:?}"))),
            None => Ok(0),
        }
    };
    let numa_node = read_int_optional(&path.join("numa_node"))?;
    let iommu_group = link_name(&path.join("iommu_group"))?.and_then(|g| g.parse().ok());
    Ok(PciDevice {
        numa_node: match numa_node {
            None | Some(-1) => None,
            Some(n) => Some(u32::try_from(n).map_err(|_| {
                let file = path.join("numa_node");
                Error::parse(file, format!("NUMA node {n} is neither -1 nor a node number"))
            })?),
        },
        class: hex("class")?,
        vendor: hex("vendor")?,
        device: hex("device")?,
        driver: link_name(&path.join("driver"))?,
        iommu_group,
        bdf,
    })
}

#[cfg(test)]
mod tests {
    //! Small trees shaped like the captured machines of `shared/fixtures/` that showed each
    //! case; the full machines are read by `tests/test_topology_fixtures.py`.
    use super::*;

    fn write(root: &Path, rel: &str, content: &[u8]) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    /// A node folder with `cpulist`, `meminfo` (MemTotal and MemFree) and `distance`.
    fn node(root: &Path, id: u32, cpus: &str, total: u64, distance: &str) {
        let dir = format!("sys/devices/system/node/node{id}");
        write(root, &format!("{dir}/cpulist"), format!("{cpus}\n").as_bytes());
        let meminfo =
            format!("Node {id} MemTotal: {total} kB\nNode {id} MemFree: {} kB\n", total / 2);
        write(root, &format!("{dir}/meminfo"), meminfo.as_bytes());
        write(root, &format!("{dir}/distance"), format!("{distance}\n").as_bytes());
    }

    fn cpu_folders(root: &Path, count: u32) {
        for id in 0..count {
            let dir = format!("sys/devices/system/cpu/cpu{id}/topology");
            write(root, &format!("{dir}/core_id"), format!("{id}\n").as_bytes());
        }
    }

    fn set(list: &str) -> CpuSet {
        CpuSet::parse_list(list).unwrap()
    }

    #[test]
    fn empty_cpu_online_flags_count_as_online_128ia64_17n4s2c() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        cpu_folders(root, 4);
        for id in 0..4 {
            write(root, &format!("sys/devices/system/cpu/cpu{id}/online"), b"");
        }
        node(root, 0, "0-3", 1024, "10");
        let topology = read_host_topology(root).unwrap();
        assert_eq!(topology.online_cpus, set("0-3"));
        assert!(topology.notes.iter().any(|n| n.contains("empty for CPUs 0-3")));
    }

    #[test]
    fn offline_flags_of_old_kernels_16em64t_4s2c2t_offlines() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        cpu_folders(root, 4);
        write(root, "sys/devices/system/cpu/cpu2/online", b"0\n");
        write(root, "sys/devices/system/cpu/cpu3/online", b"1\n");
        node(root, 0, "0-3", 1024, "10");
        let topology = read_host_topology(root).unwrap();
        assert_eq!(topology.online_cpus, set("0-1,3"));
        assert_eq!(topology.nodes[0].cpus, set("0-1,3"));
        write(root, "sys/devices/system/cpu/cpu3/online", b"yes\n");
        let err = read_host_topology(root).unwrap_err().to_string();
        assert!(err.contains("cpu3/online") && err.contains("\"yes\""), "{err}");
    }

    #[test]
    fn thread_siblings_mask_without_list_16em64t_4s2c2t_offlines() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for (id, mask) in [(0, "00000011"), (4, "00000011")] {
            let dir = format!("sys/devices/system/cpu/cpu{id}/topology");
            write(root, &format!("{dir}/thread_siblings"), format!("{mask}\n").as_bytes());
            write(root, &format!("{dir}/core_id"), b"0\n");
        }
        write(root, "sys/devices/system/cpu/online", b"0,4\n");
        let topology = read_host_topology(root).unwrap();
        assert_eq!(topology.cpus[0].siblings, set("0,4"));
        assert_eq!(topology.cpus[1].siblings, set("0,4"));
        assert_eq!(topology.cpus[0].die, None);
    }

    #[test]
    fn missing_memfree_is_unknown_fakeheterocpunuma() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        cpu_folders(root, 1);
        write(root, "sys/devices/system/node/node0/cpulist", b"0\n");
        write(root, "sys/devices/system/node/node0/meminfo", b"Node 0 MemTotal:  1048576 kB\n");
        write(root, "sys/devices/system/node/node0/distance", b"10\n");
        let node = &read_host_topology(root).unwrap().nodes[0];
        assert_eq!((node.memory_kib, node.free_kib), (1048576, None));
    }

    #[test]
    fn bad_meminfo_number_names_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        cpu_folders(root, 1);
        node(root, 0, "0", 1024, "10");
        write(root, "sys/devices/system/node/node0/meminfo", b"Node 0 MemTotal: lots kB\n");
        let err = read_host_topology(root).unwrap_err().to_string();
        assert!(err.contains("node0/meminfo") && err.contains("\"lots\""), "{err}");
    }

    #[test]
    fn sparse_node_ids_map_columns_by_online_order_48amd64_4pa2n6c_sparse() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        cpu_folders(root, 3);
        write(root, "sys/devices/system/cpu/online", b"0-2\n");
        write(root, "sys/devices/system/node/online", b"0,33,72\n");
        node(root, 0, "0", 1024, "10 16 22");
        node(root, 33, "1", 1024, "16 10 17");
        node(root, 72, "2", 1024, "22 17 10");
        let topology = read_host_topology(root).unwrap();
        let ids: Vec<u32> = topology.nodes.iter().map(|n| n.id).collect();
        assert_eq!(ids, [0, 33, 72]);
        assert_eq!(topology.nodes[1].distances, [(0, 16), (33, 10), (72, 17)]);
    }

    #[test]
    fn asymmetric_rows_stay_asymmetric_fakeheterocpunuma() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        cpu_folders(root, 2);
        node(root, 2, "0", 1024, "10 40");
        node(root, 3, "1", 1024, "50 10");
        let topology = read_host_topology(root).unwrap();
        assert_eq!(topology.nodes[0].distances, [(2, 10), (3, 40)]);
        assert_eq!(topology.nodes[1].distances, [(2, 50), (3, 10)]);
    }

    #[test]
    fn row_of_possible_width_and_offline_node_offline_cpu0_node0() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        cpu_folders(root, 4);
        write(root, "sys/devices/system/cpu/online", b"1-3\n");
        write(root, "sys/devices/system/node/online", b"1\n");
        write(root, "sys/devices/system/node/possible", b"0-1\n");
        write(root, "sys/devices/system/node/has_cpu", b"\n");
        node(root, 0, "0,2", 1024, "10 21"); // the offline node's folder, left behind
        node(root, 1, "1,3", 1024, "21 10");
        let topology = read_host_topology(root).unwrap();
        assert_eq!(topology.nodes.len(), 1);
        assert_eq!(topology.nodes[0].cpus, set("1,3"));
        assert_eq!(topology.nodes[0].distances, [(1, 10)]);
        assert!(topology.notes.iter().any(|n| n.ends_with("not the online ones")));
        assert!(topology.notes.contains(&"online CPUs 2 belong to no online node".to_string()));
    }

    #[test]
    fn row_of_unknown_width_is_left_out() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        cpu_folders(root, 2);
        node(root, 0, "0", 1024, "10 20 30");
        node(root, 1, "1", 1024, "20 10");
        let topology = read_host_topology(root).unwrap();
        assert_eq!(topology.nodes[0].distances, []);
        assert!(topology.notes.iter().any(|n| n.contains("has 3 entries for 2 online nodes")));
    }

    #[test]
    fn cpumap_narrower_than_32_bits_48amd64_4pa2n6c_sparse() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        cpu_folders(root, 48);
        let dir = "sys/devices/system/node/node1";
        write(root, &format!("{dir}/cpumap"), b"0000,00000fc0\n");
        write(root, &format!("{dir}/distance"), b"10\n");
        let topology = read_host_topology(root).unwrap();
        assert_eq!(topology.nodes[0].cpus, set("6-11"));
    }

    #[test]
    fn node_cpulist_is_cut_to_online_cpus_nvidiagpunumanodes() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        cpu_folders(root, 4);
        write(root, "sys/devices/system/cpu/online", b"0-1\n");
        node(root, 0, "0-175", 1024, "10 80");
        node(root, 255, "", 15728640, "80 10");
        let topology = read_host_topology(root).unwrap();
        assert_eq!(topology.nodes[0].cpus, set("0-1"));
        assert!(topology.nodes[1].cpus.is_empty());
    }

    #[test]
    fn nul_bytes_are_dropped_128arm_2pa2n8cluster4co() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        cpu_folders(root, 2);
        write(root, "sys/devices/system/node/online", b"0\0\n");
        node(root, 0, "0-1", 1024, "10");
        write(root, "sys/devices/system/node/node0/cpulist", b"0-1\n\0\0");
        let topology = read_host_topology(root).unwrap();
        assert_eq!(topology.nodes[0].cpus, set("0-1"));
    }

    #[test]
    fn no_node_folder_is_one_node_2arm_2c() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        cpu_folders(root, 2);
        write(root, "sys/devices/system/cpu/online", b"0-1\n");
        write(root, "proc/meminfo", b"MemTotal:  280840 kB\nMemFree:  250000 kB\n");
        let topology = read_host_topology(root).unwrap();
        assert_eq!(topology.nodes.len(), 1);
        let node = &topology.nodes[0];
        assert_eq!((node.id, node.cpus.clone()), (0, set("0-1")));
        assert_eq!((node.memory_kib, node.free_kib), (280840, Some(250000)));
        write(root, "proc/meminfo", b"MemTotal:  many kB\n");
        let err = read_host_topology(root).unwrap_err().to_string();
        assert!(err.contains("proc/meminfo"), "{err}");
    }

    #[test]
    fn no_cpu_folder_keeps_the_node_cpus() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        node(root, 0, "0-3", 1024, "10");
        let topology = read_host_topology(root).unwrap();
        assert_eq!(topology.nodes[0].cpus, set("0-3"));
        assert_eq!(topology.online_cpus, set("0-3"));
        assert!(topology.notes.iter().any(|n| n.starts_with("no cpu/online")));
    }

    #[test]
    fn pci_numa_node_minus_one_is_unknown_40intel64_2g2n4c_pcilocality() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        cpu_folders(root, 1);
        node(root, 0, "0", 1024, "10");
        for (bdf, numa_node) in [("0000:00:00.0", &b"-1\n"[..]), ("0000:40:00.0", b"0\n")] {
            write(root, &format!("sys/bus/pci/devices/{bdf}/numa_node"), numa_node);
            write(root, &format!("sys/bus/pci/devices/{bdf}/class"), b"0x030000\n");
        }
        write(root, "sys/bus/pci/devices/0000:41:00.0/class", b"0x030000\n");
        let devices = read_host_topology(root).unwrap().pci_devices;
        let nodes: Vec<_> = devices.iter().map(|d| (d.bdf.as_str(), d.numa_node)).collect();
        assert_eq!(
            nodes,
            [("0000:00:00.0", None), ("0000:40:00.0", Some(0)), ("0000:41:00.0", None)]
        );
        assert!(devices.iter().all(PciDevice::is_gpu));
    }

    #[test]
    fn pci_numa_node_out_of_range_is_an_error_not_node_0() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        cpu_folders(root, 1);
        node(root, 0, "0", 1024, "10");
        for bad in [&b"4294967296\n"[..], b"-2\n"] {
            write(root, "sys/bus/pci/devices/0000:00:01.0/numa_node", bad);
            let err = read_host_topology(root).unwrap_err().to_string();
            assert!(err.contains("0000:00:01.0/numa_node"), "{err}");
        }
    }
}
