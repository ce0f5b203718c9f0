"""Whatever a process's command line or a sysfs file holds, the parsers answer with a result or
with the error class of their domain, never a crash: any process on the node can put any text
in its arguments, and the agent reads them all."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kata_numa import CpuSet
from kata_numa._native import parse_qemu_args
from kata_numa.errors import CpuSetError, QemuArgsError

NUMBERS = st.one_of(
    st.integers(0, 8),
    st.sampled_from([0, 1, 255, 65535, 65536, 1 << 20, (1 << 20) + 1, 2**32 - 1, 2**32, 2**64]),
).map(str)
KEYS = st.sampled_from(
    [
        "cpus",
        "maxcpus",
        "sockets",
        "dies",
        "clusters",
        "cores",
        "threads",
        "nodeid",
        "node-id",
        "socket-id",
        "core-id",
        "thread-id",
        "die-id",
        "src",
        "dst",
        "val",
        "size",
        "memdev",
        "id",
        "host-nodes",
        "mem",
        "host",
        "sysfsdev",
        "guest",
        "debug-threads",
    ]
)
PAIRS = st.tuples(KEYS, st.one_of(NUMBERS, st.sampled_from(["0-3", "3-1", "", "x", "1G", "-1"])))
VALUES = st.one_of(
    NUMBERS,
    st.text(max_size=20),
    st.lists(st.one_of(PAIRS.map("=".join), NUMBERS), max_size=6).map(",".join),
    st.sampled_from(["node", "cpu", "dist", "memory-backend-ram", "vfio-pci"]).flatmap(
        lambda head: st.lists(PAIRS.map("=".join), max_size=5).map(lambda t: ",".join([head, *t]))
    ),
)
OPTIONS = st.sampled_from(["-smp", "-m", "-numa", "-object", "-name", "-device", "-accel", "-M"])
ARGV = st.lists(st.tuples(OPTIONS, VALUES), max_size=8).map(
    lambda pairs: ["qemu-system-x86_64", *[x for pair in pairs for x in pair]]
)


@settings(max_examples=400)
@given(ARGV)
def test_any_qemu_command_line_parses_or_says_why(argv: list[str]) -> None:
    try:
        layout = parse_qemu_args(argv)
    except QemuArgsError as exc:
        assert str(exc)
        return
    for node in layout.nodes:
        last = node.cpus.last()
        assert last is None or last < layout.smp.maxcpus


def test_overflowing_smp_is_an_error_not_a_crash() -> None:
    for smp in [
        "4,sockets=65536,cores=65536",
        "sockets=1048576,cores=1048576,threads=1048576",
        "1,sockets=2,cores=2000000",
    ]:
        try:
            parse_qemu_args(["qemu", "-smp", smp])
        except QemuArgsError as exc:
            assert "vCPUs" in str(exc)
        else:
            raise AssertionError(f"-smp {smp} accepted")


def test_numa_cpu_ids_beyond_smp_are_refused() -> None:
    argv = ["qemu", "-smp", "2,sockets=2", "-numa", "node,nodeid=0"]
    for bad in ["socket-id=4000000000", "socket-id=2", "core-id=1"]:
        try:
            parse_qemu_args([*argv, "-numa", f"cpu,node-id=0,{bad}"])
        except QemuArgsError as exc:
            assert bad.split("=")[0] in str(exc)
        else:
            raise AssertionError(f"-numa cpu,{bad} accepted")


@settings(max_examples=400)
@given(st.text(alphabet="0123456789abcdefxABCDEF,-:/ \n\0", max_size=40))
def test_any_cpu_text_parses_or_says_why(text: str) -> None:
    for parse in (CpuSet.parse_list, CpuSet.parse_mask):
        try:
            parse(text)
        except CpuSetError as exc:
            assert exc.text == text
