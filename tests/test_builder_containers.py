"""Real builds in real Podman containers, from the debootstrap-made Debian 12 base image.

Build dependencies come from a local Simple index on loopback (tests/builder_helpers.py),
never from the internet. The build image is made once and reused across runs; the image
with libffi-dev is derived once too (it needs Debian's mirror, through apt).
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import time
import uuid
import zipfile
from pathlib import Path

import pytest
from packaging.utils import parse_wheel_filename

from builder.build import BuildResult, BuildSettings, build_wheel
from builder.classify import FailureCategory
from builder.images import (
    DOCKERFILE_LABEL,
    ToolsIndex,
    build_image,
    dockerfile_digest,
    ensure_image,
    image_id,
    image_label,
    image_name,
)
from builder.runners import LOWEST_CPU_SHARES, ContainerRunner, Limits, Mount
from platforms import Platform, load_platforms
from tests.builder_helpers import (
    LocalIndex,
    c_extension_files,
    make_broken_sdist,
    make_c_extension_sdist,
    make_fallback_sdist,
    make_ffi_sdist,
    make_pure_sdist,
    make_sdist,
    make_sleeping_sdist,
    require_podman,
    shared_local_index,
)

PLATFORM = "debian-12-py3.11-x86_64"
TIMINGS: dict[str, float] = {}


@dataclasses.dataclass
class Env:
    platform: Platform
    index: LocalIndex
    image_id: str
    sdists: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    require_podman()
    index = shared_local_index()
    platform = load_platforms()[PLATFORM]
    start = time.monotonic()
    made = ensure_image(platform, tools_index=ToolsIndex(index.url))
    TIMINGS["ensure_image"] = time.monotonic() - start
    return Env(platform, index, made, tmp_path_factory.mktemp("sdists"))


def build(env: Env, sdist: Path, out: Path, platform: Platform | None = None, **kw) -> BuildResult:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    result = build_wheel(platform or env.platform, sdist, env.index.url, out, **kw)
    TIMINGS[sdist.name + (" manylinux" if platform and platform.manylinux else "")] = (
        time.monotonic() - start
    )
    return result


def containers_named(prefix: str) -> list[str]:
    found = subprocess.run(
        ["podman", "ps", "--all", "--format", "{{.Names}}", "--filter", f"name={prefix}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return found.stdout.split()


@pytest.fixture(scope="module")
def cext_result(env: Env, tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    sdist = make_c_extension_sdist(env.sdists)
    return build(env, sdist, tmp_path_factory.mktemp("cext-out"))


# --- images -----------------------------------------------------------------------------


def test_build_image_returns_the_engine_id(env: Env) -> None:
    name = image_name(env.platform)
    assert name == f"wheelfarm-build/{PLATFORM}:latest"
    assert image_id(name) == env.image_id
    assert image_label(name, DOCKERFILE_LABEL) == dockerfile_digest(env.platform)
    assert ensure_image(env.platform, tools_index=ToolsIndex(env.index.url)) == env.image_id
    # build_image always builds (with the engine's layer cache); under another tag here, so
    # the image the other tests use stays as it is.
    tag = f"wheelfarm-build/test-{PLATFORM}:latest"
    start = time.monotonic()
    built = build_image(env.platform, tools_index=ToolsIndex(env.index.url), tag=tag)
    TIMINGS["build_image"] = time.monotonic() - start
    try:
        assert built == image_id(tag)
        assert image_label(tag, DOCKERFILE_LABEL) == dockerfile_digest(env.platform)
    finally:
        subprocess.run(["podman", "rmi", tag], capture_output=True, check=False)


def test_build_image_has_the_tools_and_a_non_root_user(env: Env) -> None:
    result = ContainerRunner().run(
        image_name(env.platform),
        [
            "sh",
            "-c",
            "id -un; python3 -c 'import sys; print(sys.version_info[:2])'; "
            "/opt/buildtools/bin/python -m pip --version; auditwheel --version; "
            "python -m build --version; patchelf --version; gcc --version | head -1",
        ],
        timeout=60,
    )
    assert result.ok, result.log
    lines = result.log.splitlines()
    assert lines[0] == "builder"
    assert lines[1] == "(3, 11)"
    assert "/opt/buildtools/" in lines[2]
    assert "auditwheel" in result.log and "patchelf" in result.log and "gcc" in result.log


# --- the runner ---------------------------------------------------------------------------


def test_runner_passes_only_the_given_env_and_applies_limits(
    env: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WHEELFARM_TEST_SECRET", "do-not-leak")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello.txt").write_text("hi")
    result = ContainerRunner().run(
        image_name(env.platform),
        [
            "sh",
            "-c",
            "id -un; env; touch /usr/x 2>/dev/null || echo ROOT-READ-ONLY; "
            "touch /data/new 2>/dev/null || echo MOUNT-READ-ONLY; cat /data/hello.txt; echo; "
            "cat /sys/fs/cgroup/memory.max 2>/dev/null "
            "|| cat /sys/fs/cgroup/memory/memory.limit_in_bytes; "
            "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max; "
            "echo CPU-WEIGHT $(cat /sys/fs/cgroup/cpu.weight 2>/dev/null "
            "|| cat /sys/fs/cgroup/cpu/cpu.shares)",
        ],
        mounts=[Mount(shared, "/data")],
        env={"ONLY_THIS": "1"},
        limits=Limits(memory="256m", cpus=0.5, pids=64, cpu_shares=LOWEST_CPU_SHARES),
        timeout=60,
    )
    assert result.ok, result.log
    assert result.log.splitlines()[0] == "builder"
    assert "ONLY_THIS=1" in result.log
    assert "do-not-leak" not in result.log and "WHEELFARM_TEST_SECRET" not in result.log
    assert "ROOT-READ-ONLY" in result.log and "MOUNT-READ-ONLY" in result.log
    assert "hi" in result.log
    assert str(256 * 1024 * 1024) in result.log.split()
    assert "64" in result.log.split()
    # The lowest weight: cpu.shares 2 on cgroup v1, cpu.weight 1 on v2.
    assert re.search(r"^CPU-WEIGHT (2|1)$", result.log, re.M), result.log


def test_runner_puts_builds_under_a_low_weight_cgroup_that_yields(env: Env) -> None:
    """README, "Sharing a host": a parent cgroup with the lowest CPU weight, and the worker's
    --cgroup-parent; the build's processes, and the engine's, run at niceness 19."""
    name = f"wf-test-{uuid.uuid4().hex[:8]}"
    v1 = Path("/sys/fs/cgroup/cpu")
    parent = v1 / name if v1.is_dir() else Path("/sys/fs/cgroup") / name
    parent.mkdir()
    try:
        (parent / ("cpu.shares" if v1.is_dir() else "cpu.weight")).write_text("2\n")
        runner = ContainerRunner(cgroup_parent=f"/{name}")
        result = runner.run(
            image_name(env.platform),
            ["sh", "-c", "cat /proc/self/cgroup; echo NICE $(nice)"],
            timeout=60,
        )
        assert result.ok, result.log
        assert "NICE 19" in result.log
        if v1.is_dir():  # the host's cgroup namespace: the full path shows
            assert re.search(rf"^\d+:[\w,]*cpu[\w,]*:/{name}/libpod-\w+$", result.log, re.M)
        assert not list(parent.glob("libpod-*")), "the container's cgroup is gone"
    finally:  # the engine made the parent in every cgroup v1 hierarchy, with a conmon child
        made = [
            *Path("/sys/fs/cgroup").glob(f"*/{name}/*/"),
            *Path("/sys/fs/cgroup").glob(f"*/{name}/"),
        ]
        for folder in [*made, parent]:
            for _ in range(20):  # conmon may still be leaving its cgroup (EBUSY)
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.5)


def test_runner_network_none_cannot_reach_the_index(env: Env) -> None:
    probe = [
        "python3",
        "-c",
        f"import urllib.request as u; u.urlopen({env.index.url!r}, timeout=5)",
    ]
    runner = ContainerRunner()
    offline = runner.run(image_name(env.platform), probe, network="none", timeout=60)
    online = runner.run(image_name(env.platform), probe, network="host", timeout=60)
    assert not offline.ok and "URLError" in offline.log
    assert online.ok, online.log


def test_runner_kills_the_container_at_the_time_limit(env: Env) -> None:
    prefix = f"wf-test-{uuid.uuid4().hex[:8]}"
    runner = ContainerRunner(name_prefix=prefix)
    result = runner.run(image_name(env.platform), ["sleep", "300"], timeout=2)
    assert result.timed_out and result.exit_code is None and not result.ok
    assert result.duration < 30
    assert "time limit" in result.log
    assert containers_named(prefix) == []


def test_remove_makes_sure_a_running_container_is_gone(env: Env) -> None:
    name = f"wf-test-{uuid.uuid4().hex[:8]}"
    started = subprocess.run(
        ["podman", "run", "-d", "--rm", "--name", name, image_name(env.platform), "sleep", "300"],
        capture_output=True,
        text=True,
    )
    assert started.returncode == 0, started.stderr
    runner = ContainerRunner()
    assert runner.exists(name)
    assert runner.remove(name) is True
    assert not runner.exists(name) and containers_named(name) == []
    assert runner.remove(name) is True  # already gone: no error


# --- builds -------------------------------------------------------------------------------


def test_c_extension_builds_and_imports(env: Env, cext_result: BuildResult) -> None:
    result = cext_result
    assert result.ok, result.log
    assert result.category is None
    [wheel] = result.wheels
    assert wheel.name == "wf_cext-1.0-cp311-cp311-linux_x86_64.whl"
    assert wheel.exists() and env.platform.accepts_wheel(wheel.name)
    assert result.image == image_name(env.platform)
    assert result.image_id == image_id(image_name(env.platform))
    assert "imported wf_cext" in result.log
    assert result.os_packages == []  # libc only
    assert "libc.so.6" in result.shared_libraries and result.external_libraries == []
    assert {"build", "inspect", "import", "total"} <= set(result.timings)
    with zipfile.ZipFile(wheel) as zf:
        assert any(n.startswith("wf_cext/_speed.cpython-311") for n in zf.namelist())
        # SOURCE_DATE_EPOCH is the sdist's newest member time: 1_700_000_000.
        assert {i.date_time for i in zf.infolist()} == {(2023, 11, 14, 22, 13, 20)}


def test_pure_sdist_builds_a_pure_wheel(env: Env, tmp_path: Path) -> None:
    result = build(env, make_pure_sdist(env.sdists), tmp_path)
    assert result.ok, result.log
    assert [w.name for w in result.wheels] == ["wf_pure-1.0-py3-none-any.whl"]
    assert result.shared_libraries == {} and result.os_packages == []
    assert "imported wf_pure" in result.log


def test_build_past_its_time_limit_is_killed(env: Env, tmp_path: Path) -> None:
    prefix = f"wf-test-{uuid.uuid4().hex[:8]}"
    sdist = make_sleeping_sdist(env.sdists)
    result = build(
        env,
        sdist,
        tmp_path,
        settings=BuildSettings(timeout=10),
        runner=ContainerRunner(name_prefix=prefix),
    )
    assert not result.ok
    assert result.category == FailureCategory.BUILD_TIMEOUT
    assert result.wheels == [] and list(tmp_path.iterdir()) == []
    assert 10 <= result.timings["build"] < 40
    assert containers_named(prefix) == []


def test_compile_error_is_classified(env: Env, tmp_path: Path) -> None:
    result = build(env, make_broken_sdist(env.sdists), tmp_path)
    assert not result.ok
    assert result.category == FailureCategory.COMPILER_ERROR
    assert re.search(r"_speed\.c:\d+:\d+: error: expected .;. before", result.log)
    assert "_speed.c" in result.summary


def test_missing_header_then_extra_os_package(env: Env, tmp_path: Path) -> None:
    sdist = make_ffi_sdist(env.sdists)
    missing = build(env, sdist, tmp_path / "a")
    assert missing.category == FailureCategory.MISSING_SYSTEM_LIBRARY
    assert "ffi.h: No such file or directory" in missing.summary

    result = build(env, sdist, tmp_path / "b", settings=BuildSettings(apt_packages=["libffi-dev"]))
    assert result.ok, result.log
    assert result.image.startswith(f"wheelfarm-build/{PLATFORM}-extra:")
    assert result.image_id != image_id(image_name(env.platform))
    [wheel] = result.wheels
    assert (
        parse_wheel_filename(wheel.name)[3]
        == parse_wheel_filename("x-1-cp311-cp311-linux_x86_64.whl")[3]
    )
    # auditwheel reports libffi as an external library; dpkg names its Debian package.
    assert result.external_libraries == ["libffi.so.8"]
    assert result.shared_libraries["libffi.so.8"].endswith("/libffi.so.8")
    assert result.os_packages == ["libffi8"]
    assert "imported wf_ffi" in result.log
    assert result.audit is not None and "libffi.so.8" in result.audit["external_libs"]  # type: ignore[operator]


def test_manylinux_platform_repairs_the_wheel(env: Env, tmp_path: Path) -> None:
    platform = dataclasses.replace(env.platform, manylinux=True)
    sdist = make_ffi_sdist(env.sdists, name="wf-ffi-ml")
    result = build(
        env, sdist, tmp_path, platform, settings=BuildSettings(apt_packages=["libffi-dev"])
    )
    assert result.ok, result.log
    [wheel] = result.wheels
    tags = parse_wheel_filename(wheel.name)[3]
    assert {t.platform for t in tags} <= {
        p for p in env.platform.platform_tags() if p.startswith("manylinux")
    }
    assert env.platform.accepts_wheel(wheel.name)
    with zipfile.ZipFile(wheel) as zf:  # libffi grafted into the wheel
        assert any(n.startswith("wf_ffi_ml.libs/libffi") for n in zf.namelist())
    assert result.os_packages == ["libffi8"]  # what the unrepaired build needed
    assert "imported wf_ffi_ml" in result.log


def test_build_constraints_reach_the_isolated_build(env: Env, tmp_path: Path) -> None:
    sdist = make_c_extension_sdist(env.sdists, name="wf-constrained")
    result = build(
        env, sdist, tmp_path, settings=BuildSettings(build_constraints="setuptools<60\n")
    )
    assert not result.ok
    assert "setuptools<60" in result.log
    assert result.category == FailureCategory.NETWORK  # the index cannot satisfy it


def test_report_timings(env: Env) -> None:
    # Not a check: prints how long each build took (pytest -s, or the -ra summary on failure).
    print("\nbuilder timings (s):", {k: round(v, 1) for k, v in TIMINGS.items()})
    assert TIMINGS


# --- what the wheel holds -----------------------------------------------------------------


def test_extension_that_falls_back_to_python_gives_a_wheel_flagged_without_compiled_code(
    env: Env, tmp_path: Path
) -> None:
    result = build(env, make_fallback_sdist(env.sdists), tmp_path)
    assert result.ok, result.log
    [wheel] = result.wheels
    assert wheel.name == "wf_fallback-1.0-cp311-cp311-linux_x86_64.whl"
    assert result.compiled is False
    assert result.shared_libraries == {} and result.os_packages == []
    assert (
        "built without compiled code: the sdist has 1 compiled-language source file(s)"
        " (wf_fallback-1.0/src/_speed.c) but the wheel has no ELF file" in result.log
    )
    assert "imported wf_fallback" in result.log
    assert result.to_json()["compiled"] is False


def test_os_packages_are_those_of_the_directly_linked_libraries(env: Env, tmp_path: Path) -> None:
    # libsystemd (in every Debian base, no -dev package needed) loads half a dozen libraries
    # of its own; a runtime image needs only its package, as psycopg2's needs libpq5 and not
    # libpq's whole closure.
    files = c_extension_files(
        "wf_sd",
        func="booted",
        includes="extern int sd_booted(void);",
        body="    return PyLong_FromLong(sd_booted());",
        libraries=(":libsystemd.so.0",),
    )
    result = build(env, make_sdist(env.sdists, "wf-sd", "1.0", files), tmp_path)
    assert result.ok, result.log
    assert result.compiled is True
    assert result.os_packages == ["libsystemd0"]
    assert {"libsystemd0", "libcap2", "liblzma5", "libzstd1"} <= set(result.os_packages_closure)
    assert "libzstd.so.1" in result.shared_libraries  # the closure stays in the detail
    assert re.search(r"^needs libsystemd\.so\.0 .* from package libsystemd0$", result.log, re.M)
    assert re.search(r"^loads libzstd\.so\.1 ", result.log, re.M)
