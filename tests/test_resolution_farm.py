"""Resolution jobs for real: the server queues them, a Podman worker of the platform runs
pip's resolver in the platform's build container, with the projects' build settings.

The local upstream holds small test distributions: ``rapp`` (an sdist) needs ``rdep`` (a
pure wheel) and ``rneedy``, an sdist whose build backend imports ``rhelper``, a build
requirement whose newest release (2.0) is broken: its metadata can be prepared only with the
project's build constraint ``rhelper<2``. ``rslow`` and ``rforever`` take their time.
``rcext`` is a real C extension (setuptools) needing ``rdep`` and ``rpure`` (a pure
setuptools sdist); its setup.py refuses to run without ``cc`` on PATH, as psycopg2's needs
``pg_config``: its metadata can be prepared only where the compiler is.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import builder_helpers as bh
from tests.conftest import ADMIN_TOKEN, BIN, clean_client_env
from tests.factory import make_sdist, make_wheel
from tests.farm_helpers import PLATFORM, Farm, running_farm
from tests.warm_helpers import _BACKEND

RESOLUTION_TIMEOUT = 25


def _sdist(dists: Path, name: str, requires: list[str], build_requires: list[str], head: str):
    deps = ", ".join(json.dumps(r) for r in requires)
    pyproject = (
        "[build-system]\n"
        f"requires = {json.dumps(build_requires)}\n"
        'build-backend = "wf_test_backend"\n'
        'backend-path = ["."]\n\n'
        f'[project]\nname = "{name}"\nversion = "1.0"\ndependencies = [{deps}]\n'
    )
    files = {"pyproject.toml": pyproject, "wf_test_backend.py": head + _BACKEND}
    return make_sdist(dists, name, "1.0", requires=requires, files=files)


NEEDS_CC = """\
import shutil, sys
if shutil.which("cc") is None:
    sys.exit("rcext: no C compiler (cc) on PATH")
