"""Builds that misbehave on purpose are contained, and the worker goes on.

One real ``wheelfarm worker --runner podman`` takes, in turn, sdists that read the
environment, write outside their output folder, phone out, leave a symlink as their wheel,
fork without end, allocate without end and never finish, then a well-behaved one. The
platform's limits are lowered (768 MiB, 256 processes, 20 s) so the run is short.
setuptools runs ``setup.py`` several times per build, so each misbehaviour happens (and
is logged) more than once.
"""

from __future__ import annotations

import io
import secrets
import socket
import threading
import time
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import builder_helpers as bh
from tests import misbehaving_sdists as bad
from tests.conftest import ADMIN_TOKEN
from tests.farm_helpers import PLATFORM, Farm, running_containers, running_farm

LIMITS = {"timeout": 20, "memory": "768m", "pids": 256}
ORDER = (
    "wf-snoop",
    "wf-escape",
    "wf-phone",
    "wf-link",
    "wf-forkbomb",
    "wf-memhog",
    "wf-spin",
    "wf-after",
)


@dataclass
class Listener:
    """A TCP and a UDP port on every address of this machine, recording who reached them."""

    tcp: socket.socket = field(default_factory=socket.socket)
    udp: socket.socket = field(
        default_factory=lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    )
    reached: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tcp.bind(("0.0.0.0", 0))
        self.tcp.listen()
        self.udp.bind(("0.0.0.0", 0))
        threading.Thread(target=self._accept, daemon=True).start()
        threading.Thread(target=self._receive, daemon=True).start()

    @property
    def tcp_port(self) -> int:
        return int(self.tcp.getsockname()[1])

    @property
    def udp_port(self) -> int:
        return int(self.udp.getsockname()[1])

    def _accept(self) -> None:
        while True:
            try:
                connection, peer = self.tcp.accept()
            except OSError:
                return
            self.reached.append(f"tcp from {peer}")
            connection.close()

    def _receive(self) -> None:
        while True:
            try:
                _, peer = self.udp.recvfrom(1024)
            except OSError:
                return
            self.reached.append(f"udp from {peer}")

    def close(self) -> None:
        self.tcp.close()
        self.udp.close()


def this_machines_addresses() -> list[str]:
    """Loopback, and the address of the default route when there is one."""
    addresses = ["127.0.0.1"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))  # no packet is sent: it only picks a route
            address = probe.getsockname()[0]
        except OSError:
            address = ""
    if address and address not in addresses:
        addresses.append(address)
    return addresses


def wheel_contents(farm: Farm, project: str) -> bytes:
    """Every member of the project's one wheel on the platform's index, uncompressed."""
    files = farm.api("GET", f"/api/projects/{project}")["files"]
    (wheel,) = [f["filename"] for f in files if f["filename"].endswith(".whl")]
    url = f"{farm.server.index(PLATFORM)}{project}/"
    page = urllib.request.urlopen(url, timeout=30).read().decode()
    href = page.split(wheel, 1)[0].rsplit('href="', 1)[1] + wheel
    data = urllib.request.urlopen(urllib.parse.urljoin(url, href), timeout=30).read()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return b"".join(archive.read(name) for name in archive.namelist())


def lines(log: str, prefix: str) -> set[str]:
    """The distinct lines of ``log`` that start with ``prefix`` (pip indents them)."""
    return {line.strip() for line in log.splitlines() if line.strip().startswith(prefix)}


@dataclass
class SandboxRun:
    farm: Farm
    jobs: dict[str, dict]
    worker_alive: bool
    secrets: list[str]
    host_secret: Path
    host_drop: Path
    listener: Listener

    def log(self, project: str) -> str:
        return str(self.jobs[project]["log"])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxRun]:
    tmp = tmp_path_factory.mktemp("sandbox")
    sentinel = f"sentinel-{secrets.token_hex(8)}"
    host_secret = tmp / "host-secret.txt"  # what a build must not read
    host_secret.write_text(f"{sentinel}-file\n")
    host_drop = tmp / "drop"  # where a build must not write
    host_drop.mkdir(mode=0o777)
    host_drop.chmod(0o777)
    listener = Listener()
    dists = tmp / "dists"
    dists.mkdir()
    addresses = this_machines_addresses()
    sdists = [
        bad.make_snooping_sdist(dists, [str(host_secret), str(host_drop)]),
        bad.make_escaping_sdist(dists, [str(host_drop / "escaped"), str(host_secret)]),
        bad.make_phoning_sdist(
            dists,
            tcp=[(a, listener.tcp_port) for a in addresses],
            udp=[(a, listener.udp_port) for a in addresses],
        ),
        bh.make_pure_sdist(dists, "wf-link"),
        bad.make_fork_bomb_sdist(dists),
        bad.make_memory_hog_sdist(dists),
        bad.make_spinning_sdist(dists),
        bh.make_pure_sdist(dists, "wf-after"),
    ]
    with running_farm(tmp, sdists, LIMITS) as farm:
        # A build that leaves a link to a host file where its wheel should be.
        link = f'ln -s {host_secret} "$OUTPUT_DIR/wf_link-1.0-py3-none-any.whl"'
        farm.api("PUT", "/api/build-settings/wf-link", {"build_command": link})
        job_ids = {project: farm.request(project) for project in ORDER}
        worker = farm.worker("w-sandbox", env={"WHEELFARM_SANDBOX_SENTINEL": f"{sentinel}-env"})
        try:
            for job_id in job_ids.values():
                farm.wait(job_id, ("succeeded", "failed"), 300)
            alive = worker.poll() is None
        finally:
            worker.terminate()
            worker.wait(30)
        jobs = {project: farm.job(job_id) for project, job_id in job_ids.items()}
        yield SandboxRun(
            farm,
            jobs,
            alive,
            [farm.build_token, ADMIN_TOKEN, f"{sentinel}-env", f"{sentinel}-file"],
            host_secret,
            host_drop,
            listener,
        )
    listener.close()


