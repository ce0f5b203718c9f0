"""The captured machines of `shared/fixtures/` (sysfs trees of real hosts) and the store
that unpacks them on first use, once per test session."""

from __future__ import annotations

import os
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The fixtures live beside the repository (`../shared/fixtures`); KATA_NUMA_FIXTURES overrides.
FIXTURES = Path(os.environ.get("KATA_NUMA_FIXTURES", REPO.parent / "shared" / "fixtures"))
HWLOC_LINUX = FIXTURES / "hwloc-linux"
NRI_SYSFS = FIXTURES / "nri-plugins-sysfs"


@dataclass(frozen=True)
class Machine:
    """One captured host: the archive holding it and its folder inside the archive."""

    name: str
    archive: Path
    # Folder inside the archive that holds `sys/`; None: the archive's single top folder.
    inner: str | None = None


def _hwloc_machines() -> list[Machine]:
    return [
        Machine(path.name.removesuffix(".tar.bz2"), path)
        for path in sorted(HWLOC_LINUX.glob("*.tar.bz2"))
    ]


# The nri-plugins archives hold several machines each (see their README).
_NRI = {
    "server": ("topology-aware-policy-testdata-sysfs.tar.bz2", "sysfs/server"),
    "4-socket-server-nosnc": (
        "topology-aware-policy-testdata-sysfs.tar.bz2",
        "sysfs/4-socket-server-nosnc",
    ),
    "desktop": ("topology-aware-policy-testdata-sysfs.tar.bz2", "sysfs/desktop"),
    "2-socket-4-node-40-core": (
        "cpuallocator-testdata-sysfs.tar.bz2",
        "sysfs/2-socket-4-node-40-core",
    ),
    "sample2": ("pkg-sysfs-test-data-sample2.tar.xz", "sample2"),
}


def all_machines() -> list[Machine]:
    """Every captured machine, hwloc's first; empty when the fixtures are not there."""
    nri = [Machine(name, NRI_SYSFS / archive, inner) for name, (archive, inner) in _NRI.items()]
    return _hwloc_machines() + [m for m in nri if m.archive.exists()]


MACHINES = {machine.name: machine for machine in all_machines()}


class MachineStore:
    """Unpacks each archive once, when a test first asks for one of its machines."""

    def __init__(self, base: Path) -> None:
        self._base = base
        self._unpacked: dict[Path, Path] = {}
        self._lock = threading.Lock()

    def root(self, name: str) -> Path:
        """The folder that holds the machine's `sys/` (a `--sysfs-root`)."""
        if name not in MACHINES:
            pytest.skip(f"fixture machine {name!r} is not in {FIXTURES}")
        machine = MACHINES[name]
        folder = self._unpack(machine.archive)
        if machine.inner is not None:
            return folder / machine.inner
        (top,) = [entry for entry in folder.iterdir() if entry.is_dir()]
        return top

    def _unpack(self, archive: Path) -> Path:
        with self._lock:
            if archive not in self._unpacked:
                target = self._base / archive.name.split(".tar")[0]
                target.mkdir()
                # GNU tar: several times faster than tarfile on these trees of many tiny
                # files; it refuses members with `..` and drops leading `/`.
                subprocess.run(
                    ["tar", "-x", "--no-same-owner", "-f", str(archive), "-C", str(target)],
                    check=True,
                )
                self._unpacked[archive] = target
            return self._unpacked[archive]
