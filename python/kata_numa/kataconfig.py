"""Kata Containers' own configuration, read the way the Kata runtime reads it (DESIGN §2.3).

A base `configuration*.toml` plus every file of the `config.d/` folder beside it, in file-name
order. A later file wins key by key: tables merge, any other value (arrays such as
`numa_mapping` included) is replaced whole. Kata takes every entry of `config.d/` whatever its
name, and refuses one that is not a regular file (or a link to one); so do we. A missing
`config.d/` is no drop-in at all.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kata_numa._native import MAX_MEMORY_MIB, MAX_VCPUS, CpuSet, HostTopology
from kata_numa.errors import ConfigError, CpuSetError

#: Environment variable the Kata runtime reads for its configuration file.
ENV_CONFIG = "KATA_CONF_FILE"

#: Where Kata looks when no file is named, in order: the Go runtime's two locations, the Rust
#: runtime's two, then the kata-deploy install under /opt/kata.
SEARCH_PATHS = (
    "etc/kata-containers/configuration.toml",
    "usr/share/defaults/kata-containers/configuration.toml",
    "etc/kata-containers/runtime-rs/configuration.toml",
    "usr/share/defaults/kata-containers/runtime-rs/configuration.toml",
    "opt/kata/share/defaults/kata-containers/configuration.toml",
    "opt/kata/share/defaults/kata-containers/configuration-qemu.toml",
)

QEMU = "hypervisor.qemu"
RUNTIME = "runtime"


@dataclass(frozen=True)
class Key:
    """A configuration key that matters for NUMA, with its type and Kata's default."""

    section: str
    name: str
    kind: str  # "bool", "int", "number", "str", "list[str]"
    default: object
    meaning: str
    #: The range of an "int" or "number" (finite); outside it the value is an error.
    least: int = 0
    most: int = 2**32 - 1

    @property
    def label(self) -> str:
        return f"[{self.section}] {self.name}"


KEYS = (
    Key(QEMU, "enable_numa", "bool", False, "give the guest the host's NUMA nodes"),
    Key(QEMU, "numa_mapping", "list[str]", [], "host nodes of each guest node; empty: auto"),
    Key(QEMU, "default_vcpus", "number", 1, "vCPUs started at boot; 0: 1", most=MAX_VCPUS),
    Key(QEMU, "default_maxvcpus", "int", 0, "vCPUs the guest may grow to; 0: all host CPUs"),
    Key(QEMU, "default_memory", "int", 2048, "guest memory, MiB", 1, MAX_MEMORY_MIB),
    Key(QEMU, "enable_hugepages", "bool", False, "back guest memory with huge pages"),
    Key(QEMU, "enable_mem_prealloc", "bool", False, "allocate all guest memory at start"),
    Key(QEMU, "shared_fs", "str", "", "virtio-fs needs shared (file) memory"),
    Key(QEMU, "file_mem_backend", "str", "", "folder of a file memory backend"),
    Key(QEMU, "confidential_guest", "bool", False, "SEV-SNP or TDX guest"),
    Key(QEMU, "enable_debug", "bool", False, "QEMU debug output"),
    Key(QEMU, "path", "str", "", "the QEMU binary Kata starts"),
    Key(RUNTIME, "static_sandbox_resource_mgmt", "bool", False, "size the VM once, at start"),
    Key(RUNTIME, "enable_vcpus_pinning", "bool", False, "Kata pins vCPU threads itself"),
    Key(RUNTIME, "sandbox_cgroup_only", "bool", False, "all Kata threads in the pod cgroup"),
)
KEY_BY_LABEL = {key.label: key for key in KEYS}


@dataclass(frozen=True)
class Setting:
    key: Key
    value: object
    #: The file that set the value last; None when Kata's default applies.
    source: Path | None

    @property
    def is_default(self) -> bool:
        return self.source is None


@dataclass(frozen=True)
class Problem:
    level: str  # "error" or "warning"
    message: str
    path: Path | None = None
    key: str = ""

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.level}: {where}{self.message}"


