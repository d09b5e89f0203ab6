"""An audit of every route the app has, read from ``app.url_map``: who may call it.

* Every mutating route (POST/PUT/PATCH/DELETE) is in ``MUTATING`` with the scope it needs;
  a new route missing from the table fails the audit. Each refuses a missing token (401),
  a wrong one (403), a revoked one (403) and every scope that does not imply the needed one
  (403), without changing anything (all tables and blobs compared); the needed scope gets
  past the check. The console's actions work by session and CSRF token instead, checked in
  their own way.
* With ``read_requires_token``, every GET route in ``READS`` refuses anonymous and wrong
  tokens, except the explicit, justified ``PUBLIC`` allow-list.
* Secrets never reach the server's log (a live ``wheelfarm serve --access-log``).
* Secrets are compared in constant time (``hmac.compare_digest``, seen being called).
"""

from __future__ import annotations

import base64
import hmac
import inspect
import io
import os
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.routing import Rule
from werkzeug.test import TestResponse

from index_server import auth, jobs
from index_server.app import create_app
from index_server.auth import create_token, revoke_token
from index_server.config import Settings
from index_server.console import security
from index_server.db.engine import read_connection
from index_server.db.schema import metadata
from index_server.services import Services, build_services
from tests.conftest import ADMIN_TOKEN, BIN, database_for, free_port
from tests.factory import make_sdist, make_wheel
from tests.http_helpers import (
    PLATFORM,
    basic_auth,
    bearer,
    fast_services,
    sha256_of,
    stored_blobs,
    upload_ok,
    username_only_auth,
)

pytestmark = pytest.mark.timeout(120)

SCOPES = auth.SCOPES
MUTATING_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


@dataclass(frozen=True)
class Console:
    """A console action: a session logged in with an admin token, and the CSRF token."""

    needs: str = "admin"


@dataclass(frozen=True)
class Public:
    """No token: why that is right is the reason."""

    reason: str


# Every mutating route, and what it needs. Build-scoped routes are the worker protocol's.
MUTATING: dict[tuple[str, str], str | Console | Public] = {
    ("POST", "/<platform>/legacy/"): "upload",
    ("POST", "/<platform>/legacy"): "upload",
    ("POST", "/api/builds"): "upload",  # an uploader may ask for wheels of what it uploads
    ("POST", "/api/resolutions"): "upload",  # warm: resolve a requirements file
    ("POST", "/api/files/<int:file_id>/yank"): "admin",
    ("POST", "/api/files/<int:file_id>/unyank"): "admin",
    ("DELETE", "/api/files/<int:file_id>"): "admin",
    ("POST", "/api/tokens"): "admin",
    ("DELETE", "/api/tokens/<int:token_id>"): "admin",
    ("POST", "/api/builds/<int:job_id>/rebuild"): "admin",
    ("POST", "/api/builds/<int:job_id>/cancel"): "admin",
    ("POST", "/api/builds/<int:job_id>/skip"): "admin",
    ("POST", "/api/skips"): "admin",
    ("DELETE", "/api/skips/<project>"): "admin",
    ("PUT", "/api/build-settings/<project>"): "admin",
    ("POST", "/api/platforms/<platform>/backfill"): "admin",
    ("POST", "/api/platforms/<platform>/rebuild-stale"): "admin",
    ("DELETE", "/api/platforms/<platform>/files"): "admin",
    ("POST", "/api/tracked"): "admin",
    ("DELETE", "/api/tracked/<project>"): "admin",
    ("POST", "/api/projects/<name>/owners"): "admin",
    ("DELETE", "/api/projects/<name>/owners/<owner>"): "admin",
    ("POST", "/api/worker/claim"): "build",
    ("POST", "/api/worker/jobs/<int:job_id>/heartbeat"): "build",
    ("POST", "/api/worker/jobs/<int:job_id>/log"): "build",
    ("POST", "/api/worker/jobs/<int:job_id>/wheels"): "build",
    ("POST", "/api/worker/jobs/<int:job_id>/finish"): "build",
    ("POST", "/console/builds/<int:job_id>/rebuild"): Console(),
    ("POST", "/console/builds/<int:job_id>/cancel"): Console(),
    ("POST", "/console/builds/<int:job_id>/skip"): Console(),
    ("POST", "/console/projects/<name>/owners"): Console(),
    ("POST", "/console/projects/<name>/owners/remove"): Console(),
    ("POST", "/console/login"): Public(
        "the login form is where a token is presented; CSRF-protected, refuses bad tokens"
    ),
    ("POST", "/console/logout"): Public(
        "ends the caller's own session and nothing else; CSRF-protected"
    ),
}

