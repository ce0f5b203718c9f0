//! Guest NUMA planning (DESIGN §2.4): which host nodes back which guest nodes, how the vCPUs
//! and the memory are split between them, the `-smp` shape, the distances, where VFIO devices
//! attach, and the QEMU arguments that say all of it.
//!
//! Pure: the caller reads the host (sysfs) and what other sandboxes already use, and passes
//! numbers in. Every choice leaves a sentence in `Plan::decisions`; anything degraded leaves
//! one in `Plan::warnings`.
//!
//! Choices made where DESIGN leaves room (each also stated in the decisions of a plan):
//! * `-smp`: `cores` is the largest number that divides the vCPU count of every guest node,
//!   `sockets = maxvcpus / cores`, one thread, and maxcpus is exactly the max vCPUs. Each guest
//!   node is then a run of whole sockets. With an equal split (the usual symmetric host) this
//!   is one socket per guest node with `maxvcpus / nodes` cores. One socket per node with
//!   `ceil(maxvcpus / nodes)` cores always would need maxcpus rounded up and, with an unequal
//!   split, sockets straddling two nodes: QEMU takes that, but Linux guests print a WARNING
//!   with a stack trace at boot (`llc-sibling CPU #n is not on the same node`, a panic under
//!   `panic_on_warn`).
//! * Confidential guests cannot hot-plug vCPUs, so their maxcpus is the vCPU count.
//! * Memory is split in proportion to vCPUs; a guest node without vCPUs (a memory-only host
//!   node named in the mapping) weighs as much as an average node with vCPUs; a guest node
//!   whose host nodes have no memory gets none; the remainder of the page rounding goes to the
//!   largest node. vCPUs are split in proportion to host CPUs (largest remainders, at least one
//!   per node with CPUs).
//! * Capacity: a host node holds a sandbox when its CPUs not dedicated to other sandboxes and
//!   its memory not committed to other sandboxes (MemTotal minus what their memory backends
//!   bind there) are at least the sandbox's. `MemFree` is a reading of this moment that leaves
//!   out page cache the kernel can reclaim: it only orders the nodes that hold the sandbox and,
//!   when it is short of the memory bound there, gives a warning that says `MemFree`.
//! * QEMU's limits (those of the QEMU 7.2 of Debian bookworm): at most `MAX_VCPUS` vCPUs (the
//!   `cpu-max` of its q35 machine), at most `MAX_NUMA_NODES` guest nodes, and host-nodes
//!   numbers below `MAX_NUMA_NODES`. A flat guest that would be bound to host nodes from 128
//!   up stays unbound, with a warning; a guest node that would be is refused.

use crate::cpuset::CpuSet;
use crate::error::{Error, Result};
use crate::qemu::Smp;
use crate::vcpu::x86_apic_id;
use std::fmt::Write as _;

/// The warning Kata's Go runtime prints when a sandbox has fewer vCPUs than guest nodes.
pub const SKIP_WARNING: &str = "DefaultMaxVCPUs < NUMA node count; skipping multi-NUMA topology";
/// The verdict of DESIGN §2.7 for a device whose host node no guest node covers.
pub const NOT_COVERED: &str = "VFIO device on host NUMA node not covered by guest NUMA topology";

const LOCAL_DISTANCE: u32 = 10;
/// Linux's REMOTE_DISTANCE, used when the host does not say.
const REMOTE_DISTANCE: u32 = 20;
/// PCI buses below this stay with the main root bus (`pcie.0`) and the root ports Kata adds
/// there; PCI expander buses share the buses from here up to 255.
const FIRST_EXPANDER_BUS: u32 = 128;
const LAST_BUS: u32 = 255;
/// Chassis numbers of our root ports start here, apart from the low numbers of root ports a
/// launcher adds itself (each chassis/slot pair must be unique).
const FIRST_CHASSIS: u32 = 100;
/// QEMU's MAX_NODES: guest NUMA nodes, and the bound on host node numbers a memory backend's
/// `host-nodes` takes (`Invalid host-nodes value` from there up).
pub const MAX_NUMA_NODES: u32 = 128;
/// The most vCPUs (`maxcpus`) QEMU takes for the q35 machine: its `cpu-max` in QEMU 7.2.
pub const MAX_VCPUS: u32 = 288;
/// Guest memory above this (1 EiB) is a typing error, not a plan.
pub const MAX_MEMORY_MIB: u64 = 1 << 40;
/// APIC IDs above this need x2APIC: QEMU starts such a guest only under KVM with the
/// in-kernel irqchip (`requires kernel irqchip and X2APIC API support` otherwise).
const MAX_XAPIC_ID: u32 = 254;
/// Reasons a sentence lists before it says how many more there are.
const SHOWN_REASONS: usize = 8;
/// Linux drops NUMA nodes smaller than this (NODE_MIN_SIZE on x86).
const GUEST_NODE_MIN_MIB: u64 = 4;

/// One host NUMA node as the planner sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostNode {
    pub id: u32,
    /// Online CPUs of the node; empty for a memory-only node.
    pub cpus: CpuSet,
    /// `MemTotal` of `nodeN/meminfo`, MiB; 0 for a CPU-only node.
    pub memory_mib: u64,
    /// `MemFree`, MiB: free this moment, page cache left out (see the module notes).
    pub free_mib: u64,
    /// Distance to each host node, `(node id, distance)`; empty when unknown.
    pub distances: Vec<(u32, u32)>,
    /// Free huge pages per size: `(page size KiB, free pages)`.
    pub hugepages_free: Vec<(u64, u64)>,
    /// CPUs of this node already dedicated to vCPUs of other sandboxes.
    pub used_cpus: u32,
    /// Memory other sandboxes already bind to this node, MiB.
    pub used_memory_mib: u64,
}

impl HostNode {
    fn free_cpus(&self) -> u64 {
        (self.cpus.len() as u64).saturating_sub(u64::from(self.used_cpus))
    }

    /// Memory not committed to other sandboxes, MiB: the node's memory capacity.
    fn uncommitted_mib(&self) -> u64 {
        self.memory_mib.saturating_sub(self.used_memory_mib)
    }

    /// What is free now: the lower of `MemFree` and the uncommitted memory, MiB; it orders the
    /// nodes that hold a sandbox.
    fn free_now_mib(&self) -> u64 {
        self.free_mib.min(self.uncommitted_mib())
    }

    fn free_pages(&self, size_kib: u64) -> u64 {
        self.hugepages_free.iter().filter(|(size, _)| *size == size_kib).map(|(_, n)| n).sum()
    }

    fn distance_to(&self, other: u32) -> Option<u32> {
        self.distances.iter().find(|(node, _)| *node == other).map(|(_, d)| *d)
    }
}

/// How right-sizing picks the one host node of a sandbox that fits one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Policy {
    /// The node with the most free capacity (CPUs not dedicated to other sandboxes, then free
    /// memory or free huge pages of the right size).
    #[default]
    MostFree,
    /// Kata's choice: the lowest-numbered node whose size holds the sandbox, whatever else
    /// runs there.
    First,
}

impl Policy {
    pub fn parse(text: &str) -> Result<Policy> {
        match text {
            "most-free" => Ok(Policy::MostFree),
            "first" => Ok(Policy::First),
            _ => Err(plan_error(format!("policy {text:?} is not one of most-free, first"))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Policy::MostFree => "most-free",
            Policy::First => "first",
        }
    }
}

/// The guest memory's QEMU backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryBackend {
    /// `memory-backend-file` (with `mem_path`) when set, else `memory-backend-ram`.
    pub mem_path: Option<String>,
    /// Huge page size, KiB, when `mem_path` is a hugetlbfs mount; None for normal pages.
    pub hugepage_kib: Option<u64>,
    pub share: bool,
    pub prealloc: bool,
}

impl MemoryBackend {
    /// Sizes are whole multiples of this many MiB (1 for normal pages).
    fn page_mib(&self) -> u64 {
        self.hugepage_kib.map_or(1, |kib| (kib / 1024).max(1))
    }
}

/// A PCI device to pass through, with the host node sysfs gives it (None: `numa_node` -1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VfioDevice {
    pub bdf: String,
    pub host_node: Option<u32>,
}

