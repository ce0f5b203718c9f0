"""Kata's configuration: base file plus config.d/ drop-ins, and `kata-numa check-config`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hostgen import NodeSpec, make_host
from kata_numa.cli import main
from kata_numa.errors import ConfigError
from kata_numa.kataconfig import (
    KEY_BY_LABEL,
    QEMU,
    RUNTIME,
    SEARCH_PATHS,
    check_config,
    find_config,
    load_config,
)
from kata_numa.topology import read_topology

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

BASE = """\
[hypervisor.qemu]
path = "/usr/bin/qemu-system-x86_64"
default_vcpus = 1
default_memory = 2048
enable_numa = false
numa_mapping = ["0", "1", "2", "3"]

[runtime]
sandbox_cgroup_only = true
"""


def write_config(folder: Path, base: str = BASE, **dropins: str) -> Path:
    """`folder/configuration-qemu.toml` and `folder/config.d/<name>` for each drop-in (the
    files are written in reverse name order, so name order is not creation order)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "configuration-qemu.toml"
    path.write_text(base)
    if dropins:
        (folder / "config.d").mkdir()
    for name, text in sorted(dropins.items(), reverse=True):
        (folder / "config.d" / name).write_text(text)
    return path


def test_dropins_apply_in_name_order(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        **{
            "20-late.toml": "[hypervisor.qemu]\ndefault_vcpus = 4\n",
            "10-early.toml": "[hypervisor.qemu]\ndefault_vcpus = 2\ndefault_memory = 4096\n",
        },
    )
    config = load_config(path)
    assert [p.name for p in config.dropins] == ["10-early.toml", "20-late.toml"]
    assert config.get(QEMU, "default_vcpus") == 4
    assert config.raw(QEMU, "default_vcpus")[1] == tmp_path / "config.d/20-late.toml"
    assert config.raw(QEMU, "default_memory") == (4096, tmp_path / "config.d/10-early.toml")


def test_an_array_is_replaced_not_appended(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, **{"50-map": '[hypervisor.qemu]\nnuma_mapping = ["0-1", "2-3"]\n'}
    )
    config = load_config(path)
    assert config.get(QEMU, "numa_mapping") == ["0-1", "2-3"]


def test_a_dropin_that_sets_one_key_leaves_the_rest(tmp_path: Path) -> None:
    path = write_config(tmp_path, **{"10-numa.toml": "[hypervisor.qemu]\nenable_numa = true\n"})
    config = load_config(path)
    assert config.raw(QEMU, "enable_numa") == (True, tmp_path / "config.d/10-numa.toml")
    assert config.raw(QEMU, "default_memory") == (2048, path)
    assert config.raw(QEMU, "path") == ("/usr/bin/qemu-system-x86_64", path)
    assert config.raw(RUNTIME, "sandbox_cgroup_only") == (True, path)
    assert config.setting(KEY_BY_LABEL["[hypervisor.qemu] enable_debug"]).is_default


def test_a_dropin_table_replacing_a_value_and_back(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        **{
            "10-odd.toml": 'hypervisor = "flat"\n',
            "20-back.toml": "[hypervisor.qemu]\ndefault_vcpus = 6\n",
        },
    )
    config = load_config(path)
    assert config.get(QEMU, "default_vcpus") == 6
    assert config.raw(QEMU, "path") == (None, None)


def test_a_broken_dropin_is_named_with_its_line(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        **{
            "10-ok.toml": "[runtime]\nenable_debug = true\n",
            "30-broken.toml": "[hypervisor.qemu]\nenable_numa = true\ndefault_vcpus = = 2\n",
        },
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(tmp_path / "config.d/30-broken.toml") in message
    assert "line 3" in message
    assert caught.value.path == str(tmp_path / "config.d/30-broken.toml")


def test_a_folder_in_config_d_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, **{"10-ok.toml": ""})
    (tmp_path / "config.d/20-folder").mkdir()
    with pytest.raises(ConfigError, match=r"20-folder: a drop-in must be a regular file"):
        load_config(path)