@dataclass
class KataConfig:
    base: Path
    dropins: list[Path]
    data: dict[str, Any]
    #: Dotted key path → the file that set it last.
    sources: dict[tuple[str, ...], Path] = field(default_factory=dict)

    @property
    def files(self) -> list[Path]:
        return [self.base, *self.dropins]

    def raw(self, section: str, name: str) -> tuple[object, Path | None]:
        """The merged value of `[section] name` (None when unset) and the file that set it."""
        node: object = self.data
        parts = (*section.split("."), name)
        for part in parts:
            if not isinstance(node, Mapping) or part not in node:
                return None, None
            node = node[part]
        return node, self.sources.get(parts)

    def setting(self, key: Key) -> Setting:
        value, source = self.raw(key.section, key.name)
        if value is None or _type_problem(key, value):
            return Setting(key, key.default, None)
        return Setting(key, value, source)

    def settings(self) -> list[Setting]:
        return [self.setting(key) for key in KEYS]

    def value(self, label: str) -> Any:
        """The effective value of a key of `KEYS` by label, e.g. `[runtime] sandbox_cgroup_only`."""
        return self.setting(KEY_BY_LABEL[label]).value

    def get(self, section: str, name: str) -> Any:
        return self.value(f"[{section}] {name}")


def find_config(
    explicit: Path | None = None,
    root: Path = Path("/"),
    environ: Mapping[str, str] | None = None,
    how_to_name: str = "--kata-config FILE",
) -> Path:
    """The base configuration file: `explicit`, else `$KATA_CONF_FILE`, else the first of
    `SEARCH_PATHS` below `root` that exists. `how_to_name` ends the message when none is found:
    the way the calling command takes a file."""
    env = os.environ if environ is None else environ
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"{explicit}: no such Kata configuration file", path=str(explicit))
        return explicit
    if env.get(ENV_CONFIG):
        named = Path(env[ENV_CONFIG])
        if not named.is_file():
            raise ConfigError(f"{named} (from ${ENV_CONFIG}): no such file", path=str(named))
        return named
    for relative in SEARCH_PATHS:
        candidate = root / relative
        if candidate.is_file():
            return candidate
    looked = ", ".join(f"/{p}" for p in SEARCH_PATHS)
    raise ConfigError(f"no Kata configuration found (looked at {looked}); name one: {how_to_name}")


def dropin_files(base: Path) -> list[Path]:
    """Every entry of `config.d/` beside `base`, in name order; none when the folder is missing."""
    folder = base.parent / "config.d"
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(
            f"{folder}: cannot list the drop-in folder: {exc.strerror}", path=str(folder)
        ) from exc
    files = [folder / name for name in names]
    for path in files:
        if not path.is_file():
            raise ConfigError(
                f"{path}: a drop-in must be a regular file (or a link to one); "
                "move it out of config.d/",
                path=str(path),
            )
    return files


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {exc}", path=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "TOML files must be UTF-8",
            path=str(path),
        ) from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}", path=str(path)) from exc


def merge(
    base: dict[str, Any],
    dropin: Mapping[str, Any],
    source: Path,
    sources: dict[tuple[str, ...], Path],
    prefix: tuple[str, ...] = (),
) -> None:
    """Merge `dropin` into `base` the way Kata does, recording which file set each value."""
    for name, value in dropin.items():
        path = (*prefix, name)
        current = base.get(name)
        if isinstance(value, Mapping) and isinstance(current, dict):
            merge(current, value, source, sources, path)
            continue
        base[name] = _copy(value)
        for known in [p for p in sources if p[: len(path)] == path]:
            del sources[known]
        _record(path, value, source, sources)


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    return value


def _record(
    path: tuple[str, ...], value: Any, source: Path, sources: dict[tuple[str, ...], Path]
) -> None:
    if isinstance(value, Mapping):
        for name, inner in value.items():
            _record((*path, name), inner, source, sources)
    else:
        sources[path] = source


