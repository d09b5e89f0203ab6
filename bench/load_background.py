"""What goes on during the load test besides the clients: uploads and builds.

* ``Uploader``: a CI pipeline publishing packages, a steady ``rate`` of files a second
  (a pure wheel of 20 KiB-1 MiB, then the sdist of the same release), each a multipart
  POST to the legacy upload API as twine sends it, with an ``upload`` token. Projects
  ``load-upload-NNNN``, never the storm's.
* ``BuildFeeder``: keeps the build queue fed with small pure-Python sdists (new projects
  ``load-build-NNNN`` on the local upstream), requested through ``POST /api/builds``, for a
  real ``wheelfarm worker`` (``start_build_worker``; Podman, or the host runner) to claim,
  build in a container, test-import and upload.

Both record every event with its time, so that the counts of a window (the storm, the soak)
can be read off afterwards; a failed upload or build is an error of the test.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from load_set import KB, MB, PLATFORM, make_sized_wheel, post_upload

from tests import builder_helpers as bh
from tests.conftest import ADMIN_TOKEN, BIN, LiveServer
from tests.factory import make_sdist
from tests.upstream_server import FakeUpstream

FINISHED = ("succeeded", "failed", "skipped", "cancelled")


@dataclass
class Event:
    started: float  # time.monotonic()
    ended: float
    ok: bool
    what: str


def in_window(events: list[Event], start: float, end: float) -> list[Event]:
    """Events that ended inside the window."""
    return [e for e in events if start <= e.ended < end]


class Uploader(threading.Thread):
    def __init__(self, server_url: str, token: str, rate: float, work: Path) -> None:
        super().__init__(name="uploader", daemon=True)
        self.server_url = server_url
        self.token = token
        self.rate = rate
        self.work = work
        self.events: list[Event] = []
        self.stop_event = threading.Event()
        self.random = random.Random(11)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(120)

    def wheel_size(self) -> int:
        """Log-normal around 150 KiB, kept between 20 KiB and 1 MiB."""
        return int(min(1 * MB, max(20 * KB, self.random.lognormvariate(11.9, 0.8))))

    def release_files(self, number: int, directory: Path) -> list[Path]:
        name, version = f"load-upload-{number // 5:04d}", f"1.{number % 5}"
        wheel = make_sized_wheel(directory, name, version, "py3-none-any", self.wheel_size())
        return [wheel, make_sdist(directory, name, version)]

    def run(self) -> None:
        if self.rate <= 0:
            return
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        with requests.Session() as session:
            for number in itertools.count():
                with tempfile.TemporaryDirectory(dir=self.work) as tmp:
                    for path in self.release_files(number, Path(tmp)):
                        next_at += interval
                        if self.stop_event.wait(max(0.0, next_at - time.monotonic())):
                            return
                        self.upload(session, path)

    def upload(self, session: requests.Session, path: Path) -> None:
        started = time.monotonic()
        try:
            response = post_upload(session, self.server_url, self.token, path)
            ok, what = response.status_code == 201, f"HTTP {response.status_code} {path.name}"
        except requests.RequestException as exc:
            ok, what = False, f"{path.name}: {exc}"
        self.events.append(Event(started, time.monotonic(), ok, what))


@dataclass
class Build:
    job_id: int
    project: str
    requested: float
    state: str = "queued"
    ended: float = 0.0
    build_seconds: float = 0.0
    error: str = ""


class BuildFeeder(threading.Thread):
    """Requests a build whenever fewer than ``ahead`` jobs wait in the queue."""

    def __init__(self, server_url: str, upstream: FakeUpstream, work: Path, ahead: int = 1):
        super().__init__(name="build-feeder", daemon=True)
        self.server_url = server_url
        self.upstream = upstream
        self.work = work
        self.ahead = ahead
        self.builds: list[Build] = []
        self.errors: list[str] = []
        self.stop_event = threading.Event()
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"

    def stop(self) -> None:
        self.stop_event.set()
        self.join(60)

    def events(self) -> list[Event]:
        return [
            Event(b.requested, b.ended, b.state == "succeeded", f"{b.state} {b.project}")
            for b in self.builds
            if b.state in FINISHED
        ]

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.session.request(method, self.server_url + path, json=body, timeout=60)
        response.raise_for_status()
        return response.json()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.poll()
                if sum(b.state == "queued" for b in self.builds) < self.ahead:
                    self.request_one()
            except (requests.RequestException, ValueError) as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self.stop_event.wait(1.0)

    def request_one(self) -> None:
        name = f"load-build-{len(self.builds):04d}"
        self.upstream.add(bh.make_pure_sdist(self.work, name))
        body = {"project": name, "version": "1.0", "platforms": [PLATFORM]}
        (outcome,) = self.api("POST", "/api/builds", body)["requests"]
        if outcome["outcome"] != "queued":
            raise ValueError(f"build of {name} not queued: {outcome}")
        self.builds.append(Build(int(outcome["job_id"]), name, time.monotonic()))

    def poll(self) -> None:
        for build in self.builds:
            if build.state in FINISHED:
                continue
            job = self.api("GET", f"/api/builds/{build.job_id}")
            build.state = job["state"]
            if build.state in FINISHED:
                build.ended = time.monotonic()
                build.build_seconds = float(job.get("build_seconds") or 0.0)
                build.error = str(job.get("error_summary") or "")


# ---------------------------------------------------------------------------------------
# The build worker


def choose_runner(wanted: str) -> tuple[str, str]:
    """(runner, why): podman when it works here, else host when the host is the platform."""
    if wanted in ("podman", "auto"):
        problem = bh.podman_problem()
        if problem is None:
            return "podman", "podman works here"
        if wanted == "podman":
            raise SystemExit(f"--runner podman: {problem}")
        wanted = "host"
        why = f"podman is not usable ({problem})"
    else:
        why = f"--runner {wanted}"
    if wanted == "host":
        from builder.runners import host_mismatches
        from platforms import load_platforms

        mismatches = host_mismatches(load_platforms()[PLATFORM])
        if mismatches:
            return "none", f"{why}; the host runner cannot build {PLATFORM}: {mismatches[0]}"
        return "host", why
    return "none", why


def tools_index_url() -> str:
    """The local index of build tools (for the build image, if it must be made)."""
    return bh.shared_local_index().url


def add_build_tools(upstream: FakeUpstream) -> None:
    """setuptools, wheel (and the image's tools) on the upstream: builds get them through us."""
    for wheel in sorted(bh.download_index_wheels().glob("*.whl")):
        upstream.add(wheel)


BUILD_CGROUP = "wheelfarm-builds"


def low_weight_cgroup() -> str | None:
    """The README's "Sharing a host" set-up, as an operator does it: a parent cgroup with the
    lowest CPU weight for the build containers. None where this process cannot make it."""
    root = Path("/sys/fs/cgroup")
    v1 = root / "cpu"
    folder, knob, weight = (
        (v1 / BUILD_CGROUP, "cpu.shares", "2")
        if v1.is_dir()
        else (root / BUILD_CGROUP, "cpu.weight", "1")
    )
    try:
        if not v1.is_dir() and "cpu" not in (root / "cgroup.subtree_control").read_text():
            (root / "cgroup.subtree_control").write_text("+cpu")
        folder.mkdir(exist_ok=True)
        (folder / knob).write_text(weight)
    except OSError:
        return None
    return f"/{BUILD_CGROUP}"


def start_build_worker(
    server: LiveServer, token: str, runner: str, log: Path, cgroup_parent: str | None = None
) -> subprocess.Popen[bytes]:
    env = {**server.env, "WHEELFARM_TOOLS_INDEX_URL": tools_index_url()}
    if cgroup_parent:
        env["WHEELFARM_BUILD_CGROUP_PARENT"] = cgroup_parent
    return subprocess.Popen(
        [
            str(BIN / "wheelfarm"),
            "worker",
            "--server",
            server.url,
            "--token",
            token,
            "--runner",
            runner,
            "--platform",
            PLATFORM,
            "--poll",
            "1",
            "--name",
            "load-worker",
        ],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its podman clients too can be stopped with it
    )


def stop_build_worker(process: subprocess.Popen[bytes], wait: float = 60) -> None:
    """SIGTERM (it finishes the build in hand), then SIGKILL to its process group."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(wait)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# ---------------------------------------------------------------------------------------
# All of it


@dataclass
class Background:
    """The uploader, and the build feeder and worker (None without builds)."""

    uploader: Uploader
    feeder: BuildFeeder | None
    worker: subprocess.Popen[bytes] | None
    runner: str
    runner_why: str

    def upload_events(self) -> list[Event]:
        return list(self.uploader.events)

    def build_events(self) -> list[Event]:
        return self.feeder.events() if self.feeder else []

    def failures(self) -> list[str]:
        failed = [f"upload {e.what}" for e in self.upload_events() if not e.ok]
        failed += [f"build {e.what}" for e in self.build_events() if not e.ok]
        if self.feeder:
            failed += [f"build requests: {e}" for e in self.feeder.errors]
        if self.worker is not None and self.worker.poll() is not None:
            failed.append(f"the build worker exited ({self.worker.returncode})")
        return failed


def start_background(
    server: LiveServer,
    upstream: FakeUpstream,
    upload_rate: float,
    wanted_runner: str,
    builds_ahead: int,
    work: Path,
) -> Background:
    """Start uploading, and building with a runner (see choose_runner) unless none."""
    uploader = Uploader(server.url, server.token("upload"), upload_rate, work)
    uploader.start()
    runner, why = choose_runner(wanted_runner)
    feeder, worker = None, None
    if runner != "none":
        cgroup = low_weight_cgroup() if runner != "host" else None
        why += f"; builds under {cgroup} (lowest CPU weight)" if cgroup else ""
        worker = start_build_worker(
            server, server.token("build"), runner, work / "worker.log", cgroup
        )
        (work / "sdists").mkdir()
        feeder = BuildFeeder(server.url, upstream, work / "sdists", builds_ahead)
        feeder.start()
    return Background(uploader, feeder, worker, runner, why)


def stop_background(background: Background) -> None:
    background.uploader.stop()
    if background.feeder:
        background.feeder.stop()
    if background.worker is not None:
        stop_build_worker(background.worker)