def test_missing_config_d_means_no_dropins(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    config = load_config(path)
    assert config.dropins == []
    assert config.get(QEMU, "numa_mapping") == ["0", "1", "2", "3"]


def test_find_config_order(tmp_path: Path) -> None:
    rust_runtime = tmp_path / SEARCH_PATHS[2]
    share = tmp_path / SEARCH_PATHS[1]
    for path in (rust_runtime, share):
        path.parent.mkdir(parents=True)
        path.write_text("")
    assert find_config(root=tmp_path, environ={}) == share
    assert find_config(root=tmp_path, environ={"KATA_CONF_FILE": str(rust_runtime)}) == rust_runtime
    assert find_config(rust_runtime, root=tmp_path, environ={}) == rust_runtime
    with pytest.raises(ConfigError, match="no Kata configuration found"):
        find_config(root=tmp_path / "empty", environ={})
    with pytest.raises(ConfigError, match="KATA_CONF_FILE"):
        find_config(root=tmp_path, environ={"KATA_CONF_FILE": str(tmp_path / "nope.toml")})


@pytest.fixture
def four_node_host(tmp_path: Path) -> Path:
    nodes = {i: NodeSpec(f"{2 * i}-{2 * i + 1}") for i in range(4)}
    return make_host(tmp_path / "host", nodes)


NUMA_ON = "[hypervisor.qemu]\nenable_numa = true\n"
STATIC = "[runtime]\nstatic_sandbox_resource_mgmt = true\n"


@pytest.mark.parametrize(
    ("dropins", "level", "needle"),
    [
        pytest.param(
            {"10.toml": NUMA_ON},
            "error",
            "needs [runtime] static_sandbox_resource_mgmt = true",
            id="numa-not-static",
        ),
        pytest.param(
            {"10.toml": NUMA_ON + 'numa_mapping = ["0", "1-x"]\n', "20.toml": STATIC},
            "error",
            "numa_mapping entry 1 ('1-x') is not a node list",
            id="bad-mapping-entry",
        ),
        pytest.param(
            {"10.toml": NUMA_ON + 'numa_mapping = ["0", "4-5"]\n', "20.toml": STATIC},
            "error",
            "names host node 4-5, which this host lacks",
            id="missing-node",
        ),
        pytest.param(
            {"10.toml": '[hypervisor.qemu]\nenable_numa = "yes"\n'},
            "error",
            'enable_numa = "yes" should be true or false',
            id="wrong-type",
        ),
        pytest.param(
            {"10.toml": "[hypervisor.qemu]\nenable_numa = false\n"},
            "warning",
            "numa_mapping is set but enable_numa is false",
            id="mapping-ignored",
        ),
        pytest.param(
            {"10.toml": NUMA_ON + "default_maxvcpus = 2\n", "20.toml": STATIC},
            "warning",
            "DefaultMaxVCPUs < NUMA node count",
            id="maxvcpus-below-nodes",
        ),
    ],
)
def test_check_config_problems(
    tmp_path: Path, four_node_host: Path, dropins: dict[str, str], level: str, needle: str
) -> None:
    config = load_config(write_config(tmp_path / "kata", **dropins))
    problems = check_config(config, read_topology(four_node_host))
    assert any(p.level == level and needle in p.message for p in problems), problems


def test_check_config_static_numa_is_clean(tmp_path: Path, four_node_host: Path) -> None:
    config = load_config(write_config(tmp_path / "kata", **{"10": NUMA_ON, "20": STATIC}))
    assert check_config(config, read_topology(four_node_host)) == []


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def plan_on_example_host(
    capsys: pytest.CaptureFixture[str], config: str, *options: str
) -> tuple[int, str, str]:
    """`kata-numa plan --kata-config CONFIG` on the bundled two-node host."""
    host = str(EXAMPLES / "hosts/two-node")
    return run_cli(capsys, "plan", "--kata-config", config, "--sysfs-root", host, *options)


def test_cli_check_config_error_exit(
    tmp_path: Path, four_node_host: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path / "kata", **{"10-numa.toml": NUMA_ON})
    code, out, _ = run_cli(capsys, "check-config", str(path), "--sysfs-root", str(four_node_host))
    assert code == 1
    assert "[hypervisor.qemu] enable_numa = true" in out and "config.d/10-numa.toml" in out
    assert "error: " in out and "static_sandbox_resource_mgmt" in out


def test_cli_check_config_syntax_error(
    tmp_path: Path, four_node_host: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path / "kata", base="[hypervisor.qemu\nenable_numa = true\n")
    code, _, err = run_cli(capsys, "check-config", str(path), "--sysfs-root", str(four_node_host))
    assert code == 2
    assert f"{path}: TOML syntax error" in err and "line 1" in err


def test_cli_check_config_example_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        capsys,
        "check-config",
        str(EXAMPLES / "kata/configuration-qemu.toml"),
        "--sysfs-root",
        str(EXAMPLES / "hosts/two-node"),
        "--json",
    )
    data = json.loads(out)
    settings = {s["key"]: s for s in data["settings"]}
    assert code == 0 and data["problems"] == []
    assert settings["numa_mapping"]["value"] == ["0", "1"]
    assert settings["numa_mapping"]["source"].endswith("config.d/10-numa.toml")
    assert settings["sandbox_cgroup_only"]["source"].endswith("configuration-qemu.toml")
    assert settings["enable_mem_prealloc"]["source"] is None


