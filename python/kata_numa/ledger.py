"""The node-wide ledger of dedicated CPUs: which vCPU thread holds which host CPU alone.

One ledger covers every sandbox of the node. It is rebuilt on each pass from what the kernel
holds, then filled so that as many vCPUs as possible get a CPU of their own: when a vCPU finds
no free CPU among those it may use, vCPUs already placed move within theirs along the shortest
chain that frees one (a maximum matching, with the fewest moves).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from kata_numa._native import CpuSet

#: (sandbox ID, thread id) of a vCPU.
Owner = tuple[str, int]


class Ledger:
    """Dedicated CPUs of the whole host: one vCPU thread per CPU, one CPU per vCPU thread."""

    def __init__(self) -> None:
        self._owner: dict[int, Owner] = {}
        self._cpu: dict[Owner, int] = {}

    def owner(self, cpu: int) -> Owner | None:
        return self._owner.get(cpu)

    def cpu_of(self, sandbox_id: str, tid: int) -> int | None:
        return self._cpu.get((sandbox_id, tid))

    def claim(self, cpu: int, sandbox_id: str, tid: int) -> bool:
        """Dedicate `cpu` to the thread; False when another thread holds it or the thread
        already holds another CPU."""
        me = (sandbox_id, tid)
        if cpu in self._owner or me in self._cpu:
            return self._owner.get(cpu) == me
        self._owner[cpu] = me
        self._cpu[me] = cpu
        return True

    def unclaim(self, cpu: int) -> None:
        """Give up `cpu`, whoever holds it."""
        owner = self._owner.pop(cpu, None)
        if owner is not None:
            del self._cpu[owner]

    def free(self, candidates: CpuSet) -> CpuSet:
        return CpuSet(cpu for cpu in candidates if cpu not in self._owner)

    def release(self, sandbox_id: str) -> None:
        """Forget every CPU the sandbox's vCPUs hold."""
        for me in [me for me in self._cpu if me[0] == sandbox_id]:
            del self._owner[self._cpu.pop(me)]

    def dedicated(self) -> CpuSet:
        return CpuSet(self._owner)

    def dedicated_to_others(self, sandbox_id: str) -> CpuSet:
        return CpuSet(cpu for cpu, (owner, _) in self._owner.items() if owner != sandbox_id)

    def make_room(
        self, candidates: CpuSet, wanted_of: Callable[[Owner], CpuSet | None]
    ) -> int | None:
        """Free one of `candidates` (all held) by moving vCPUs to other CPUs they may use
        (`wanted_of`), along the shortest chain that ends on a free CPU. Returns the freed
        CPU, or None when no chain exists (every CPU they may use is taken)."""
        previous: dict[int, int | None] = dict.fromkeys(candidates)
        queue = deque(candidates)
        while queue:
            cpu = queue.popleft()
            holder = self._owner.get(cpu)
            wanted = wanted_of(holder) if holder is not None else None
            for step in wanted or CpuSet():
                if step in previous:
                    continue
                previous[step] = cpu
                if step not in self._owner:
                    return self._shift(step, previous)
                queue.append(step)
        return None

    def _shift(self, free: int, previous: dict[int, int | None]) -> int:
        """Move each holder on the chain ending at `free` one step towards it."""
        target, source = free, previous[free]
        while source is not None:
            holder = self._owner.pop(source)
            self._owner[target] = holder
            self._cpu[holder] = target
            target, source = source, previous[source]
        return target