def test_the_worker_survives_and_goes_on(run: SandboxRun) -> None:
    assert run.worker_alive
    after = run.jobs["wf-after"]
    assert after["state"] == "succeeded", after["log"][-2000:]
    assert after["worker"] == "w-sandbox" and after["attempts"] == 1
    assert all(job["worker"] == "w-sandbox" for job in run.jobs.values())
    for project in ORDER:  # no build's container is left behind
        assert project.replace("-", "_") not in running_containers()


def test_a_build_sees_no_token_and_no_host_environment(run: SandboxRun) -> None:
    job = run.jobs["wf-snoop"]
    assert job["state"] == "succeeded", job["log"][-2000:]
    log = run.log("wf-snoop")
    assert "SANDBOX snooping done" in log and "SANDBOX env PIP_INDEX_URL=" in log
    assert "SANDBOX /proc/1/cmdline" in log  # it did look at every process it could see
    assert f"SANDBOX blocked read {run.host_secret}" in log
    wheel = wheel_contents(run.farm, "wf-snoop")
    for secret in run.secrets:
        assert secret not in log
        assert secret.encode() not in wheel


def test_a_build_cannot_write_outside_its_output_folder(run: SandboxRun) -> None:
    job = run.jobs["wf-escape"]
    assert job["state"] == "succeeded", job["log"][-2000:]
    log = run.log("wf-escape")
    assert "SANDBOX writing done" in log
    # The host paths are under /tmp, which the container has as its own scratch tmpfs:
    # the build may write there, and the host never sees it.
    wrote = {line.split()[2] for line in lines(log, "SANDBOX WROTE")}
    assert wrote and all(path.startswith("/tmp/") for path in wrote), wrote
    for target in bad.ESCAPE_TARGETS:
        assert f"SANDBOX blocked write {target} " in log
    assert list(run.host_drop.iterdir()) == []
    assert "escaped" not in run.host_secret.read_text()


def test_a_build_reaches_the_index_and_nothing_else(run: SandboxRun) -> None:
    job = run.jobs["wf-phone"]
    assert job["state"] == "succeeded", job["log"][-2000:]
    log = run.log("wf-phone")
    assert "SANDBOX index answered 200" in log
    assert "SANDBOX CONNECTED" not in log and "SANDBOX RESOLVED" not in log
    # 127.0.0.1 is the container's own loopback: a datagram sent there goes nowhere else.
    sent = {line.split()[2] for line in lines(log, "SANDBOX SENT")}
    assert sent <= {"127.0.0.1"}, sent
    blocked = lines(log, "SANDBOX blocked connect")
    assert len(blocked) == len(this_machines_addresses()) + 2, blocked
    assert "Network is unreachable" in log
    time.sleep(0.5)  # a late packet would have arrived by now
    assert run.listener.reached == []


def test_a_wheel_that_is_a_symlink_is_refused(run: SandboxRun) -> None:
    job = run.jobs["wf-link"]
    assert job["state"] == "failed"
    assert "not a regular file" in job["error_summary"]
    page = urllib.request.urlopen(run.farm.server.index(PLATFORM) + "wf-link/", timeout=30)
    assert b".whl" not in page.read()


def test_a_fork_bomb_is_stopped_at_the_process_limit(run: SandboxRun) -> None:
    job = run.jobs["wf-forkbomb"]
    assert job["state"] == "failed"
    assert job["error_category"] == "resource_limit"
    assert "process limit (256)" in job["error_summary"]
    assert "SANDBOX forking" in run.log("wf-forkbomb")
    assert job["attempts"] == 1  # not retried: it would only do it again


def test_a_memory_hog_is_killed_at_the_memory_limit(run: SandboxRun) -> None:
    job = run.jobs["wf-memhog"]
    assert job["state"] == "failed"
    assert job["error_category"] == "resource_limit"
    assert "out of memory (limit 768m)" in job["error_summary"]
    assert "SANDBOX allocating" in run.log("wf-memhog")
    # The engine ran in a scratch folder: no `oom` file of conmon's in the worker's own.
    assert not (run.farm.logs / "oom").exists()


def test_an_endless_build_is_stopped_at_the_time_limit(run: SandboxRun) -> None:
    job = run.jobs["wf-spin"]
    assert job["state"] == "failed"
    assert job["error_category"] == "build_timeout"
    assert "SANDBOX spinning" in run.log("wf-spin")
    assert "time limit of 20 s" in job["error_summary"]
