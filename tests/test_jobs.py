"""The build queue and the worker protocol's server side, over HTTP."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from index_server import jobs
from index_server.app import create_app
from index_server.auth import create_token
from index_server.config import Settings
from index_server.ingest import ingest_file
from index_server.services import Services, build_services
from tests.conftest import ADMIN_TOKEN
from tests.factory import make_sdist, make_wheel

PLATFORM = "debian-12-py3.11-x86_64"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def build_token(services: Services) -> str:
    return create_token(services.engine, "worker", "build")[1]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claim(client: FlaskClient, token: str, worker: str = "w1") -> dict | None:
    response = client.post(
        "/api/worker/claim", json={"worker": worker, "platforms": [PLATFORM]}, headers=auth(token)
    )
    assert response.status_code in (200, 204), response.text
    return response.get_json() if response.status_code == 200 else None


def queue(services: Services, project: str = "demo", version: str = "1.0") -> jobs.RequestOutcome:
    return jobs.request_build(services, project, version, PLATFORM, "request", "tests")


def test_a_request_queues_once_and_not_when_a_wheel_exists(
    services: Services, tmp_path: Path
) -> None:
    first = queue(services)
    assert (first.outcome, first.state) == ("queued", "queued")
    again = queue(services)
    assert (again.outcome, again.job_id) == ("exists", first.job_id)
    wheel = make_wheel(tmp_path, "other", "2.0", tag="cp311-cp311-linux_x86_64")
    ingest_file(services, services.platforms[PLATFORM], wheel, wheel.name, actor="t")
    assert queue(services, "other", "2.0").outcome == "has_wheel"
    assert len(jobs.list_jobs(services)) == 1


def test_skip_list_skips_new_and_queued_jobs(services: Services) -> None:
    queued = queue(services, "slow", "1.0")
    jobs.add_skip(services, "slow", "", "takes hours", "admin")
    assert jobs.get_job(services, queued.job_id)["state"] == "skipped"
    later = queue(services, "slow", "2.0")
    assert later.outcome == "skipped"
    assert jobs.get_job(services, later.job_id)["reason"] == "takes hours"


def test_claim_needs_a_build_token(client: FlaskClient, services: Services) -> None:
    upload = create_token(services.engine, "u", "upload")[1]
    body = {"worker": "w", "platforms": [PLATFORM]}
    assert client.post("/api/worker/claim", json=body).status_code == 401
    assert client.post("/api/worker/claim", json=body, headers=auth(upload)).status_code == 403


def test_bad_messages_get_a_400_with_the_reason(client: FlaskClient, build_token: str) -> None:
    response = client.post("/api/worker/claim", json={"worker": "w"}, headers=auth(build_token))
    assert response.status_code == 400
    assert "platforms" in response.get_json()["error"]
    response = client.post(
        "/api/worker/claim", json={"worker": "w", "platforms": ["nope"]}, headers=auth(build_token)
    )
    assert response.status_code == 400 and "unknown platforms" in response.text


def test_concurrent_claims_give_each_job_to_one_worker(settings: Settings) -> None:
    services = build_services(settings)
    for i in range(40):
        queue(services, f"pkg{i}")
    claimed: list[int] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        own = build_services(settings, migrate=False)  # its own engine, like another process
        while (job := jobs.claim(own, name, [PLATFORM])) is not None:
            with lock:
                claimed.append(job["id"])

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted({j["id"] for j in jobs.list_jobs(services)})
    assert len(claimed) == len(set(claimed)) == 40


def test_lost_lease_requeues_and_late_results_are_refused(
    tmp_path: Path, build_token: str, settings: Settings
) -> None:
    short = build_services(Settings(**{**settings.__dict__, "build_lease_seconds": 1}))
    client = create_app(services=short).test_client()
    token = create_token(short.engine, "worker-short-lease", "build")[1]
    queue(short)
    first = claim(client, token, "dies")
    assert first is not None and first["attempt"] == 1
    assert claim(client, token, "other") is None  # still leased
    time.sleep(1.2)
    second = claim(client, token, "other")
    assert second is not None and second["id"] == first["id"] and second["attempt"] == 2
    late = client.post(
        f"/api/worker/jobs/{first['id']}/finish",
        json={"lease": first["lease"], "outcome": "succeeded"},
        headers=auth(token),
    )
    assert late.status_code == 409
    heartbeat = client.post(
        f"/api/worker/jobs/{first['id']}/heartbeat",
        json={"lease": first["lease"]},
        headers=auth(token),
    )
    assert heartbeat.status_code == 409
    done = client.post(
        f"/api/worker/jobs/{second['id']}/finish",
        json={"lease": second["lease"], "outcome": "succeeded", "build_seconds": 1.5},
        headers=auth(token),
    )
    assert done.status_code == 200 and done.get_json()["state"] == "succeeded"


def test_heartbeat_log_wheel_and_finish(
    client: FlaskClient, services: Services, build_token: str, tmp_path: Path
) -> None:
    queue(services, "demo", "1.0")
    job = claim(client, build_token)
    assert job is not None and job["index_path"] == f"/{PLATFORM}/simple/"
    lease = job["lease"]
    jid = job["id"]
    beat = client.post(
        f"/api/worker/jobs/{jid}/heartbeat", json={"lease": lease}, headers=auth(build_token)
    )
    assert beat.get_json() == {"lease_seconds": 60, "cancel": False}
    for text in ("building...\n", "done\n"):
        response = client.post(
            f"/api/worker/jobs/{jid}/log",
            json={"lease": lease, "text": text},
            headers=auth(build_token),
        )
        assert response.status_code == 204
    wheel = make_wheel(tmp_path, "demo", "1.0", tag="cp311-cp311-linux_x86_64")
    with wheel.open("rb") as fh:
        response = client.post(
            f"/api/worker/jobs/{jid}/wheels",
            data={
                "lease": lease,
                "sha256_digest": hashlib.sha256(wheel.read_bytes()).hexdigest(),
                "content": (fh, wheel.name),
            },
            headers=auth(build_token),
        )
    assert response.status_code == 201, response.text
    finish = client.post(
        f"/api/worker/jobs/{jid}/finish",
        json={
            "lease": lease,
            "outcome": "succeeded",
            "wheels": [wheel.name],
            "os_packages": ["libc6"],
            "shared_libraries": ["libc.so.6"],
            "image_id": "sha256:abc",
            "build_seconds": 2.0,
        },
        headers=auth(build_token),
    )
    assert finish.status_code == 200
    shown = client.get(f"/api/builds/{jid}", headers=ADMIN).get_json()
    assert shown["state"] == "succeeded"
    assert shown["log"] == "building...\ndone\n"
    assert shown["result"]["os_packages"] == ["libc6"]
    assert shown["waited_seconds"] >= 0 and shown["image_id"] == "sha256:abc"
    page = client.get(
        f"/{PLATFORM}/simple/demo/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    assert [f["filename"] for f in json.loads(page.data)["files"]] == [wheel.name]
    # A built wheel does not make the project private: it still merges with upstreams.
    with services.engine.connect() as conn:
        from index_server import repository

        assert repository.project_state(conn, "demo").hosted is False


def test_wrong_wheel_for_the_job_is_refused(
    client: FlaskClient, services: Services, build_token: str, tmp_path: Path
) -> None:
    queue(services, "demo", "1.0")
    job = claim(client, build_token)
    wheel = make_wheel(tmp_path, "demo", "2.0", tag="cp311-cp311-linux_x86_64")
    with wheel.open("rb") as fh:
        response = client.post(
            f"/api/worker/jobs/{job['id']}/wheels",
            data={"lease": job["lease"], "content": (fh, wheel.name)},
            headers=auth(build_token),
        )
    # Another version than the job's: refused before anything is read or stored.
    assert response.status_code == 403 and "not a wheel of this job" in response.text
    assert client.get("/api/projects/demo", headers=ADMIN).status_code == 404


def test_transient_failures_retry_with_backoff_then_fail(
    client: FlaskClient, services: Services, build_token: str
) -> None:
    queued = queue(services)
    for attempt in range(1, jobs.MAX_ATTEMPTS + 1):
        with services.engine.begin() as conn:  # skip the backoff wait
            from sqlalchemy import update

            from index_server.db.schema import build_jobs

            conn.execute(update(build_jobs).values(not_before=None))
        job = claim(client, build_token)
        assert job is not None and job["attempt"] == attempt
        result = client.post(
            f"/api/worker/jobs/{job['id']}/finish",
            json={
                "lease": job["lease"],
                "outcome": "failed",
                "error_category": "network",
                "error_summary": "connection reset",
            },
            headers=auth(build_token),
        ).get_json()
        expected = "failed" if attempt == jobs.MAX_ATTEMPTS else "queued"
        assert result["state"] == expected
        if expected == "queued":
            assert claim(client, build_token) is None  # backing off
    final = jobs.get_job(services, queued.job_id)
    assert final["error_category"] == "network" and final["attempts"] == jobs.MAX_ATTEMPTS


def test_admin_cancel_rebuild_skip_and_cancel_reaches_the_worker(
    client: FlaskClient, services: Services, build_token: str
) -> None:
    queue(services)
    job = claim(client, build_token)
    cancelled = client.post(f"/api/builds/{job['id']}/cancel", json={"reason": "no"}, headers=ADMIN)
    assert cancelled.get_json()["state"] == "cancelled"
    beat = client.post(
        f"/api/worker/jobs/{job['id']}/heartbeat",
        json={"lease": job["lease"]},
        headers=auth(build_token),
    )
    assert beat.get_json()["cancel"] is True
    rebuilt = client.post(f"/api/builds/{job['id']}/rebuild", headers=ADMIN).get_json()
    assert rebuilt["state"] == "queued" and rebuilt["attempts"] == 0
    skipped = client.post(f"/api/builds/{job['id']}/skip", json={"reason": "broken"}, headers=ADMIN)
    assert skipped.get_json()["state"] == "skipped"
    assert client.post(f"/api/builds/{job['id']}/cancel", headers=ADMIN).status_code == 409
    assert client.post("/api/builds/999/rebuild", headers=ADMIN).status_code == 404
    listed = client.get("/api/builds?state=skipped", headers=ADMIN).get_json()["builds"]
    assert [b["id"] for b in listed] == [job["id"]]


def test_build_settings_are_validated_and_sent_with_claims(
    client: FlaskClient, services: Services, build_token: str
) -> None:
    bad = client.put("/api/build-settings/PyYAML", json={"env": {"1BAD": "x"}}, headers=ADMIN)
    assert bad.status_code == 400
    settings = {
        "constraints": "cython<3\n",
        "env": {"CFLAGS": "-O2"},
        "os_packages": ["libyaml-dev"],
    }
    ok = client.put("/api/build-settings/PyYAML", json=settings, headers=ADMIN)
    assert ok.status_code == 200
    queue(services, "pyyaml", "5.4.1")
    job = claim(client, build_token)
    assert job["settings"] == settings


def test_first_sight_sdist_download_queues_a_job(
    client: FlaskClient, services: Services, upload_token: str, tmp_path: Path
) -> None:
    sdist = make_sdist(tmp_path, "hosted", "3.0")
    with sdist.open("rb") as fh:
        client.post(
            f"/{PLATFORM}/legacy/",
            data={
                ":action": "file_upload",
                "name": "hosted",
                "version": "3.0",
                "sha256_digest": hashlib.sha256(sdist.read_bytes()).hexdigest(),
                "content": (fh, sdist.name),
            },
            headers=auth(upload_token),
        )
    sha = hashlib.sha256(sdist.read_bytes()).hexdigest()
    for _ in range(2):
        assert client.get(f"/{PLATFORM}/files/hosted/{sha}/{sdist.name}").status_code == 200
    found = jobs.list_jobs(services)
    assert [(j["project"], j["version"], j["platform"], j["source"]) for j in found] == [
        ("hosted", "3.0", PLATFORM, "first-sight")
    ]