# Every GET route with read protection on: "read" or "admin" (token), "console" (session:
# HTML pages redirect to the login form, the log's JSON is a 401), "console admin" (an admin
# session; any other session is a 403, also with reading open), or public.
READS: dict[str, str | Public] = {
    "/": "read",
    "/api/platforms": "read",
    "/api/projects": "read",
    "/api/projects/<name>": "read",
    "/api/projects/<name>/owners": "read",
    "/api/tokens": "admin",
    "/api/events": "admin",
    "/api/builds": "read",
    "/api/builds/<int:job_id>": "read",
    "/api/skips": "read",
    "/api/build-settings/<project>": "read",
    "/api/workers": "read",
    "/api/platforms/<platform>": "read",
    "/api/tracked": "read",
    "/files/<sha256>/<filename>": "read",
    "/<platform>/files/<project>/<sha256>/<filename>": "read",
    "/<platform>/simple": "read",
    "/<platform>/simple/": "read",
    "/<platform>/simple/<project>": "read",
    "/<platform>/simple/<project>/": "read",
    "/metrics": "read",
    "/console/": "console",
    "/console/projects": "console",
    "/console/projects/<name>": "console",
    "/console/builds": "console",
    "/console/builds/<int:job_id>": "console",
    "/console/builds/<int:job_id>/log.json": "console",
    "/console/audit": "console admin",
    # The allow-list: keep it small.
    "/health": Public("liveness probe for load balancers; answers only {'status': 'ok'}"),
    "/console/login": Public("the form where a token is presented; shows no index data"),
    "/static/<path:filename>": Public("Flask's own route; the app ships no static folder (404)"),
    "/api/openapi.json": Public(
        "the API's description, which a client reads to learn how to authenticate; "
        "it names the platforms, no project or file"
    ),
}


def routes(app: Flask) -> list[tuple[str, Rule]]:
    """(method, rule) for every route and method the app serves (HEAD/OPTIONS implied)."""
    return sorted(
        ((method, rule) for rule in app.url_map.iter_rules() for method in rule.methods or ()),
        key=lambda pair: (pair[1].rule, pair[0]),
    )


# === the server under audit ==================================================================


@dataclass
class Audited:
    app: Flask
    client: FlaskClient
    services: Services
    settings: Settings
    tmp: Path
    tokens: dict[str, str]  # scope -> secret
    revoked: str  # an admin token, revoked
    victim_token_id: int  # a live token for DELETE /api/tokens/<id>
    file_id: int
    wheel: Path
    job_id: int  # running, claimed with ``lease``
    lease: str
    values: dict[str, str] = field(default_factory=dict)

    def url(self, rule: Rule) -> str:
        """The rule with real values: routes reach the objects they would act on."""
        return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda m: self.values[m.group(1)], rule.rule)


