"""Three platforms build side by side, for real: Debian 12 / CPython 3.11 and Debian 13 /
CPython 3.13 on x86_64, and Debian 12 / CPython 3.11 on aarch64 under qemu-user-static.

One tiny C-extension sdist is requested for all three; one Podman worker per platform
builds it, at once. Each wheel carries its platform's tags and an extension of its
platform's machine (the ELF header's e_machine), each index lists only its own wheel, pip
and uv install the right one (the aarch64 one inside an aarch64 container), a worker never
claims another platform's job, and a worker's wheel for the wrong platform is refused.
"""

from __future__ import annotations

import glob
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import requests
from elftools.elf.elffile import ELFFile

from tests import builder_helpers as bh
from tests.client_helpers import pip, uv
from tests.farm_helpers import PLATFORM, Farm, running_farm

PY313 = "debian-13-py3.13-x86_64"
ARM = "debian-12-py3.11-aarch64"
PLATFORMS = (PLATFORM, PY313, ARM)
ARM_BASE_IMAGE = "localhost/debian-12-py3.11-aarch64-base:latest"
ARM_BUILD_IMAGE = "wheelfarm-build/debian-12-py3.11-aarch64:latest"  # made by the build
# Under qemu a build (and its image's first pip install of the build tools) takes minutes.
ARM_SECONDS = 1500
EXPECTED = {
    PLATFORM: ("wf_tri-1.0-cp311-cp311-linux_x86_64.whl", "EM_X86_64"),
    PY313: ("wf_tri-1.0-cp313-cp313-linux_x86_64.whl", "EM_X86_64"),
    ARM: ("wf_tri-1.0-cp311-cp311-linux_aarch64.whl", "EM_AARCH64"),
}

pytestmark = pytest.mark.timeout(ARM_SECONDS + 600)


def require_platform_images() -> None:
    """The extra base images come from .ci/setup.d/25-platform-images.sh (skip outside CI)."""
    bh.require_podman()
    for image in ("localhost/debian-13-py3.13-base:latest", ARM_BASE_IMAGE):
        if subprocess.run(["podman", "image", "exists", image]).returncode != 0:
            problem = f"base image {image} is missing (.ci/setup.d/25-platform-images.sh)"
            if os.environ.get("CI"):
                pytest.fail(problem)
            pytest.skip(problem)


def python313() -> str:
    """A CPython 3.13 here: pyenv's, or one on PATH."""
    found = sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.13*/bin/python3.13")))
    found += [p for p in [shutil.which("python3.13")] if p and "shims" not in p]
    if not found:
        pytest.skip("no CPython 3.13 on this machine")
    return found[-1]


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    require_platform_images()
    tmp = tmp_path_factory.mktemp("platforms-farm")
    dists = tmp / "dists"
    dists.mkdir()
    sdists = [bh.make_c_extension_sdist(dists, "wf-tri"), bh.make_pure_sdist(dists, "wf-idle")]
    limits = {
        PLATFORM: {"timeout": 300},
        PY313: {"timeout": 300},
        ARM: {"timeout": ARM_SECONDS},
    }
    with running_farm(tmp, sdists, limits, 4, PLATFORMS) as farm:
        yield farm