/// Everything the planner needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanRequest {
    pub host: Vec<HostNode>,
    /// vCPUs started at boot.
    pub vcpus: u32,
    /// vCPUs the guest may grow to (Kata's `default_maxvcpus`); at least `vcpus`.
    pub max_vcpus: u32,
    pub memory_mib: u64,
    pub backend: MemoryBackend,
    /// Explicit `numa_mapping`: one host-node list per guest node; None for auto.
    pub mapping: Option<Vec<String>>,
    pub vfio: Vec<VfioDevice>,
    pub confidential: bool,
    pub policy: Policy,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedNode {
    pub id: u32,
    pub host_nodes: CpuSet,
    /// vCPU indexes (below maxcpus); empty for a guest node without CPUs.
    pub vcpus: CpuSet,
    /// 0 for a guest node without memory (no memory backend).
    pub memory_mib: u64,
    /// The host nodes its memory is bound to: those of `host_nodes` that have memory.
    pub memory_nodes: CpuSet,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedDevice {
    pub bdf: String,
    pub host_node: Option<u32>,
    /// The guest node whose PCI expander bus holds the device; None on the main root bus.
    pub guest_node: Option<u32>,
    /// QEMU id of the root port the device sits behind.
    pub root_port: String,
}

/// A `pxb-pcie` of one guest node and its root ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpanderBus {
    pub id: String,
    pub guest_node: u32,
    pub bus_nr: u32,
    pub root_ports: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Guest NUMA nodes; empty for a flat guest.
    pub nodes: Vec<PlannedNode>,
    /// Every host node the sandbox's memory or vCPUs are bound to.
    pub host_nodes: CpuSet,
    /// Host nodes of a flat guest's memory binding (empty for a NUMA guest or no binding).
    pub flat_memory_nodes: CpuSet,
    pub smp: Smp,
    pub memory_mib: u64,
    pub backend: MemoryBackend,
    /// Distance matrix in guest node order (empty for a flat guest).
    pub distances: Vec<Vec<u32>>,
    pub devices: Vec<PlannedDevice>,
    pub expanders: Vec<ExpanderBus>,
    pub decisions: Vec<String>,
    pub warnings: Vec<String>,
}

fn plan_error(reason: impl Into<String>) -> Error {
    Error::Plan { reason: reason.into() }
}

/// Plan the guest topology of one sandbox.
pub fn plan_guest(request: &PlanRequest) -> Result<Plan> {
    check_request(request)?;
    let mut plan = Plan {
        memory_mib: request.memory_mib,
        backend: request.backend.clone(),
        ..Plan::default()
    };
    let max_vcpus = effective_max_vcpus(request, &mut plan);
    warn_host_memory(request, &mut plan);

    let groups = match &request.mapping {
        Some(mapping) => explicit_groups(request, mapping, &mut plan)?,
        None => auto_groups(request, &mut plan)?,
    };
    if request.mapping.is_none() {
        if let Some(binding) = right_size(request, max_vcpus, &groups, &mut plan) {
            return finish_flat(request, max_vcpus, binding, plan);
        }
    }
    let with_cpus = groups.iter().filter(|g| !node_cpus(request, g).is_empty()).count();
    if with_cpus == 0 {
        return Err(plan_error(format!(
            "no guest node has CPUs: {} hold memory only; map at least one host node with \
             CPUs",
            hosts(&groups.iter().fold(CpuSet::new(), |acc, g| acc.union(g)))
        )));
    }
    if (max_vcpus as usize) < with_cpus {
        let binding = groups.iter().fold(CpuSet::new(), |acc, g| acc.union(g));
        plan.warnings.push(SKIP_WARNING.to_string());
        plan.decisions.push(format!(
            "maxcpus {max_vcpus} is below the {with_cpus} guest nodes with CPUs: the guest stays \
             flat, bound to {}",
            hosts(&binding)
        ));
        return finish_flat(request, max_vcpus, binding, plan);
    }
    if groups.len() > MAX_NUMA_NODES as usize {
        return Err(plan_error(too_many_nodes(&groups)));
    }
    finish_numa(request, max_vcpus, &groups, plan)
}

/// The error for more guest nodes than QEMU takes, with a mapping that groups consecutive
/// host nodes into few enough guest nodes.
fn too_many_nodes(groups: &[CpuSet]) -> String {
    let per_group = groups.len().div_ceil(MAX_NUMA_NODES as usize);
    let grouped: Vec<String> = groups
        .chunks(per_group)
        .map(|chunk| chunk.iter().fold(CpuSet::new(), |acc, g| acc.union(g)).to_list())
        .collect();
    let options: Vec<String> = grouped.iter().take(2).map(|g| format!("--mapping {g}")).collect();
    let entries: Vec<String> = grouped.iter().take(2).map(|g| format!("\"{g}\"")).collect();
    format!(
        "{} guest nodes are more than the {MAX_NUMA_NODES} QEMU takes; group host nodes, {} \
         host nodes to a guest node: {} … (numa_mapping [{}, …])",
        groups.len(),
        per_group,
        options.join(" "),
        entries.join(", ")
    )
}

/// A guest larger than all the host's memory can only start with overcommit.
fn warn_host_memory(request: &PlanRequest, plan: &mut Plan) {
    let total: u64 = request.host.iter().map(|n| n.memory_mib).sum();
    if request.memory_mib > total {
        plan.warnings.push(format!(
            "the guest's {} MiB is more than the host's {total} MiB of memory in all: it runs \
             only with memory overcommit and cannot have all of it",
            request.memory_mib
        ));
    }
}

/// `-smp` whose highest APIC ID needs x2APIC (see `MAX_XAPIC_ID`).
fn warn_apic_ids(plan: &mut Plan) {
    let smp = &plan.smp;
    let highest = x86_apic_id(smp.maxcpus.saturating_sub(1), smp);
    if highest > MAX_XAPIC_ID {
        plan.warnings.push(format!(
            "the highest APIC ID of this -smp is {highest}, above {MAX_XAPIC_ID}: QEMU starts it \
             only under KVM with the in-kernel irqchip and x2APIC (it refuses it under TCG), \
             and the guest kernel needs x2APIC"
        ));
    }
}

fn check_request(request: &PlanRequest) -> Result<()> {
    if request.host.is_empty() {
        return Err(plan_error("the host has no NUMA node (nothing read from sysfs?)"));
    }
    let ids: CpuSet = request.host.iter().map(|n| n.id).collect();
    if ids.len() != request.host.len() {
        return Err(plan_error("the host lists a NUMA node twice"));
    }
    if request.vcpus == 0 {
        return Err(plan_error("a sandbox needs at least 1 vCPU, got 0"));
    }
    if request.vcpus > MAX_VCPUS {
        return Err(plan_error(format!(
            "{} vCPUs are more than the {MAX_VCPUS} QEMU's q35 machine takes",
            request.vcpus
        )));
    }
    if !request.confidential && request.max_vcpus > MAX_VCPUS {
        return Err(plan_error(format!(
            "max vCPUs {} is more than the {MAX_VCPUS} QEMU's q35 machine takes; lower max \
             vCPUs (default_maxvcpus)",
            request.max_vcpus
        )));
    }
    if request.max_vcpus < request.vcpus {
        return Err(plan_error(format!(
            "max vCPUs {} is below the {} vCPUs to start; raise max vCPUs (default_maxvcpus)",
            request.max_vcpus, request.vcpus
        )));
    }
    if request.memory_mib == 0 {
        return Err(plan_error("a sandbox needs memory, got 0 MiB"));
    }
    if request.memory_mib > MAX_MEMORY_MIB {
        return Err(plan_error(format!(
            "memory {} MiB is more than 2^40 MiB: not a size a guest can have",
            request.memory_mib
        )));
    }
    let page = request.backend.page_mib();
    if !request.memory_mib.is_multiple_of(page) {
        return Err(plan_error(format!(
            "memory {} MiB is not a whole number of {page} MiB huge pages",
            request.memory_mib
        )));
    }
    if request.backend.hugepage_kib.is_some_and(|kib| kib < 1024 || !kib.is_multiple_of(1024)) {
        return Err(plan_error(format!(
            "huge page size {} KiB is not a whole number of MiB",
            request.backend.hugepage_kib.unwrap_or(0)
        )));
    }
    Ok(())
}

/// Confidential guests cannot hot-plug vCPUs: their maxcpus is the vCPU count.
fn effective_max_vcpus(request: &PlanRequest, plan: &mut Plan) -> u32 {
    if !request.confidential {
        return request.max_vcpus;
    }
    plan.warnings.push(
        "confidential guest: on host kernels without guest_memfd memory policy the host-nodes \
         binding of private guest memory is not enforced"
            .to_string(),
    );
    let mut sentence = format!(
        "confidential guest: no vCPU hot-plug, so maxcpus is exactly the {} vCPUs",
        request.vcpus
    );
    if request.max_vcpus != request.vcpus {
        let _ = write!(sentence, " (max vCPUs {} is not used)", request.max_vcpus);
    }
    plan.decisions.push(sentence);
    request.vcpus
}

fn host_node(request: &PlanRequest, id: u32) -> &HostNode {
    // Groups only ever hold IDs checked against the host.
    request.host.iter().find(|n| n.id == id).unwrap_or(&request.host[0])
}

fn nodes_of<'a>(request: &'a PlanRequest, group: &CpuSet) -> Vec<&'a HostNode> {
    group.iter().map(|id| host_node(request, id)).collect()
}