def _audited(settings: Settings, tmp: Path) -> Iterator[Audited]:
    services = fast_services(settings)
    app = create_app(services=services)
    app.config["PROPAGATE_EXCEPTIONS"] = True
    client = app.test_client()
    tokens = {scope: create_token(services.engine, f"audit-{scope}", scope)[1] for scope in SCOPES}
    revoked_id, revoked = create_token(services.engine, "revoked-admin", "admin")
    assert revoke_token(services.engine, revoked_id)
    victim_id = create_token(services.engine, "victim", "read")[0]
    wheel = make_wheel(tmp, "demo", "1.0")
    sdist = make_sdist(tmp, "demo", "1.0")
    upload_ok(client, wheel, tokens["upload"])
    upload_ok(client, sdist, tokens["upload"])
    with read_connection(services.engine) as conn:
        file_id = conn.execute(
            select(metadata.tables["files"].c.id).where(
                metadata.tables["files"].c.filename == wheel.name
            )
        ).scalar_one()
    queued = client.post(
        "/api/builds",
        json={"project": "audit", "version": "1.0", "platforms": [PLATFORM]},
        headers=bearer(tokens["upload"]),
    )
    assert queued.status_code == 200, queued.get_data(as_text=True)
    claimed = client.post(
        "/api/worker/claim",
        json={"worker": "audit-worker", "platforms": [PLATFORM]},
        headers=bearer(tokens["build"]),
    )
    assert claimed.status_code == 200, claimed.get_data(as_text=True)
    job = claimed.get_json()
    skip = client.post(
        "/api/skips",
        json={"project": "skipped-project", "reason": "audit"},
        headers=bearer(tokens["admin"]),
    )
    assert skip.status_code == 201
    audited = Audited(
        app=app,
        client=client,
        services=services,
        settings=settings,
        tmp=tmp,
        tokens=tokens,
        revoked=revoked,
        victim_token_id=victim_id,
        file_id=file_id,
        wheel=wheel,
        job_id=job["id"],
        lease=job["lease"],
    )
    audited.values = {
        "platform": PLATFORM,
        "file_id": str(file_id),
        "token_id": str(victim_id),
        "job_id": str(job["id"]),
        "project": "demo",
        "name": "demo",
        "owner": "acme",
        "sha256": sha256_of(wheel),
        "filename": wheel.name,
        "path:filename": "style.css",
    }
    audited.values["skip_project"] = "skipped-project"
    try:
        yield audited
    finally:
        services.engine.dispose()


@pytest.fixture(params=[True, False], ids=["read-protected", "read-open"])
def audited(
    request: pytest.FixtureRequest, settings: Settings, tmp_path: Path
) -> Iterator[Audited]:
    import dataclasses

    yield from _audited(dataclasses.replace(settings, read_requires_token=request.param), tmp_path)


@pytest.fixture
def protected(settings: Settings, tmp_path: Path) -> Iterator[Audited]:
    import dataclasses

    yield from _audited(dataclasses.replace(settings, read_requires_token=True), tmp_path)


def snapshot(audited: Audited) -> dict[str, Any]:
    """Every row of every table, and every stored blob: what a refused request must keep."""
    with read_connection(audited.services.engine) as conn:
        tables = {
            name: sorted(map(repr, conn.execute(select(table)).all()))
            for name, table in metadata.tables.items()
        }
    return {"tables": tables, "blobs": stored_blobs(audited.settings)}


# === mutating routes =========================================================================


