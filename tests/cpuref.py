"""A small plain-Python reference of the kernel's CPU list and mask formats: the tests compare
the Rust parser and printer with it, and the benchmarks time it against them."""

from __future__ import annotations


def ref_to_list(cpus: set[int]) -> str:
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and runs[-1][1] == cpu - 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def ref_to_mask(cpus: set[int]) -> str:
    value = sum(1 << cpu for cpu in cpus)
    groups = []
    while True:
        groups.append(value & 0xFFFFFFFF)
        value >>= 32
        if not value:
            break
    head, *rest = reversed(groups)
    return ",".join([f"{head:x}", *(f"{g:08x}" for g in rest)])


def ref_parse_list(text: str) -> set[int]:
    cpus: set[int] = set()
    for item in filter(None, text.strip().split(",")):
        span, _, stride = item.partition(":")
        first, _, last = span.partition("-")
        lo, hi = int(first), int(last or first)
        used, group = (int(x) for x in stride.split("/")) if stride else (hi - lo + 1, hi - lo + 1)
        cpus.update(c for c in range(lo, hi + 1) if (c - lo) % group < used)
    return cpus