fn node_cpus(request: &PlanRequest, group: &CpuSet) -> CpuSet {
    nodes_of(request, group).iter().fold(CpuSet::new(), |acc, n| acc.union(&n.cpus))
}

fn node_memory_mib(request: &PlanRequest, group: &CpuSet) -> u64 {
    nodes_of(request, group).iter().map(|n| n.memory_mib).sum()
}

/// `host node 1` or `host nodes 0-1`.
fn hosts(nodes: &CpuSet) -> String {
    let noun = if nodes.len() == 1 { "node" } else { "nodes" };
    format!("host {noun} {nodes}")
}

fn describe_groups(groups: &[CpuSet]) -> String {
    let parts: Vec<String> = groups
        .iter()
        .enumerate()
        .map(|(guest, group)| format!("guest node {guest} ← {}", hosts(group)))
        .collect();
    parts.join(", ")
}

fn explicit_groups(
    request: &PlanRequest,
    mapping: &[String],
    plan: &mut Plan,
) -> Result<Vec<CpuSet>> {
    if mapping.is_empty() {
        return Err(plan_error(
            "numa_mapping is an empty list: give one host-node list per guest node, or none for \
             auto",
        ));
    }
    let host_ids: CpuSet = request.host.iter().map(|n| n.id).collect();
    let mut groups = Vec::with_capacity(mapping.len());
    for (guest, entry) in mapping.iter().enumerate() {
        let group = CpuSet::parse_list(entry).map_err(|e| {
            plan_error(format!("numa_mapping entry {guest} ({entry:?}) is not a node list: {e}"))
        })?;
        if group.is_empty() {
            return Err(plan_error(format!(
                "numa_mapping entry {guest} is empty: each guest node needs host nodes such \
                 as \"0\" or \"0-1\""
            )));
        }
        let missing = group.difference(&host_ids);
        if !missing.is_empty() {
            return Err(plan_error(format!(
                "numa_mapping entry {guest} ({entry:?}) names host node {missing}, which the host \
                 lacks (it has nodes {host_ids})"
            )));
        }
        if node_cpus(request, &group).is_empty() && node_memory_mib(request, &group) == 0 {
            return Err(plan_error(format!(
                "numa_mapping entry {guest} ({entry:?}): host nodes {group} have neither CPUs \
                 nor memory"
            )));
        }
        groups.push(group);
    }
    plan.decisions.push(format!(
        "numa_mapping honoured verbatim (no right-sizing): {}",
        describe_groups(&groups)
    ));
    Ok(groups)
}

fn auto_groups(request: &PlanRequest, plan: &mut Plan) -> Result<Vec<CpuSet>> {
    let mut groups = Vec::new();
    for node in &request.host {
        if node.cpus.is_empty() {
            plan.decisions.push(format!(
                "host node {} has no CPUs (memory-only): not mirrored in the guest; name it in \
                 numa_mapping to place guest memory there",
                node.id
            ));
        } else {
            groups.push([node.id].into_iter().collect::<CpuSet>());
        }
    }
    if groups.is_empty() {
        return Err(plan_error("no host node has an online CPU"));
    }
    let ids = groups.iter().fold(CpuSet::new(), |acc, g| acc.union(g));
    plan.decisions.push(format!("auto mapping: one guest node per host node with CPUs ({ids})"));
    Ok(groups)
}

/// Huge pages a memory size needs, or None for normal pages.
fn pages_needed(backend: &MemoryBackend, memory_mib: u64) -> Option<(u64, u64)> {
    backend.hugepage_kib.map(|kib| (kib, memory_mib * 1024 / kib))
}

/// Why `node` cannot hold the whole sandbox, or None when it can.
fn misfit(request: &PlanRequest, max_vcpus: u32, node: &HostNode) -> Option<String> {
    let by_size = request.policy == Policy::First;
    let cpus = if by_size { node.cpus.len() as u64 } else { node.free_cpus() };
    let memory = if by_size { node.memory_mib } else { node.uncommitted_mib() };
    if cpus < u64::from(max_vcpus) {
        let free = if by_size { "" } else { "free " };
        return Some(format!("{cpus} {free}CPUs for {max_vcpus} vCPUs"));
    }
    if memory < request.memory_mib {
        let what = if by_size { "of memory" } else { "not committed to other sandboxes" };
        return Some(format!("{memory} MiB {what} for {} MiB", request.memory_mib));
    }
    if let Some((kib, needed)) = pages_needed(&request.backend, request.memory_mib) {
        let free_pages = node.free_pages(kib);
        if free_pages < needed {
            return Some(format!("{free_pages} free {kib} KiB huge pages for {needed}"));
        }
    }
    None
}

/// Free memory (or free huge pages of the backend's size) for ranking, in the unit of
/// whichever applies.
fn free_memory_rank(request: &PlanRequest, node: &HostNode) -> u64 {
    match request.backend.hugepage_kib {
        Some(kib) => node.free_pages(kib),
        None => node.free_now_mib(),
    }
}

/// Right-sizing: the one host node an auto-mapped sandbox collapses to, or None to keep every
/// guest node.
fn right_size(
    request: &PlanRequest,
    max_vcpus: u32,
    groups: &[CpuSet],
    plan: &mut Plan,
) -> Option<CpuSet> {
    let size = format!("{max_vcpus} vCPUs, {} MiB", request.memory_mib);
    let device_nodes: CpuSet = request.vfio.iter().filter_map(|d| d.host_node).collect();
    if groups.len() == 1 {
        let only = groups[0].clone();
        plan.decisions.push(format!(
            "the host has one NUMA node with CPUs ({only}): the guest stays flat, bound to it"
        ));
        return Some(only);
    }
    if device_nodes.len() > 1 {
        plan.decisions.push(format!(
            "VFIO devices sit on host nodes {device_nodes}: the guest keeps every node so each \
             device has a local guest node"
        ));
        return None;
    }
    let candidates: Vec<&HostNode> = groups
        .iter()
        .filter_map(|g| g.first())
        .map(|id| host_node(request, id))
        .filter(|n| device_nodes.is_empty() || device_nodes.contains(n.id))
        .collect();
    let mut reasons: Vec<String> = Vec::new();
    let mut fitting = Vec::new();
    for node in candidates {
        match misfit(request, max_vcpus, node) {
            Some(why) => reasons.push(format!("node {}: {why}", node.id)),
            None => fitting.push(node),
        }
    }
    let chosen = match request.policy {
        Policy::First => fitting.first().copied(),
        Policy::MostFree => fitting
            .iter()
            .copied()
            .max_by_key(|n| (n.free_cpus(), free_memory_rank(request, n), std::cmp::Reverse(n.id))),
    };
    let Some(node) = chosen else {
        let place = match device_nodes.first() {
            Some(dev) => format!("the VFIO device's host node {dev}"),
            None => "any single host node".to_string(),
        };
        plan.decisions.push(format!(
            "the sandbox ({size}) does not fit {place} ({}): it keeps all {} guest nodes",
            some_reasons(&reasons),
            groups.len()
        ));
        return None;
    };
    plan.decisions.push(fit_sentence(request, &size, node, device_nodes.first(), &reasons));
    Some([node.id].into_iter().collect())
}

/// Why the sandbox went to `node`, in the words `misfit` and `warn_memory` use.
fn fit_sentence(
    request: &PlanRequest,
    size: &str,
    node: &HostNode,
    device_node: Option<u32>,
    reasons: &[String],
) -> String {
    let room = match (request.policy, request.backend.hugepage_kib) {
        (Policy::First, _) => {
            format!("{} CPUs, {} MiB of memory", node.cpus.len(), node.memory_mib)
        }
        (Policy::MostFree, Some(kib)) => format!(
            "{} free CPUs, {} MiB not committed to other sandboxes, {} free {kib} KiB huge pages",
            node.free_cpus(),
            node.uncommitted_mib(),
            node.free_pages(kib)
        ),
        (Policy::MostFree, None) => format!(
            "{} free CPUs, {} MiB not committed to other sandboxes",
            node.free_cpus(),
            node.uncommitted_mib()
        ),
    };
    let why = match (device_node, request.policy, request.backend.hugepage_kib) {
        (Some(dev), _, _) => format!("it is the host node of its VFIO devices ({dev})"),
        (None, Policy::First, _) => {
            "it is the lowest-numbered node that holds it (policy first, Kata's choice)".to_string()
        }
        (None, Policy::MostFree, Some(_)) => {
            "of the nodes that hold it, it has the most free CPUs, then free huge pages".to_string()
        }
        (None, Policy::MostFree, None) => format!(
            "of the nodes that hold it, it has the most free CPUs, then memory free now ({} MiB)",
            node.free_now_mib()
        ),
    };
    let passed_over = if reasons.is_empty() {
        String::new()
    } else {
        format!(" (passed over: {})", some_reasons(reasons))
    };
    format!(
        "the sandbox ({size}) fits host node {} ({room}); {why}: the guest stays flat, bound \
         to it{passed_over}",
        node.id
    )
}