def stop_workers(workers: Iterable[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        worker.terminate()
    for worker in workers:
        try:
            worker.wait(120)  # a worker finishes its current build first
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


def wheel_machine(data: bytes) -> str:
    """e_machine of the (one) extension module in a wheel, from its ELF header."""
    with zipfile.ZipFile(io.BytesIO(data)) as wheel:
        (so,) = [n for n in wheel.namelist() if n.endswith(".so")]
        return str(ELFFile(io.BytesIO(wheel.read(so)))["e_machine"])


def page_wheels(farm: Farm, platform: str, project: str) -> list[dict]:  # type: ignore[type-arg]
    request = urllib.request.Request(
        f"{farm.server.index(platform)}{project}/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        files = json.load(response)["files"]
    return [f for f in files if f["filename"].endswith(".whl")]


def test_three_platforms_build_side_by_side_and_stay_apart(farm: Farm, tmp_path: Path) -> None:
    jobs = {p: farm.request("wf-tri", platform=p) for p in PLATFORMS}
    # The x86_64 workers keep polling; the aarch64 one stops after its build.
    workers = {p: farm.worker(f"w-{p}", platform=p) for p in (PLATFORM, PY313)}
    workers[ARM] = farm.worker(f"w-{ARM}", "--max-jobs", "1", platform=ARM)
    try:
        started = time.monotonic()
        running = {p: farm.wait(jobs[p], ("running", "succeeded", "failed"), 120) for p in jobs}
        # All three were claimed at once, each by its own platform's worker.
        assert {p: j["worker"] for p, j in running.items()} == {p: f"w-{p}" for p in PLATFORMS}
        done = {p: farm.wait(jobs[p], ("succeeded", "failed"), 600) for p in (PLATFORM, PY313)}
        # While the emulated build runs, an aarch64 job waits: the x86_64 workers, idle and
        # polling, never take it.
        idle = farm.request("wf-idle", platform=ARM)
        time.sleep(3)  # ten polls of each idle worker
        assert farm.job(idle)["state"] == "queued" and farm.job(idle)["worker"] is None
        done[ARM] = farm.wait(jobs[ARM], ("succeeded", "failed"), ARM_SECONDS)
        arm_seconds = time.monotonic() - started
    finally:
        stop_workers(workers.values())
    for platform, job in done.items():
        assert job["state"] == "succeeded", (platform, farm.job(jobs[platform])["log"][-3000:])
        assert job["result"]["wheels"] == [EXPECTED[platform][0]], platform
        assert job["worker"] == f"w-{platform}"
    print(f"aarch64 build under qemu: {done[ARM]['build_seconds']} s ({arm_seconds:.0f} s wall)")
    # Its containers ran as their image's platform (linux/arm64): no engine warning of a
    # mismatch in the log.
    assert "does not match the expected platform" not in farm.job(jobs[ARM])["log"]
    listed = {w["name"]: w["platforms"] for w in farm.api("GET", "/api/workers")["workers"]}
    assert listed == {f"w-{p}": [p] for p in PLATFORMS}

    # Each index lists only its own wheel, whose extension is of its platform's machine.
    for platform, (filename, machine) in EXPECTED.items():
        (entry,) = page_wheels(farm, platform, "wf-tri")
        assert entry["filename"] == filename
        url = requests.compat.urljoin(f"{farm.server.index(platform)}wf-tri/", entry["url"])
        assert wheel_machine(requests.get(url, timeout=30).content) == machine

    # pip and uv on each x86_64 platform's URL install that platform's wheel.
    interpreters = {PLATFORM: (sys.executable, "311"), PY313: (python313(), "313")}
    for platform, (interpreter, version) in interpreters.items():
        venv = tmp_path / f"venv-{platform}"
        python = venv / "bin" / "python"
        subprocess.run([interpreter, "-m", "venv", "--without-pip", str(venv)], check=True)
        index = farm.server.index(platform)
        pip("install", "--only-binary", ":all:", "--index-url", index, "wf-tri", python=python)
        check = "import wf_tri, wf_tri._speed as s; print(wf_tri.add(2, 3), s.__file__)"
        out = subprocess.run([python, "-c", check], capture_output=True, text=True).stdout
        assert out.split()[0] == "5" and f"cpython-{version}-x86_64" in out, out
        pip("uninstall", "--yes", "wf-tri", python=python)
        uv("pip", "install", "--python", python, "--index-url", index, "wf-tri",
           cache_dir=tmp_path / "uv-cache")  # fmt: skip
        out = subprocess.run([python, "-c", check], capture_output=True, text=True).stdout
        assert out.split()[0] == "5" and f"cpython-{version}-x86_64" in out, out

    # uv resolves for aarch64 too, picking the aarch64 wheel ...
    target = tmp_path / "uv-aarch64"
    uv("pip", "install", "--target", target, "--python-platform", "aarch64-unknown-linux-gnu",
       "--python-version", "3.11", "--index-url", farm.server.index(ARM), "wf-tri",
       cache_dir=tmp_path / "uv-cache")  # fmt: skip
    (so,) = target.glob("wf_tri/_speed*.so")
    assert str(ELFFile(so.open("rb"))["e_machine"]) == "EM_AARCH64"
    # ... and pip inside an aarch64 container installs and imports it. (The build image's
    # pip: Debian 12's own pip 23.0 fails on PEP 691 pages whose metadata hashes are a dict.)
    inside = subprocess.run(
        ["podman", "run", "--rm", "--arch", "arm64", "--network=host", ARM_BUILD_IMAGE, "sh", "-c",
         "python3 -m venv --without-pip /tmp/v && "
         "/opt/buildtools/bin/pip --python /tmp/v/bin/python"
         f" install -q --no-cache-dir --only-binary :all: --index-url {farm.server.index(ARM)} "
         "wf-tri && /tmp/v/bin/python -c "
         "'import platform, wf_tri; print(platform.machine(), wf_tri.add(2, 3))'"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert inside.returncode == 0, inside.stderr[-3000:]
    assert inside.stdout.split() == ["aarch64", "5"]

    # A worker that uploads another platform's wheel for its job is refused; nothing stored.
    x86_wheel = tmp_path / EXPECTED[PLATFORM][0]
    (entry,) = page_wheels(farm, PLATFORM, "wf-tri")
    x86_wheel.write_bytes(
        requests.get(
            requests.compat.urljoin(f"{farm.server.index(PLATFORM)}wf-tri/", entry["url"]),
            timeout=30,
        ).content
    )
    farm.api("POST", f"/api/builds/{idle}/cancel", {"reason": "never built"})
    farm.api("POST", f"/api/builds/{jobs[ARM]}/rebuild")  # wf-tri for aarch64, once more
    auth = {"Authorization": f"Bearer {farm.build_token}"}
    claim = requests.post(
        f"{farm.server.url}/api/worker/claim",
        json={"worker": "rogue", "platforms": [ARM]},
        headers=auth,
        timeout=30,
    )
    assert claim.status_code == 200 and claim.json()["id"] == jobs[ARM]
    lease = claim.json()["lease"]
    with x86_wheel.open("rb") as fh:
        refused = requests.post(
            f"{farm.server.url}/api/worker/jobs/{jobs[ARM]}/wheels",
            data={"lease": lease},
            files={"content": (x86_wheel.name, fh, "application/zip")},
            headers=auth,
            timeout=30,
        )
    assert refused.status_code == 400, refused.text
    assert f"cannot be installed on platform {ARM}" in refused.text
    assert [w["filename"] for w in page_wheels(farm, ARM, "wf-tri")] == [EXPECTED[ARM][0]]
    assert page_wheels(farm, ARM, "wf-idle") == []
    farm.api("POST", f"/api/builds/{jobs[ARM]}/cancel", {"reason": "test over"})