def _body(audited: Audited, method: str, rule: str) -> dict[str, Any]:
    """A request that would succeed if the token check were skipped."""
    lease = audited.lease
    if rule.startswith("/<platform>/legacy"):
        folder = audited.tmp / "new"
        folder.mkdir(exist_ok=True)
        new = make_wheel(folder, "audit-new", "1.0")
        return {
            "data": {
                ":action": "file_upload",
                "protocol_version": "1",
                "sha256_digest": sha256_of(new),
                "content": (io.BytesIO(new.read_bytes()), new.name),
            },
            "content_type": "multipart/form-data",
        }
    if rule.endswith("/wheels"):
        wheel = make_wheel(audited.tmp, "audit", "1.0", tag="cp311-cp311-linux_x86_64")
        return {
            "data": {
                "lease": lease,
                "sha256_digest": sha256_of(wheel),
                "content": (io.BytesIO(wheel.read_bytes()), wheel.name),
            },
            "content_type": "multipart/form-data",
        }
    bodies: dict[str, Any] = {
        "/api/builds": {"project": "audit2", "version": "1.0", "platforms": [PLATFORM]},
        "/api/resolutions": {"platform": PLATFORM, "requirements": "audit2\n"},
        "/api/tokens": {"scope": "admin", "name": "intruder"},
        "/api/skips": {"project": "audit", "reason": "intruder"},
        "/api/build-settings/<project>": {"env": {"EVIL": "1"}},
        "/api/worker/claim": {"worker": "intruder", "platforms": [PLATFORM]},
        "/api/worker/jobs/<int:job_id>/heartbeat": {"lease": lease},
        "/api/worker/jobs/<int:job_id>/log": {"lease": lease, "text": "intruder"},
        "/api/worker/jobs/<int:job_id>/finish": {"lease": lease, "outcome": "succeeded"},
        "/api/builds/<int:job_id>/skip": {"reason": "intruder"},
        "/api/builds/<int:job_id>/cancel": {"reason": "intruder"},
        "/api/files/<int:file_id>/yank": {"reason": "intruder"},
    }
    return {"json": bodies[rule]} if rule in bodies else {}


def _call(
    audited: Audited, method: str, rule: Rule, headers: dict[str, str], **extra: Any
) -> TestResponse:
    kwargs = _body(audited, method, rule.rule)
    url = audited.url(rule)
    if rule.rule == "/api/skips/<project>":
        url = "/api/skips/skipped-project"
    return audited.client.open(url, method=method, headers=headers, **kwargs, **extra)


def _refusals(audited: Audited, needs: str) -> list[tuple[str, dict[str, str], int]]:
    wrong = "wf_" + secrets.token_urlsafe(32)
    cases = [
        ("no token", {}, 401),
        ("wrong token (basic)", basic_auth(wrong), 403),
        ("wrong token (bearer)", bearer(wrong), 403),
        ("revoked admin token (basic)", basic_auth(audited.revoked), 403),
        ("revoked admin token (bearer)", bearer(audited.revoked), 403),
        ("wrong admin token", bearer(ADMIN_TOKEN + "x"), 403),
        ("not base64", {"Authorization": "Basic %%%"}, 401),
        ("other scheme", {"Authorization": f"Token {audited.tokens['admin']}"}, 401),
    ]
    for scope in SCOPES:
        if not auth.Identity("x", scope).allows(needs):
            cases.append((f"{scope} token", basic_auth(audited.tokens[scope]), 403))
    return cases


def test_every_mutating_route_is_in_the_table(protected: Audited) -> None:
    found = {
        (method, rule.rule) for method, rule in routes(protected.app) if method in MUTATING_METHODS
    }
    missing = sorted(found - set(MUTATING))
    assert not missing, f"routes missing from MUTATING (say what they need): {missing}"
    stale = sorted(set(MUTATING) - found)
    assert not stale, f"MUTATING lists routes the app does not have: {stale}"


def test_token_routes_refuse_missing_wrong_revoked_and_underscoped_tokens(
    audited: Audited,
) -> None:
    token_routes = [
        (method, rule)
        for method, rule in routes(audited.app)
        if isinstance(MUTATING.get((method, rule.rule)), str)
    ]
    assert len(token_routes) >= 19
    before = snapshot(audited)
    checked = 0
    for method, rule in token_routes:
        needs = MUTATING[(method, rule.rule)]
        assert isinstance(needs, str)
        for case, headers, status in _refusals(audited, needs):
            response = _call(audited, method, rule, headers)
            where = f"{method} {rule.rule} with {case}"
            assert response.status_code == status, (where, response.get_data(as_text=True))
            if status == 401:
                assert response.headers["WWW-Authenticate"].startswith("Basic"), where
            assert b"wf_" not in response.get_data(), where  # no secret in an answer
            checked += 1
    assert snapshot(audited) == before, "a refused request changed something"
    # The needed scope gets past the check (it may then find nothing to do: 400/404/409).
    for method, rule in token_routes:
        needs = MUTATING[(method, rule.rule)]
        assert isinstance(needs, str)
        response = _call(audited, method, rule, basic_auth(audited.tokens[needs]))
        where = f"{method} {rule.rule} with a {needs} token"
        assert response.status_code not in (401, 403), (where, response.get_data(as_text=True))
        assert response.status_code < 500, where
    assert checked > 150


