//! The guest layout of a QEMU process, read back from its command line.
//!
//! Options understood: `-name`, `-smp`, `-m`, `-object memory-backend-{ram,file,memfd}`,
//! `-numa node|cpu|dist`, `-device vfio-pci`, `-accel` and `-machine accel=`.

use crate::cpuset::CpuSet;
use crate::error::{Error, Result};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Smp {
    pub cpus: u32,
    pub maxcpus: u32,
    pub sockets: u32,
    pub dies: u32,
    pub clusters: u32,
    pub cores: u32,
    pub threads: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryBackend {
    pub id: String,
    /// `ram`, `file` or `memfd`.
    pub kind: String,
    pub size_mib: u64,
    pub host_nodes: Option<CpuSet>,
    pub policy: Option<String>,
    pub mem_path: Option<String>,
    pub share: bool,
    pub prealloc: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestNode {
    pub id: u32,
    /// vCPU indexes of the node.
    pub cpus: CpuSet,
    pub memdev: Option<String>,
    /// Legacy `mem=` size, MiB (0 when a memdev is used).
    pub mem_mib: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestLayout {
    /// Guest name of `-name`.
    pub name: Option<String>,
    pub debug_threads: bool,
    pub accel: Option<String>,
    /// `-machine memory-backend=ID`: the backend of a VM's whole memory when it has no `-numa`.
    pub machine_memdev: Option<String>,
    pub smp: Smp,
    /// `-m`, MiB.
    pub memory_mib: u64,
    pub backends: Vec<MemoryBackend>,
    pub nodes: Vec<GuestNode>,
    /// `-numa dist` entries: (src, dst, distance).
    pub distances: Vec<(u32, u32, u32)>,
    /// Host PCI addresses of `-device vfio-pci` (`host=` or the last part of `sysfsdev=`).
    pub vfio_devices: Vec<String>,
    /// What the parser passed over or assumed.
    pub notes: Vec<String>,
}

/// `key=value,key=value` options with an optional leading implied value (`-smp 4,...`).
struct Opts {
    pairs: Vec<(String, String)>,
}

impl Opts {
    fn parse(text: &str, implied_key: &str) -> Opts {
        let mut implied = None;
        let mut pairs = Vec::new();
        for (index, part) in split_opts(text).into_iter().enumerate() {
            match part.split_once('=') {
                Some((k, v)) => pairs.push((k.to_string(), v.to_string())),
                None if index == 0 => implied = Some(part),
                None => pairs.push((part, "on".to_string())),
            }
        }
        if let Some(value) = implied.take() {
            pairs.insert(0, (implied_key.to_string(), value));
        }
        Opts { pairs }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("on" | "yes" | "true" | "1"))
    }
}

/// Split at commas, where `,,` is an escaped comma (QEMU's option syntax).
fn split_opts(text: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                if let Some(p) = parts.last_mut() {
                    p.push(',');
                }
            } else {
                parts.push(String::new());
            }
        } else if let Some(p) = parts.last_mut() {
            p.push(c);
        }
    }
    parts
}

fn number(arg: &str, key: &str, value: &str) -> Result<u32> {
    value.parse().map_err(|_| Error::QemuArgs {
        arg: arg.to_string(),
        reason: format!("{key}={value:?} is not a whole number"),
    })
}

/// A size as QEMU reads it: a number with an optional suffix (`k`, `M`, `G`, `T`, powers of
/// 1024); a bare number means `default_unit`. Returns bytes.
pub fn parse_size(text: &str, default_unit: u64) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let lower = suffix.to_ascii_lowercase();
    // `G`, `GB`, `Gi` and `GiB` all mean 2^30 here.
    let letter = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('i'))
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let unit = match letter {
        "" if lower.is_empty() || lower == "b" => default_unit,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return None,
    };
    if suffix.eq_ignore_ascii_case("b") {
        return digits.parse::<u64>().ok();
    }
    let value: f64 = digits.parse().ok()?;
    let bytes = value * unit as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