def load_config(base: Path) -> KataConfig:
    """Read `base` and its drop-ins. A file that cannot be read or parsed raises ConfigError
    naming it (with the line for a TOML syntax error)."""
    data: dict[str, Any] = {}
    sources: dict[tuple[str, ...], Path] = {}
    dropins = dropin_files(base)
    for path in [base, *dropins]:
        merge(data, read_toml(path), path, sources)
    return KataConfig(base, dropins, data, sources)


def _in_range(key: Key, value: object, kinds: type | tuple[type, ...]) -> bool:
    if not isinstance(value, kinds) or isinstance(value, bool):
        return False
    assert isinstance(value, int | float)
    return math.isfinite(value) and key.least <= value <= key.most


def _type_problem(key: Key, value: object) -> str | None:
    span = f"from {key.least} to {key.most}"
    checks: dict[str, tuple[bool, str]] = {
        "bool": (isinstance(value, bool), "true or false"),
        "int": (_in_range(key, value, int), f"a whole number {span}"),
        "number": (_in_range(key, value, (int, float)), f"a number {span}"),
        "str": (isinstance(value, str), "a string"),
        "list[str]": (
            isinstance(value, list) and all(isinstance(v, str) for v in value),
            'a list of strings such as ["0", "1"]',
        ),
    }
    ok, expected = checks[key.kind]
    return None if ok else expected


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


def check_config(config: KataConfig, topology: HostTopology | None) -> list[Problem]:
    """Validation problems of the effective configuration against this host (DESIGN §2.3)."""
    return [*value_problems(config, topology), *_numa_problems(config, topology)]


def value_problems(config: KataConfig, topology: HostTopology | None) -> list[Problem]:
    """Values that are wrong in themselves: of the wrong type or range, or a `numa_mapping`
    this host cannot have. A plan refuses these (it cannot say what Kata would start); what
    `_numa_problems` finds is about what Kata does with good values."""
    problems = []
    for key in KEYS:
        value, source = config.raw(key.section, key.name)
        if value is not None and (expected := _type_problem(key, value)):
            problems.append(
                Problem(
                    "error", f"{key.label} = {_toml(value)} should be {expected}", source, key.name
                )
            )
    problems.extend(_mapping_problems(config, topology))
    return problems


def _mapping_problems(config: KataConfig, topology: HostTopology | None) -> list[Problem]:
    mapping = config.setting(KEY_BY_LABEL[f"[{QEMU}] numa_mapping"])
    entries: list[str] = list(mapping.value) if isinstance(mapping.value, list) else []
    host = CpuSet(node.id for node in topology.nodes) if topology is not None else None
    problems = []
    for index, entry in enumerate(entries):
        try:
            nodes = CpuSet.parse_list(entry)
        except CpuSetError as exc:
            problems.append(
                Problem(
                    "error",
                    f"numa_mapping entry {index} ({entry!r}) is not a "
                    f'node list such as "0" or "0-1": {exc}',
                    mapping.source,
                    "numa_mapping",
                )
            )
            continue
        if not nodes:
            problems.append(
                Problem(
                    "error",
                    f"numa_mapping entry {index} is empty: give the host nodes of that guest node",
                    mapping.source,
                    "numa_mapping",
                )
            )
        elif host is not None and not nodes.issubset(host):
            problems.append(
                Problem(
                    "error",
                    f"numa_mapping entry {index} ({entry!r}) names host "
                    f"node {nodes - host}, which this host lacks (it has nodes "
                    f"{host})",
                    mapping.source,
                    "numa_mapping",
                )
            )
    if entries and not config.get(QEMU, "enable_numa"):
        problems.append(
            Problem(
                "warning",
                "numa_mapping is set but enable_numa is false: Kata ignores the mapping",
                mapping.source,
                "numa_mapping",
            )
        )
    return problems


