//! Host NUMA topology from a sysfs tree rooted at any folder (`/` on a live host).
//!
//! Files read, below `<root>/sys/devices/system/`:
//! `node/online` (or the `nodeN` folders), `node/possible`, `nodeN/cpulist` (or `cpumap`),
//! `nodeN/meminfo`, `nodeN/distance`, `nodeN/hugepages/hugepages-<size>kB/{nr,free}_hugepages`,
//! `cpu/online` (or each `cpuN/online`), `cpuN/topology/*`; and `<root>/sys/bus/pci/devices/*`.

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
    pub free_kib: u64,
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
    /// SMT siblings including the CPU itself (`thread_siblings_list`).
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
    pub nodes: Vec<NumaNode>,
    pub online_cpus: CpuSet,
    pub cpus: Vec<Cpu>,
    pub pci_devices: Vec<PciDevice>,
    /// Notes on what the tree lacked and how it was read (no node folder, distance rows of
    /// another width, ...).
    pub notes: Vec<String>,
}

pub fn read_host_topology(root: &Path) -> Result<HostTopology> {
    let system = root.join("sys/devices/system");
    let mut notes = Vec::new();
    let (online_cpus, cpus) = read_cpus(&system.join("cpu"))?;
    let node_dir = system.join("node");
    let node_ids = read_node_ids(&node_dir)?;
    let nodes = if node_ids.is_empty() {
        notes.push(format!("{} has no NUMA nodes: one node 0 holds every CPU", node_dir.display()));
        vec![single_node(root, &online_cpus)?]
    } else {
        let possible = read_list_optional(&node_dir.join("possible"))?;
        let mut nodes = Vec::with_capacity(node_ids.len());
        for &id in &node_ids {
            nodes.push(read_node(
                &node_dir,
                id,
                &node_ids,
                possible.as_ref(),
                &online_cpus,
                &mut notes,
            )?);
        }
        nodes
    };
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

fn read_node_ids(node_dir: &Path) -> Result<Vec<u32>> {
    if let Some(online) = read_list_optional(&node_dir.join("online"))? {
        if !online.is_empty() {
            return Ok(online.iter().collect());
        }
    }
    numbered_entries(node_dir, "node")
}

fn read_cpus(cpu_dir: &Path) -> Result<(CpuSet, Vec<Cpu>)> {
    let present = numbered_entries(cpu_dir, "cpu")?;
    let online = match read_list_optional(&cpu_dir.join("online"))? {
        Some(online) => online,
        None => {
            // Old kernels: no cpu/online, but each hot-pluggable CPU has cpuN/online.
            let mut online = CpuSet::new();
            for &id in &present {
                let flag = read_int_optional(&cpu_dir.join(format!("cpu{id}/online")))?;
                if flag != Some(0) {
                    online.insert(id);
                }
            }
            online
        }
    };
    let mut cpus = Vec::with_capacity(present.len());
    for &id in &present {
        let topology = cpu_dir.join(format!("cpu{id}/topology"));
        let siblings = match read_optional(&topology.join("thread_siblings_list"))? {
            Some(text) => {
                CpuSet::parse_list(&text).map_err(|e| Error::parse(&topology, e.to_string()))?
            }
            None => [id].into_iter().collect(),
        };
        cpus.push(Cpu {
            id,
            package: read_int_optional(&topology.join("physical_package_id"))?,
            die: read_int_optional(&topology.join("die_id"))?,
            core: read_int_optional(&topology.join("core_id"))?,
            siblings,
        });
    }
    Ok((online, cpus))
}

fn read_node(
    node_dir: &Path,
    id: u32,
    online_nodes: &[u32],
    possible: Option<&CpuSet>,
    online_cpus: &CpuSet,
    notes: &mut Vec<String>,
) -> Result<NumaNode> {
    let dir = node_dir.join(format!("node{id}"));
    let cpus = read_node_cpus(&dir)?.intersection(online_cpus);
    let (memory_kib, free_kib) = read_node_meminfo(&dir.join("meminfo"))?;
    let distances = read_distances(&dir.join("distance"), id, online_nodes, possible, notes)?;
    let hugepages = read_hugepages(&dir.join("hugepages"))?;
    Ok(NumaNode { id, cpus, memory_kib, free_kib, distances, hugepages })
}

fn read_node_cpus(dir: &Path) -> Result<CpuSet> {
    if let Some(text) = read_optional(&dir.join("cpulist"))? {
        return CpuSet::parse_list(&text)
            .map_err(|e| Error::parse(dir.join("cpulist"), e.to_string()));
    }
    if let Some(text) = read_optional(&dir.join("cpumap"))? {
        return CpuSet::parse_mask(&text)
            .map_err(|e| Error::parse(dir.join("cpumap"), e.to_string()));
    }
    // Neither file: derive from the cpuN links the node folder holds.
    Ok(numbered_entries(dir, "cpu")?.into_iter().collect())
}

/// `MemTotal` and `MemFree` of a node's `meminfo` (lines such as `Node 0 MemTotal: 123 kB`).
fn read_node_meminfo(path: &Path) -> Result<(u64, u64)> {
    let Some(text) = read_optional(path)? else { return Ok((0, 0)) };
    let (mut total, mut free) = (0, 0);
    for line in text.lines() {
        let mut words = line.split_whitespace().skip(2);
        let (Some(key), Some(value)) = (words.next(), words.next()) else { continue };
        let parse = || {
            value.parse::<u64>().map_err(|_| Error::parse(path, format!("bad number in {line:?}")))
        };
        match key {
            "MemTotal:" => total = parse()?,
            "MemFree:" => free = parse()?,
            _ => {}
        }
    }
    Ok((total, free))
}

/// A node's `distance` row lists one value per online node, in ascending node order. Rows of
/// the width of the possible nodes (seen on hand-edited trees) are matched to those instead.
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
    let mut memory_kib = 0;
    let mut free_kib = 0;
    let path = root.join("proc/meminfo");
    if let Some(text) = read_optional(&path)? {
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let (Some(key), Some(value)) = (words.next(), words.next()) else { continue };
            match key {
                "MemTotal:" => memory_kib = value.parse().unwrap_or(0),
                "MemFree:" => free_kib = value.parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    Ok(NumaNode {
        id: 0,
        cpus: online_cpus.clone(),
        memory_kib,
        free_kib,
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
        numa_node: numa_node.filter(|&n| n >= 0).map(|n| n as u32),
        class: hex("class")?,
        vendor: hex("vendor")?,
        device: hex("device")?,
        driver: link_name(&path.join("driver"))?,
        iommu_group,
        bdf,
    })
}