/// The first few reasons, then how many more there are.
fn some_reasons(reasons: &[String]) -> String {
    let mut text = reasons.iter().take(SHOWN_REASONS).cloned().collect::<Vec<_>>().join("; ");
    if reasons.len() > SHOWN_REASONS {
        let _ = write!(text, "; and {} more", reasons.len() - SHOWN_REASONS);
    }
    text
}

fn flat_smp(vcpus: u32, max_vcpus: u32) -> Smp {
    Smp {
        cpus: vcpus,
        maxcpus: max_vcpus,
        sockets: 1,
        dies: 1,
        clusters: 1,
        cores: max_vcpus,
        threads: 1,
    }
}

fn finish_flat(
    request: &PlanRequest,
    max_vcpus: u32,
    binding: CpuSet,
    mut plan: Plan,
) -> Result<Plan> {
    let mut memory_nodes: CpuSet =
        nodes_of(request, &binding).iter().filter(|n| n.memory_mib > 0).map(|n| n.id).collect();
    check_hugepages(request, "the guest", &memory_nodes, request.memory_mib)?;
    if memory_nodes.is_empty() {
        plan.warnings.push(format!(
            "host nodes {binding} have no memory: the guest memory is not bound to a node; {}",
            memory_hint(request, std::slice::from_ref(&binding))
        ));
    } else if memory_nodes.last().is_some_and(|id| id >= MAX_NUMA_NODES) {
        plan.warnings.push(format!(
            "the guest memory would be bound to host nodes {memory_nodes}, but QEMU's \
             host-nodes takes node numbers below {MAX_NUMA_NODES} only: it is left unbound"
        ));
        memory_nodes = CpuSet::new();
    } else {
        warn_memory(request, &mut plan, "the guest", &memory_nodes, request.memory_mib);
    }
    warn_overcommit(request, &mut plan, "the guest", &binding, max_vcpus);
    plan.smp = flat_smp(request.vcpus, max_vcpus);
    plan.host_nodes = binding;
    plan.flat_memory_nodes = memory_nodes;
    warn_apic_ids(&mut plan);
    place_devices(request, &mut plan)?;
    Ok(plan)
}

fn check_hugepages(
    request: &PlanRequest,
    what: &str,
    nodes: &CpuSet,
    memory_mib: u64,
) -> Result<()> {
    let Some((kib, needed)) = pages_needed(&request.backend, memory_mib) else { return Ok(()) };
    if nodes.is_empty() || needed == 0 {
        return Ok(());
    }
    let free: u64 = nodes_of(request, nodes).iter().map(|n| n.free_pages(kib)).sum();
    if free < needed {
        return Err(plan_error(format!(
            "{what} needs {needed} huge pages of {kib} KiB ({memory_mib} MiB) on host nodes \
             {nodes}, which have {free} free; free more pages \
             (nodeN/hugepages/hugepages-{kib}kB/nr_hugepages) or choose another mapping"
        )));
    }
    Ok(())
}

fn warn_overcommit(request: &PlanRequest, plan: &mut Plan, what: &str, group: &CpuSet, n: u32) {
    let free: u64 = nodes_of(request, group).iter().map(|node| node.free_cpus()).sum();
    if u64::from(n) > free {
        plan.warnings.push(format!(
            "{what} has {n} vCPUs for {free} free CPUs of {}: vCPUs will share CPUs",
            hosts(group)
        ));
    }
}

/// Memory bound beyond the nodes' capacity (what other sandboxes have not committed), else
/// beyond `MemFree`: one warning, in the words of the capacity notes.
fn warn_memory(request: &PlanRequest, plan: &mut Plan, what: &str, nodes: &CpuSet, mib: u64) {
    if request.backend.hugepage_kib.is_some() {
        return;
    }
    let bound = nodes_of(request, nodes);
    let uncommitted: u64 = bound.iter().map(|n| n.uncommitted_mib()).sum();
    let free_now: u64 = bound.iter().map(|n| n.free_mib).sum();
    if mib > uncommitted {
        plan.warnings.push(format!(
            "{what} binds {mib} MiB to {}, which has {uncommitted} MiB not committed to other \
             sandboxes",
            hosts(nodes)
        ));
    } else if mib > free_now {
        plan.warnings.push(format!(
            "{what} binds {mib} MiB to {}: that much is not committed to other sandboxes, but \
             only {free_now} MiB is free now (MemFree); the rest has to come from page cache \
             the kernel reclaims, or from swap",
            hosts(nodes)
        ));
    }
}

/// Split `total` in proportion to `weights`: each positive weight gets at least one, the
/// floors of the exact shares first, then the leftover one by one to the largest fractional
/// parts (earlier entries first on ties); when the minimum of one overshoots, the largest
/// shares give back (earlier entries first). Zero weights get zero.
pub fn split_proportional(total: u64, weights: &[u64]) -> Vec<u64> {
    let sum: u64 = weights.iter().sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let exact: Vec<(u64, u64)> = weights
        .iter()
        .map(|&w| {
            let product = u128::from(total) * u128::from(w);
            ((product / u128::from(sum)) as u64, (product % u128::from(sum)) as u64)
        })
        .collect();
    let mut shares: Vec<u64> = exact
        .iter()
        .zip(weights)
        .map(|(&(floor, _), &w)| if w > 0 { floor.max(1) } else { 0 })
        .collect();
    let mut given: u64 = shares.iter().sum();
    let mut order: Vec<usize> = (0..weights.len()).filter(|&i| weights[i] > 0).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(exact[i].1), i));
    while given < total {
        for &i in &order {
            if given == total {
                break;
            }
            shares[i] += 1;
            given += 1;
        }
    }
    take_back(&mut shares, total);
    shares
}

/// Split `total` in proportion to `weights` for memory: each positive weight gets the floor of
/// its exact share, at least one; what is left goes to one node, the one of the largest weight
/// (the earliest on ties); when the minimum of one overshoots, the largest shares give back.
pub fn split_remainder_to_one(total: u64, weights: &[u64]) -> Vec<u64> {
    let sum: u64 = weights.iter().sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let mut shares: Vec<u64> = weights
        .iter()
        .map(|&w| {
            let floor = (u128::from(total) * u128::from(w) / u128::from(sum)) as u64;
            if w > 0 {
                floor.max(1)
            } else {
                0
            }
        })
        .collect();
    let given: u64 = shares.iter().sum();
    if given < total {
        let heaviest = (0..weights.len()).max_by_key(|&i| (weights[i], std::cmp::Reverse(i)));
        if let Some(i) = heaviest {
            shares[i] += total - given;
        }
    }
    take_back(&mut shares, total);
    shares
}

