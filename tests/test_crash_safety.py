"""Crash safety: the server SIGKILLed under a stream of uploads, workers SIGKILLed mid-build.

1. ``wheelfarm serve`` (the gunicorn master and its workers, one process group) is killed at
   a random moment while several uploaders post wheels and sdists, started again on the
   same data folder, and so on, ``SERVER_CYCLES`` times. Then every file any platform's
   pages list downloads with the sha256 the page gives (and its ``.metadata`` with the
   ``data-core-metadata`` hash), every upload that was answered 2xx is listed, nothing is
   listed that was not uploaded whole, and every blob in storage holds the bytes its key
   names. Blobs that no file lists (written just before a kill, their row never committed)
   are allowed: they are counted, not failed. So are ``.tmp-*`` files of interrupted blob
   writes and upload scratch folders: neither is ever a blob key.
2. Build workers (tests/fault_helpers.py ``CrashWorker``: the tests' HTTP worker speaking the
   real protocol) are killed at random moments while they claim, build, upload wheels and
   finish, with one-second leases. A job is spared only on its last attempt (a third lost
   worker fails a job by design, see index_server/jobs.py). Then a surviving worker drains
   the queue: every job has succeeded, once, with one wheel listed for it.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import signal
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urldefrag, urljoin

import pytest
import requests
from sqlalchemy import select

from index_server import jobs
from index_server.app import create_app
from index_server.auth import create_token
from index_server.config import Settings
from index_server.db.engine import make_engine
from index_server.db.schema import audit_events, build_jobs, files
from index_server.services import build_services
from tests.conftest import ADMIN_TOKEN, LiveServer, start_server, stop_server
from tests.factory import make_sdist, make_wheel
from tests.fault_helpers import (
    CrashWorker,
    KillableServer,
    WorkerZygote,
    killable_server,
    page_links,
    scan_blobs,
)

PLATFORM = "debian-12-py3.11-x86_64"
SERVER_CYCLES = 50
UPLOADERS = 4
PROJECTS = ("crash-alpha", "crash-beta", "crash-gamma")
WORKER_KILLS = 50  # kills of a worker that holds a job
BUILD_JOBS = 100
LEASE_SECONDS = 3
KILL_WITHIN = 0.2  # seconds after a worker claims a job; a job takes about 0.1-0.2 s
SEED = int(os.environ.get("WHEELFARM_CRASH_SEED", "0")) or random.randrange(1, 2**31)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _report(title: str, **numbers: object) -> None:
    """One line of numbers, shown with ``pytest -s`` (and in the log of a failure)."""
    print(f"\n[{title}] seed={SEED} " + " ".join(f"{k}={v}" for k, v in numbers.items()))


# --- 1. the server killed under uploads -----------------------------------------------------


@dataclass(frozen=True)
class Dist:
    filename: str
    path: Path
    sha256: str
    metadata_sha256: str | None  # a wheel's METADATA
    binary: bool  # a platform wheel: listed on PLATFORM only; else on every platform


def _make_dist(directory: Path, rng: random.Random, project: str, version: str, kind: int) -> Dist:
    # Random payloads (up to ~150 KB once compressed): kills often land in a blob's write.
    payload = rng.randbytes(rng.randrange(0, 150_000)).hex()
    module = project.replace("-", "_")
    if kind == 0:
        path = make_sdist(directory, project, version, files={"payload.txt": payload})
        metadata_sha256 = None
    else:
        tag = "py3-none-any" if kind == 1 else "cp311-cp311-linux_x86_64"
        modules = {f"{module}/__init__.py": "", f"{module}/payload.py": f"DATA = {payload!r}\n"}
        path = make_wheel(directory, project, version, tag=tag, modules=modules)
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            metadata_sha256 = hashlib.sha256(archive.read(name)).hexdigest()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Dist(path.name, path, digest, metadata_sha256, kind == 2)


@dataclass
class Uploader:
    """Posts new distributions (and retries unanswered ones) while ``up`` is set."""

    number: int
    server: KillableServer
    token: str
    directory: Path
    up: threading.Event
    stop: threading.Event
    rng: random.Random
    sent: dict[str, Dist] = field(default_factory=dict)
    acked: dict[str, int] = field(default_factory=dict)  # filename -> first 2xx status
    unanswered: list[Dist] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    error: BaseException | None = None
    retry_first: bool = False  # at the end: every unanswered upload again, before new ones

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _run(self) -> None:
        made = 0
        self.directory.mkdir(parents=True)
        while not self.stop.is_set():
            if not self.up.wait(0.05):
                continue
            if self.unanswered and (self.retry_first or self.rng.random() < 0.3):
                dist = self.unanswered.pop(0)  # the same file again, as a client retries
            else:
                made += 1
                project = PROJECTS[(self.number + made) % len(PROJECTS)]
                dist = _make_dist(
                    self.directory, self.rng, project, f"{self.number}.{made}", made % 3
                )
            self.sent[dist.filename] = dist
            self._post(dist)
            self.stop.wait(self.rng.uniform(0.0, 0.1))  # a steady stream, not a flood

    def _post(self, dist: Dist) -> None:
        name, version = dist.filename.split("-")[0], dist.filename.split("-")[1]
        version = version.removesuffix(".tar.gz")
        try:
            with dist.path.open("rb") as fh:
                response = requests.post(
                    f"{self.server.url}/{PLATFORM}/legacy/",
                    data={
                        ":action": "file_upload",
                        "name": name,
                        "version": version,
                        "sha256_digest": dist.sha256,
                    },
                    files={"content": (dist.filename, fh)},
                    headers=_auth(self.token),
                    timeout=30,
                )
        except requests.RequestException:
            self.answers["no answer"] += 1
            self.unanswered.append(dist)
            return
        self.answers[str(response.status_code)] += 1
        if response.status_code in (200, 201) and response.json()["sha256"] == dist.sha256:
            self.acked.setdefault(dist.filename, response.status_code)
        else:
            self.unexpected.append(f"{dist.filename}: {response.status_code} {response.text}")


def _get(session: requests.Session, url: str) -> requests.Response:
    response = session.get(url, timeout=30)
    assert response.status_code == 200, f"GET {url}: {response.status_code} {response.text}"
    return response


def _check_link(session: requests.Session, page_url: str, link: tuple) -> tuple[str, str]:  # type: ignore[type-arg]
    """Download one listed file (and its metadata); (filename, sha256) as listed."""
    href, attrs, text = link
    url, fragment = urldefrag(urljoin(page_url, href))
    algo, _, listed_sha = fragment.partition("=")
    assert algo == "sha256", f"{text}: no sha256 in {href}"
    data = _get(session, url).content
    assert hashlib.sha256(data).hexdigest() == listed_sha, f"{url} does not match its sha256"
    core = attrs.get("data-core-metadata")
    if core and core != "true":
        algo, _, metadata_sha = core.partition("=")
        metadata = _get(session, url + ".metadata").content
        assert hashlib.sha256(metadata).hexdigest() == metadata_sha, f"{url}.metadata"
    return text, listed_sha


def _listed(server_url: str) -> dict[str, dict[str, tuple[str, str | None]]]:
    """Every platform's pages, every link downloaded and checked: platform -> filename ->
    (sha256, data-core-metadata)."""
    platforms = [p["name"] for p in requests.get(f"{server_url}/api/platforms").json()["platforms"]]
    listed: dict[str, dict[str, tuple[str, str | None]]] = {}
    local = threading.local()

    def session() -> requests.Session:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return local.session  # type: ignore[no-any-return]

    work = []
    for platform in platforms:
        listed[platform] = {}
        root = f"{server_url}/{platform}/simple/"
        for _href, _attrs, project in page_links(_get(session(), root).text):
            page_url = f"{root}{project}/"
            for link in page_links(_get(session(), page_url).text):
                core = link[1].get("data-core-metadata")
                assert link[2] not in listed[platform], f"{link[2]} listed twice on {platform}"
                listed[platform][link[2]] = (urldefrag(link[0])[1].partition("=")[2], core)
                work.append((page_url, link))
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda item: _check_link(session(), *item), work))
    return listed


def _engine_for(data_dir: Path):  # type: ignore[no-untyped-def]
    return make_engine(Settings(data_dir=data_dir).resolved_database_url)


def test_server_killed_under_uploads_keeps_every_acknowledged_file_whole(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    rng = random.Random(SEED)
    server = killable_server(tmp_path / "data", tmp_path / "server.log")
    server.start()
    up, stop = threading.Event(), threading.Event()
    uploaders: list[Uploader] = []
    threads: list[threading.Thread] = []
    try:
        created = requests.post(
            f"{server.url}/api/tokens",
            json={"scope": "upload", "name": "crash"},
            headers=_auth(ADMIN_TOKEN),
            timeout=10,
        )
        assert created.status_code == 201, created.text
        token = created.json()["token"]
        for number in range(UPLOADERS):
            uploader = Uploader(
                number,
                server,
                token,
                tmp_path / f"dists-{number}",
                up,
                stop,
                random.Random(rng.random()),
            )
            uploaders.append(uploader)
            threads.append(threading.Thread(target=uploader.run, daemon=True))
        for thread in threads:
            thread.start()
        for cycle in range(SERVER_CYCLES):
            if cycle:
                server.start()
            up.set()
            time.sleep(rng.uniform(0.3, 0.8))
            up.clear()
            server.kill()
        kill_phase = time.monotonic() - started
        server.start()  # the last start: the uploads that were cut short get a retry
        for uploader in uploaders:
            uploader.retry_first = True
        up.set()
        deadline = time.monotonic() + 10
        while any(u.unanswered for u in uploaders) and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        for thread in threads:
            thread.join(30)
        up.clear()
        for uploader in uploaders:
            assert uploader.error is None, repr(uploader.error)
            assert uploader.unexpected == [], uploader.unexpected[:5]

        sent = {name: d for u in uploaders for name, d in u.sent.items()}
        acked = {name: sent[name] for u in uploaders for name in u.acked}
        verify_started = time.monotonic()
        listed = _listed(server.url)
        download_seconds = time.monotonic() - verify_started
        for platform, names in listed.items():
            for name, (sha256, core) in names.items():
                assert name in sent, f"{name} on {platform} was never uploaded"
                dist = sent[name]
                assert sha256 == dist.sha256, f"{name} on {platform} lists another sha256"
                if dist.metadata_sha256:
                    assert core == f"sha256={dist.metadata_sha256}", name
                if dist.binary:
                    assert platform == PLATFORM, f"{name} (a {PLATFORM} wheel) on {platform}"
        for name, dist in acked.items():
            platforms = [PLATFORM] if dist.binary else list(listed)
            for platform in platforms:
                assert name in listed[platform], f"acknowledged {name} missing on {platform}"

        data_dir = server.data_dir
        scan = scan_blobs(data_dir / "files")
        assert scan.bad == [], scan.bad[:5]
        engine = _engine_for(data_dir)
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    select(files.c.filename, files.c.sha256, files.c.size, files.c.metadata_sha256)
                ).all()
        finally:
            engine.dispose()
        referenced = set()
        for row in rows:
            assert scan.blobs.get(row.sha256) == row.size, f"{row.filename}: blob missing or cut"
            referenced.add(row.sha256)
            if row.metadata_sha256:
                assert row.metadata_sha256 in scan.blobs, f"{row.filename}: metadata missing"
                referenced.add(row.metadata_sha256)
        assert len(rows) == len(listed[PLATFORM]), "a recorded file is not listed"
        orphans = set(scan.blobs) - referenced
        answers = sum((u.answers for u in uploaders), Counter())
        _report(
            "server kills",
            cycles=SERVER_CYCLES,
            kills=SERVER_CYCLES,
            starts=server.starts,
            uploads_sent=sum(answers.values()),
            answers=dict(answers),
            distinct_files=len(sent),
            acknowledged=len(acked),
            recorded=len(rows),
            listed_links=sum(len(n) for n in listed.values()),
            orphan_blobs=len(orphans),
            tmp_files=len(scan.temp_files),
            upload_scratch_dirs=len(list(data_dir.glob("upload-*"))),
            kill_phase_seconds=round(kill_phase, 1),
            start_seconds=round(server.start_seconds, 1),
            kill_seconds=round(server.kill_seconds, 1),
            download_seconds=round(download_seconds, 1),
            seconds=round(time.monotonic() - started, 1),
        )
        assert len(acked) > SERVER_CYCLES, "too few uploads were answered to judge"
    finally:
        stop.set()
        up.set()
        for thread in threads:
            thread.join(30)
        server.stop()


# --- 2. workers killed during builds --------------------------------------------------------


@dataclass
class Life:
    """One worker process, from its fork to its kill."""

    pid: int
    progress: Path
    kill_at: float | None = None
    spared_job: str | None = None

    def lines(self) -> list[str]:
        return self.progress.read_text().splitlines() if self.progress.exists() else []


PHASES = {
    "ready": "before its first claim",
    "claim": "claiming",
    "idle": "polling an empty queue",
    "claimed": "claimed (heartbeat, log)",
    "build": "building (page, sdist download, wheel)",
    "upload": "uploading the wheel",
    "uploaded": "after the upload (log)",
    "finish": "reporting the result",
    "finished": "between jobs",
}
HOLDS_A_JOB = {"claimed", "build", "upload", "uploaded", "finish"}


def _current_job(lines: list[str]) -> tuple[str, int] | None:
    """The job the worker holds (id, attempt), from its progress lines."""
    held: tuple[str, int] | None = None
    for line in lines:
        words = line.split()
        if words[0] == "claimed":
            held = (words[1], int(words[2]))
        elif words[0] == "finished":
            held = None
    return held


@pytest.fixture
def build_server(tmp_path: Path) -> Iterator[LiveServer]:
    # A killed worker's job comes back after the lease; a live worker beats every 0.25 s, so
    # 3 s outlasts a stall of the machine (CI runs this beside other tests): only a killed
    # worker loses its lease, never a slow one on its job's last attempt.
    server = start_server(
        tmp_path / "data",
        tmp_path / "server.log",
        WHEELFARM_BUILD_LEASE_SECONDS=str(LEASE_SECONDS),
    )
    yield server
    stop_server(server)


def test_workers_killed_mid_build_every_job_succeeds_once(
    build_server: LiveServer, tmp_path: Path
) -> None:
    started = time.monotonic()
    rng = random.Random(SEED + 1)
    server = build_server
    upload_token, build_token = server.token("upload"), server.token("build")
    sdists = tmp_path / "sdists"
    sdists.mkdir()
    uploads = requests.Session()
    uploads.headers.update(_auth(upload_token))
    projects = [f"killjob-{n:03d}" for n in range(BUILD_JOBS)]
    for project in projects:
        sdist = make_sdist(sdists, project, "1.0")
        with sdist.open("rb") as fh:
            response = uploads.post(
                f"{server.url}/{PLATFORM}/legacy/",
                data={"sha256_digest": hashlib.sha256(sdist.read_bytes()).hexdigest()},
                files={"content": (sdist.name, fh)},
                timeout=30,
            )
        assert response.status_code == 201, response.text
        response = uploads.post(
            f"{server.url}/api/builds",
            json={"project": project, "version": "1.0", "platforms": [PLATFORM]},
            timeout=30,
        )
        assert response.json()["requests"][0]["outcome"] == "queued", response.text

    progress_dir = tmp_path / "progress"
    progress_dir.mkdir()
    zygote = WorkerZygote(server.url, build_token, PLATFORM, tmp_path / "work")
    phases: Counter[str] = Counter()
    spared = lives_count = 0
    lives: list[Life] = []
    all_lives: list[Life] = []
    # Killed jobs come back only when their 3 s lease ends: on a busy CI machine 60 s was
    # once 1 kill short (49 mid-job), so the kill phase may take up to 2 minutes.
    deadline = time.monotonic() + 120
    try:
        while sum(phases[p] for p in HOLDS_A_JOB) < WORKER_KILLS:
            assert time.monotonic() < deadline, f"too few kills mid-job: {dict(phases)}"
            while len(lives) < 2:
                lives_count += 1
                progress = progress_dir / f"life-{lives_count}"
                life = Life(zygote.spawn(f"crash-worker-{lives_count}", progress), progress)
                lives.append(life)
                all_lives.append(life)
            now = time.monotonic()
            for life in list(lives):
                lines = life.lines()
                errors = [line for line in lines if line.startswith("error")]
                assert not errors, errors
                if life.kill_at is None:
                    held = _current_job(lines)
                    if held is not None and held[0] != life.spared_job:
                        # It holds a job (not the one it was spared for): die at a random
                        # moment of about a job's length, or of the next job.
                        life.kill_at = now + rng.uniform(0.0, KILL_WITHIN)
                        life.spared_job = None
                    continue
                if now < life.kill_at:
                    continue
                os.kill(life.pid, signal.SIGSTOP)  # freeze it: its progress is final now
                lines = life.lines()
                if lines[-1] == "claim":
                    # A claim in flight may be giving it a job's last attempt: not now.
                    os.kill(life.pid, signal.SIGCONT)
                    life.kill_at = now + rng.uniform(0.0, 0.05)
                    continue
                held = _current_job(lines)
                if held is not None and held[1] >= jobs.MAX_ATTEMPTS:
                    # Its job's last attempt: a kill would fail the job by design. Spare it.
                    os.kill(life.pid, signal.SIGCONT)
                    life.kill_at, life.spared_job = None, held[0]
                    spared += 1
                    continue
                os.kill(life.pid, signal.SIGKILL)
                phases[lines[-1].split()[0]] += 1
                lives.remove(life)
            time.sleep(0.005)
    finally:
        zygote.close()
    kill_seconds = time.monotonic() - started

    # A surviving worker: it takes every job whose killed worker's lease has expired.
    survivor = CrashWorker(
        server.url,
        build_token,
        [PLATFORM],
        tmp_path / "survivor",
        tmp_path / "survivor-progress",
        "survivor",
    )
    admin = requests.Session()
    admin.headers.update(_auth(ADMIN_TOKEN))

    def all_done() -> bool:
        builds = admin.get(f"{server.url}/api/builds?platform={PLATFORM}&limit=1000").json()
        return all(b["state"] in ("succeeded", "failed") for b in builds["builds"])

    drain_deadline = time.monotonic() + 60
    survivor.run_until(lambda: all_done() or time.monotonic() > drain_deadline)

    builds = admin.get(f"{server.url}/api/builds?platform={PLATFORM}&limit=1000").json()["builds"]
    assert len(builds) == BUILD_JOBS
    states = Counter(b["state"] for b in builds)
    failed = [
        (b["project"], b["attempts"], b.get("error_category"), b.get("error_summary"))
        for b in builds
        if b["state"] != "succeeded"
    ]
    assert states == {"succeeded": BUILD_JOBS}, (states, failed)
    engine = _engine_for(server.data_dir)
    try:
        with engine.connect() as conn:
            wheel_rows = conn.execute(
                select(files.c.filename, files.c.uploaded_by).where(
                    files.c.packagetype == "bdist_wheel"
                )
            ).all()
            added = Counter(
                r.filename
                for r in conn.execute(
                    select(audit_events.c.filename).where(audit_events.c.action == "add (build)")
                )
            )
            attempts = Counter(r.attempts for r in conn.execute(select(build_jobs.c.attempts)))
    finally:
        engine.dispose()
    wheel_names = sorted(r.filename for r in wheel_rows)
    assert len(wheel_names) == BUILD_JOBS == len(set(wheel_names))
    assert all(n == 1 for n in added.values()) and len(added) == BUILD_JOBS
    finished: Counter[str] = Counter()
    for life in [*all_lives]:
        finished.update(line.split()[1] for line in life.lines() if line.startswith("finished "))
    survivor_lines = (tmp_path / "survivor-progress").read_text().splitlines()
    finished.update(line.split()[1] for line in survivor_lines if line.startswith("finished "))
    assert max(finished.values()) == 1, "a job was finished twice"
    for build in builds:
        wheels = build["result"]["wheels"]
        assert len(wheels) == 1 and wheels[0] in wheel_names, build
        project = build["project"]
        page = requests.get(
            f"{server.url}/{PLATFORM}/simple/{project}/",
            headers={"Accept": "application/vnd.pypi.simple.v1+json"},
            timeout=30,
        ).json()
        listed = [f for f in page["files"] if f["filename"].endswith(".whl")]
        assert [f["filename"] for f in listed] == wheels, page
        data = requests.get(urljoin(f"{server.url}/{PLATFORM}/simple/{project}/", listed[0]["url"]))
        assert hashlib.sha256(data.content).hexdigest() == listed[0]["hashes"]["sha256"]
        zipfile.ZipFile(io.BytesIO(data.content)).testzip()
    _report(
        "worker kills",
        jobs=BUILD_JOBS,
        worker_processes=lives_count,
        kills=sum(phases.values()),
        kills_holding_a_job=sum(phases[p] for p in HOLDS_A_JOB),
        spared_on_last_attempt=spared,
        phases={PHASES[k]: v for k, v in phases.items()},
        attempts=dict(sorted(attempts.items())),
        survivor_jobs=sum(1 for line in survivor_lines if line.startswith("finished ")),
        kill_phase_seconds=round(kill_seconds, 1),
        seconds=round(time.monotonic() - started, 1),
    )


def test_a_job_whose_worker_died_after_uploading_succeeds_with_a_rebuilt_wheel(
    tmp_path: Path,
) -> None:
    """Real builds are not byte-for-byte reproducible: the next attempt of a job whose worker
    died between its wheel upload and its finish makes a wheel of the same name with other
    bytes. The job should still succeed, with one wheel listed."""
    settings = Settings.from_env(
        {},
        data_dir=tmp_path / "data",
        admin_token=ADMIN_TOKEN,
        upstream_urls=(),
        build_lease_seconds=1,
    )
    services = build_services(settings)
    client = create_app(services=services).test_client()
    headers = _auth(create_token(services.engine, "worker", "build")[1])
    jobs.request_build(services, "rebuilt", "1.0", PLATFORM, "request", "tests")

    def attempt(content: str) -> tuple[dict, int]:  # type: ignore[type-arg]
        claimed = client.post(
            "/api/worker/claim", json={"worker": "w", "platforms": [PLATFORM]}, headers=headers
        )
        assert claimed.status_code == 200, claimed.text
        job = claimed.get_json()
        out = tmp_path / content
        out.mkdir()
        wheel = make_wheel(
            out,
            "rebuilt",
            "1.0",
            tag="cp311-cp311-linux_x86_64",
            modules={"rebuilt/__init__.py": f"BUILT = {content!r}\n"},
        )
        uploaded = client.post(
            f"/api/worker/jobs/{job['id']}/wheels",
            data={
                "lease": job["lease"],
                "sha256_digest": hashlib.sha256(wheel.read_bytes()).hexdigest(),
                "content": (wheel.open("rb"), wheel.name),
            },
            headers=headers,
        )
        return job, uploaded.status_code

    first, status = attempt("first")
    assert status == 201  # ... and the worker dies before it finishes
    time.sleep(1.2)  # its lease expires
    second, status = attempt("second")
    assert (second["id"], second["attempt"]) == (first["id"], 2)
    assert status in (200, 201), "the rebuilt wheel was refused"
    finished = client.post(
        f"/api/worker/jobs/{second['id']}/finish",
        json={
            "lease": second["lease"],
            "outcome": "succeeded",
            "wheels": ["rebuilt-1.0-cp311-cp311-linux_x86_64.whl"],
        },
        headers=headers,
    )
    assert finished.get_json()["state"] == "succeeded"
    page = client.get(
        f"/{PLATFORM}/simple/rebuilt/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    ).get_json()
    assert len(page["files"]) == 1
    services.engine.dispose()
