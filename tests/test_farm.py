"""The builder farm end to end, for real: server, local upstream, workers, Podman.

Test sdists come from a local upstream (with setuptools and wheel for their builds), are
requested through the API, built by ``wheelfarm worker --runner podman`` in containers of
the Debian 12 platform image, imported in a second container, served, and installed by pip.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import builder_helpers as bh
from tests.client_helpers import fresh_venv, pip
from tests.conftest import BIN, clean_client_env
from tests.farm_helpers import PLATFORM, Farm, running_containers, running_farm

LEASE_SECONDS = 4
BUILD_TIMEOUT = 25


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    tmp = tmp_path_factory.mktemp("farm")
    dists = tmp / "dists"
    dists.mkdir()
    sdists = [
        bh.make_c_extension_sdist(dists, "wf-cext"),
        bh.make_pure_sdist(dists, "wf-pure"),
        bh.make_broken_sdist(dists, "wf-broken"),
        bh.make_ffi_sdist(dists, "wf-ffi"),
        bh.make_sleeping_sdist(dists, "wf-forever", seconds=600),
        bh.make_sleeping_sdist(dists, "wf-slow", seconds=3),  # runs 3 times
    ]
    # The platform as shipped, with a short build time limit for these tests.
    with running_farm(tmp, sdists, {"timeout": BUILD_TIMEOUT}, LEASE_SECONDS) as farm:
        yield farm


def test_c_extension_and_pure_sdists_are_built_served_and_installed(
    farm: Farm, tmp_path: Path
) -> None:
    jobs = {name: farm.request(name) for name in ("wf-cext", "wf-pure")}
    worker = farm.worker("w-main", "--max-jobs", "2")
    try:
        done = {name: farm.wait(job_id, ("succeeded", "failed")) for name, job_id in jobs.items()}
    finally:
        worker.terminate()
        worker.wait(30)
    cext, pure = done["wf-cext"], done["wf-pure"]
    assert cext["state"] == "succeeded", cext["log"][-3000:]
    assert cext["result"]["wheels"] == ["wf_cext-1.0-cp311-cp311-linux_x86_64.whl"]
    assert cext["worker"] == "w-main" and cext["image_id"]
    assert cext["build_seconds"] > 0 and cext["waited_seconds"] >= 0
    log = farm.api("GET", f"/api/builds/{jobs['wf-cext']}")["log"]
    assert "===== build" in log and "===== import" in log and "imported wf_cext" in log
    assert pure["state"] == "succeeded" and pure["result"]["wheels"] == [
        "wf_pure-1.0-py3-none-any.whl"
    ]
    # Served on the platform's index, installed by pip into a fresh venv, imported.
    venv = fresh_venv(tmp_path / "venv")
    pip(
        "install",
        "--only-binary",
        ":all:",
        "--index-url",
        farm.server.index(PLATFORM),
        "wf-cext",
        "wf-pure",
        python=venv.python,
    )
    out = venv.check_import("import wf_cext, wf_pure; print(wf_cext.add(2, 3), wf_pure.ANSWER)")
    assert out.split() == ["5", "42"]


def test_failures_are_categorised_and_logged(farm: Farm) -> None:
    broken = farm.request("wf-broken")
    forever = farm.request("wf-forever")
    worker = farm.worker("w-fail", "--max-jobs", "2")
    try:
        failed = farm.wait(broken, ("succeeded", "failed"))
        timed_out = farm.wait(forever, ("succeeded", "failed"), BUILD_TIMEOUT + 120)
    finally:
        worker.terminate()
        worker.wait(30)
    assert failed["state"] == "failed" and failed["error_category"] == "compiler_error"
    log = farm.job(broken)["log"]
    assert "error:" in log and "_speed.c" in log
    assert timed_out["state"] == "failed" and timed_out["error_category"] == "build_timeout"
    assert "time limit" in farm.job(forever)["log"]
    assert "wf_forever" not in running_containers()  # the timed-out build's container was removed
    # A failed build never blocks the index: the sdist is still there for pip.
    page = urllib.request.urlopen(farm.server.index(PLATFORM) + "wf-broken/").read().decode()
    assert "wf_broken-1.0.tar.gz" in page


def test_system_library_is_reported_with_its_os_package(farm: Farm, tmp_path: Path) -> None:
    farm.api("PUT", "/api/build-settings/wf-ffi", {"os_packages": ["libffi-dev"]})
    job_id = farm.request("wf-ffi")
    # A --work-dir that does not exist yet is made by the worker (it was a crash per job).
    work_dir = tmp_path / "not" / "yet"
    worker = farm.worker("w-ffi", "--max-jobs", "1", "--work-dir", str(work_dir))
    try:
        job = farm.wait(job_id, ("succeeded", "failed"))
    finally:
        worker.terminate()
        worker.wait(30)
    assert job["state"] == "succeeded", job["log"][-3000:]
    assert any(lib.startswith("libffi.so") for lib in job["result"]["shared_libraries"])
    assert any(pkg.startswith("libffi") for pkg in job["result"]["os_packages"])
    assert work_dir.is_dir()


def test_killed_worker_loses_its_job_to_another(farm: Farm) -> None:
    job_id = farm.request("wf-slow")
    doomed = farm.worker("w-doomed")
    try:
        running = farm.wait(job_id, ("running",), 60)
        assert running["worker"] == "w-doomed"
        # The log streams while the build runs: pip's output arrives before it ends.
        deadline = time.monotonic() + 30
        while "Processing /work/in/" not in (live := farm.job(job_id))["log"]:
            assert time.monotonic() < deadline, live["log"]
            time.sleep(0.3)
        assert live["state"] == "running" and "===== build\n" in live["log"]
    finally:
        os.killpg(doomed.pid, signal.SIGKILL)  # the worker and its podman client, at once
        doomed.wait()
    rescuer = farm.worker("w-rescuer", "--max-jobs", "1")
    try:
        done = farm.wait(job_id, ("succeeded", "failed"), 180)
    finally:
        rescuer.terminate()
        rescuer.wait(30)
    assert done["state"] == "succeeded", done["log"][-3000:]
    assert done["worker"] == "w-rescuer" and done["attempts"] == 2
    files = farm.api("GET", "/api/projects/wf-slow")["files"]
    assert [f["filename"] for f in files] == ["wf_slow-1.0-cp311-cp311-linux_x86_64.whl"]


def test_warm_waits_for_real_builds(farm: Farm, tmp_path: Path) -> None:
    """`wheelfarm warm --wait` on a requirements file, built by a real Podman worker."""
    farm.upstream.add(bh.make_c_extension_sdist(tmp_path, "wf-warmed"))
    farm.upstream.add(bh.make_fallback_sdist(tmp_path, "wf-fallback"))
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("wf-warmed==1.0\nwf-fallback==1.0\n")
    worker = farm.worker("w-warm")
    try:
        done = subprocess.run(
            [
                str(BIN / "wheelfarm"),
                "warm",
                "-r",
                str(requirements),
                "--platform",
                PLATFORM,
                "--server",
                farm.server.url,
                "--token",
                farm.server.token("upload"),
                "--wait",
                "--timeout",
                "240",
                "--json",
            ],
            env={**clean_client_env(), "WHEELFARM_DATA_DIR": str(tmp_path / "unused")},
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        worker.terminate()
        worker.wait(30)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    entries = {d["project"]: d for d in report["distributions"]}
    assert entries["wf-warmed"]["version"] == "1.0"
    assert entries["wf-warmed"]["built_without_compiled_code"] is False
    files = farm.api("GET", "/api/projects/wf-warmed")["files"]
    built = [f for f in files if f["filename"] == "wf_warmed-1.0-cp311-cp311-linux_x86_64.whl"]
    assert [f["origin"] for f in built] == ["build"]
    # A platform wheel with no compiled code is accepted, served and flagged everywhere.
    fallback = entries["wf-fallback"]
    assert fallback["status"] == "built" and fallback["built_without_compiled_code"] is True
    assert fallback["wheel"] == "wf_fallback-1.0-cp311-cp311-linux_x86_64.whl"
    job = farm.job(fallback["job_id"])
    assert job["result"]["compiled"] is False and job["result"]["os_packages"] == []
    assert "built without compiled code: the sdist has 1 compiled-language source" in job["log"]
    page = urllib.request.urlopen(f"{farm.server.url}/console/builds/{job['id']}").read()
    assert b'id="no-compiled-code"' in page and b"built without compiled code" in page
    project = urllib.request.urlopen(f"{farm.server.url}/console/projects/wf-fallback").read()
    assert b"built without compiled code" in project