"""


def _cext_sdist(dists: Path) -> Path:
    files = bh.c_extension_files("rcext", setup_prelude=NEEDS_CC)
    pyproject = bh.PYPROJECT.format(name="rcext", version="1.0") + (
        'dependencies = ["rdep>=1", "rpure"]\n'
    )
    return bh.make_sdist(dists, "rcext", "1.0", files, pyproject=pyproject)


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    tmp = tmp_path_factory.mktemp("resolution")
    dists = tmp / "dists"
    dists.mkdir()
    files = [
        _sdist(dists, "rapp", ["rdep>=1", "rneedy"], [], ""),
        make_wheel(dists, "rdep", "1.0"),
        _sdist(dists, "rneedy", [], ["rhelper"], "import rhelper  # 2.0 raises\n"),
        make_wheel(dists, "rhelper", "1.0"),
        make_wheel(
            dists,
            "rhelper",
            "2.0",
            modules={"rhelper/__init__.py": "raise RuntimeError('rhelper 2.0 is broken')\n"},
        ),
        _sdist(dists, "rslow", [], [], "import time\ntime.sleep(8)\n"),
        _sdist(dists, "rforever", [], [], "import time\ntime.sleep(600)\n"),
        _cext_sdist(dists),
        bh.make_pure_sdist(dists, "rpure"),
    ]
    with running_farm(
        tmp, files, {}, 4, WHEELFARM_RESOLUTION_TIMEOUT=str(RESOLUTION_TIMEOUT)
    ) as farm:
        yield farm


def post(farm: Farm, body: object) -> tuple[int, dict]:  # type: ignore[type-arg]
    request = urllib.request.Request(
        farm.server.url + "/api/resolutions",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def resolve(farm: Farm, requirements: str, **more: str) -> dict:  # type: ignore[type-arg]
    status, body = post(farm, {"platform": PLATFORM, "requirements": requirements, **more})
    assert status == 200, body
    return body


def resolution_jobs(farm: Farm) -> list[dict]:  # type: ignore[type-arg]
    return [
        j
        for j in farm.api("GET", f"/api/builds?platform={PLATFORM}")["builds"]
        if j["kind"] == "resolve"
    ]


def run_worker(farm: Farm, name: str, job_id: int, seconds: float = 180) -> dict:  # type: ignore[type-arg]
    worker = farm.worker(name, "--kind", "resolve")
    try:
        return farm.wait(job_id, ("succeeded", "failed"), seconds)
    finally:
        worker.terminate()
        worker.wait(30)


def test_metadata_needs_the_build_setting_then_resolves_and_is_reused(farm: Farm) -> None:
    asked = resolve(farm, "rapp\n")
    job_id = asked["resolution"]["id"]
    assert asked["reused"] is False and asked["resolution"]["state"] == "queued"
    failed = run_worker(farm, "w-first", job_id)
    assert failed["state"] == "failed", failed["log"][-3000:]
    assert failed["error_category"] == "metadata_build_failed"
    assert "rneedy" in failed["error_summary"], failed["error_summary"]
    assert "rhelper 2.0 is broken" in failed["log"]

    farm.api("PUT", "/api/build-settings/rneedy", {"constraints": "rhelper<2\n"})
    again = resolve(farm, "rapp\n")
    assert again["resolution"]["id"] == job_id and again["reused"] is False  # asked again
    done = run_worker(farm, "w-second", job_id)
    assert done["state"] == "succeeded", done["log"][-3000:]
    assert done["kind"] == "resolve" and done["attempts"] == 1
    assert "rhelper<2" in done["log"] and "===== resolve" in done["log"]
    closure = {p["name"]: (p["version"], p["sdist"]) for p in done["result"]["closure"]}
    assert closure == {"rapp": ("1.0", True), "rdep": ("1.0", False), "rneedy": ("1.0", True)}
    # The sdist pins' builds are queued, as warm asked for them before.
    queued = {b["project"]: b["outcome"] for b in done["result"]["builds"]}
    assert set(queued) == {"rapp", "rneedy"} and set(queued.values()) <= {"queued", "exists"}
    builds = {j["project"] for j in farm.api("GET", "/api/builds?kind=build")["builds"]}
    assert {"rapp", "rneedy"} <= builds
    # Shown by the API with its inputs, and by the console.
    shown = farm.job(job_id)
    assert shown["requirements"] == "rapp" and shown["result"]["closure"]
    with urllib.request.urlopen(f"{farm.server.url}/console/builds/{job_id}") as page:
        html = page.read().decode()
    assert f"Resolution #{job_id}" in html and "rneedy" in html

    # The same inputs again: the stored closure, no new job.
    count = len(resolution_jobs(farm))
    reused = resolve(farm, "rapp\n")
    assert reused["reused"] is True and reused["resolution"]["id"] == job_id
    assert reused["resolution"]["result"]["closure"] == done["result"]["closure"]
    assert len(resolution_jobs(farm)) == count
    assert farm.job(job_id)["state"] == "succeeded"


def test_a_requirement_nothing_satisfies_does_not_resolve(farm: Farm) -> None:
    job_id = resolve(farm, "rdep==9.9\n")["resolution"]["id"]
    done = run_worker(farm, "w-nores", job_id)
    assert done["state"] == "failed" and done["error_category"] == "does_not_resolve"
    assert "rdep==9.9" in done["error_summary"], done["error_summary"]
    assert done["attempts"] == 1  # not a transient failure: no retry


def test_bad_inputs_are_refused_with_one_line(farm: Farm) -> None:
    count = len(resolution_jobs(farm))
    status, body = post(farm, {"platform": PLATFORM, "requirements": "rapp\nnot ok ===\n"})
    assert status == 400 and body["error"].startswith("requirements line 2:"), body
    assert "\n" not in body["error"]
    status, body = post(farm, {"platform": PLATFORM, "requirements": "-i https://x/\nrapp\n"})
    assert status == 400 and "only index" in body["error"]
    status, body = post(farm, {"platform": "no-such-platform", "requirements": "rapp\n"})
    assert status == 404, body
    huge = "".join(f"rapp{i % 10}\n" for i in range(60_000))  # ~360 KB > 256 KiB
    status, body = post(farm, {"platform": PLATFORM, "requirements": huge})
    assert status == 413 and "at most" in body["error"], body
    assert len(resolution_jobs(farm)) == count  # nothing stored


def test_a_resolution_that_takes_too_long_fails_as_such(farm: Farm) -> None:
    job_id = resolve(farm, "rforever\n")["resolution"]["id"]
    done = run_worker(farm, "w-timeout", job_id, RESOLUTION_TIMEOUT + 120)
    assert done["state"] == "failed" and done["error_category"] == "resolution_timeout"
    assert f"{RESOLUTION_TIMEOUT} s" in done["error_summary"]


def test_a_killed_worker_loses_its_resolution_to_another(farm: Farm) -> None:
    job_id = resolve(farm, "rslow\n")["resolution"]["id"]
    doomed = farm.worker("w-doomed-resolver", "--kind", "resolve")
    try:
        running = farm.wait(job_id, ("running",), 60)
        assert running["worker"] == "w-doomed-resolver"
        deadline = time.monotonic() + 60
        while "Collecting rslow" not in (live := farm.job(job_id))["log"]:
            assert time.monotonic() < deadline, live["log"]
            time.sleep(0.3)
    finally:
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait()
    done = run_worker(farm, "w-rescuing-resolver", job_id)
    assert done["state"] == "succeeded", done["log"][-3000:]
    assert done["worker"] == "w-rescuing-resolver" and done["attempts"] == 2
    assert [p["name"] for p in done["result"]["closure"]] == ["rslow"]


def cancel_queued_builds(farm: Farm) -> None:
    for job in farm.api("GET", "/api/builds?kind=build&state=queued&limit=1000")["builds"]:
        farm.api("POST", f"/api/builds/{job['id']}/cancel", {"reason": "not this test's"})


def warm(farm: Farm, *args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real ``wheelfarm warm --wait`` of a CI job; ``path``: its PATH."""
    env = clean_client_env(WHEELFARM_DATA_DIR=str(farm.logs / "unused"), COLUMNS="120")
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [
            str(BIN / "wheelfarm"),
            "warm",
            *args,
            "--platform",
            PLATFORM,
            "--wait",
            "--timeout",
            "400",
            "--poll-interval",
            "0.5",
            "--server",
            farm.server.url,
            "--token",
            farm.server.token("upload"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=480,
    )


def test_warm_from_a_caller_with_no_compiler_resolves_and_builds_on_the_worker(
    farm: Farm, tmp_path: Path
) -> None:
    # The caller's PATH: the wheelfarm entry point and python, nothing else.
    bare = tmp_path / "bin"
    bare.mkdir()
    for name in ("wheelfarm", "python"):
        (bare / name).symlink_to(BIN / name)
    for tool in ("cc", "gcc", "pg_config", "pip"):
        assert shutil.which(tool, path=str(bare)) is None
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("rcext==1.0\n")
    cancel_queued_builds(farm)  # the other tests' (rforever's takes 10 min), not this one's
    worker = farm.worker("w-warm-nocc")  # resolutions and builds
    try:
        done = warm(farm, "-r", str(requirements), "--json", path=str(bare))
    finally:
        worker.terminate()
        worker.wait(30)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["ok"] is True
    resolution = report["resolution"]
    assert resolution["worker"] == "w-warm-nocc" and resolution["reused"] is False
    entries = {d["project"]: d for d in report["distributions"]}
    assert {p: (d["version"], d["status"]) for p, d in entries.items()} == {
        "rcext": ("1.0", "built"),
        "rpure": ("1.0", "built"),
        "rdep": ("1.0", "has_wheel"),
    }
    assert entries["rcext"]["wheel"] == "rcext-1.0-cp311-cp311-linux_x86_64.whl"
    assert entries["rcext"]["built_without_compiled_code"] is False
    # The metadata that needs cc was prepared on the worker, in the build container.
    log = farm.job(resolution["job_id"])["log"]
    assert "Collecting rcext==1.0" in log and "===== resolve" in log
    build = farm.job(entries["rcext"]["job_id"])
    assert build["worker"] == "w-warm-nocc" and build["result"]["compiled"] is True

    # Again, as a CI log shows it: the stored closure, every wheel there, nothing queued.
    count = len(farm.api("GET", f"/api/builds?platform={PLATFORM}&limit=1000")["builds"])
    again = warm(farm, "-r", str(requirements), path=str(bare))
    assert again.returncode == 0, again.stdout + again.stderr
    out = again.stdout
    job_id = resolution["job_id"]
    assert f"resolution job {job_id}: the stored closure of these inputs" in out
    assert f"resolution job {job_id}: 3 distributions, the stored closure" in out
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^(r\w+) +1\.0 +(\w+)", out, re.M)}
    assert rows == {"rcext": "has_wheel", "rpure": "has_wheel", "rdep": "has_wheel"}
    assert len(farm.api("GET", f"/api/builds?platform={PLATFORM}&limit=1000")["builds"]) == count


def test_warm_names_a_resolution_that_fails_and_its_log(farm: Farm, tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("rdep==9.9\n")
    worker = farm.worker("w-warm-nores", "--kind", "resolve")
    try:
        done = warm(farm, "-r", str(requirements))
    finally:
        worker.terminate()
        worker.wait(30)
    assert done.returncode == 1, done.stdout + done.stderr
    err = done.stderr
    assert f"error: cannot resolve for {PLATFORM}:\ndoes_not_resolve: " in err, err
    assert "rdep==9.9" in err
    job_id = int(re.findall(r"console: \S+/console/builds/(\d+)", err)[-1])
    assert farm.job(job_id)["kind"] == "resolve"
    assert f"  api:     {farm.server.url}/api/builds/{job_id}" in err