# --- the console's actions: session and CSRF ----------------------------------------------


def _csrf(client: FlaskClient) -> str:
    page = client.get("/console/login")
    assert page.status_code == 200
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    assert match, "no CSRF field on the login form"
    return match.group(1)


def _console_login(client: FlaskClient, secret: str) -> tuple[int, str]:
    response = client.post("/console/login", data={"csrf_token": _csrf(client), "token": secret})
    return response.status_code, _csrf(client)


def _job_state(audited: Audited) -> str:
    return str(jobs.get_job(audited.services, audited.job_id, with_log=False)["state"])


def test_console_actions_need_an_admin_session_and_the_csrf_token(protected: Audited) -> None:
    app = protected.app
    actions = [
        (method, rule)
        for method, rule in routes(app)
        if isinstance(MUTATING.get((method, rule.rule)), Console)
    ]
    assert {r.rule.split("/")[4] for _m, r in actions} == {"rebuild", "cancel", "skip", "owners"}
    assert len(actions) == 5

    def kept(audited: Audited) -> dict[str, Any]:
        tables = snapshot(audited)["tables"]  # (logins add events: the rest must stay)
        return {name: rows for name, rows in tables.items() if name != "audit_events"}

    before = kept(protected)
    form = {"reason": "intruder", "owner": "intruder"}
    for method, rule in actions:
        url = protected.url(rule)
        # no session, no CSRF token; not even an admin token in a header helps
        anonymous = app.test_client()
        for headers in ({}, bearer(protected.tokens["admin"]), basic_auth(ADMIN_TOKEN)):
            response = anonymous.open(url, method=method, data=form, headers=headers)
            # read protection sends it to the login form first; else the CSRF check refuses
            assert response.status_code == 302, (url, headers)
            assert response.headers["Location"].startswith("/console/login"), (url, headers)
        # a session, with its CSRF token, for tokens that may not act
        for scope in ("read", "upload", "build"):
            client = app.test_client()
            status, token = _console_login(client, protected.tokens[scope])
            assert status == 302
            response = client.open(url, method=method, data={**form, "csrf_token": token})
            assert response.status_code == 403, (url, scope)
            response = client.open(url, method=method, data={**form, "csrf_token": "x" + token})
            assert response.status_code == 400, (url, scope, "forged CSRF")
        # wrong and revoked tokens get no session at all
        for secret in ("wf_" + secrets.token_urlsafe(32), protected.revoked):
            status, token = _console_login(app.test_client(), secret)
            assert status == 403
    # an admin session whose token is revoked afterwards loses its rights
    client = app.test_client()
    token_id, secret = create_token(protected.services.engine, "soon-revoked", "admin")
    status, csrf_token = _console_login(client, secret)
    assert status == 302
    assert revoke_token(protected.services.engine, token_id)
    for method, rule in actions:
        response = client.open(
            protected.url(rule), method=method, data={**form, "csrf_token": csrf_token}
        )
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/console/login")
    after = kept(protected)
    assert after.pop("tokens") != before.pop("tokens")  # only the token made and revoked
    assert after == before, "a refused console action changed something"
    assert _job_state(protected) == "running"
    # an admin session may: cancel the running job
    admin = app.test_client()
    status, csrf_token = _console_login(admin, protected.tokens["admin"])
    assert status == 302
    cancel = f"/console/builds/{protected.job_id}/cancel"
    response = admin.post(cancel, data={"reason": "audit", "csrf_token": csrf_token})
    assert response.status_code == 302 and "/console/builds/" in response.headers["Location"]
    assert _job_state(protected) == "cancelled"


