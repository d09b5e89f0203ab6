"""Helpers for the scale-out tests: several real ``wheelfarm serve`` processes sharing one
PostgreSQL database and one S3 bucket (moto's standalone server), uploads as twine sends
them, and build workers that speak the real protocol with the worker's own HTTP client.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from builder.worker import ServerClient
from platforms import load_platforms
from tests.conftest import ADMIN_TOKEN, TEST_POSTGRES_URL, LiveServer, start_server, stop_server
from tests.factory import make_wheel
from tests.s3_helpers import AWS_ENV, MotoServer, start_moto, stop_moto

# Behind a load balancer the nodes share the console's session key (WHEELFARM_SECRET_KEY).
CLUSTER_SECRET_KEY = "scale-out-test-session-key-0123456789abcdef"

PLATFORM = "debian-12-py3.11-x86_64"
PEP691 = "application/vnd.pypi.simple.v1+json"
# The PostgreSQL server .ci/setup.d/40-postgres.sh starts, for runs without
# WHEELFARM_TEST_DATABASE_URL.
LOCAL_POSTGRES_URL = "postgresql+psycopg://wheelfarm:wheelfarm@127.0.0.1:5432/postgres"


def postgres_url() -> str:
    return TEST_POSTGRES_URL or LOCAL_POSTGRES_URL


def postgres_problem(url: str) -> str | None:
    """Why no database can be made on this PostgreSQL server, or None when one can."""
    try:
        engine = create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # any driver or connection error: the reason for the skip
        shown = make_url(url).render_as_string(hide_password=True)
        return f"no PostgreSQL server at {shown}: {str(exc).splitlines()[0][:200]}"
    return None


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new, empty database on the server of ``admin_url`` (dropped afterwards)."""
    name = f"wf_scale_{uuid.uuid4().hex[:16]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@dataclass
class Cluster:
    """Index servers that share a database and a bucket; nothing else (own data dirs)."""

    servers: list[LiveServer]
    moto: MotoServer
    bucket: str
    database_url: str
    upload_token: str
    build_token: str


@contextmanager
def open_cluster(directory: Path, database_url: str, count: int = 2) -> Iterator[Cluster]:
    """Start moto with a fresh bucket, then ``count`` servers on their own ports.

    The servers start one after the other: each runs the migrations at start, and the
    first one makes the schema.
    """
    with ExitStack() as stack:
        moto = start_moto(directory / "moto.log")
        stack.callback(stop_moto, moto)
        bucket = moto.new_bucket()
        storage = f"s3://{bucket}/blobs?endpoint_url={moto.endpoint}&region={AWS_ENV['AWS_DEFAULT_REGION']}"
        servers = []
        for i in range(count):
            name = chr(ord("a") + i)
            server = start_server(
                directory / f"server-{name}",
                directory / f"server-{name}.log",
                WHEELFARM_DATABASE_URL=database_url,
                WHEELFARM_STORAGE_URL=storage,
                WHEELFARM_SECRET_KEY=CLUSTER_SECRET_KEY,  # console sessions valid on every node
                **AWS_ENV,
            )
            stack.callback(stop_server, server)
            servers.append(server)
        # Tokens made through the first server work on every server.
        url = servers[0].url
        yield Cluster(
            servers, moto, bucket, database_url, new_token(url, "upload"), new_token(url, "build")
        )