def test_example_config_drives_a_plan(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = plan_on_example_host(
        capsys, str(EXAMPLES / "kata/configuration-qemu.toml"), "--json"
    )
    data = json.loads(out)
    assert code == 0
    assert [(n["host_nodes"], n["vcpus"], n["memory_mib"]) for n in data["guest_nodes"]] == [
        ("0", "0-3", 4096),
        ("1", "4-7", 4096),
    ]
    assert any("mem-path=/dev/shm" in arg and "share=on" in arg for arg in data["qemu_args"])


# --- Bad values: check-config names them (exit 1), plan refuses them (exit 2) ---

BAD_VALUES = [
    pytest.param("default_vcpus = inf", "default_vcpus = inf", id="vcpus-inf"),
    pytest.param("default_vcpus = 1e300", "default_vcpus = 1e+300", id="vcpus-1e300"),
    pytest.param("default_vcpus = nan", "default_vcpus = nan", id="vcpus-nan"),
    pytest.param("default_vcpus = 300", "default_vcpus = 300", id="vcpus-over-q35"),
    pytest.param('enable_numa = "true"', 'enable_numa = "true"', id="numa-string"),
    pytest.param("numa_mapping = [0, 1]", "numa_mapping = [0, 1]", id="mapping-numbers"),
    pytest.param(
        "default_memory = 99999999999999999", "default_memory = 99999999999999999", id="memory"
    ),
]


@pytest.mark.parametrize(("line", "shown"), BAD_VALUES)
def test_check_config_names_bad_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, shown: str
) -> None:
    path = write_config(
        tmp_path / "kata", base="", **{"50-bad.toml": f"[hypervisor.qemu]\n{line}\n"}
    )
    dropin = tmp_path / "kata/config.d/50-bad.toml"
    code, out, _ = run_cli(
        capsys, "check-config", str(path), "--sysfs-root", str(EXAMPLES / "hosts/two-node")
    )
    assert code == 1, out
    assert f"error: {dropin}: [hypervisor.qemu] {shown} should be" in out
    setting = next(line for line in out.splitlines() if f"[hypervisor.qemu] {shown} " in line)
    assert setting.endswith("config.d/50-bad.toml (wrong: see problems)"), setting


@pytest.mark.parametrize(("line", "shown"), BAD_VALUES)
def test_plan_refuses_bad_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, shown: str
) -> None:
    path = write_config(
        tmp_path / "kata", base="", **{"50-bad.toml": f"[hypervisor.qemu]\n{line}\n"}
    )
    dropin = tmp_path / "kata/config.d/50-bad.toml"
    code, out, err = plan_on_example_host(capsys, str(path))
    assert (code, out) == (2, "")
    assert f"{dropin}: [hypervisor.qemu] {shown} should be" in err


def test_plan_warns_but_plans_when_numa_lacks_static_sizing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Kata's behaviour, not a value the plan reads wrongly: check-config's error, plan's
    warning."""
    path = write_config(tmp_path / "kata", **{"10.toml": NUMA_ON + 'numa_mapping = ["0", "1"]\n'})
    code, out, _ = plan_on_example_host(capsys, str(path), "--json")
    assert code == 0
    assert any("static_sandbox_resource_mgmt is false" in w for w in json.loads(out)["warnings"])


@pytest.mark.parametrize("command", ["check-config", "plan"])
def test_a_dropin_that_is_not_utf8_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    path = write_config(tmp_path / "kata", **{"50-bytes.toml": ""})
    dropin = tmp_path / "kata/config.d/50-bytes.toml"
    dropin.write_bytes(b'[hypervisor.qemu]\npath = "\xff\xfe"\n')
    option = [str(path)] if command == "check-config" else ["--kata-config", str(path)]
    code, out, err = run_cli(
        capsys, command, *option, "--sysfs-root", str(EXAMPLES / "hosts/two-node")
    )
    assert (code, out) == (2, "")
    assert f"{dropin}: not UTF-8 text" in err and "byte 0xff at offset 26" in err


def test_check_config_without_a_file_says_how_to_name_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KATA_CONF_FILE", raising=False)
    monkeypatch.setattr(
        "kata_numa.kataconfig.SEARCH_PATHS", ("nonexistent-kata-numa-test/configuration.toml",)
    )
    code, _, err = run_cli(capsys, "check-config", "--sysfs-root", str(EXAMPLES / "hosts/two-node"))
    assert code == 2
    assert "no Kata configuration found" in err
    assert "kata-numa check-config FILE" in err and "--kata-config" not in err


def test_default_vcpus_zero_starts_one_vcpu_as_kata_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dropin = "[hypervisor.qemu]\ndefault_vcpus = 0\n"
    path = write_config(tmp_path / "kata", base="", **{"50.toml": dropin})
    code, out, err = plan_on_example_host(capsys, str(path), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["smp"]["cpus"] == 1
    assert any("default_vcpus = 0" in d for d in data["decisions"])


def test_default_maxvcpus_over_qemus_limit_is_capped_as_kata_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dropin = "[hypervisor.qemu]\ndefault_vcpus = 2\ndefault_maxvcpus = 1000\n"
    path = write_config(tmp_path / "kata", base="", **{"50.toml": dropin})
    code, out, err = plan_on_example_host(capsys, str(path), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["smp"]["maxcpus"] == 288
    assert any("default_maxvcpus 1000" in d and "288" in d for d in data["decisions"])
