#!/usr/bin/env bash
# The demo behind `make demo`: a real QEMU sandbox with two guest NUMA nodes is found and its
# vCPUs pinned onto the bundled two-node example host (node 0 = CPU 0, node 1 = CPU 1).
# Only the QEMU processes started here are touched (the agent is told their sandbox id), and
# they are stopped on exit, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
KATA_NUMA=${KATA_NUMA:-.venv/bin/kata-numa}
HOST=examples/hosts/two-node
QEMU=$(command -v qemu-system-x86_64) || { echo "qemu-system-x86_64 missing: run make deps" >&2; exit 1; }
ID="demo-$$"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

vm() {  # vm NAME: a paused TCG guest with 4 vCPUs in two guest NUMA nodes
    "$QEMU" -name "$1,debug-threads=on" -S -accel tcg,thread=multi -machine q35 -nodefaults \
        -display none -monitor none -serial none -smp 4,sockets=2,cores=2 -m 256 \
        -object memory-backend-ram,id=mem0,size=128M -object memory-backend-ram,id=mem1,size=128M \
        -numa node,nodeid=0,cpus=0-1,memdev=mem0 -numa node,nodeid=1,cpus=2-3,memdev=mem1 \
        </dev/null >/dev/null 2>&1 &
    pids+=("$!")
}

show_threads() {  # show_threads PID: each vCPU thread and the CPUs it may run on
    for task in /proc/"$1"/task/*; do
        name=$(cat "$task/comm" 2>/dev/null) || continue
        [[ $name == CPU* ]] || continue
        printf '    %-10s tid %-8s allowed CPUs %s\n' "$name" "${task##*/}" \
            "$(awk '/Cpus_allowed_list/ {print $2}' "$task/status")"
    done
}

vm "sandbox-$ID"; sandbox=${pids[-1]}
vm "plain-vm-$ID"; plain=${pids[-1]}
for _ in $(seq 100); do
    [[ $(grep -l '^CPU' /proc/"$sandbox"/task/*/comm /proc/"$plain"/task/*/comm 2>/dev/null | wc -l) -ge 8 ]] && break
    sleep 0.1
done

echo "== the example host ($HOST)"
"$KATA_NUMA" topology --sysfs-root "$HOST"
echo
echo "== sandboxes found"
"$KATA_NUMA" sandboxes
echo
echo "== before: sandbox-$ID (pid $sandbox)"; show_threads "$sandbox"
echo
echo "== kata-numa run --once"
"$KATA_NUMA" run --once --sysfs-root "$HOST" --sandbox "$ID" 2>&1
echo
echo "== after: sandbox-$ID (pid $sandbox): guest node 0 = vCPUs 0-1 -> host node 0 (CPU 0),"
echo "   guest node 1 = vCPUs 2-3 -> host node 1 (CPU 1)"
show_threads "$sandbox"
echo
echo "== untouched: plain-vm-$ID (pid $plain) is not a Kata sandbox"
show_threads "$plain"