def new_token(server_url: str, scope: str) -> str:
    """A token made with the admin API (``POST /api/tokens``, the admin token)."""
    response = requests.post(
        f"{server_url}/api/tokens",
        json={"scope": scope, "name": f"scale-{scope}"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return response.json()["token"]  # type: ignore[no-any-return]


def upload_form(path: Path) -> dict[str, str]:
    """The form fields twine sends with a file (the ones the server reads)."""
    from packaging.utils import parse_sdist_filename, parse_wheel_filename

    if path.name.endswith(".whl"):
        name, version, *_ = parse_wheel_filename(path.name)
        filetype, pyversion = "bdist_wheel", "py3"
    else:
        name, version = parse_sdist_filename(path.name)
        filetype, pyversion = "sdist", "source"
    return {
        ":action": "file_upload",
        "protocol_version": "1",
        "name": str(name),
        "version": str(version),
        "filetype": filetype,
        "pyversion": pyversion,
        "sha256_digest": sha256_of(path),
    }


def post_upload(
    session: requests.Session, server_url: str, platform: str, token: str, path: Path
) -> requests.Response:
    """One multipart upload to the legacy API, as twine makes it."""
    with path.open("rb") as fh:
        return session.post(
            f"{server_url}/{platform}/legacy/",
            data=upload_form(path),
            files={"content": (path.name, fh, "application/octet-stream")},
            auth=("__token__", token),
            timeout=60,
        )


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def project_page(server_url: str, project: str, platform: str = PLATFORM) -> dict[str, Any]:
    """The PEP 691 JSON project page, on a new connection (so any server process answers)."""
    response = requests.get(
        f"{server_url}/{platform}/simple/{project}/", headers={"Accept": PEP691}, timeout=30
    )
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def project_names(server_url: str, platform: str = PLATFORM) -> set[str]:
    """The projects the platform's PEP 691 root page lists."""
    response = requests.get(f"{server_url}/{platform}/simple/", headers={"Accept": PEP691})
    response.raise_for_status()
    return {p["name"] for p in response.json()["projects"]}


def file_entry(page: dict[str, Any], filename: str) -> dict[str, Any]:
    found = [f for f in page["files"] if f["filename"] == filename]
    assert len(found) == 1, f"{filename} not (once) in {[f['filename'] for f in page['files']]}"
    return found[0]


def download(page_url: str, entry: dict[str, Any]) -> bytes:
    response = requests.get(urljoin(page_url, entry["url"]), timeout=30)
    response.raise_for_status()
    return response.content


@dataclass
class ProtocolWorker:
    """A build worker loop for tests: the real worker's HTTP client (builder.worker's
    ``ServerClient``), no build. For each claimed job it heartbeats and logs (``chatty``),
    uploads a wheel (made with tests/factory.py, tagged for the platform; for the projects in
    ``wheels_for`` only, when given) and finishes it as succeeded, until the queue is empty.
    Every claim is recorded, so a test can count claims per job."""

    server_url: str
    token: str
    name: str
    workdir: Path
    platforms: tuple[str, ...] = (PLATFORM,)
    chatty: bool = True
    wheels_for: frozenset[str] | None = None
    claims: list[dict[str, Any]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def run(self, start: threading.Barrier | None = None) -> None:
        client = ServerClient(self.server_url, self.token, timeout=60)
        known = load_platforms()
        try:
            if start is not None:
                start.wait()
            while (job := client.claim(self.name, list(self.platforms), "host")) is not None:
                self.claims.append(job)
                if self.chatty:
                    assert client.heartbeat(job) is False
                    client.log(job, f"{self.name}: {job['project']} {job['version']}\n")
                wheels = []
                if self.wheels_for is None or job["project"] in self.wheels_for:
                    platform = known[job["platform"]]
                    interpreter = platform.interpreter
                    tag = f"{interpreter}-{interpreter}-{platform.platform_tags()[0]}"
                    out = self.workdir / f"job-{job['id']}"
                    out.mkdir(parents=True)
                    wheel = make_wheel(out, job["project"], job["version"], tag=tag)
                    client.upload_wheel(job, wheel)
                    wheels.append(wheel.name)
                finished = client.finish(
                    job, {"outcome": "succeeded", "wheels": wheels, "build_seconds": 0.01}
                )
                assert finished["state"] == "succeeded", finished
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)
        finally:
            client.session.close()  # no idle keep-alive connection delays the server's stop
