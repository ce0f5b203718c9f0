"""The `kata-numa` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kata_numa import __version__, kataconfig, planner
from kata_numa._native import HostTopology
from kata_numa.agent import AgentOptions, log_report, run_pass
from kata_numa.errors import KataNumaError, UsageError
from kata_numa.log import setup_logging
from kata_numa.mems import parse_host_mems, sandbox_host_nodes, translate_mems
from kata_numa.policy import EmulatorPolicy, Policy
from kata_numa.sandbox import find_sandboxes
from kata_numa.service import Service
from kata_numa.topology import format_numactl, read_topology, to_json
from kata_numa.verify import format_text as format_verify
from kata_numa.verify import to_json as verify_json
from kata_numa.verify import verify

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


def _sysfs_root(text: str) -> Path:
    """`--sysfs-root`: a folder holding `sys/devices/system` (the host's `/` or a capture)."""
    path = Path(text)
    if not (path / "sys/devices/system").is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} holds no sys/devices/system: not a sysfs tree")
    return path


def _proc_root(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a folder")
    return path


def _cgroup_root(text: str) -> Path:
    """`--cgroup-root`: checked when the command starts, not on every pass of the service."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a folder")
    return path


#: Shortest resync period: a full pass reads every process's files, so never spin.
MIN_INTERVAL = 0.1


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < MIN_INTERVAL:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least {MIN_INTERVAL} seconds")
    return value


def _roots(parser: argparse.ArgumentParser, proc: bool = True) -> None:
    parser.add_argument(
        "--sysfs-root",
        type=_sysfs_root,
        default=Path("/"),
        metavar="DIR",
        help="folder holding sys/ (a capture of another host); default /",
    )
    if proc:
        parser.add_argument(
            "--proc-root",
            type=_proc_root,
            default=Path("/proc"),
            metavar="DIR",
            help="procfs to scan; pinning happens only on the live /proc",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kata-numa", description=__doc__)
    parser.add_argument("--version", action="version", version=f"kata-numa {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    commands = parser.add_subparsers(dest="command", required=True)

    topology = commands.add_parser(
        "topology", help="show the host's NUMA nodes, CPUs, memory, GPUs"
    )
    _roots(topology, proc=False)
    topology.add_argument("--json", action="store_true", help="machine-readable output")

    sandboxes = commands.add_parser("sandboxes", help="list the Kata sandboxes running here")
    _roots(sandboxes)
    sandboxes.add_argument("--json", action="store_true")

    run = commands.add_parser("run", help="pin every sandbox's vCPUs; keep doing so unless --once")
    _roots(run)
    run.add_argument("--once", action="store_true", help="one pass, then exit (1 if a pin failed)")
    run.add_argument(
        "--interval",
        type=_interval,
        default=10.0,
        metavar="SECONDS",
        help="full resync period (default 10)",
    )
    _agent_args(run)
    run.add_argument("--dry-run", action="store_true", help="decide and report, change nothing")
    run.add_argument(
        "--sandbox",
        action="append",
        default=[],
        dest="only",
        metavar="ID",
        help="change only this sandbox (repeatable); the others still count as CPU holders",
    )

    verify = commands.add_parser(
        "verify", help="check every sandbox's placement (exit 1 with each finding); change nothing"
    )
    verify.add_argument("sandbox", nargs="?", metavar="SANDBOX", help="only this sandbox ID")
    _roots(verify)
    _agent_args(verify)
    verify.add_argument("--json", action="store_true", help="machine-readable output")

    mems = commands.add_parser(
        "translate-mems", help="turn host NUMA nodes (cpuset.mems) into a sandbox's guest nodes"
    )
    mems.add_argument("--sandbox", required=True, metavar="ID", help="the sandbox ID")
    mems.add_argument("mems", metavar="MEMS", help="host NUMA node list, e.g. 0,2 or 0-3")
    _roots(mems)
    mems.add_argument("--qemu-path", action="append", default=[], metavar="PATH")
    _add_plan_commands(commands)
    return parser


def _agent_args(parser: argparse.ArgumentParser) -> None:
    """Options of `run` that `verify` shares: how sandboxes are read and placed."""
    parser.add_argument(
        "--policy", choices=[p.value for p in Policy], default=Policy.DEDICATED.value
    )
    parser.add_argument(
        "--emulator",
        choices=[p.value for p in EmulatorPolicy],
        default=EmulatorPolicy.SPARE.value,
        help="emulator and I/O threads: to allowed CPUs no vCPU holds (spare), or untouched",
    )
    parser.add_argument(
        "--qemu-path",
        action="append",
        default=[],
        metavar="PATH",
        help="another QEMU binary that Kata runs (its configuration's `path`)",
    )
    parser.add_argument(
        "--cgroup-root",
        type=_cgroup_root,
        default=None,
        metavar="DIR",
        help="folder holding the cgroup hierarchies (default: found in /proc/self/mountinfo)",
    )
    parser.add_argument(
        "--qmp-socket",
        default=None,
        metavar="PATH",
        help="QMP monitor socket of each sandbox, {id} and {pid} filled in (Kata's "
        "extra_monitor_socket); asked for vCPU threads when names and KVM descriptors fail",
    )


def _add_plan_commands(commands: Any) -> None:
    plan = commands.add_parser("plan", help="plan a sandbox's guest NUMA topology and QEMU args")
    plan.add_argument("--vcpus", type=int, metavar="N", help="vCPUs at boot (default_vcpus)")
    plan.add_argument("--memory", metavar="SIZE", help="guest memory: 4096M, 64G, 64Gi")
    plan.add_argument("--max-vcpus", type=int, metavar="N", help="vCPU limit (default_maxvcpus)")
    plan.add_argument(
        "--mapping",
        action="append",
        metavar="LIST",
        help="host nodes of the next guest node, e.g. 0-1 (repeat per guest node)",
    )
    plan.add_argument(
        "--vfio",
        action="append",
        default=[],
        metavar="BDF[@NODE]",
        help="a PCI device to pass through; @NODE plans for a device elsewhere",
    )
    plan.add_argument("--hugepages", metavar="SIZE", help="back memory with huge pages: 2M, 1G")
    plan.add_argument(
        "--hugepages-path",
        metavar="DIR",
        help="hugetlbfs mount of those pages (default /dev/hugepages for 2M, "
        "/dev/hugepages1G for 1G)",
    )
    plan.add_argument("--shared", action="store_true", help="shared file memory on /dev/shm")
    plan.add_argument("--prealloc", action="store_true", help="allocate all memory at start")
    plan.add_argument("--confidential", action="store_true", help="SEV-SNP or TDX guest")
    plan.add_argument(
        "--policy",
        choices=["most-free", "first"],
        default="most-free",
        help="node of a sandbox that fits one (first: Kata's lowest-ID choice)",
    )
    plan.add_argument(
        "--used",
        action="append",
        default=[],
        metavar="NODE:VCPUS[:MEMORY]",
        help="capacity other sandboxes take on a host node (adds to --proc-root's)",
    )
    plan.add_argument(
        "--kata-config",
        type=Path,
        metavar="FILE",
        help="Kata configuration (default: where Kata looks, on the live host)",
    )
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    _roots(plan, proc=False)
    plan.add_argument(
        "--proc-root",
        type=Path,
        metavar="DIR",
        help="count the sandboxes running here (default /proc on the live host)",
    )

    check = commands.add_parser("check-config", help="show and check Kata's NUMA configuration")
    check.add_argument(
        "file",
        nargs="?",
        type=Path,
        metavar="FILE",
        help="base configuration (default: where Kata looks)",
    )
    check.add_argument("--json", action="store_true", help="machine-readable output")
    _roots(check, proc=False)


def cmd_topology(args: argparse.Namespace) -> int:
    topology = read_topology(args.sysfs_root)
    print(json.dumps(to_json(topology), indent=2) if args.json else format_numactl(topology))
    return EXIT_OK


def cmd_sandboxes(args: argparse.Namespace) -> int:
    sandboxes, skipped = find_sandboxes(args.proc_root)
    if args.json:
        print(
            json.dumps(
                {
                    "sandboxes": [_sandbox_json(s) for s in sandboxes],
                    "skipped": [{"pid": s.pid, "reason": s.reason} for s in skipped],
                },
                indent=2,
            )
        )
        return EXIT_OK
    if not sandboxes:
        print("no Kata sandboxes found")
    for sandbox in sandboxes:
        layout = sandbox.layout
        nodes = ", ".join(f"guest node {n.id}: vCPUs {n.cpus}" for n in layout.nodes) or "flat"
        print(
            f"{sandbox.sandbox_id}  pid {sandbox.pid}  {layout.smp.cpus} vCPUs  "
            f"{layout.memory_mib} MiB  {nodes}"
        )
    for skip in skipped:
        print(f"skipped pid {skip.pid}: {skip.reason}")
    return EXIT_OK


def _sandbox_json(sandbox: object) -> dict[str, object]:
    from kata_numa.sandbox import Sandbox

    assert isinstance(sandbox, Sandbox)
    layout = sandbox.layout
    backends = {b.id: b for b in layout.backends}
    return {
        "id": sandbox.sandbox_id,
        "pid": sandbox.pid,
        "start_time": sandbox.start_time,
        "smp": {
            k: getattr(layout.smp, k)
            for k in ("cpus", "maxcpus", "sockets", "dies", "cores", "threads")
        },
        "memory_mib": layout.memory_mib,
        "guest_nodes": [
            {
                "id": node.id,
                "vcpus": node.cpus.to_list(),
                "memdev": node.memdev,
                "memory_mib": backends[node.memdev].size_mib
                if node.memdev in backends
                else node.mem_mib,
                "host_nodes": (
                    b.host_nodes.to_list()
                    if (b := backends.get(node.memdev or "")) and b.host_nodes
                    else None
                ),
            }
            for node in layout.nodes
        ],
        "distances": [list(d) for d in layout.distances],
        "vfio_devices": layout.vfio_devices,
    }


def _options(args: argparse.Namespace) -> AgentOptions:
    return AgentOptions(
        sysfs_root=args.sysfs_root,
        proc_root=args.proc_root,
        policy=Policy(args.policy),
        qemu_paths=tuple(args.qemu_path),
        dry_run=getattr(args, "dry_run", False),
        cgroup_root=args.cgroup_root,
        qmp_socket=args.qmp_socket,
        emulator=EmulatorPolicy(args.emulator),
        only=tuple(getattr(args, "only", ())),
    )


def cmd_run(args: argparse.Namespace) -> int:
    options = _options(args)
    if args.once:
        report = run_pass(options)
        log_report(report)
        if report.dry_run and not args.dry_run:
            print(
                f"note: {options.proc_root} is not the live /proc: nothing was changed",
                file=sys.stderr,
            )
        return EXIT_FINDINGS if report.failures else EXIT_OK
    return asyncio.run(Service(options, args.interval).serve())


def cmd_plan(args: argparse.Namespace) -> int:
    topology = read_topology(args.sysfs_root)
    config, how = planner.load_kata_config(args.kata_config, args.sysfs_root)
    usage, notes = _plan_usage(args, topology)
    wish = planner.PlanInput(
        vcpus=args.vcpus,
        memory_mib=None if args.memory is None else planner.parse_size_mib(args.memory),
        max_vcpus=args.max_vcpus,
        mapping=args.mapping,
        vfio=args.vfio,
        hugepage_kib=(
            None if args.hugepages is None else planner.parse_page_size_kib(args.hugepages)
        ),
        hugepage_path=args.hugepages_path,
        shared=args.shared,
        prealloc=args.prealloc,
        confidential=args.confidential,
        policy=args.policy,
    )
    result = planner.make_plan(wish, topology, config, usage, [how, *notes])
    print(json.dumps(planner.to_json(result), indent=2) if args.json else planner.describe(result))
    return EXIT_OK


def _plan_usage(
    args: argparse.Namespace, topology: HostTopology
) -> tuple[dict[int, planner.NodeUsage], list[str]]:
    proc_root = args.proc_root
    if proc_root is None and args.sysfs_root == Path("/"):
        proc_root = Path("/proc")
    usage: dict[int, planner.NodeUsage] = {}
    notes: list[str] = []
    if proc_root is not None:
        sandboxes, _ = find_sandboxes(proc_root)
        usage, notes = planner.usage_of_sandboxes(proc_root, sandboxes, topology)
    for text in args.used:
        node, used = planner.parse_used(text)
        planner.check_host_node(node, topology, f"--used {text!r}")
        entry = usage.setdefault(node, planner.NodeUsage())
        entry.vcpus += used.vcpus
        entry.memory_mib += used.memory_mib
    return usage, notes


def cmd_check_config(args: argparse.Namespace) -> int:
    base = kataconfig.find_config(args.file, how_to_name="kata-numa check-config FILE")
    config = kataconfig.load_config(base)
    topology = read_topology(args.sysfs_root)
    problems = kataconfig.check_config(config, topology)
    if args.json:
        print(json.dumps(kataconfig.to_json(config, problems), indent=2))
    else:
        print(kataconfig.describe(config, problems))
    return EXIT_FINDINGS if any(p.level == "error" for p in problems) else EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    report = verify(_options(args), args.sandbox)
    print(json.dumps(verify_json(report), indent=2) if args.json else format_verify(report))
    return EXIT_FINDINGS if report.findings else EXIT_OK


def cmd_translate_mems(args: argparse.Namespace) -> int:
    topology = read_topology(args.sysfs_root)
    host_mems = parse_host_mems(args.mems, topology)
    sandboxes, _ = find_sandboxes(args.proc_root, args.qemu_path)
    matching = [s for s in sandboxes if s.sandbox_id == args.sandbox]
    if not matching:
        raise UsageError(f"no Kata sandbox {args.sandbox!r} runs here")
    host_nodes, _ = sandbox_host_nodes(matching[0], topology)

    result = translate_mems(host_mems, host_nodes)

    for warning in result.warnings:
        print(f"kata-numa: warning: {warning}", file=sys.stderr)
    if result.guest_nodes is None:
        return EXIT_FINDINGS
    print(result.guest_nodes.to_list())
    return EXIT_OK


COMMANDS = {
    "topology": cmd_topology,
    "sandboxes": cmd_sandboxes,
    "run": cmd_run,
    "verify": cmd_verify,
    "translate-mems": cmd_translate_mems,
    "plan": cmd_plan,
    "check-config": cmd_check_config,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        return COMMANDS[args.command](args)
    except KataNumaError as exc:
        print(f"kata-numa: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        # The reader went away (`kata-numa topology | head`): nothing left to say to it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