def _numa_problems(config: KataConfig, topology: HostTopology | None) -> list[Problem]:
    numa = config.setting(KEY_BY_LABEL[f"[{QEMU}] enable_numa"])
    if numa.value is not True:
        return []
    mapping = config.get(QEMU, "numa_mapping")
    with_cpus = sum(1 for node in topology.nodes if node.cpus) if topology is not None else 0
    guest_nodes = len(mapping) if mapping else with_cpus
    problems = []
    static = config.setting(KEY_BY_LABEL[f"[{RUNTIME}] static_sandbox_resource_mgmt"])
    if guest_nodes > 1 and static.value is not True:
        where = f"set to false in {static.source}" if static.source else "not set (default false)"
        problems.append(
            Problem(
                "error",
                f"enable_numa = true gives the guest {guest_nodes} NUMA nodes, which needs "
                f"[runtime] static_sandbox_resource_mgmt = true (it is {where}); fix: add "
                "static_sandbox_resource_mgmt = true under [runtime] (a config.d/ drop-in will do)",
                numa.source,
                "static_sandbox_resource_mgmt",
            )
        )
    max_vcpus = config.setting(KEY_BY_LABEL[f"[{QEMU}] default_maxvcpus"])
    if isinstance(max_vcpus.value, int) and 0 < max_vcpus.value < guest_nodes:
        problems.append(
            Problem(
                "warning",
                f"default_maxvcpus = {max_vcpus.value} is below the {guest_nodes} guest "
                "NUMA nodes: Kata will log 'DefaultMaxVCPUs < NUMA node count; skipping multi-NUMA "
                "topology' and start the guest flat",
                max_vcpus.source,
                "default_maxvcpus",
            )
        )
    if topology is not None and config.get(QEMU, "enable_hugepages"):
        total = sum(p.total for node in topology.nodes for p in node.hugepages)
        if total == 0:
            problems.append(
                Problem(
                    "warning",
                    "enable_hugepages = true but this host has no huge pages reserved "
                    "(nodeN/hugepages/hugepages-*/nr_hugepages are 0)",
                    config.base,
                    "enable_hugepages",
                )
            )
    return problems


def describe(config: KataConfig, problems: Iterable[Problem]) -> str:
    """The text of `kata-numa check-config`."""
    lines = [f"Kata configuration: {config.base}"]
    names = ", ".join(path.name for path in config.dropins) or "none"
    lines.append(f"drop-ins (config.d/, name order): {names}")
    lines.append("effective settings:")
    rows = [_setting_row(config, key) for key in KEYS]
    width = max(len(text) for text, _ in rows)
    lines.extend(f"  {text:<{width}}  {origin}" for text, origin in rows)
    found = list(problems)
    if found:
        lines.append("problems:")
        lines.extend(f"  {problem}" for problem in found)
    else:
        lines.append("no problems found")
    return "\n".join(lines)


def _setting_row(config: KataConfig, key: Key) -> tuple[str, str]:
    """`[section] key = value` and where it came from; a wrong value is shown as written."""
    value, source = config.raw(key.section, key.name)
    if value is not None and source is not None and _type_problem(key, value):
        return f"{key.label} = {_toml(value)}", f"{_origin(config, source)} (wrong: see problems)"
    setting = config.setting(key)
    return f"{key.label} = {_toml(setting.value)}", _origin(config, setting.source)


def _origin(config: KataConfig, source: Path | None) -> str:
    if source is None:
        return "(Kata's default)"
    if source.parent == config.base.parent / "config.d":
        return f"config.d/{source.name}"
    return str(source)


def to_json(config: KataConfig, problems: Iterable[Problem]) -> dict[str, Any]:
    return {
        "base": str(config.base),
        "dropins": [str(path) for path in config.dropins],
        "settings": [
            {
                "section": s.key.section,
                "key": s.key.name,
                "value": s.value,
                "source": str(s.source) if s.source else None,
            }
            for s in config.settings()
        ],
        "problems": [
            {
                "level": p.level,
                "file": str(p.path) if p.path else None,
                "key": p.key,
                "message": p.message,
            }
            for p in problems
        ],
    }