def test_console_login_and_logout_want_the_csrf_token(protected: Audited) -> None:
    client = protected.app.test_client()
    response = client.post("/console/login", data={"token": protected.tokens["admin"]})
    assert response.status_code == 400
    status, csrf_token = _console_login(client, protected.tokens["read"])
    assert status == 302
    assert client.post("/console/logout").status_code == 400
    assert client.get("/console/").status_code == 200  # still logged in
    assert client.post("/console/logout", data={"csrf_token": csrf_token}).status_code == 302
    assert client.get("/console/").status_code == 302  # logged out


# === read routes =============================================================================


def test_every_read_route_is_in_the_table(protected: Audited) -> None:
    found = {rule.rule for method, rule in routes(protected.app) if method == "GET"}
    missing = sorted(found - set(READS))
    assert not missing, f"GET routes missing from READS (say who may read them): {missing}"


def _read_urls(audited: Audited) -> list[tuple[str, str]]:
    """(rule, URL) of every GET route, with real values; .metadata files too."""
    urls = []
    for method, rule in routes(audited.app):
        if method == "GET":
            urls.append((rule.rule, audited.url(rule)))
            if rule.rule.endswith("<filename>"):
                urls.append((rule.rule, audited.url(rule) + ".metadata"))
    return urls


def test_read_protection_covers_every_route_but_the_allow_list(protected: Audited) -> None:
    client = protected.client
    reader = protected.app.test_client()  # a console session of a read token
    assert _console_login(reader, protected.tokens["read"])[0] == 302
    wrong = "wf_" + secrets.token_urlsafe(32)
    checked = 0
    for rule, url in _read_urls(protected):
        policy = READS[rule]
        anonymous = client.get(url)
        checked += 1
        if isinstance(policy, Public):
            assert anonymous.status_code in (200, 404), (url, anonymous.status_code)
            continue
        if policy == "console admin":
            assert anonymous.status_code == 302, url
            assert anonymous.headers["Location"].startswith("/console/login?next="), url
            assert reader.get(url).status_code == 403, url
            continue
        if policy == "console":
            if url.endswith("/log.json"):
                assert anonymous.status_code == 401, url
            else:
                assert anonymous.status_code == 302, url
                assert anonymous.headers["Location"].startswith("/console/login?next="), url
            assert reader.get(url).status_code == 200, url
            continue
        assert anonymous.status_code == 401, (url, anonymous.status_code)
        assert anonymous.headers["WWW-Authenticate"].startswith("Basic"), url
        assert "authentication required" in anonymous.get_data(as_text=True), url
        assert len(anonymous.get_data()) < 80, url  # the reason, nothing of the data
        for headers in (basic_auth(wrong), bearer(wrong), bearer(protected.revoked)):
            assert client.get(url, headers=headers).status_code == 403, url
        for scope in SCOPES:
            response = client.get(url, headers=basic_auth(protected.tokens[scope]))
            if auth.Identity("x", scope).allows(str(policy)):
                assert response.status_code in (200, 301), (url, scope, response.status_code)
            else:
                assert response.status_code == 403, (url, scope)
    assert checked >= 28


