"""Issue 15's findings that no other test file reproduces, each now refused with a clear 4xx.

Every test replays what the attacker did against the real app (Flask's client, a real
``wheelfarm serve`` or real local HTTP servers) and checks the answer and that nothing was
stored. The other findings are reproduced in test_immutability.py, test_ownership.py,
test_scoped_tokens.py, test_security_headers.py, test_audit_log.py, test_console.py and
test_upstream_guard.py (the upstream's SSRF, size limit and hash echo).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import stat
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from builder.fetch import fetch_with_hash
from index_server import jobs
from index_server.app import create_app
from index_server.auth import create_token
from index_server.config import Settings
from index_server.db.engine import read_connection
from index_server.db.schema import metadata
from index_server.services import Services, build_services
from tests.conftest import ADMIN_TOKEN, sqlite_only, start_server, stop_server
from tests.factory import core_metadata, make_sdist, make_wheel
from tests.http_helpers import (
    PLATFORM,
    admin_headers,
    api_files,
    basic_auth,
    bearer,
    stored_blobs,
    upload,
    upload_ok,
)
from tests.upstream_server import FakeUpstream, proxy_services

pytestmark = pytest.mark.timeout(90)
REPO = Path(__file__).resolve().parent.parent


def row_counts(services: Services) -> dict[str, int]:
    """Rows of every table: a refused request must leave all of them as they were."""
    with read_connection(services.engine) as conn:
        return {
            table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in metadata.sorted_tables
        }


def console_csrf(client: FlaskClient, path: str = "/console/login", **headers: str) -> str:
    page = client.get(path, headers=headers)
    assert page.status_code == 200, page.get_data(as_text=True)[:300]
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    assert found, "no CSRF field on " + path
    return found.group(1)


def console_login(client: FlaskClient, token: str = ADMIN_TOKEN, **headers: str) -> Any:
    field = console_csrf(client, **headers)
    response = client.post(
        "/console/login", data={"csrf_token": field, "token": token}, headers=headers
    )
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    return response


def queued_job(services: Services, project: str = "demo", version: str = "2.0") -> int:
    outcome = jobs.request_build(services, project, version, PLATFORM, "api", "admin")
    assert outcome.job_id is not None
    return outcome.job_id


def job_state(services: Services, job_id: int) -> str:
    return str(jobs.get_job(services, job_id, with_log=False)["state"])


# === Medium 4: the worker's token must not follow a redirect to another host ==============


class _Recorder(ThreadingHTTPServer):
    """A local HTTP server that records each request's headers; ``routes`` maps a path to
    a redirect target (a 302) or to bytes (a 200)."""

    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.routes: dict[str, str | bytes] = {}
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                recorder.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                target = recorder.routes.get(self.path)
                if isinstance(target, str):
                    self.send_response(302)
                    self.send_header("Location", target)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif isinstance(target, bytes):
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(target)))
                    self.end_headers()
                    self.wfile.write(target)
                else:
                    self.send_error(404)

        super().__init__((host, 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def headers_of(self, path: str) -> list[dict[str, str]]:
        return [headers for p, headers in self.seen if p == path]


@pytest.fixture
def recorders() -> Iterator[tuple[_Recorder, _Recorder]]:
    first, second = _Recorder(), _Recorder()
    yield first, second
    for server in (first, second):
        server.shutdown()
        server.server_close()


def test_the_worker_drops_its_token_on_a_redirect_to_another_host(
    recorders: tuple[_Recorder, _Recorder], tmp_path: Path
) -> None:
    """What the worker does with an sdist URL (builder/worker.py calls fetch_with_hash with
    its Bearer token): S3's serve=redirect answers 302 to another host."""
    assert socket.gethostbyname("localhost") == "127.0.0.1"
    index, s3 = recorders
    data = os.urandom(3000)
    digest = hashlib.sha256(data).hexdigest()
    s3.routes["/bucket/demo.tar.gz"] = data
    index.routes["/local/demo.tar.gz"] = data
    targets = {
        "/other-name": f"http://localhost:{s3.port}/bucket/demo.tar.gz",  # host name differs
        "/other-port": f"http://127.0.0.1:{s3.port}/bucket/demo.tar.gz",  # port differs
        "/same-origin": f"http://127.0.0.1:{index.port}/local/demo.tar.gz",
    }
    index.routes.update(targets)
    secrets = {"Authorization": "Bearer wf_build-token-secret", "Cookie": "session=abc"}
    for n, path in enumerate(targets):
        dest = fetch_with_hash(
            f"http://127.0.0.1:{index.port}{path}",
            tmp_path / f"{n}.tar.gz",
            digest,
            headers=secrets,
        )
        assert dest.read_bytes() == data
    # The index itself got the token on every first request.
    for path in targets:
        (first,) = index.headers_of(path)
        assert first["authorization"] == "Bearer wf_build-token-secret"
    # The other host (by name or by port) never saw it, nor the cookie.
    assert len(s3.headers_of("/bucket/demo.tar.gz")) == 2
    for headers in s3.headers_of("/bucket/demo.tar.gz"):
        assert "authorization" not in headers and "cookie" not in headers, headers
    # A redirect on the same scheme, host and port keeps it (the index's own redirects).
    (same,) = index.headers_of("/local/demo.tar.gz")
    assert same["authorization"] == "Bearer wf_build-token-secret"


