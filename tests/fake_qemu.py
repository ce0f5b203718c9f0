"""A stand-in for a QEMU process whose threads the test controls.

Started with argv[0] = `qemu-system-x86_64` and QEMU-style options after the script path. It
starts one thread per vCPU, named `CPU <n>/KVM` when `-name` says debug-threads=on (as QEMU
does), prints `ready`, and then obeys lines on stdin: `stop N` ends vCPU thread N, `quit` ends
the process.
"""

from __future__ import annotations

import itertools
import sys
import threading


def vcpu_count(argv: list[str]) -> int:
    for option, value in itertools.pairwise(argv):
        if option == "-smp":
            return int(value.split(",")[0])
    return 1


def main() -> None:
    stops = [threading.Event() for _ in range(vcpu_count(sys.argv))]
    named = threading.Barrier(len(stops) + 1)

    # QEMU names its vCPU threads only with -name ...,debug-threads=on.
    debug_threads = any("debug-threads=on" in arg for arg in sys.argv)

    def vcpu(index: int) -> None:
        if debug_threads:
            tid = threading.get_native_id()
            with open(f"/proc/self/task/{tid}/comm", "w") as comm:
                comm.write(f"CPU {index}/KVM")
        named.wait()
        stops[index].wait()

    threads = [threading.Thread(target=vcpu, args=(i,)) for i in range(len(stops))]
    for thread in threads:
        thread.start()
    named.wait()
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["stop"]:
            index = int(words[1])
            stops[index].set()
            threads[index].join()
            print(f"stopped {index}", flush=True)
        elif words[:1] == ["quit"]:
            break
    for stop in stops:
        stop.set()


if __name__ == "__main__":
    main()