fn size_mib(arg: &str, value: &str, default_unit: u64) -> Result<u64> {
    parse_size(value, default_unit).map(|b| b / (1 << 20)).ok_or_else(|| Error::QemuArgs {
        arg: arg.to_string(),
        reason: format!("size {value:?} is not a size such as 2048M or 4G"),
    })
}

/// Most vCPUs a `-smp` may describe; larger values are refused rather than computed with.
/// QEMU's machine types allow a few thousand at most, so a command line beyond this is not
/// a guest QEMU runs, and refusing it keeps a hostile one from costing memory here.
pub const MAX_VCPUS: u64 = 1 << 14;

fn parse_smp(arg: &str) -> Result<Smp> {
    let opts = Opts::parse(arg, "cpus");
    let too_many =
        || Error::QemuArgs { arg: arg.to_string(), reason: format!("more than {MAX_VCPUS} vCPUs") };
    let get = |key: &str| -> Result<u64> {
        let value = opts.get(key).map(|v| number(arg, key, v)).transpose()?.unwrap_or(0);
        if u64::from(value) > MAX_VCPUS {
            return Err(too_many());
        }
        Ok(u64::from(value))
    };
    let (cpus, mut maxcpus) = (get("cpus")?, get("maxcpus")?);
    let (mut sockets, dies, clusters) =
        (get("sockets")?, get("dies")?.max(1), get("clusters")?.max(1));
    let (mut cores, mut threads) = (get("cores")?, get("threads")?);
    // QEMU's rules (hw/core/machine-smp.c; machines of 6.2 and later prefer cores over
    // sockets, and omitted threads are worked out last). Every factor is at most MAX_VCPUS
    // (2^14), so these products stay far from u64's limit, and none divides by zero.
    if cpus == 0 && maxcpus == 0 {
        sockets = sockets.max(1);
        cores = cores.max(1);
        threads = threads.max(1);
    } else {
        let max = if maxcpus > 0 { maxcpus } else { cpus };
        if cores == 0 {
            sockets = sockets.max(1);
            threads = threads.max(1);
            cores = max / (sockets * dies * clusters * threads);
        } else if sockets == 0 {
            threads = threads.max(1);
            sockets = max / (dies * clusters * cores * threads);
        }
        if threads == 0 {
            threads = max / (sockets * dies * clusters * cores);
        }
    }
    if sockets == 0 || cores == 0 || threads == 0 {
        let shape = format!("sockets={sockets} cores={cores} threads={threads}");
        let max = maxcpus.max(cpus);
        return Err(Error::QemuArgs {
            arg: arg.to_string(),
            reason: format!("topology {shape} does not give maxcpus {max}"),
        });
    }
    let total = [sockets, dies, clusters, cores, threads]
        .iter()
        .try_fold(1u64, |acc, &n| acc.checked_mul(n).filter(|&t| t <= MAX_VCPUS))
        .ok_or_else(too_many)?;
    if maxcpus == 0 {
        maxcpus = total;
    }
    let cpus = if cpus == 0 { maxcpus } else { cpus };
    if total != maxcpus || cpus > maxcpus {
        let shape = format!("{sockets}x{dies}x{clusters}x{cores}x{threads}");
        return Err(Error::QemuArgs {
            arg: arg.to_string(),
            reason: format!("topology {shape} does not give maxcpus {maxcpus}"),
        });
    }
    // All values are at most MAX_VCPUS, so they fit in u32.
    let [cpus, maxcpus, sockets, dies, clusters, cores, threads] =
        [cpus, maxcpus, sockets, dies, clusters, cores, threads].map(|v| v as u32);
    Ok(Smp { cpus, maxcpus, sockets, dies, clusters, cores, threads })
}