# === Low: a wheel whose .dist-info names another project ==================================


def _wheel_with_dist_info(tmp_path: Path, project: str, dist_info_name: str, version: str) -> Path:
    """``<project>-<version>`` by filename and METADATA, but installing
    ``<dist_info_name>-<version>.dist-info`` (pip would record the other project)."""
    folder = tmp_path / f"built-{dist_info_name}-{version}"
    folder.mkdir()
    built = make_wheel(
        folder,
        dist_info_name,
        version,
        metadata=core_metadata(project, "1.0"),
        modules={"payload.py": "X = 1\n"},
    )
    return built.rename(tmp_path / f"{project}-1.0-py3-none-any.whl")


@pytest.mark.parametrize(
    ("dist_info_name", "dist_info_version"),
    [("requests", "1.0"), ("ours", "2.0"), ("ours", "not-a-version")],
    ids=["other-project", "other-version", "bad-version"],
)
def test_a_wheel_whose_dist_info_names_another_project_is_refused(
    client: FlaskClient,
    services: Services,
    settings: Settings,
    upload_token: str,
    tmp_path: Path,
    dist_info_name: str,
    dist_info_version: str,
) -> None:
    wheel = _wheel_with_dist_info(tmp_path, "ours", dist_info_name, dist_info_version)
    before, blobs = row_counts(services), stored_blobs(settings)
    response = upload(client, wheel, upload_token)
    assert response.status_code == 400, response.get_data(as_text=True)
    message = response.get_data(as_text=True).strip()
    assert f"{dist_info_name}-{dist_info_version}.dist-info does not match" in message
    assert "\n" not in message
    assert row_counts(services) == before and stored_blobs(settings) == blobs
    assert api_files(client, "ours") == []
    # The same project with a matching .dist-info is accepted.
    good = make_wheel(tmp_path, "ours", "1.0")
    assert upload(client, good, upload_token).status_code == 201


# === Low: JSON bodies are limited on every route (a 200 MB body took ~660 MB) ===========


@pytest.fixture
def small_json_server(tmp_path: Path) -> Iterator[Any]:
    server = start_server(
        tmp_path / "data", tmp_path / "server.log", WHEELFARM_MAX_JSON_BYTES="4096"
    )
    yield server
    stop_server(server)