def test_console_admin_pages_need_an_admin_session(audited: Audited) -> None:
    """With reading open or protected: no session is sent to the login form, a session of
    any other scope is a 403 (and sees no data), an admin's session reads the page."""
    pages = [rule for rule, needs in READS.items() if needs == "console admin"]
    assert pages == ["/console/audit"]
    for url in pages:
        anonymous = audited.app.test_client()
        for headers in ({}, bearer(audited.tokens["admin"]), basic_auth(ADMIN_TOKEN)):
            response = anonymous.get(url, headers=headers)  # a header is no session
            assert response.status_code == 302, (url, headers)
            assert response.headers["Location"].startswith("/console/login?next="), url
        for scope in ("read", "upload", "build"):
            client = audited.app.test_client()
            assert _console_login(client, audited.tokens[scope])[0] == 302
            response = client.get(url)
            assert response.status_code == 403, (url, scope)
            assert "console login" not in response.get_data(as_text=True), (url, scope)
        admin = audited.app.test_client()
        assert _console_login(admin, audited.tokens["admin"])[0] == 302
        response = admin.get(url)
        assert response.status_code == 200, url
        assert "console login" in response.get_data(as_text=True), url  # the log's events


def test_admin_reads_are_closed_even_when_reading_is_open(audited: Audited) -> None:
    for rule, needs in READS.items():
        if needs != "admin":
            continue
        url = rule
        assert audited.client.get(url).status_code == 401, url
        for scope in ("read", "upload", "build"):
            response = audited.client.get(url, headers=bearer(audited.tokens[scope]))
            assert response.status_code == 403, (url, scope)
        assert audited.client.get(url, headers=bearer(audited.tokens["admin"])).status_code == 200


# === secrets in logs =========================================================================


def test_tokens_never_reach_the_log(tmp_path: Path) -> None:
    """A live server with gunicorn's access log on: tokens presented every way pip, twine,
    uv and the workers present them, good and bad, never appear in what it writes."""
    data_dir = tmp_path / "data"
    log_path = tmp_path / "server.log"
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WHEELFARM_")},
        "WHEELFARM_DATA_DIR": str(data_dir),
        "WHEELFARM_ADMIN_TOKEN": ADMIN_TOKEN,
        "WHEELFARM_UPSTREAM_URL": "none",
        "WHEELFARM_READ_REQUIRES_TOKEN": "1",
    }
    database = database_for(data_dir)
    if database:
        env["WHEELFARM_DATABASE_URL"] = database

    settings = Settings.from_env(env)
    services = build_services(settings)  # migrates, as ``wheelfarm serve`` would
    secrets_used = {
        scope: create_token(services.engine, f"log-{scope}", scope)[1] for scope in SCOPES
    }
    services.engine.dispose()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(BIN / "wheelfarm"),
                *("serve", "--host", "127.0.0.1", "--port", str(port)),
                *("--workers", "1", "--threads", "2", "--access-log"),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(base, process, log_path)
        wrong = "wf_" + secrets.token_urlsafe(32)
        statuses = _present_tokens(base, port, secrets_used, wrong)
    finally:
        process.terminate()
        process.wait(20)
    text = log_path.read_text(errors="replace")
    # the requests were logged: the access log is on and saw them
    assert statuses["pip-url"] == 200 and statuses["bad-basic"] == 403
    assert text.count(f"/{PLATFORM}/simple/") >= 6, text[-2000:]
    assert re.search(r'"GET /debian-12-py3\.11-x86_64/simple/ HTTP/1\.1" 403', text), text[-2000:]
    for secret in [*secrets_used.values(), wrong, ADMIN_TOKEN]:
        assert secret not in text
        assert secret[10:] not in text  # past the prefix shown in token lists
        assert base64.b64encode(f"__token__:{secret}".encode()).decode() not in text