fn parse_backend(arg: &str) -> Result<Option<MemoryBackend>> {
    let opts = Opts::parse(arg, "qom-type");
    let Some(kind) = opts.get("qom-type").and_then(|t| t.strip_prefix("memory-backend-")) else {
        return Ok(None);
    };
    let mut host_nodes: Option<CpuSet> = None;
    for value in opts.all("host-nodes") {
        let nodes = CpuSet::parse_list(value)
            .map_err(|e| Error::QemuArgs { arg: arg.to_string(), reason: e.to_string() })?;
        host_nodes = Some(host_nodes.map_or(nodes.clone(), |n| n.union(&nodes)));
    }
    Ok(Some(MemoryBackend {
        id: opts.get("id").unwrap_or_default().to_string(),
        kind: kind.to_string(),
        size_mib: opts.get("size").map(|s| size_mib(arg, s, 1)).transpose()?.unwrap_or(0),
        host_nodes,
        policy: opts.get("policy").map(str::to_string),
        mem_path: opts.get("mem-path").map(str::to_string),
        share: opts.flag("share"),
        prealloc: opts.flag("prealloc"),
    }))
}

/// vCPU index of `-numa cpu,socket-id=..,core-id=..,thread-id=..` from the `-smp` topology.
fn numa_cpu_index(arg: &str, opts: &Opts, smp: &Smp) -> Result<u32> {
    let id = |key: &str, limit: u32| -> Result<u32> {
        let value = opts.get(key).map(|v| number(arg, key, v)).transpose()?.unwrap_or(0);
        if value >= limit {
            let reason = format!("{key}={value} is not below the -smp count {limit}");
            return Err(Error::QemuArgs { arg: arg.to_string(), reason });
        }
        Ok(value)
    };
    let socket = id("socket-id", smp.sockets)?;
    let die = id("die-id", smp.dies)?;
    let cluster = id("cluster-id", smp.clusters)?;
    let core = id("core-id", smp.cores)?;
    let thread = id("thread-id", smp.threads)?;
    // Each id is below its count and the counts multiply to maxcpus, so this cannot overflow.
    Ok((((socket * smp.dies + die) * smp.clusters + cluster) * smp.cores + core) * smp.threads
        + thread)
}

/// QEMU options that take no value (QEMU 7 to 9, x86 and Arm).
const FLAGS: &[&str] = &[
    "-S",
    "-s",
    "-daemonize",
    "-nographic",
    "-no-reboot",
    "-no-shutdown",
    "-nodefaults",
    "-no-user-config",
    "-enable-kvm",
    "-snapshot",
    "-full-screen",
    "-no-hpet",
    "-no-acpi",
    "-no-fd-bootchk",
    "-no-quit",
    "-only-migratable",
    "-preconfig",
    "-win2k-hack",
    "-alt-grab",
    "-ctrl-grab",
    "-enable-fips",
    "-usb",
    "-singlestep",
    "-one-insn-per-tb",
    "-version",
    "-help",
    "-h",
    "-curses",
    "-no-frame",
    "-portrait",
    "-rtc-td-hack",
    "-show-cursor",
    "-xen-attach",
    "-sdl",
    "-localtime",
    "-old-param",
    "-semihosting",
    "-no-kvm",
    "-no-kvm-irqchip",
    "-no-graphic",
];

fn is_flag(option: &str) -> bool {
    FLAGS.contains(&option)
}

