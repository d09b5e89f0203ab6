"""The scale-out shape, for real: several ``wheelfarm serve`` processes behind one name.

* Two servers on their own ports share one PostgreSQL database and one S3 bucket (moto's
  standalone server) and nothing else. A write through one is seen by the other at once: the
  page cache is per process, but keyed by the database's serials.
* 200 queued jobs, claimed by 4 concurrent workers through the two servers, over HTTP with
  the real worker's client: each job is claimed and finished exactly once.
* On SQLite (one server, 2 processes x 4 threads): concurrent uploads and claims with no
  "database is locked", no 5xx and no lost update.

The PostgreSQL tests use $WHEELFARM_TEST_DATABASE_URL, else the local server CI starts
(.ci/setup.d/40-postgres.sh); without either they are skipped. In CI ($CI set) they run in
the PostgreSQL pass only, and the SQLite test in the SQLite pass only.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from storage import blob_key
from tests.client_helpers import api, file_id, twine_upload
from tests.conftest import ADMIN_TOKEN, TEST_POSTGRES_URL, sqlite_only, start_server, stop_server
from tests.factory import make_sdist, make_wheel
from tests.s3_helpers import keys_in
from tests.scale_helpers import (
    PLATFORM,
    Cluster,
    ProtocolWorker,
    download,
    file_entry,
    fresh_database,
    new_token,
    open_cluster,
    post_upload,
    postgres_problem,
    postgres_url,
    project_names,
    project_page,
    sha256_of,
)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# A server process keeps pages per process; asking this many times on new connections
# reaches both of a server's gunicorn processes (2 per server, see start_server).
READS = 8


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if os.environ.get("CI") and not TEST_POSTGRES_URL:
        pytest.skip("in CI these run in the PostgreSQL pass (WHEELFARM_TEST_DATABASE_URL)")
    url = postgres_url()
    if problem := postgres_problem(url):
        pytest.skip(problem)
    directory = tmp_path_factory.mktemp("scale-out")
    with fresh_database(url) as database, open_cluster(directory, database) as found:
        yield found


def _queue_builds(server_url: str, projects: list[str]) -> list[int]:
    """Queue one build per project with ``POST /api/builds``; the new jobs' ids."""
    ids = []
    with requests.Session() as session:
        for project in projects:
            response = session.post(
                f"{server_url}/api/builds",
                json={"project": project, "version": "1.0", "platforms": [PLATFORM]},
                headers=ADMIN,
                timeout=30,
            )
            assert response.status_code < 300, response.text
            (outcome,) = response.json()["requests"]
            assert outcome["outcome"] == "queued", outcome
            ids.append(outcome["job_id"])
    return ids


def _builds(server_url: str) -> list[dict]:  # type: ignore[type-arg]
    response = requests.get(f"{server_url}/api/builds?limit=1000", headers=ADMIN, timeout=30)
    response.raise_for_status()
    return response.json()["builds"]  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------
# Two servers, one PostgreSQL database, one bucket


def test_a_write_through_one_server_is_seen_by_the_other_at_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    a, b = (s.url for s in cluster.servers)
    first = make_sdist(tmp_path, "shared-pkg", "1.0")
    twine_upload(a, PLATFORM, cluster.upload_token, [first])
    page_url = f"{b}/{PLATFORM}/simple/shared-pkg/"
    # B renders and caches the page in each of its processes before the next write.
    for _ in range(READS):
        assert [f["filename"] for f in project_page(b, "shared-pkg")["files"]] == [first.name]

    wheel = make_wheel(tmp_path, "shared-pkg", "2.0")
    twine_upload(a, PLATFORM, cluster.upload_token, [wheel])
    # No wait: every process of B lists the new file on the next request.
    for _ in range(READS):
        page = project_page(b, "shared-pkg")
        assert {f["filename"] for f in page["files"]} == {first.name, wheel.name}
    entry = file_entry(page, wheel.name)
    assert entry["hashes"]["sha256"] == sha256_of(wheel)
    body = download(page_url, entry)
    assert hashlib.sha256(body).hexdigest() == sha256_of(wheel)
    assert body == wheel.read_bytes()
    # The bytes are in the shared bucket, not in either server's data folder.
    sha = entry["hashes"]["sha256"]
    assert f"blobs/{blob_key(sha)}" in keys_in(cluster.moto, cluster.bucket)
    assert [p for s in cluster.servers for p in s.data_dir.rglob(sha)] == []

    # A yank through A's admin API: B shows it on the next request, in JSON and HTML.
    wheel_id = file_id(a, "shared-pkg", wheel.name)
    api(a, "POST", f"/api/files/{wheel_id}/yank", {"reason": "broken on B too"})
    for _ in range(READS):
        entry = file_entry(project_page(b, "shared-pkg"), wheel.name)
        assert entry["yanked"] == "broken on B too"
    html = requests.get(page_url, timeout=30).text
    assert f'data-yanked="broken on B too">{wheel.name}<' in html
    # And the unyank, the other way round: through B, seen on A.
    api(b, "POST", f"/api/files/{wheel_id}/unyank")
    for _ in range(READS):
        assert file_entry(project_page(a, "shared-pkg"), wheel.name)["yanked"] is False