def _raw_post(url: str, path: str, head: dict[str, str], send: Any) -> tuple[int, str]:
    """POST over a plain socket: ``send(sock)`` writes the body (or not); the status line
    and body of the answer. The server may answer and hang up before the body is sent."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in head.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            send(sock)  # it may have answered and closed already: what we want
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    head_part, _, body = answer.partition(b"\r\n\r\n")
    status = int(head_part.split(b" ", 2)[1])
    return status, body.decode(errors="replace")


def test_a_json_body_over_the_limit_is_a_413_before_it_is_read(small_json_server: Any) -> None:
    server = small_json_server
    auth = basic_auth(ADMIN_TOKEN)
    json_head = {**auth, "Content-Type": "application/json"}
    body = b'{"name": "' + b"x" * 50 + b'", "scope": "read"}'

    def tokens() -> int:
        import json
        import urllib.request

        request = urllib.request.Request(server.url + "/api/tokens", headers=auth)
        with urllib.request.urlopen(request, timeout=10) as response:
            return len(json.load(response)["tokens"])

    before = tokens()
    # Announced as 200 MB and never sent: the answer comes without reading the body.
    started = time.monotonic()
    status, text = _raw_post(
        server.url,
        "/api/tokens",
        {**json_head, "Content-Length": str(200 * 1024**2)},
        lambda sock: sock.sendall(body),
    )
    assert status == 413, text
    assert time.monotonic() - started < 10

    # Chunked (no length announced): refused once past the limit. werkzeug alone cut such
    # a body at the limit: a 400 for cut JSON, and a valid object padded past the limit
    # was taken (a token made from a body over the limit).
    def chunked(payload: bytes) -> Any:
        def send(sock: socket.socket) -> None:
            for start in range(0, len(payload), 1000):
                piece = payload[start : start + 1000]
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            sock.sendall(b"0\r\n\r\n")

        return send

    chunked_head = {**json_head, "Transfer-Encoding": "chunked"}
    padded = b'{"name": "padded", "scope": "read"}' + b" " * 8000
    for payload in (b'{"name": "' + b"y" * 200_000 + b'"}', padded):
        status, text = _raw_post(server.url, "/api/tokens", chunked_head, chunked(payload))
        assert status == 413, text
        assert "at most 4096 bytes" in text, text
    assert tokens() == before
    # A chunked body under the limit is read whole.
    status, text = _raw_post(server.url, "/api/tokens", chunked_head, chunked(padded[:4000]))
    assert status == 201, text
    before += 1
    # Other routes too: the worker API and a build request.
    for path in ("/api/worker/claim", "/api/builds", "/api/skips"):
        status, text = _raw_post(
            server.url, path, {**json_head, "Content-Length": str(10**6)}, lambda s: None
        )
        assert status == 413, (path, text)
    assert tokens() == before
    # A body under the limit is read as usual.
    status, text = _raw_post(
        server.url,
        "/api/tokens",
        {**json_head, "Content-Length": str(len(body))},
        lambda sock: sock.sendall(body),
    )
    assert status == 201, text
    assert tokens() == before + 1


# === Low: a NUL in a console form's reason (a 500 on PostgreSQL) ==========================


def test_a_nul_in_a_console_forms_reason_is_a_400(client: FlaskClient, services: Services) -> None:
    queued, to_cancel = queued_job(services, "demo", "2.0"), queued_job(services, "demo", "3.0")
    console_login(client)
    field = console_csrf(client, f"/console/builds/{queued}")
    before = row_counts(services)
    for job_id, action in ((queued, "skip"), (to_cancel, "cancel")):
        response = client.post(
            f"/console/builds/{job_id}/{action}", data={"csrf_token": field, "reason": "a\x00b"}
        )
        assert response.status_code == 400, response.get_data(as_text=True)[:300]
        assert "NUL characters are not allowed" in response.get_data(as_text=True)
        assert job_state(services, job_id) == "queued"
    assert row_counts(services) == before
    # The same form with a plain reason works (so the 400 was the NUL's).
    done = client.post(
        f"/console/builds/{queued}/skip", data={"csrf_token": field, "reason": "no arm"}
    )
    assert done.status_code == 302 and job_state(services, queued) == "skipped"


# === Low: the SQLite file is world-readable ===============================================


@sqlite_only
def test_the_sqlite_file_is_made_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        fresh = build_services(Settings.from_env({}, data_dir=tmp_path / "new", upstream_urls=()))
        create_token(fresh.engine, "writes-the-wal", "read")  # a write, so -wal/-shm exist
        fresh.engine.dispose()
        database = tmp_path / "new" / "wheelfarm.sqlite3"
        for path in (database, *database.parent.glob("wheelfarm.sqlite3-*")):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        # A file an older version left readable by all is tightened at the next start.
        database.chmod(0o644)
        again = build_services(Settings.from_env({}, data_dir=tmp_path / "new", upstream_urls=()))
        again.engine.dispose()
        assert stat.S_IMODE(database.stat().st_mode) == 0o600
    finally:
        os.umask(old)


# === Low: the console cookie has no Secure flag behind TLS =================================


def _session_cookie(response: Any) -> str:
    (cookie,) = [c for c in response.headers.getlist("Set-Cookie") if "wheelfarm_console=" in c]
    return str(cookie)


def test_the_console_cookie_is_secure_behind_a_tls_proxy(tmp_path: Path) -> None:
    behind = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    settings = Settings.from_env(
        {}, data_dir=tmp_path / "data", admin_token=ADMIN_TOKEN, upstream_urls=(), trusted_proxies=1
    )
    services = build_services(settings)
    try:
        client = create_app(services=services).test_client()
        login = console_login(client, **behind)
        cookie = _session_cookie(login)
        assert "; Secure" in cookie and "HttpOnly" in cookie, cookie
        # The same proxy over plain HTTP: no Secure (the browser would drop the cookie).
        plain = create_app(services=services).test_client()
        assert "Secure" not in _session_cookie(console_login(plain))
    finally:
        services.engine.dispose()
    # Without trusted_proxies a client's own X-Forwarded-Proto is not believed.
    untrusted = Settings.from_env(
        {}, data_dir=tmp_path / "data2", admin_token=ADMIN_TOKEN, upstream_urls=()
    )
    services = build_services(untrusted)
    try:
        client = create_app(services=services).test_client()
        assert "Secure" not in _session_cookie(console_login(client, **behind))
    finally:
        services.engine.dispose()


# === Low: build settings (env holds secrets) readable by any reader =======================


SECRET = "s3cr3t-deploy-key-8c1f"


def test_build_settings_env_values_are_write_only(
    client: FlaskClient, services: Services, upload_token: str
) -> None:
    settings = {"env": {"DEPLOY_KEY": SECRET, "CFLAGS": "-O2"}, "constraints": "cython<3\n"}
    put = client.put("/api/build-settings/demo", json=settings, headers=admin_headers())
    assert put.status_code == 200, put.get_data(as_text=True)
    assert SECRET not in put.get_data(as_text=True)
    read = create_token(services.engine, "reader", "read")[1]
    shown = {"DEPLOY_KEY": "(set)", "CFLAGS": "(set)"}
    for headers in (bearer(read), bearer(upload_token), admin_headers()):
        got = client.get("/api/build-settings/demo", headers=headers)
        assert got.status_code == 200
        assert got.get_json()["settings"]["env"] == shown
        assert got.get_json()["settings"]["constraints"] == "cython<3\n"
        assert SECRET not in got.get_data(as_text=True)
    # Nor the audit log, nor the console's project and build pages.
    events = client.get("/api/events?project=demo", headers=admin_headers())
    assert events.status_code == 200 and "build settings" in events.get_data(as_text=True)
    assert SECRET not in events.get_data(as_text=True)
    job_id = queued_job(services, "demo", "2.0")
    console_login(client)
    for path in ("/console/projects/demo", f"/console/builds/{job_id}"):
        page = client.get(path)
        assert page.status_code == 200
        assert "DEPLOY_KEY" in page.get_data(as_text=True)
        assert SECRET not in page.get_data(as_text=True), path
    # The worker that builds it still gets the value, in its claim only.
    build = create_token(services.engine, "worker", "build")[1]
    claim = client.post(
        "/api/worker/claim",
        json={"worker": "w1", "platforms": [PLATFORM]},
        headers=bearer(build),
    )
    assert claim.status_code == 200, claim.get_data(as_text=True)
    assert claim.get_json()["settings"]["env"]["DEPLOY_KEY"] == SECRET


# === Low: names never validated (500 on PostgreSQL over 200 chars; foo?q=1 upstream) ======


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    (tmp_path / "up").mkdir()
    fake.add(make_wheel(tmp_path / "up", "libup", "1.0"))
    yield fake
    fake.close()


@pytest.fixture
def proxy(tmp_path: Path, upstream: FakeUpstream) -> Iterator[Services]:
    svc = proxy_services(tmp_path, upstream)
    yield svc
    svc.engine.dispose()


BAD_NAMES = ["x" * 201, "a" + "-b" * 150, "foo?q=1", "foo#x", "foo bar", "-foo", "foo.", "ä"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: n[:12])
def test_invalid_project_names_are_refused_before_any_lookup(
    proxy: Services, upstream: FakeUpstream, name: str
) -> None:
    client = create_app(services=proxy).test_client()
    client.get(f"/{PLATFORM}/simple/libup/")  # the upstream answers; rows exist
    seen, before = dict(upstream.requests), row_counts(proxy)
    quoted = quote(name, safe="")
    for url in (
        f"/{PLATFORM}/simple/{quoted}/",
        f"/{PLATFORM}/simple/{quoted}",
        f"/{PLATFORM}/files/{quoted}/{'0' * 64}/{quoted}-1.0.tar.gz",
        f"/api/projects/{quoted}",
        f"/api/build-settings/{quoted}",
        f"/api/projects/{quoted}/owners",
    ):
        response = client.get(url, headers=admin_headers())
        assert response.status_code == 404, (url, response.status_code)
        assert "not a valid project name" in response.get_data(as_text=True), url
    put = client.put(f"/api/build-settings/{quoted}", json={}, headers=admin_headers())
    assert put.status_code == 404
    for path, body in (
        ("/api/builds", {"project": name, "version": "1.0", "platforms": [PLATFORM]}),
        ("/api/skips", {"project": name, "version": "1.0", "reason": "r"}),
    ):
        response = client.post(path, json=body, headers=admin_headers())
        assert response.status_code == 422, (path, response.get_data(as_text=True))
        assert "not a valid project name" in response.get_data(as_text=True)
    assert dict(upstream.requests) == seen, "an invalid name reached the upstream"
    assert row_counts(proxy) == before


def test_a_name_of_200_characters_is_still_looked_up(
    proxy: Services, upstream: FakeUpstream
) -> None:
    """The limit is the database's 200: the longest valid name is a plain 404 from the
    upstream, not a refusal (and not a 500 on PostgreSQL)."""
    client = create_app(services=proxy).test_client()
    name = "x" * 200
    response = client.get(f"/{PLATFORM}/simple/{name}/")
    assert response.status_code == 404
    assert "not a valid project name" not in response.get_data(as_text=True)
    assert upstream.count(f"/simple/{name}") == 1


def test_invented_valid_names_do_not_grow_the_database_without_bound(
    proxy: Services, upstream: FakeUpstream
) -> None:
    """A valid name the upstream does not know is a cached "not found" (the upstream is
    not asked again for upstream_404_ttl), and that row goes once it is long stale."""
    from index_server.db.engine import write_transaction
    from index_server.db.schema import upstream_pages

    client = create_app(services=proxy).test_client()
    assert client.get(f"/{PLATFORM}/simple/libup/").status_code == 200
    for n in range(5):
        assert client.get(f"/{PLATFORM}/simple/invented-{n}/").status_code == 404
    assert row_counts(proxy)["upstream_pages"] == 6
    assert client.get(f"/{PLATFORM}/simple/invented-0/").status_code == 404
    assert upstream.count("/simple/invented-0") == 1  # the "not found" is still cached
    # An hour later (the rows made older: the server's clock is not ours to move) ...
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    with write_transaction(proxy.engine) as conn:
        conn.execute(update(upstream_pages).values(fetched_at=hour_ago, expires_at=hour_ago))
    assert client.get(f"/{PLATFORM}/simple/invented-new/").status_code == 404
    with read_connection(proxy.engine) as conn:
        kept = sorted(conn.execute(select(upstream_pages.c.project)).scalars())
    assert kept == ["invented-new", "libup"]  # a found page stays, however old
    assert client.get(f"/{PLATFORM}/simple/libup/").status_code == 200


# === Low: yank/unyank/rebuild/cancel as a cross-site form with an admin's Basic creds ====


@pytest.fixture
def site(client: FlaskClient, services: Services, upload_token: str, tmp_path: Path) -> dict:
    wheel = make_wheel(tmp_path, "demo", "1.0")
    upload_ok(client, wheel, upload_token)
    file_id = api_files(client, "demo")[0]["id"]
    return {"file": file_id, "job": queued_job(services, "demo", "2.0")}


def test_api_writes_from_another_sites_form_are_refused(
    client: FlaskClient, services: Services, site: dict
) -> None:
    file_id, job_id = site["file"], site["job"]
    writes = [
        f"/api/files/{file_id}/yank",
        f"/api/files/{file_id}/unyank",
        f"/api/builds/{job_id}/rebuild",
        f"/api/builds/{job_id}/cancel",
    ]
    before = row_counts(services)
    admin = admin_headers()  # what a browser holding the admin's Basic credentials sends
    for path in writes:
        # A plain HTML form from another site: its body types are refused by the JSON API...
        form = client.post(path, data={"reason": "x"}, headers=admin)
        assert form.status_code == 415, (path, form.get_data(as_text=True))
        plain = client.post(path, data="x", headers={**admin, "Content-Type": "text/plain"})
        assert plain.status_code == 415, path
        # ... and a request a page of another site made is refused whatever its body.
        for extra in (
            {"Origin": "https://evil.example"},
            {"Sec-Fetch-Site": "cross-site"},
        ):
            response = client.post(path, json={"reason": "x"}, headers={**admin, **extra})
            assert response.status_code == 403, (path, extra, response.get_data(as_text=True))
            assert "another site" in response.get_json()["error"]
    assert row_counts(services) == before
    assert api_files(client, "demo")[0]["yanked"] is False
    assert job_state(services, job_id) == "queued"
    # The same JSON from the same origin (a script or the CLI) still works.
    same = client.post(
        writes[0], json={"reason": "broken"}, headers={**admin, "Origin": "http://localhost"}
    )
    assert same.status_code == 200, same.get_data(as_text=True)
    assert api_files(client, "demo")[0]["yanked"] is True


def test_console_actions_need_the_csrf_token_even_with_basic_admin_credentials(
    client: FlaskClient, services: Services, site: dict
) -> None:
    job_id = site["job"]
    cancelled = queued_job(services, "demo", "3.0")
    before = row_counts(services)
    for path in (
        f"/console/builds/{job_id}/rebuild",
        f"/console/builds/{job_id}/skip",
        f"/console/builds/{cancelled}/cancel",
    ):
        response = client.post(path, data={"reason": "r"}, headers=admin_headers())
        assert response.status_code == 400, (path, response.status_code)
        assert "CSRF token is missing or wrong" in response.get_data(as_text=True)
    assert row_counts(services) == before
    assert job_state(services, job_id) == job_state(services, cancelled) == "queued"


# === Medium 3 (last part): anonymous sdist downloads cannot queue unbounded jobs =========


def test_first_sight_builds_are_bounded_per_platform_and_hour(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {},
        data_dir=tmp_path / "data",
        admin_token=ADMIN_TOKEN,
        upstream_urls=(),
        first_sight_per_hour=2,
    )
    services = build_services(settings)
    try:
        app: Flask = create_app(services=services)
        client = app.test_client()
        token = create_token(services.engine, "ci", "upload")[1]
        urls = []
        for version in ("1.0", "2.0", "3.0"):
            sdist = make_sdist(tmp_path, "hosted", version)
            upload_ok(client, sdist, token)
            digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
            urls.append(f"/{PLATFORM}/files/hosted/{digest}/{sdist.name}")
        for url in urls * 3:  # anonymous, again and again
            assert client.get(url).status_code == 200  # the sdist is still served
        found = [(j["version"], j["source"]) for j in jobs.list_jobs(services)]
        assert sorted(found) == [("1.0", "first-sight"), ("2.0", "first-sight")]
        # An invented name or file queues nothing either.
        for url in (
            f"/{PLATFORM}/files/invented/{'a' * 64}/invented-1.0.tar.gz",
            f"/{PLATFORM}/files/hosted/{'b' * 64}/hosted-9.0.tar.gz",
        ):
            assert client.get(url).status_code == 404
        assert len(jobs.list_jobs(services)) == 2
    finally:
        services.engine.dispose()


# === Low: the README put the worker token on the command line =============================


def test_the_readme_never_puts_a_token_on_a_worker_command_line() -> None:
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"wheelfarm worker[^\n]*(?:\\\n[^\n]*)*", readme)
    assert commands, "the README shows how to start a worker"
    for command in commands:
        assert not re.search(r"--token(?!-file)[ =]", command), command
    assert "--token-file" in readme


# === High 1, replayed as reported: another token's respellings of alpha 1.0 ===============


def test_another_tokens_respellings_of_a_release_are_refused(
    client: FlaskClient, services: Services, settings: Settings, tmp_path: Path
) -> None:
    """After ``alpha-1.0-py3-none-any.whl``, a second token's ``Alpha-1.0-...``,
    ``alpha-1.0.0-...``, ``alpha-1.0-1-...``, ``alpha-1.0-cp311-...`` and
    ``Alpha-1.0.tar.gz`` were all 201 and pip fetched the attacker's cp311 wheel."""
    owner = create_token(services.engine, "alice", "upload")[1]
    attacker = create_token(services.engine, "mallory", "upload")[1]
    original = make_wheel(tmp_path, "alpha", "1.0")
    upload_ok(client, original, owner)
    variants = []
    for n, (filename, version, tag) in enumerate(
        [
            ("Alpha-1.0-py3-none-any.whl", "1.0", "py3-none-any"),
            ("alpha-1.0.0-py3-none-any.whl", "1.0.0", "py3-none-any"),
            ("alpha-1.0-1-py3-none-any.whl", "1.0", "py3-none-any"),
            ("alpha-1.0-cp311-cp311-linux_x86_64.whl", "1.0", "cp311-cp311-linux_x86_64"),
        ]
    ):
        folder = tmp_path / f"v{n}"
        folder.mkdir()
        built = make_wheel(folder, "alpha", version, tag=tag, modules={"alpha.py": "EVIL = 1\n"})
        variants.append(built.rename(folder / filename))
    folder = tmp_path / "sdist"
    folder.mkdir()
    sdist = make_sdist(folder, "alpha", "1.0", files={"evil.py": "EVIL = 1\n"})
    variants.append(sdist.rename(folder / "Alpha-1.0.tar.gz"))
    page_before = client.get(
        f"/{PLATFORM}/simple/alpha/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    before, blobs = row_counts(services), stored_blobs(settings)
    for path in variants:
        response = upload(client, path, attacker)
        assert response.status_code == 403, (path.name, response.get_data(as_text=True))
        assert "belongs to alice" in response.get_data(as_text=True), path.name
    assert row_counts(services) == before and stored_blobs(settings) == blobs
    page_after = client.get(
        f"/{PLATFORM}/simple/alpha/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    assert [f["filename"] for f in page_after.get_json()["files"]] == [original.name]
    assert page_after.get_data() == page_before.get_data()
