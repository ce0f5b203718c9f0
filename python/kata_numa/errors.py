"""Every exception kata-numa raises. The Rust core raises these classes too (by name, through
one conversion in the binding crate), so callers catch one hierarchy."""

from __future__ import annotations


class KataNumaError(Exception):
    """Base class: a message that says what was expected, the offending value and what to check."""


class CpuSetError(KataNumaError, ValueError):
    """A CPU list or mask that is not in the kernel's format."""

    def __init__(self, message: str, *, text: str = "", position: int = 0) -> None:
        super().__init__(message)
        self.text = text
        self.position = position


class SysfsError(KataNumaError, OSError):
    """A sysfs or procfs file that is unreadable or holds what the kernel never writes."""

    def __init__(self, message: str, *, path: str = "", errno: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.errno = errno


class ProcessGone(KataNumaError, ProcessLookupError):
    """A process or thread that ended while being read or changed: an expected race."""

    def __init__(
        self, message: str, *, pid: int = 0, tid: int | None = None, path: str = ""
    ) -> None:
        super().__init__(message)
        self.pid = pid
        self.tid = tid
        self.path = path


class QemuArgsError(KataNumaError, ValueError):
    """A QEMU command line that cannot be read as a guest layout."""

    def __init__(self, message: str, *, arg: str = "") -> None:
        super().__init__(message)
        self.arg = arg


class AffinityError(KataNumaError, OSError):
    """The kernel refused an affinity change for a reason other than a vanished thread."""

    def __init__(self, message: str, *, tid: int = 0, errno: int | None = None) -> None:
        super().__init__(message)
        self.tid = tid
        self.errno = errno


class PlanError(KataNumaError, ValueError):
    """A guest NUMA layout that cannot be planned as asked."""


class ConfigError(KataNumaError, ValueError):
    """A configuration file, key or value that is wrong; the message names the file and key."""

    def __init__(self, message: str, *, path: str = "", key: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.key = key


class UsageError(KataNumaError, ValueError):
    """A command-line value that cannot be used."""


class QmpError(KataNumaError, OSError):
    """A QMP monitor socket that could not be reached, or answered what QMP never answers."""

    def __init__(self, message: str, *, socket: str = "") -> None:
        super().__init__(message)
        self.socket = socket
