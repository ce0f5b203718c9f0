"""The `kata-numa` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from kata_numa import __version__
from kata_numa.agent import AgentOptions, log_report, run_pass
from kata_numa.errors import KataNumaError
from kata_numa.log import setup_logging
from kata_numa.policy import Policy
from kata_numa.sandbox import find_sandboxes
from kata_numa.service import Service
from kata_numa.topology import format_numactl, read_topology, to_json

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


def _roots(parser: argparse.ArgumentParser, proc: bool = True) -> None:
    parser.add_argument(
        "--sysfs-root",
        type=Path,
        default=Path("/"),
        metavar="DIR",
        help="folder holding sys/ (a capture of another host); default /",
    )
    if proc:
        parser.add_argument(
            "--proc-root",
            type=Path,
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
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="full resync period (default 10)",
    )
    run.add_argument("--policy", choices=[p.value for p in Policy], default=Policy.DEDICATED.value)
    run.add_argument(
        "--qemu-path",
        action="append",
        default=[],
        metavar="PATH",
        help="another QEMU binary that Kata runs (its configuration's `path`)",
    )
    run.add_argument("--dry-run", action="store_true", help="decide and report, change nothing")
    return parser


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
        dry_run=args.dry_run,
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
    if args.interval <= 0:
        raise KataNumaError(f"--interval must be positive, got {args.interval}")
    return asyncio.run(Service(options, args.interval).serve())


COMMANDS = {"topology": cmd_topology, "sandboxes": cmd_sandboxes, "run": cmd_run}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        return COMMANDS[args.command](args)
    except KataNumaError as exc:
        print(f"kata-numa: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
