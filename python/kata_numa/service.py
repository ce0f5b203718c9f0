"""`kata-numa run`: the long-running agent on an asyncio loop.

The blocking pass (sysfs, procfs, syscalls) runs in a worker thread; the loop only waits for
the next tick or a signal. SIGTERM/SIGINT stop cleanly after the pass in flight; SIGHUP asks
for a pass at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from kata_numa._native import HostTopology
from kata_numa.agent import AgentOptions, PassReport, log_report, run_pass
from kata_numa.errors import KataNumaError
from kata_numa.topology import read_topology

log = logging.getLogger("kata_numa.service")


class Service:
    def __init__(self, options: AgentOptions, interval: float) -> None:
        self.options = options
        self.interval = interval
        self.stopping = asyncio.Event()
        self.wake = asyncio.Event()
        self.passes = 0
        self.last_report: PassReport | None = None
        self.topology: HostTopology | None = None

    async def run_once(self) -> PassReport:
        loop = asyncio.get_running_loop()
        topology = await loop.run_in_executor(None, self._topology)
        report = await loop.run_in_executor(None, run_pass, self.options, topology)
        log_report(report, quiet_unchanged=self.passes > 0, previous=self.last_report)
        self.passes += 1
        self.last_report = report
        return report

    def _topology(self) -> HostTopology:
        """The host's topology now, or the last good one while sysfs cannot be read."""
        try:
            self.topology = read_topology(self.options.sysfs_root)
        except KataNumaError as exc:
            if self.topology is None:
                raise
            log.warning("host topology unreadable, keeping the last good one: %s", exc)
        return self.topology

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        for signum, handler in (
            (signal.SIGTERM, self.stopping.set),
            (signal.SIGINT, self.stopping.set),
            (signal.SIGHUP, self.wake.set),
        ):
            loop.add_signal_handler(signum, handler)
        log.info(
            "kata-numa agent started: policy %s, resync every %g s",
            self.options.policy,
            self.interval,
        )
        while not self.stopping.is_set():
            try:
                await self.run_once()
            except (KeyboardInterrupt, SystemExit, asyncio.CancelledError):
                raise
            except BaseException:
                # A pass that failed as a whole (unreadable sysfs, say, or a bug that panicked
                # in Rust: PyO3 raises those as a BaseException) is logged; the agent keeps its
                # last good state and tries again on the next tick.
                log.exception("pass failed; keeping the last good state")
            await self._sleep()
        log.info("kata-numa agent stopped")
        return 0

    async def _sleep(self) -> None:
        waiters = [asyncio.create_task(self.stopping.wait()), asyncio.create_task(self.wake.wait())]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait(waiters, timeout=self.interval, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        self.wake.clear()