def _wait_for(base: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log_path.read_text()}")
        try:
            if requests.get(base + "/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"server did not start: {log_path.read_text()}")


def _present_tokens(base: str, port: int, tokens: dict[str, str], wrong: str) -> dict[str, int]:
    index = f"/{PLATFORM}/simple/"
    read = tokens["read"]
    ways: dict[str, Callable[[], requests.Response]] = {
        # pip / uv: the token in the index URL, as basic auth
        "pip-url": lambda: requests.get(f"http://__token__:{read}@127.0.0.1:{port}{index}"),
        # pip with only a username in the URL (https://TOKEN@host/): the secret is the user
        "username-only": lambda: requests.get(base + index, headers=username_only_auth(read)),
        "bearer": lambda: requests.get(base + index, headers=bearer(read)),
        "admin-token": lambda: requests.get(base + "/api/tokens", headers=bearer(ADMIN_TOKEN)),
        "bad-basic": lambda: requests.get(base + index, headers=basic_auth(wrong)),
        "bad-username-only": lambda: requests.get(base + index, headers=username_only_auth(wrong)),
        "bad-bearer": lambda: requests.get(base + index, headers=bearer(wrong)),
        # twine: an upload, refused (no file) after authentication
        "twine": lambda: requests.post(
            base + f"/{PLATFORM}/legacy/",
            data={":action": "file_upload"},
            auth=("__token__", tokens["upload"]),
        ),
        # a worker
        "worker": lambda: requests.post(
            base + "/api/worker/claim",
            json={"worker": "w", "platforms": [PLATFORM]},
            headers=bearer(tokens["build"]),
        ),
        # the token in a query string is no way to authenticate, but must not be echoed
        "query": lambda: requests.get(base + index, headers=bearer(read), params={"x": "1"}),
    }
    statuses = {}
    for name, call in ways.items():
        statuses[name] = call().status_code
    session = requests.Session()  # the console's login form, with the token in the body
    page = session.get(base + "/console/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    login = session.post(
        base + "/console/login",
        data={"csrf_token": token.group(1), "token": tokens["admin"]},
        allow_redirects=False,
    )
    statuses["console"] = login.status_code
    assert statuses["username-only"] == 200 and statuses["bearer"] == 200
    assert statuses["admin-token"] == 200 and statuses["console"] == 302
    assert statuses["twine"] == 400 and statuses["worker"] in (200, 204)
    return statuses


# === constant-time comparison ================================================================


def test_secrets_are_compared_in_constant_time(
    protected: Audited, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By behaviour: every check of a presented secret goes through ``hmac.compare_digest``
    (a spy counts the calls and records what is compared). The database lookup itself is by
    the secret's SHA-256, which reveals nothing about the secret (see ``index_server.auth``)."""
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    monkeypatch.setattr(secrets, "compare_digest", spy)
    engine = protected.services.engine
    # the admin token from the environment
    assert auth.authenticate(engine, ADMIN_TOKEN, ADMIN_TOKEN) is not None
    assert (ADMIN_TOKEN.encode(), ADMIN_TOKEN.encode()) in calls
    calls.clear()
    # a database token: admin token compared first, then the stored hash
    secret = protected.tokens["read"]
    assert auth.authenticate(engine, secret, ADMIN_TOKEN) is not None
    assert (secret.encode(), ADMIN_TOKEN.encode()) in calls
    assert (auth.hash_token(secret), auth.hash_token(secret)) in calls
    calls.clear()
    # a wrong token is compared with the admin token, never with anything by ==
    assert auth.authenticate(engine, "wf_wrong", ADMIN_TOKEN) is None
    assert calls == [(b"wf_wrong", ADMIN_TOKEN.encode())]
    calls.clear()
    # a worker's lease, and a console form's CSRF token
    with pytest.raises(jobs.LeaseLost):
        jobs.check_lease(protected.services, protected.job_id, "x" * 32)
    assert (protected.lease.encode(), b"x" * 32) in calls
    assert jobs.check_lease(protected.services, protected.job_id, protected.lease)
    calls.clear()
    with protected.app.test_request_context("/console/"):
        from flask import session

        session["csrf"] = "expected-token"
        assert not security.csrf_ok("forged-token")
        assert security.csrf_ok("expected-token")
    assert (b"forged-token", b"expected-token") in calls
    # and in the source: the functions that check secrets name compare_digest
    for function in (auth.authenticate, security.csrf_ok, jobs._leased):
        assert "compare_digest" in inspect.getsource(function), function.__name__