/// Parse a QEMU command line (argv, the binary first).
pub fn parse_qemu_args(argv: &[String]) -> Result<GuestLayout> {
    let mut layout = GuestLayout::default();
    let mut numa_args = Vec::new();
    let mut args = argv.iter().skip(1);
    while let Some(option) = args.next() {
        let option = option.strip_prefix("--").map(|o| format!("-{o}")).unwrap_or(option.clone());
        // Every option takes a value except QEMU's flags: the value of, say, `-pidfile` is
        // skipped whatever it says, so `-pidfile -name` cannot pass for a guest name.
        if !option.starts_with('-') || is_flag(&option) {
            continue;
        }
        let wanted = matches!(
            option.as_str(),
            "-name"
                | "-smp"
                | "-m"
                | "-object"
                | "-numa"
                | "-device"
                | "-accel"
                | "-machine"
                | "-M"
        );
        if !wanted {
            args.next();
            continue;
        }
        let Some(value) = args.next() else {
            return Err(Error::QemuArgs { arg: option, reason: "missing value".to_string() });
        };
        match option.as_str() {
            "-name" => {
                let opts = Opts::parse(value, "guest");
                layout.name = opts.get("guest").map(str::to_string);
                layout.debug_threads = opts.flag("debug-threads");
            }
            "-smp" => layout.smp = parse_smp(value)?,
            "-m" => {
                let opts = Opts::parse(value, "size");
                let size = opts.get("size").unwrap_or("128");
                layout.memory_mib = size_mib(value, size, 1 << 20)?;
            }
            "-object" if value.starts_with('{') => {
                layout.notes.push(format!("JSON -object not read: {value}"));
            }
            "-object" => layout.backends.extend(parse_backend(value)?),
            "-numa" => numa_args.push(value.clone()),
            "-device" => {
                let opts = Opts::parse(value, "driver");
                if opts.get("driver") == Some("vfio-pci") {
                    let host = opts.get("host").map(str::to_string).or_else(|| {
                        opts.get("sysfsdev")
                            .and_then(|p| p.rsplit('/').find(|s| !s.is_empty()))
                            .map(str::to_string)
                    });
                    if let Some(host) = host {
                        match normalize_bdf(&host) {
                            Some(bdf) => layout.vfio_devices.push(bdf),
                            None => layout.notes.push(format!(
                                "vfio-pci device {:?} is not a PCI address: ignored",
                                truncate(&host)
                            )),
                        }
                    }
                }
            }
            "-accel" => layout.accel = Opts::parse(value, "accel").get("accel").map(str::to_string),
            _ => {
                let opts = Opts::parse(value, "type");
                if let Some(accel) = opts.get("accel") {
                    layout.accel = Some(accel.to_string());
                }
                if let Some(memdev) = opts.get("memory-backend") {
                    layout.machine_memdev = Some(memdev.to_string());
                }
            }
        }
    }
    if layout.smp.maxcpus == 0 {
        layout.smp =
            Smp { cpus: 1, maxcpus: 1, sockets: 1, dies: 1, clusters: 1, cores: 1, threads: 1 };
    }
    if layout.memory_mib == 0 {
        layout.memory_mib = 128;
    }
    apply_numa(&mut layout, &numa_args)?;
    Ok(layout)
}

fn apply_numa(layout: &mut GuestLayout, numa_args: &[String]) -> Result<()> {
    for arg in numa_args {
        let opts = Opts::parse(arg, "type");
        match opts.get("type") {
            Some("node") => {
                let id = match opts.get("nodeid") {
                    Some(v) => number(arg, "nodeid", v)?,
                    None => layout.nodes.len() as u32,
                };
                let mut cpus = CpuSet::new();
                for value in opts.all("cpus") {
                    let set = CpuSet::parse_list(value).map_err(|e| Error::QemuArgs {
                        arg: truncate(arg),
                        reason: e.to_string(),
                    })?;
                    if set.last().is_some_and(|last| last >= layout.smp.maxcpus) {
                        let reason = format!(
                            "cpus={} reach beyond maxcpus {}",
                            truncate(value),
                            layout.smp.maxcpus
                        );
                        return Err(Error::QemuArgs { arg: truncate(arg), reason });
                    }
                    cpus = cpus.union(&set);
                }
                let mem_mib =
                    opts.get("mem").map(|m| size_mib(arg, m, 1 << 20)).transpose()?.unwrap_or(0);
                let memdev = opts.get("memdev").map(str::to_string);
                layout.nodes.push(GuestNode { id, cpus, memdev, mem_mib });
            }
            Some("cpu") => {
                let node = number(arg, "node-id", opts.get("node-id").unwrap_or(""))?;
                let index = numa_cpu_index(arg, &opts, &layout.smp)?;
                let target = layout.nodes.iter_mut().find(|n| n.id == node).ok_or_else(|| {
                    Error::QemuArgs {
                        arg: arg.clone(),
                        reason: format!("node-id {node} has no -numa node"),
                    }
                })?;
                target.cpus.insert(index);
            }
            Some("dist") => {
                let src = number(arg, "src", opts.get("src").unwrap_or(""))?;
                let dst = number(arg, "dst", opts.get("dst").unwrap_or(""))?;
                let val = number(arg, "val", opts.get("val").unwrap_or(""))?;
                layout.distances.push((src, dst, val));
            }
            _ => layout.notes.push(format!("-numa {arg} not read")),
        }
    }
    if layout.nodes.is_empty() {
        return Ok(());
    }
    // vCPUs no -numa option names go to the first node, as QEMU does.
    let all: CpuSet = (0..layout.smp.maxcpus).collect();
    let assigned = layout.nodes.iter().fold(CpuSet::new(), |acc, n| acc.union(&n.cpus));
    let missing = all.difference(&assigned);
    if !missing.is_empty() {
        layout.notes.push(format!(
            "vCPUs {missing} are in no -numa node: QEMU puts them in node {}",
            layout.nodes[0].id
        ));
        layout.nodes[0].cpus = layout.nodes[0].cpus.union(&missing);
    }
    layout.nodes.sort_by_key(|n| n.id);
    Ok(())
}

