"""Data for the console and metrics tests, made the way it is made in production.

Files are ingested (as uploads and builds are), and builds are requested, claimed, logged
and finished through the worker protocol over HTTP, with an upload and a build token: by
a Flask test client in-process, or ``requests`` against a live server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from flask.testing import FlaskClient

from index_server.ingest import ingest_file
from index_server.services import Services
from tests.factory import make_sdist, make_wheel

PLATFORM = "debian-12-py3.11-x86_64"
OTHER_PLATFORM = "ubuntu-24.04-py3.12-x86_64"
FAILED_LOG = "collecting build deps\nbuilding 'demo_pkg._speedups' extension\n"
FAILURE = "fatal error: yaml.h: No such file or directory"
RUNNING_LOG = "compiling other_thing/_core.c\n"


class Http:
    """POST JSON with a bearer token; the answer's status and JSON body."""

    def post(self, path: str, token: str, body: dict[str, Any]) -> tuple[int, Any]:
        raise NotImplementedError


class FlaskHttp(Http):
    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def post(self, path: str, token: str, body: dict[str, Any]) -> tuple[int, Any]:
        response = self.client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})
        return response.status_code, (response.get_json(silent=True) if response.data else None)


class LiveHttp(Http):
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()

    def post(self, path: str, token: str, body: dict[str, Any]) -> tuple[int, Any]:
        response = self.session.post(
            self.base_url + path,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        return response.status_code, (response.json() if response.content else None)


@dataclass
class Scenario:
    succeeded: int = 0
    failed: int = 0
    running: int = 0
    queued: int = 0
    wheel: str = ""
    running_lease: str = ""  # the lease of the running job, to send more of its log
    ids: dict[str, int] = field(default_factory=dict)


def _ok(answer: tuple[int, Any], *expected: int) -> Any:
    status, body = answer
    assert status in (expected or (200,)), (status, body)
    return body


def populate(
    http: Http, services: Services, tmp_path: Path, upload_token: str, build_token: str
) -> Scenario:
    """demo-pkg: hosted sdists 1.0 and 2.0 and a pure 0.9 wheel; builds of 2.0 (succeeded,
    with a wheel needing an OS package), 1.0 (failed), 2.0 on another platform (queued);
    other-thing 0.1 (running, with part of its log)."""
    work = tmp_path / "dists"
    work.mkdir(exist_ok=True)
    platform = services.platforms[PLATFORM]
    for path in (
        make_sdist(work, "demo-pkg", "1.0"),
        make_sdist(work, "demo-pkg", "2.0"),
        make_wheel(work, "demo-pkg", "0.9"),
    ):
        ingest_file(services, platform, path, path.name, actor="tests")
    scenario = Scenario()
    for project, version, platforms in (
        ("demo-pkg", "2.0", [PLATFORM, OTHER_PLATFORM]),
        ("demo-pkg", "1.0", [PLATFORM]),
        ("other-thing", "0.1", [PLATFORM]),
    ):
        body = _ok(
            http.post(
                "/api/builds",
                upload_token,
                {"project": project, "version": version, "platforms": platforms},
            )
        )
        for outcome in body["requests"]:
            assert outcome["outcome"] == "queued", outcome
            key = f"{project} {version} {outcome['platform']}"
            scenario.ids[key] = outcome["job_id"]

    def claim() -> dict[str, Any]:
        return _ok(
            http.post(
                "/api/worker/claim",
                build_token,
                {"worker": "worker-1", "platforms": [PLATFORM], "runner": "podman"},
            )
        )

    def log(job: dict[str, Any], text: str) -> None:
        _ok(
            http.post(
                f"/api/worker/jobs/{job['id']}/log",
                build_token,
                {"lease": job["lease"], "text": text},
            ),
            204,
        )

    # The successful build: its wheel goes through ingest like a worker's upload.
    job = claim()
    assert (job["project"], job["version"]) == ("demo-pkg", "2.0")
    log(job, "building wheel\n")
    wheel = make_wheel(work, "demo-pkg", "2.0", tag="cp311-cp311-linux_x86_64")
    ingest_file(services, platform, wheel, wheel.name, actor="worker-1", origin="build")
    scenario.wheel = wheel.name
    _ok(
        http.post(
            f"/api/worker/jobs/{job['id']}/finish",
            build_token,
            {
                "lease": job["lease"],
                "outcome": "succeeded",
                "wheels": [wheel.name],
                "os_packages": ["libyaml-0-2"],
                "shared_libraries": ["libyaml-0.so.2"],
                "image_id": "sha256:0123456789abcdef",
                "build_seconds": 42.5,
            },
        )
    )
    # The failed one: a missing header is not worth another attempt.
    job = claim()
    assert (job["project"], job["version"]) == ("demo-pkg", "1.0")
    log(job, FAILED_LOG)
    log(job, FAILURE + "\n")
    _ok(
        http.post(
            f"/api/worker/jobs/{job['id']}/finish",
            build_token,
            {
                "lease": job["lease"],
                "outcome": "failed",
                "error_category": "missing_system_library",
                "error_summary": FAILURE,
                "image_id": "sha256:0123456789abcdef",
                "build_seconds": 7.0,
            },
        )
    )
    # Left running.
    job = claim()
    assert job["project"] == "other-thing"
    log(job, RUNNING_LOG)
    scenario.running_lease = job["lease"]
    scenario.succeeded, scenario.failed, scenario.running, scenario.queued = 1, 1, 1, 1
    return scenario