/// Lower the largest shares (the earliest on ties), never below one, until they add up to
/// `total`.
fn take_back(shares: &mut [u64], total: u64) {
    let mut given: u64 = shares.iter().sum();
    while given > total {
        let Some(i) = (0..shares.len())
            .filter(|&i| shares[i] > 1)
            .max_by_key(|&i| (shares[i], std::cmp::Reverse(i)))
        else {
            break;
        };
        shares[i] -= 1;
        given -= 1;
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn finish_numa(
    request: &PlanRequest,
    max_vcpus: u32,
    groups: &[CpuSet],
    mut plan: Plan,
) -> Result<Plan> {
    let cpu_weights: Vec<u64> = groups.iter().map(|g| node_cpus(request, g).len() as u64).collect();
    let counts: Vec<u32> = split_proportional(u64::from(max_vcpus), &cpu_weights)
        .into_iter()
        .map(|n| n as u32)
        .collect();
    let with_cpus = counts.iter().filter(|&&n| n > 0).count() as u32;
    let shares: Vec<String> = cpu_weights.iter().map(u64::to_string).collect();
    let split: Vec<String> = counts.iter().map(u32::to_string).collect();
    plan.decisions.push(format!(
        "vCPUs split in proportion to host CPUs ({}), at least one per node with CPUs: {}",
        shares.join(":"),
        split.join(" + ")
    ));

    let smp = numa_smp(request, max_vcpus, &counts, with_cpus, &mut plan);
    let vcpus = vcpu_ranges(&counts);
    let memory = split_memory(request, groups, &counts, &mut plan)?;
    for (guest, group) in groups.iter().enumerate() {
        let what = format!("guest node {guest}");
        let with_memory: CpuSet =
            nodes_of(request, group).iter().filter(|n| n.memory_mib > 0).map(|n| n.id).collect();
        if let Some(high) = with_memory.last().filter(|&id| id >= MAX_NUMA_NODES) {
            return Err(plan_error(format!(
                "{what} would have its memory bound to host node {high}, but QEMU's host-nodes \
                 takes node numbers below {MAX_NUMA_NODES} only; map host nodes below \
                 {MAX_NUMA_NODES}"
            )));
        }
        check_hugepages(request, &what, &with_memory, memory[guest])?;
        warn_overcommit(request, &mut plan, &what, group, counts[guest]);
        if memory[guest] > 0 {
            warn_memory(request, &mut plan, &what, &with_memory, memory[guest]);
        }
        plan.nodes.push(PlannedNode {
            id: guest as u32,
            host_nodes: group.clone(),
            vcpus: vcpus[guest].clone(),
            memory_mib: memory[guest],
            memory_nodes: if memory[guest] > 0 { with_memory } else { CpuSet::new() },
        });
    }
    warn_boot_vcpus(request, &mut plan);
    plan.smp = smp;
    warn_apic_ids(&mut plan);
    plan.host_nodes = groups.iter().fold(CpuSet::new(), |acc, g| acc.union(g));
    plan.distances = guest_distances(request, groups, &mut plan);
    place_devices(request, &mut plan)?;
    Ok(plan)
}

/// `-smp` of a guest with NUMA nodes; see the module notes for the choice.
fn numa_smp(
    request: &PlanRequest,
    max_vcpus: u32,
    counts: &[u32],
    with_cpus: u32,
    plan: &mut Plan,
) -> Smp {
    let mut smp = flat_smp(request.vcpus, max_vcpus);
    smp.cores = counts.iter().filter(|&&n| n > 0).fold(0, |acc, &n| gcd(acc, n)).max(1);
    smp.sockets = max_vcpus / smp.cores;
    let shape = format!(
        "-smp: {} sockets × {} cores × 1 thread = maxcpus {max_vcpus}",
        smp.sockets, smp.cores
    );
    if smp.sockets == with_cpus {
        plan.decisions.push(format!("{shape}: one socket per guest node with vCPUs"));
    } else {
        plan.decisions.push(format!(
            "{shape}: {} cores is the largest socket size that divides every guest node's \
             vCPUs, so each guest node is whole sockets (one socket per node would make a \
             socket straddle two nodes, which the guest kernel reports with a WARNING)",
            smp.cores
        ));
    }
    smp
}

/// Consecutive vCPU indexes per guest node, in node order.
fn vcpu_ranges(counts: &[u32]) -> Vec<CpuSet> {
    let mut start = 0;
    let mut ranges = Vec::with_capacity(counts.len());
    for &count in counts {
        ranges.push((start..start + count).collect::<CpuSet>());
        start += count;
    }
    ranges
}

fn split_memory(
    request: &PlanRequest,
    groups: &[CpuSet],
    counts: &[u32],
    plan: &mut Plan,
) -> Result<Vec<u64>> {
    let with_cpus = counts.iter().filter(|&&n| n > 0).count() as u64;
    let total_vcpus: u64 = counts.iter().map(|&n| u64::from(n)).sum();
    let weights: Vec<u64> = groups
        .iter()
        .zip(counts)
        .map(|(group, &n)| match (node_memory_mib(request, group), n) {
            (0, _) => 0,
            (_, 0) => total_vcpus,
            (_, n) => u64::from(n) * with_cpus,
        })
        .collect();
    let holders = weights.iter().filter(|&&w| w > 0).count() as u64;
    if holders == 0 {
        return Err(plan_error(format!(
            "no guest node has host memory behind it (host nodes {} have none); {}",
            groups.iter().fold(CpuSet::new(), |acc, g| acc.union(g)),
            memory_hint(request, groups)
        )));
    }
    let page = request.backend.page_mib();
    let units = request.memory_mib / page;
    if units < holders {
        return Err(plan_error(format!(
            "{} MiB cannot give each of the {holders} guest nodes with memory at least one \
             {page} MiB page",
            request.memory_mib
        )));
    }
    let sizes: Vec<u64> =
        split_remainder_to_one(units, &weights).into_iter().map(|u| u * page).collect();
    let parts: Vec<String> = sizes.iter().map(u64::to_string).collect();
    plan.decisions.push(format!(
        "memory split in proportion to vCPUs in {page} MiB pages, the remainder to the \
         largest node (a node without vCPUs weighs as an average one, a node without host \
         memory gets none): {} MiB",
        parts.join(" + ")
    ));
    for (guest, &size) in sizes.iter().enumerate() {
        if size > 0 && size < GUEST_NODE_MIN_MIB {
            plan.warnings.push(format!(
                "guest node {guest} has only {size} MiB: Linux ignores NUMA nodes below \
                 {GUEST_NODE_MIN_MIB} MiB"
            ));
        }
    }
    Ok(sizes)
}

/// A mapping that gives each group without memory the host node with memory nearest to it
/// (by the distance from its lowest node; the lowest ID on ties and when distances are unknown).
fn memory_hint(request: &PlanRequest, groups: &[CpuSet]) -> String {
    let with_memory: Vec<&HostNode> = request.host.iter().filter(|n| n.memory_mib > 0).collect();
    if with_memory.is_empty() {
        return "no host node has memory".to_string();
    }
    let entries: Vec<String> = groups
        .iter()
        .map(|group| {
            if node_memory_mib(request, group) > 0 {
                return group.to_list();
            }
            let from = host_node(request, group.first().unwrap_or(0));
            let nearest = with_memory
                .iter()
                .min_by_key(|n| (from.distance_to(n.id).unwrap_or(u32::MAX), n.id))
                .map_or(0, |n| n.id);
            let mut grouped = group.clone();
            grouped.insert(nearest);
            grouped.to_list()
        })
        .collect();
    let quoted: Vec<String> = entries.iter().map(|e| format!("\"{e}\"")).collect();
    let options: Vec<String> = entries.iter().map(|e| format!("--mapping {e}")).collect();
    format!(
        "the host's memory is on nodes without CPUs: group each CPU node with a memory node, \
         e.g. numa_mapping [{}] ({})",
        quoted.join(", "),
        options.join(" ")
    )
}

fn warn_boot_vcpus(request: &PlanRequest, plan: &mut Plan) {
    let idle: Vec<String> = plan
        .nodes
        .iter()
        .filter(|n| n.vcpus.first().is_some_and(|first| first >= request.vcpus))
        .map(|n| n.id.to_string())
        .collect();
    if !idle.is_empty() {
        plan.warnings.push(format!(
            "only vCPUs 0-{} start at boot: guest nodes {} get no vCPU until more are hot-plugged",
            request.vcpus - 1,
            idle.join(", ")
        ));
    }
}

/// Guest distances: each guest node takes the distances of its lowest host node.
fn guest_distances(request: &PlanRequest, groups: &[CpuSet], plan: &mut Plan) -> Vec<Vec<u32>> {
    let lowest: Vec<u32> = groups.iter().map(|g| g.first().unwrap_or(0)).collect();
    let mut matrix = vec![vec![LOCAL_DISTANCE; groups.len()]; groups.len()];
    for (i, row) in matrix.iter_mut().enumerate() {
        for (j, cell) in row.iter_mut().enumerate() {
            if i == j {
                continue;
            }
            let (from, to) = (lowest[i], lowest[j]);
            *cell = match host_node(request, from).distance_to(to) {
                Some(d) if d > LOCAL_DISTANCE => d,
                _ if from == to => {
                    plan.warnings.push(format!(
                        "guest nodes {i} and {j} both start at host node {from}: distance 11, \
                         because guest kernels reject remote distances of 10 or less"
                    ));
                    LOCAL_DISTANCE + 1
                }
                Some(LOCAL_DISTANCE) => {
                    plan.warnings.push(format!(
                        "host nodes {from} and {to} are at distance 10, the local distance: \
                         guest nodes {i} → {j} get 11, because guest kernels reject remote \
                         distances of 10 or less"
                    ));
                    LOCAL_DISTANCE + 1
                }
                Some(d) => {
                    plan.warnings.push(format!(
                        "the distance from host node {from} to host node {to} is {d}, which is \
                         invalid (below the local distance 10; see node{from}/distance): guest \
                         nodes {i} → {j} get {REMOTE_DISTANCE}, as for an unknown distance"
                    ));
                    REMOTE_DISTANCE
                }
                None => {
                    plan.warnings.push(format!(
                        "the distance from host node {} to host node {} is unknown: guest \
                         nodes {i} → {j} get {REMOTE_DISTANCE}",
                        lowest[i], lowest[j]
                    ));
                    REMOTE_DISTANCE
                }
            };
        }
    }
    if groups.len() > 1 {
        plan.decisions.push(
            "distances come from the host: each guest node takes those of its lowest host node"
                .to_string(),
        );
    }
    matrix
}

fn place_devices(request: &PlanRequest, plan: &mut Plan) -> Result<()> {
    let mut ports_per_node: Vec<Vec<String>> = vec![Vec::new(); plan.nodes.len()];
    for (index, device) in request.vfio.iter().enumerate() {
        let root_port = format!("numa-rp{index}");
        let guest = device
            .host_node
            .and_then(|host| plan.nodes.iter().find(|n| n.host_nodes.contains(host)))
            .map(|n| n.id);
        verdict(plan, device, guest);
        if let Some(guest) = guest {
            ports_per_node[guest as usize].push(root_port.clone());
        }
        plan.devices.push(PlannedDevice {
            bdf: device.bdf.clone(),
            host_node: device.host_node,
            guest_node: guest,
            root_port,
        });
    }
    let busy: Vec<(u32, Vec<String>)> = ports_per_node
        .into_iter()
        .enumerate()
        .filter(|(_, ports)| !ports.is_empty())
        .map(|(guest, ports)| (guest as u32, ports))
        .collect();
    if busy.is_empty() {
        return Ok(());
    }
    let window = (LAST_BUS + 1 - FIRST_EXPANDER_BUS) / busy.len() as u32;
    for (slot, (guest, ports)) in busy.into_iter().enumerate() {
        if ports.len() as u32 + 1 > window {
            return Err(plan_error(format!(
                "guest node {guest} needs {} PCI buses for its VFIO devices, more than the \
                 {window} left per expander bus below bus 256",
                ports.len() + 1
            )));
        }
        let bus_nr = FIRST_EXPANDER_BUS + slot as u32 * window;
        plan.expanders.push(ExpanderBus {
            id: format!("numa-pxb{guest}"),
            guest_node: guest,
            bus_nr,
            root_ports: ports,
        });
    }
    plan.decisions.push(format!(
        "VFIO devices sit behind a PCI expander bus (pxb-pcie) of their guest node, buses from \
         {FIRST_EXPANDER_BUS} up, so the guest sees each device's NUMA node"
    ));
    Ok(())
}

fn verdict(plan: &mut Plan, device: &VfioDevice, guest: Option<u32>) {
    let bdf = &device.bdf;
    match (device.host_node, guest, plan.nodes.is_empty()) {
        (None, _, _) => plan.warnings.push(format!(
            "VFIO device {bdf}: NUMA locality unknown (numa_node -1): it goes on the main root \
             bus"
        )),
        (Some(host), _, true) if plan.host_nodes.contains(host) => plan.decisions.push(format!(
            "VFIO device {bdf} is on host node {host}, where the flat guest is bound"
        )),
        (Some(host), _, true) => plan.warnings.push(format!(
            "VFIO device {bdf} is on host node {host}, but the guest is bound to {}",
            hosts(&plan.host_nodes)
        )),
        (Some(host), Some(guest), false) => plan.decisions.push(format!(
            "VFIO device NUMA placement validated bdf={bdf} host-numa={host} guest-numa={guest}"
        )),
        (Some(host), None, false) => {
            plan.warnings.push(format!("{NOT_COVERED} bdf={bdf} host-numa={host}"))
        }
    }
}

impl Plan {
    /// A guest without NUMA nodes.
    pub fn is_flat(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The QEMU arguments of the plan, option and value as separate items.
    pub fn qemu_args(&self) -> Vec<String> {
        let mut args = vec!["-m".to_string(), format!("{}M", self.memory_mib)];
        let s = &self.smp;
        args.push("-smp".to_string());
        args.push(format!(
            "{},maxcpus={},sockets={},cores={},threads={}",
            s.cpus, s.maxcpus, s.sockets, s.cores, s.threads
        ));
        if self.is_flat() {
            args.push("-object".to_string());
            args.push(self.backend_arg(0, self.memory_mib, &self.flat_memory_nodes));
            args.push("-machine".to_string());
            args.push("memory-backend=numa-mem0".to_string());
        }
        for node in self.nodes.iter().filter(|n| n.memory_mib > 0) {
            args.push("-object".to_string());
            args.push(self.backend_arg(node.id, node.memory_mib, &node.memory_nodes));
        }
        for node in &self.nodes {
            let mut value = format!("node,nodeid={}", node.id);
            for run in node.vcpus.to_list().split(',').filter(|r| !r.is_empty()) {
                let _ = write!(value, ",cpus={run}");
            }
            if node.memory_mib > 0 {
                let _ = write!(value, ",memdev=numa-mem{}", node.id);
            }
            args.push("-numa".to_string());
            args.push(value);
        }
        for (src, dst, val) in self.distance_entries() {
            args.push("-numa".to_string());
            args.push(format!("dist,src={src},dst={dst},val={val}"));
        }
        self.device_args(&mut args);
        args
    }

    fn backend_arg(&self, id: u32, size_mib: u64, host_nodes: &CpuSet) -> String {
        let b = &self.backend;
        let mut value = match &b.mem_path {
            Some(path) => format!(
                "memory-backend-file,id=numa-mem{id},size={size_mib}M,mem-path={}",
                path.replace(',', ",,")
            ),
            None => format!("memory-backend-ram,id=numa-mem{id},size={size_mib}M"),
        };
        if !host_nodes.is_empty() {
            for run in host_nodes.to_list().split(',') {
                let _ = write!(value, ",host-nodes={run}");
            }
            value.push_str(",policy=bind");
        }
        if b.share {
            value.push_str(",share=on");
        }
        if b.prealloc {
            value.push_str(",prealloc=on");
        }
        value
    }

    /// `(src, dst, distance)` for `-numa dist`: one direction per pair when the matrix is
    /// symmetric, both directions of every pair when any pair is not (QEMU's rule).
    pub fn distance_entries(&self) -> Vec<(u32, u32, u32)> {
        let m = &self.distances;
        let n = m.len();
        let symmetric = (0..n).all(|i| (0..n).all(|j| m[i][j] == m[j][i]));
        let mut entries = Vec::new();
        for (i, row) in m.iter().enumerate() {
            for (j, &d) in row.iter().enumerate() {
                if i != j && (!symmetric || i < j) {
                    entries.push((i as u32, j as u32, d));
                }
            }
        }
        entries
    }

    fn device_args(&self, args: &mut Vec<String>) {
        for bus in &self.expanders {
            args.push("-device".to_string());
            args.push(format!(
                "pxb-pcie,id={},bus=pcie.0,bus_nr={},numa_node={}",
                bus.id, bus.bus_nr, bus.guest_node
            ));
        }
        for (index, device) in self.devices.iter().enumerate() {
            let parent = self
                .expanders
                .iter()
                .find(|b| b.root_ports.contains(&device.root_port))
                .map_or("pcie.0", |b| b.id.as_str());
            args.push("-device".to_string());
            args.push(format!(
                "pcie-root-port,id={},bus={parent},chassis={},slot=0",
                device.root_port,
                FIRST_CHASSIS + index as u32
            ));
            args.push("-device".to_string());
            args.push(format!(
                "vfio-pci,host={},bus={},id=numa-vfio{index}",
                device.bdf, device.root_port
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::parse_qemu_args;

    /// A host whose node `i` has `cpus[i]` CPUs (numbered on from node to node) and 8 GiB,
    /// distances 10 local and 21 remote.
    fn host(cpus: &[u32]) -> Vec<HostNode> {
        let ids: Vec<u32> = (0..cpus.len() as u32).collect();
        let mut next = 0;
        ids.iter()
            .map(|&id| {
                let set: CpuSet = (next..next + cpus[id as usize]).collect();
                next += cpus[id as usize];
                HostNode {
                    id,
                    cpus: set,
                    memory_mib: 8192,
                    free_mib: 8192,
                    distances: ids.iter().map(|&o| (o, if o == id { 10 } else { 21 })).collect(),
                    ..HostNode::default()
                }
            })
            .collect()
    }

    fn request(host: Vec<HostNode>, vcpus: u32, memory_mib: u64) -> PlanRequest {
        PlanRequest { host, vcpus, max_vcpus: vcpus, memory_mib, ..PlanRequest::default() }
    }

    fn layout(plan: &Plan) -> Vec<(String, String, u64)> {
        plan.nodes
            .iter()
            .map(|n| (n.host_nodes.to_list(), n.vcpus.to_list(), n.memory_mib))
            .collect()
    }

    fn mapping(entries: &[&str]) -> Option<Vec<String>> {
        Some(entries.iter().map(|e| e.to_string()).collect())
    }

    fn round_trip(plan: &Plan) {
        let mut argv = vec!["qemu-system-x86_64".to_string()];
        argv.extend(plan.qemu_args());
        let parsed = parse_qemu_args(&argv).unwrap();
        assert_eq!(parsed.smp, plan.smp);
        assert_eq!(parsed.memory_mib, plan.memory_mib);
        assert_eq!(parsed.nodes.len(), plan.nodes.len());
        for (got, want) in parsed.nodes.iter().zip(&plan.nodes) {
            assert_eq!((got.id, &got.cpus), (want.id, &want.vcpus));
            let backend = parsed.backends.iter().find(|b| Some(&b.id) == got.memdev.as_ref());
            assert_eq!(backend.map_or(0, |b| b.size_mib), want.memory_mib);
            if let Some(b) = backend {
                assert_eq!(b.host_nodes.as_ref(), Some(&want.memory_nodes));
            }
        }
        assert_eq!(parsed.distances, plan.distance_entries());
        let bdfs: Vec<String> = plan.devices.iter().map(|d| d.bdf.clone()).collect();
        assert_eq!(parsed.vfio_devices, bdfs);
    }

    #[test]
    fn proportional_split_table() {
        let cases: &[(&str, u64, &[u64], &[u64])] = &[
            ("equal", 8, &[4, 4], &[4, 4]),
            ("8 and 2", 10, &[8, 2], &[8, 2]),
            ("6, 3 and 1", 10, &[6, 3, 1], &[6, 3, 1]),
            ("minimum one", 2, &[100, 1], &[1, 1]),
            ("minimum one takes from the largest", 5, &[1, 1, 100], &[1, 1, 3]),
            ("remainder to the largest fraction", 7, &[1, 1], &[4, 3]),
            ("zero weight", 6, &[2, 0, 1], &[4, 0, 2]),
        ];
        for (name, total, weights, want) in cases {
            assert_eq!(split_proportional(*total, weights), want.to_vec(), "{name}");
        }
        let memory: &[(&str, u64, &[u64], &[u64])] = &[
            ("4097 on two", 4097, &[1, 1], &[2049, 2048]),
            ("remainder to the largest", 2048, &[16, 4], &[1639, 409]),
            ("remainder to one node", 11, &[1, 1, 1], &[5, 3, 3]),
            ("minimum one", 3, &[1000, 1, 1], &[1, 1, 1]),
        ];
        for (name, total, weights, want) in memory {
            assert_eq!(split_remainder_to_one(*total, weights), want.to_vec(), "{name}");
        }
    }

    #[test]
    fn multi_node_cases() {
        // Each sandbox has more vCPUs than any one host node has CPUs, so auto mapping keeps
        // every node (no right-sizing).
        type Case<'a> = (&'a str, &'a [u32], u32, u64, &'a [(&'a str, &'a str, u64)]);
        let cases: &[Case] = &[
            ("4+4", &[4, 4], 8, 2048, &[("0", "0-3", 1024), ("1", "4-7", 1024)]),
            ("8+2", &[8, 2], 10, 1000, &[("0", "0-7", 800), ("1", "8-9", 200)]),
            (
                "6+3+1",
                &[6, 3, 1],
                10,
                1000,
                &[("0", "0-5", 600), ("1", "6-8", 300), ("2", "9", 100)],
            ),
            ("4097 MiB", &[4, 4], 8, 4097, &[("0", "0-3", 2049), ("1", "4-7", 2048)]),
        ];
        for (name, cpus, vcpus, memory, want) in cases {
            let plan = plan_guest(&request(host(cpus), *vcpus, *memory)).unwrap();
            let want: Vec<(String, String, u64)> =
                want.iter().map(|(h, v, m)| (h.to_string(), v.to_string(), *m)).collect();
            assert_eq!(layout(&plan), want, "{name}");
            round_trip(&plan);
        }
    }

    #[test]
    fn smp_keeps_each_node_whole_sockets() {
        let cases: &[(&[u32], u32, (u32, u32))] = &[
            (&[4, 4], 8, (2, 4)),
            (&[8, 2], 10, (5, 2)),
            (&[6, 3, 1], 10, (10, 1)),
            (&[16, 16], 80, (2, 40)),
        ];
        for (cpus, vcpus, (sockets, cores)) in cases {
            let plan = plan_guest(&request(host(cpus), *vcpus, 100_000)).unwrap();
            let smp = &plan.smp;
            assert_eq!((smp.sockets, smp.cores, smp.maxcpus), (*sockets, *cores, *vcpus));
            for node in &plan.nodes {
                assert_eq!(node.vcpus.len() as u32 % cores, 0, "{cpus:?}");
                assert_eq!(node.vcpus.first().unwrap_or(0) % cores, 0, "{cpus:?}");
            }
        }
    }

    #[test]
    fn confidential_keeps_the_exact_count() {
        let mut req = request(host(&[6, 3, 1]), 10, 3000);
        req.confidential = true;
        req.max_vcpus = 16;
        let plan = plan_guest(&req).unwrap();
        assert_eq!(
            (plan.smp.cpus, plan.smp.maxcpus, plan.smp.sockets, plan.smp.cores),
            (10, 10, 10, 1)
        );
        assert_eq!(layout(&plan)[2].1, "9");
        assert!(plan.warnings.iter().any(|w| w.contains("guest_memfd")));
        round_trip(&plan);
        req.confidential = false;
        assert_eq!(plan_guest(&req).unwrap().smp.maxcpus, 16);
    }

    #[test]
    fn skip_when_fewer_vcpus_than_nodes() {
        let mut req = request(host(&[4, 4, 4]), 2, 1024);
        req.mapping = mapping(&["0", "1", "2"]);
        let plan = plan_guest(&req).unwrap();
        assert!(plan.is_flat());
        assert_eq!(plan.warnings, vec![SKIP_WARNING.to_string()]);
        assert_eq!(plan.host_nodes.to_list(), "0-2");
        assert!(plan.qemu_args().iter().any(|a| a.contains("host-nodes=0-2,policy=bind")));
        round_trip(&plan);
    }

    #[test]
    fn right_sizing_policies_and_usage() {
        let mut nodes = host(&[8, 8]);
        nodes[0].used_cpus = 6;
        let mut req = request(nodes, 4, 1024);
        let plan = plan_guest(&req).unwrap();
        assert!(plan.is_flat());
        assert_eq!(plan.host_nodes.to_list(), "1");
        req.policy = Policy::First;
        assert_eq!(plan_guest(&req).unwrap().host_nodes.to_list(), "0");
    }

    #[test]
    fn device_decides_the_node_and_gets_an_expander() {
        let mut req = request(host(&[8, 8]), 4, 1024);
        req.vfio = vec![VfioDevice { bdf: "0000:3b:00.0".into(), host_node: Some(1) }];
        let plan = plan_guest(&req).unwrap();
        assert_eq!(plan.host_nodes.to_list(), "1");
        round_trip(&plan);
        let mut req = request(host(&[8, 8]), 16, 16384);
        req.vfio = vec![VfioDevice { bdf: "0000:3b:00.0".into(), host_node: Some(1) }];
        let plan = plan_guest(&req).unwrap();
        assert_eq!(plan.expanders.len(), 1);
        assert_eq!(plan.devices[0].guest_node, Some(1));
        let args = plan.qemu_args().join(" ");
        assert!(args.contains("pxb-pcie,id=numa-pxb1,bus=pcie.0,bus_nr=128,numa_node=1"), "{args}");
        round_trip(&plan);
    }

    #[test]
    fn asymmetric_distances_give_both_directions() {
        let mut nodes = host(&[2, 2]);
        nodes[0].distances = vec![(0, 10), (1, 20)];
        nodes[1].distances = vec![(0, 30), (1, 10)];
        let plan = plan_guest(&request(nodes, 4, 16384)).unwrap();
        assert_eq!(plan.distance_entries(), vec![(0, 1, 20), (1, 0, 30)]);
        round_trip(&plan);
    }

    #[test]
    fn grouped_mapping_takes_lowest_node_distances() {
        let mut nodes = host(&[2, 2, 2, 2]);
        for node in &mut nodes {
            node.distances =
                (0..4).map(|o| (o, if o == node.id { 10 } else { 11 + o + node.id })).collect();
        }
        let mut req = request(nodes, 8, 4096);
        req.mapping = mapping(&["0-1", "2-3"]);
        let plan = plan_guest(&req).unwrap();
        assert_eq!(
            layout(&plan),
            vec![
                ("0-1".to_string(), "0-3".to_string(), 2048),
                ("2-3".to_string(), "4-7".to_string(), 2048),
            ]
        );
        assert_eq!(plan.distances, vec![vec![10, 13], vec![13, 10]]);
        assert!(plan.qemu_args().iter().any(|a| a.contains("host-nodes=0-1,policy=bind")));
        round_trip(&plan);
    }

    #[test]
    fn hugepages_refused_with_the_reason() {
        let mut nodes = host(&[4, 4]);
        nodes[0].hugepages_free = vec![(2048, 600)];
        nodes[1].hugepages_free = vec![(2048, 100)];
        let mut req = request(nodes, 8, 2048);
        req.backend = MemoryBackend {
            mem_path: Some("/dev/hugepages".into()),
            hugepage_kib: Some(2048),
            share: true,
            prealloc: true,
        };
        let err = plan_guest(&req).unwrap_err().to_string();
        assert!(err.contains("guest node 1 needs 512 huge pages of 2048 KiB"), "{err}");
        req.vcpus = 4;
        req.max_vcpus = 4;
        req.memory_mib = 1024;
        let plan = plan_guest(&req).unwrap();
        assert_eq!(plan.host_nodes.to_list(), "0", "{:?}", plan.decisions);
        let args = plan.qemu_args().join(" ");
        let want = "memory-backend-file,id=numa-mem0,size=1024M,mem-path=/dev/hugepages,\
                    host-nodes=0,policy=bind,share=on,prealloc=on";
        assert!(args.contains(want), "{args}");
    }

    #[test]
    fn qemu_limits_are_refused_with_the_limit() {
        let cases: &[(&str, u32, u32, u64, bool, &str)] = &[
            ("vcpus", MAX_VCPUS + 1, MAX_VCPUS + 1, 4096, false, "289 vCPUs are more than the 288"),
            ("max vcpus", 4, MAX_VCPUS + 1, 4096, false, "max vCPUs 289 is more than the 288"),
            ("memory", 4, 4, MAX_MEMORY_MIB + 1, false, "is more than 2^40 MiB"),
        ];
        for (name, vcpus, max_vcpus, memory, confidential, needle) in cases {
            let mut req = request(host(&[300, 300]), *vcpus, *memory);
            req.max_vcpus = *max_vcpus;
            req.confidential = *confidential;
            let err = plan_guest(&req).unwrap_err().to_string();
            assert!(err.contains(needle), "{name}: {err}");
        }
        let mut req = request(host(&[4, 4]), 4, 1024);
        req.max_vcpus = 1000;
        req.confidential = true;
        assert_eq!(plan_guest(&req).unwrap().smp.maxcpus, 4, "confidential: max vCPUs unused");
    }

    #[test]
    fn more_host_nodes_than_qemu_takes() {
        let many = |n: usize| -> Vec<HostNode> {
            let mut nodes = host(&vec![1; n]);
            nodes.iter_mut().for_each(|node| node.distances.clear());
            nodes
        };
        let plan = plan_guest(&request(many(1024), 4, 1024)).unwrap();
        assert!(plan.is_flat());
        assert!(plan.warnings.contains(&SKIP_WARNING.to_string()), "{:?}", plan.warnings);
        assert!(plan.flat_memory_nodes.is_empty(), "host-nodes from 128 up cannot be bound");
        assert!(!plan.qemu_args().iter().any(|a| a.contains("host-nodes")));
        assert!(
            plan.decisions.iter().any(|d| d.contains("; and 1016 more")),
            "{:?}",
            plan.decisions
        );
        round_trip(&plan);

        let err = plan_guest(&request(many(200), 200, 4096)).unwrap_err().to_string();
        assert!(err.contains("200 guest nodes are more than the 128"), "{err}");
        assert!(err.contains("--mapping 0-1 --mapping 2-3"), "{err}");

        let mut req = request(many(130), 2, 1024);
        req.mapping = mapping(&["0", "129"]);
        let err = plan_guest(&req).unwrap_err().to_string();
        assert!(err.contains("host node 129, but QEMU's host-nodes takes node numbers below 128"));
    }

    #[test]
    fn fitting_and_memory_warnings_use_one_notion_of_capacity() {
        // Node 0: 2048 MiB, 1024 MiB free now; node 1 the same with 1024 MiB committed.
        let mut nodes = host(&[1, 1]);
        for node in &mut nodes {
            (node.memory_mib, node.free_mib) = (2048, 1024);
        }
        let plan = plan_guest(&request(nodes.clone(), 1, 1500)).unwrap();
        let fit = plan.decisions.iter().find(|d| d.contains("fits host node 0")).unwrap();
        assert!(fit.contains("2048 MiB not committed to other sandboxes"), "{fit}");
        assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
        assert!(plan.warnings[0].contains("only 1024 MiB is free now (MemFree)"));

        nodes[0].used_memory_mib = 1024;
        let plan = plan_guest(&request(nodes.clone(), 1, 1500)).unwrap();
        let fit = plan.decisions.iter().find(|d| d.contains("fits host node 1")).unwrap();
        assert!(fit.contains("node 0: 1024 MiB not committed to other sandboxes for 1500 MiB"));

        let mut req = request(nodes, 1, 1500);
        req.vfio = vec![VfioDevice { bdf: "0000:3b:00.0".into(), host_node: Some(0) }];
        req.mapping = mapping(&["0"]);
        let plan = plan_guest(&req).unwrap();
        let want = "binds 1500 MiB to host node 0, which has 1024 MiB not committed to other \
                    sandboxes";
        assert!(plan.warnings.iter().any(|w| w.contains(want)), "{:?}", plan.warnings);
        assert!(!plan.warnings.iter().any(|w| w.contains("MemFree")), "one warning, not two");
    }

    #[test]
    fn host_memory_total_exceeded_is_warned() {
        let plan = plan_guest(&request(host(&[4, 4]), 8, 16385)).unwrap();
        assert!(plan.warnings.iter().any(|w| w.contains("more than the host's 16384 MiB")));
        let plan = plan_guest(&request(host(&[4, 4]), 8, 16384)).unwrap();
        assert!(!plan.warnings.iter().any(|w| w.contains("host's")), "{:?}", plan.warnings);
    }

    #[test]
    fn memory_on_cpu_less_nodes_gets_a_mapping_hint() {
        let mut nodes = host(&[2, 2, 0, 0]);
        let rows = [[10, 20, 11, 17], [20, 10, 17, 11], [11, 17, 10, 20], [17, 11, 20, 10]];
        for (node, row) in nodes.iter_mut().zip(rows) {
            node.memory_mib = if node.cpus.is_empty() { 8192 } else { 0 };
            node.distances = row.iter().enumerate().map(|(j, &d)| (j as u32, d)).collect();
        }
        let err = plan_guest(&request(nodes.clone(), 4, 2048)).unwrap_err().to_string();
        assert!(err.contains("numa_mapping [\"0,2\", \"1,3\"] (--mapping 0,2 --mapping 1,3)"));
        // One vCPU for two guest nodes: flat over nodes 0-1, which have no memory to bind.
        let plan = plan_guest(&request(nodes, 1, 2048)).unwrap();
        assert!(plan.warnings.iter().any(|w| w.contains("numa_mapping [\"0-2\"]")));
    }

    #[test]
    fn host_distances_of_10_or_less_say_why() {
        let cases: &[(u32, u32, &str)] = &[
            (0, REMOTE_DISTANCE, "host node 0 to host node 1 is 0, which is invalid"),
            (9, REMOTE_DISTANCE, "host node 0 to host node 1 is 9, which is invalid"),
            (10, 11, "host nodes 0 and 1 are at distance 10, the local distance"),
        ];
        for (distance, guest, needle) in cases {
            let mut nodes = host(&[4, 4]);
            nodes[0].distances = vec![(0, 10), (1, *distance)];
            nodes[1].distances = vec![(0, *distance), (1, 10)];
            let plan = plan_guest(&request(nodes, 8, 2048)).unwrap();
            assert_eq!(plan.distances, vec![vec![10, *guest], vec![*guest, 10]]);
            assert!(plan.warnings.iter().any(|w| w.contains(needle)), "{:?}", plan.warnings);
            assert!(!plan.warnings.iter().any(|w| w.contains("both start at")));
        }
        let mut req = request(host(&[4, 4]), 8, 2048);
        req.mapping = mapping(&["0", "0-1"]);
        let plan = plan_guest(&req).unwrap();
        assert!(plan.warnings.iter().any(|w| w.contains("both start at host node 0")));
    }

    #[test]
    fn apic_ids_over_254_are_warned() {
        for (cpus, max_vcpus, warned) in [(&[128, 127][..], 255, false), (&[128, 128], 256, true)] {
            let mut req = request(host(cpus), 1, 1024);
            req.max_vcpus = max_vcpus;
            req.mapping = mapping(&["0", "1"]);
            let plan = plan_guest(&req).unwrap();
            assert_eq!(plan.warnings.iter().any(|w| w.contains("x2APIC")), warned, "{max_vcpus}");
        }
    }

    #[test]
    fn bad_mappings() {
        for (entries, needle) in [
            (&["0", "x"][..], "entry 1 (\"x\") is not a node list"),
            (&["0", "5"][..], "names host node 5"),
            (&[""][..], "entry 0 is empty"),
        ] {
            let mut req = request(host(&[2, 2]), 4, 1024);
            req.mapping = mapping(entries);
            let err = plan_guest(&req).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