/// `3b:00.0` → `0000:3b:00.0`; lower case.
pub fn normalize_bdf(text: &str) -> Option<String> {
    let text = text.to_ascii_lowercase();
    let text = if text.matches(':').count() == 1 { format!("0000:{text}") } else { text };
    let hex =
        |part: &str, len: usize| part.len() == len && part.bytes().all(|b| b.is_ascii_hexdigit());
    let (domain, rest) = text.split_once(':')?;
    let (bus, rest) = rest.split_once(':')?;
    let (device, function) = rest.split_once('.')?;
    let valid = hex(domain, 4)
        && hex(bus, 2)
        && hex(device, 2)
        && matches!(function.as_bytes(), [b'0'..=b'7']);
    valid.then_some(text)
}

/// At most 200 characters of a value for a message: a command line can be megabytes long.
fn truncate(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn smp_forms() {
        let smp = parse_smp("4").unwrap();
        assert_eq!((smp.cpus, smp.maxcpus, smp.sockets, smp.cores, smp.threads), (4, 4, 1, 4, 1));
        let smp = parse_smp("1,cores=1,threads=1,sockets=4,maxcpus=4").unwrap();
        assert_eq!((smp.cpus, smp.maxcpus, smp.sockets, smp.cores), (1, 4, 4, 1));
        let smp = parse_smp("6,sockets=2,cores=3").unwrap();
        assert_eq!((smp.maxcpus, smp.sockets, smp.cores, smp.threads), (6, 2, 3, 1));
        let smp = parse_smp("sockets=2,cores=2,threads=2").unwrap();
        assert_eq!((smp.cpus, smp.maxcpus), (8, 8));
        let smp = parse_smp("cpus=8,sockets=2").unwrap();
        assert_eq!(smp.cores, 4);
        // QEMU 7.2 refuses this too: threads work out to 0.
        assert!(parse_smp("6,sockets=4,cores=4").is_err());
        // Omitted threads are worked out last, as QEMU does: 4 = 1 socket x 2 cores x 2.
        let smp = parse_smp("4,sockets=1,cores=2").unwrap();
        assert_eq!((smp.maxcpus, smp.sockets, smp.cores, smp.threads), (4, 1, 2, 2));
        assert!(parse_smp("2,sockets=4,cores=4,maxcpus=2").is_err());
        assert!(parse_smp("6,sockets=4,cores=4,maxcpus=8").is_err());
        // Products that overflow 32 bits must be refused, not wrapped (once a panic).
        assert!(parse_smp("4,sockets=65536,cores=65536").is_err());
        assert!(parse_smp("sockets=1048576,cores=1048576,threads=1048576").is_err());
        assert!(parse_smp("1,sockets=2,cores=2000000").is_err());
        assert_eq!(parse_smp("16384").unwrap().maxcpus, 16384);
        assert!(parse_smp("16385").is_err());
        assert!(parse_smp("4294967295").is_err());
    }

    #[test]
    fn kata_command_line() {
        let layout = parse_qemu_args(&argv(
            "/usr/bin/qemu-system-x86_64 -name sandbox-abc,debug-threads=on \
             -m 2048M,slots=10,maxmem=8G -smp 4,cores=2,threads=1,sockets=2,maxcpus=4 \
             -object memory-backend-file,id=numa-mem0,size=1024M,mem-path=/dev/shm,share=on,\
             host-nodes=2,policy=bind \
             -object memory-backend-file,id=numa-mem1,size=1024M,mem-path=/dev/shm,share=on,\
             host-nodes=3,policy=bind \
             -numa node,nodeid=0,memdev=numa-mem0,cpus=0-1 \
             -numa node,nodeid=1,memdev=numa-mem1,cpus=2-3 \
             -numa dist,src=0,dst=1,val=21 -device vfio-pci,host=3b:00.0,id=gpu0",
        ))
        .unwrap();
        assert_eq!(layout.name.as_deref(), Some("sandbox-abc"));
        assert!(layout.debug_threads);
        assert_eq!(layout.memory_mib, 2048);
        assert_eq!(layout.backends[1].host_nodes.as_ref().unwrap().to_list(), "3");
        assert!(layout.backends[0].share);
        assert_eq!(layout.nodes[1].cpus.to_list(), "2-3");
        assert_eq!(layout.distances, vec![(0, 1, 21)]);
        assert_eq!(layout.vfio_devices, vec!["0000:3b:00.0".to_string()]);
        assert_eq!(layout.machine_memdev, None);
    }

    #[test]
    fn flat_vm_memory_backend() {
        let layout = parse_qemu_args(&argv(
            "qemu -machine q35,accel=kvm,memory-backend=numa-mem0 -m 2G \
             -object memory-backend-ram,id=numa-mem0,size=2G,host-nodes=1,policy=bind",
        ))
        .unwrap();
        assert_eq!(layout.machine_memdev.as_deref(), Some("numa-mem0"));
        assert_eq!(layout.accel.as_deref(), Some("kvm"));
        assert!(layout.nodes.is_empty());
    }

    #[test]
    fn numa_cpu_and_unassigned() {
        let layout = parse_qemu_args(&argv(
            "qemu -smp 4,sockets=2,cores=2 -numa node,nodeid=0 -numa node,nodeid=1 \
             -numa cpu,node-id=1,socket-id=1,core-id=0 -numa cpu,node-id=1,socket-id=1,core-id=1",
        ))
        .unwrap();
        assert_eq!(layout.nodes[1].cpus.to_list(), "2-3");
        assert_eq!(layout.nodes[0].cpus.to_list(), "0-1");
    }

    #[test]
    fn option_values_are_never_options() {
        // `-pidfile` takes the next word, even when it looks like `-name`.
        let layout =
            parse_qemu_args(&argv("qemu -name plain,debug-threads=on -pidfile -name sandbox-x -S"))
                .unwrap();
        assert_eq!(layout.name.as_deref(), Some("plain"));
        let layout =
            parse_qemu_args(&argv("qemu -S -nodefaults -name sandbox-y -daemonize")).unwrap();
        assert_eq!(layout.name.as_deref(), Some("sandbox-y"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2048", 1 << 20), Some(2048 << 20));
        assert_eq!(parse_size("4G", 1), Some(4 << 30));
        assert_eq!(parse_size("1.5G", 1), Some(3 << 29));
        assert_eq!(parse_size("12x", 1), None);
        assert_eq!(parse_size("64Gi", 1), Some(64 << 30));
        assert_eq!(parse_size("64GiB", 1), Some(64 << 30));
        assert_eq!(parse_size("512kB", 1), Some(512 << 10));
        assert_eq!(parse_size("1ib", 1), None);
        assert_eq!(parse_size("1i", 1), None);
    }
}
