"""The host runner: builds on this machine only when it is the platform."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest

from builder.build import build_wheel
from builder.runners import (
    ORDINARY_CPU_SHARES,
    HostRunner,
    Limits,
    Mount,
    PlatformMismatch,
    host_mismatches,
)
from platforms import load_platforms
from tests.builder_helpers import make_c_extension_sdist, shared_local_index

PLATFORMS = load_platforms()
HERE = PLATFORMS["debian-12-py3.11-x86_64"]


def test_host_runner_refuses_another_release() -> None:
    other = PLATFORMS["ubuntu-22.04-py3.10-x86_64"]
    with pytest.raises(PlatformMismatch, match=r"cannot build for ubuntu-22.04-py3.10-x86_64"):
        HostRunner(other, "http://127.0.0.1:1/simple/")


def test_host_runner_refuses_another_arch_or_python(tmp_path: Path) -> None:
    os_release = tmp_path / "os-release"
    os_release.write_text('ID=debian\nVERSION_ID="12"\n')
    wrong_arch = dataclasses.replace(HERE, arch="aarch64")
    problems = host_mismatches(wrong_arch, os_release)
    assert any("architecture" in p and "aarch64" in p for p in problems)
    wrong_python = dataclasses.replace(HERE, python="2.1")
    assert any("python2.1" in p for p in host_mismatches(wrong_python, os_release))
    wrong_os = tmp_path / "other-release"
    wrong_os.write_text("ID=ubuntu\nVERSION_ID=24.04\n")
    assert any("ubuntu 24.04" in p for p in host_mismatches(HERE, wrong_os))


@pytest.fixture(scope="module")
def host_runner(tmp_path_factory: pytest.TempPathFactory) -> HostRunner:
    if problems := host_mismatches(HERE):
        pytest.skip(f"this machine is not {HERE.name}: {'; '.join(problems)}")
    index = shared_local_index()
    return HostRunner(HERE, index.url, work_dir=tmp_path_factory.mktemp("host-runner"))


def test_host_runner_maps_paths_and_passes_only_the_given_env(
    host_runner: HostRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WHEELFARM_TEST_SECRET", "do-not-leak")
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("payload")
    result = host_runner.run(
        "host",
        ["sh", "-c", "cat /work/data/in.txt; echo; echo $MARK; env | sort"],
        mounts=[Mount(data, "/work/data")],
        env={"MARK": "/work/data/x"},
        timeout=30,
    )
    assert result.ok, result.log
    lines = result.log.splitlines()
    assert lines[0] == "payload"
    assert lines[1] == f"{data}/x"
    assert "do-not-leak" not in result.log
    assert f"PATH={host_runner.tools_venv()}/bin:" in result.log


def test_host_runner_steps_yield_the_cpu(host_runner: HostRunner) -> None:
    """No cgroup on the host: a step with the lowest CPU weight runs at niceness 19."""
    low = host_runner.run("host", ["nice"], timeout=30)
    ordinary = host_runner.run(
        "host", ["nice"], limits=Limits(cpu_shares=ORDINARY_CPU_SHARES), timeout=30
    )
    assert (low.log.strip(), ordinary.log.strip()) == ("19", str(os.nice(0)))


def test_host_runner_time_limit(host_runner: HostRunner) -> None:
    start = time.monotonic()
    result = host_runner.run("host", ["sh", "-c", "sleep 60 & sleep 60"], timeout=1)
    assert result.timed_out and result.exit_code is None
    assert time.monotonic() - start < 10


def test_host_runner_builds_and_imports_a_c_extension(
    host_runner: HostRunner, tmp_path: Path
) -> None:
    sdist = make_c_extension_sdist(tmp_path, name="wf-host-cext")
    index = shared_local_index()
    result = build_wheel(HERE, sdist, index.url, tmp_path / "out", runner=host_runner, image="host")
    assert result.ok, result.log
    assert [w.name for w in result.wheels] == ["wf_host_cext-1.0-cp311-cp311-linux_x86_64.whl"]
    assert "imported wf_host_cext" in result.log
    assert "libc.so.6" in result.shared_libraries and result.os_packages == []
    assert not any(p.name.startswith("run-") for p in Path(host_runner._root).iterdir()), (
        "scratch folders are removed"
    )
    assert os.access(result.wheels[0], os.R_OK)
