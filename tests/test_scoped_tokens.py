"""Build tokens bound to a platform (and a worker), and the wheels a job may upload
(issue 15, Medium 3): the worker protocol over HTTP, real tokens, real wheels."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from index_server import jobs
from index_server.auth import create_token
from index_server.services import Services
from tests.factory import make_wheel
from tests.http_helpers import PLATFORM, PY312_X86, admin_headers, api_files, bearer

pytestmark = pytest.mark.timeout(60)


def claim(client: FlaskClient, token: str, platforms: list[str], worker: str = "w1"):  # type: ignore[no-untyped-def]
    return client.post(
        "/api/worker/claim",
        json={"worker": worker, "platforms": platforms},
        headers=bearer(token),
    )


def send_wheel(client: FlaskClient, token: str, job: dict, wheel: Path):  # type: ignore[no-untyped-def,type-arg]
    with wheel.open("rb") as fh:
        return client.post(
            f"/api/worker/jobs/{job['id']}/wheels",
            data={
                "lease": job["lease"],
                "sha256_digest": hashlib.sha256(wheel.read_bytes()).hexdigest(),
                "content": (fh, wheel.name),
            },
            headers=bearer(token),
        )


def test_a_bound_build_token_claims_only_its_platform_and_worker(
    client: FlaskClient, services: Services
) -> None:
    jobs.request_build(services, "demo", "1.0", PY312_X86, "request", "tests")
    jobs.request_build(services, "demo", "1.0", PLATFORM, "request", "tests")
    token = create_token(services.engine, "farm-a", "build", platform=PLATFORM, worker="w1")[1]
    for platforms, worker in (
        ([PY312_X86], "w1"),
        ([PLATFORM, PY312_X86], "w1"),
        ([PLATFORM], "w2"),
    ):
        refused = claim(client, token, platforms, worker)
        assert refused.status_code == 403, refused.get_data(as_text=True)
    assert [j["state"] for j in jobs.list_jobs(services)] == ["queued", "queued"]
    granted = claim(client, token, [PLATFORM])
    assert granted.status_code == 200 and granted.get_json()["platform"] == PLATFORM


def test_a_bound_token_cannot_act_on_another_platforms_job(
    client: FlaskClient, services: Services
) -> None:
    jobs.request_build(services, "demo", "1.0", PY312_X86, "request", "tests")
    other = create_token(services.engine, "farm-312", "build", platform=PY312_X86)[1]
    job = claim(client, other, [PY312_X86]).get_json()
    bound = create_token(services.engine, "farm-a", "build", platform=PLATFORM)[1]
    for path, body in (
        ("heartbeat", {"lease": job["lease"]}),
        ("log", {"lease": job["lease"], "text": "x"}),
        ("finish", {"lease": job["lease"], "outcome": "failed"}),
    ):
        response = client.post(
            f"/api/worker/jobs/{job['id']}/{path}", json=body, headers=bearer(bound)
        )
        assert response.status_code == 403, (path, response.get_data(as_text=True))
    assert jobs.get_job(services, job["id"])["state"] == "running"


def test_only_a_build_token_binds_to_a_platform(services: Services) -> None:
    with pytest.raises(ValueError, match="only a build token"):
        create_token(services.engine, "x", "upload", platform=PLATFORM)


def test_a_job_uploads_only_its_own_wheel_and_only_one(
    client: FlaskClient, services: Services, tmp_path: Path
) -> None:
    jobs.request_build(services, "demo", "1.0", PLATFORM, "request", "tests")
    token = create_token(services.engine, "farm", "build")[1]
    job = claim(client, token, [PLATFORM]).get_json()
    (tmp_path / "x").mkdir()
    other_project = make_wheel(tmp_path / "x", "victim", "1.0")  # pure: every platform
    refused = send_wheel(client, token, job, other_project)
    assert refused.status_code == 403, refused.get_data(as_text=True)
    assert api_files(client, "victim") == []
    ours = make_wheel(tmp_path, "demo", "1.0", tag="cp311-cp311-linux_x86_64")
    assert send_wheel(client, token, job, ours).status_code == 201
    (tmp_path / "y").mkdir()
    second = make_wheel(tmp_path / "y", "demo", "1.0")  # a pure one too: refused
    again = send_wheel(client, token, job, second)
    assert again.status_code == 409, again.get_data(as_text=True)
    assert [f["filename"] for f in api_files(client, "demo")] == [ours.name]
    events = client.get("/api/events?action=add%20(build)", headers=admin_headers()).get_json()
    assert [(e["filename"], e["token_id"]) for e in events["events"]] == [(ours.name, 1)]


def test_a_pure_wheel_of_the_job_is_accepted(
    client: FlaskClient, services: Services, tmp_path: Path
) -> None:
    jobs.request_build(services, "demo", "1.0", PLATFORM, "request", "tests")
    token = create_token(services.engine, "farm", "build")[1]
    job = claim(client, token, [PLATFORM]).get_json()
    pure = make_wheel(tmp_path, "demo", "1.0")
    response = send_wheel(client, token, job, pure)
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["platform"] is None  # served on every platform