def test_200_jobs_through_two_servers_are_each_claimed_and_finished_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    a, b = (s.url for s in cluster.servers)
    projects = [f"farm-{i:03d}" for i in range(200)]
    with ThreadPoolExecutor(2) as pool:  # queued through both servers
        halves = list(pool.map(_queue_builds, (a, b), (projects[::2], projects[1::2])))
    queued = set(halves[0] + halves[1])
    assert len(queued) == 200

    # Claim and finish each job; a wheel for every tenth, uploaded through either server.
    built = frozenset(projects[::10])
    workers = [
        ProtocolWorker(
            server.url,
            cluster.build_token,
            f"worker-{i}",
            tmp_path / f"w{i}",
            chatty=False,
            wheels_for=built,
        )
        for i, server in enumerate(cluster.servers * 2)
    ]
    start = threading.Barrier(len(workers))
    threads = [threading.Thread(target=w.run, args=(start,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    for worker in workers:
        assert not worker.errors, f"{worker.name}: {worker.errors[0]!r}"

    claims = Counter(job["id"] for w in workers for job in w.claims)
    assert set(claims) == queued
    assert [jid for jid, n in claims.items() if n != 1] == []  # none claimed twice
    assert all(job["attempt"] == 1 for w in workers for job in w.claims)
    # All four took part, so the claims really raced (both servers, both processes each).
    assert all(w.claims for w in workers), [len(w.claims) for w in workers]

    claimed_by = {job["id"]: w.name for w in workers for job in w.claims}
    builds = {j["id"]: j for j in _builds(b) if j["id"] in queued}
    assert {j["state"] for j in builds.values()} == {"succeeded"}
    assert {jid: j["worker"] for jid, j in builds.items()} == claimed_by
    assert all(j["attempts"] == 1 for j in builds.values())
    # Every built wheel, uploaded through either server, is on both servers' index.
    for server in (a, b):
        assert set(projects) & project_names(server) == built


def test_a_console_login_on_one_server_holds_on_the_other(cluster: Cluster) -> None:
    """Behind a load balancer a browser's next request may reach the other server."""
    a, b = (s.url for s in cluster.servers)
    with requests.Session() as browser:
        login = browser.get(f"{a}/console/login", timeout=30)
        assert login.status_code == 200
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
        assert csrf, login.text
        done = browser.post(
            f"{a}/console/login",
            data={"csrf_token": csrf.group(1), "token": ADMIN_TOKEN, "next": "/console/"},
            timeout=30,
        )
        assert done.status_code == 200 and 'id="who"' in done.text
        assert 'id="who"' in browser.get(f"{b}/console/", timeout=30).text


# ---------------------------------------------------------------------------------------
# SQLite: one server, 2 processes x 4 threads, concurrent writers


@sqlite_only
def test_concurrent_uploads_and_claims_on_sqlite(tmp_path: Path) -> None:
    data = tmp_path / "server-data"
    server = start_server(
        data,
        tmp_path / "server.log",
        WHEELFARM_DATABASE_URL=f"sqlite:///{data / 'wheelfarm.sqlite3'}",
    )
    try:
        _concurrent_uploads_and_claims(
            server.url, new_token(server.url, "upload"), new_token(server.url, "build"), tmp_path
        )
    finally:
        stop_server(server)
    log = (tmp_path / "server.log").read_text()
    assert "database is locked" not in log
    assert "Traceback" not in log
    assert (data / "wheelfarm.sqlite3").exists()


def _concurrent_uploads_and_claims(url: str, upload: str, build: str, tmp_path: Path) -> None:
    count = 50
    jobs = _queue_builds(url, [f"job-{i:02d}" for i in range(count)])
    (tmp_path / "uploads").mkdir()
    files = [make_wheel(tmp_path / "uploads", f"up-{i:02d}", "1.0") for i in range(count)]
    statuses: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(count + 4)

    def one_upload(path: Path) -> None:
        start.wait()
        with requests.Session() as session:
            response = post_upload(session, url, PLATFORM, upload, path)
        with lock:
            statuses.append(response.status_code)
        assert response.status_code == 201, response.text

    workers = [ProtocolWorker(url, build, f"w{i}", tmp_path / f"w{i}") for i in range(4)]
    with ThreadPoolExecutor(count + 4) as pool:
        claiming = [pool.submit(w.run, start) for w in workers]
        uploading = [pool.submit(one_upload, path) for path in files]
        for future in claiming + uploading:
            future.result(timeout=300)
    for worker in workers:
        assert not worker.errors, f"{worker.name}: {worker.errors[0]!r}"
    assert sorted(statuses) == [201] * count

    claims = Counter(job["id"] for w in workers for job in w.claims)
    assert sorted(claims) == sorted(jobs) and set(claims.values()) == {1}
    builds = {j["id"]: j for j in _builds(url)}
    assert {builds[jid]["state"] for jid in jobs} == {"succeeded"}
    listed = project_names(url)
    assert {f"up-{i:02d}" for i in range(count)} <= listed
    assert {f"job-{i:02d}" for i in range(count)} <= listed
    for path in files[:5]:
        page = project_page(url, path.name.split("-1.0")[0].replace("_", "-"))
        assert file_entry(page, path.name)["hashes"]["sha256"] == sha256_of(path)
