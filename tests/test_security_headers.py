"""Response headers over every GET route of the app (read from its ``url_map``).

* Under read protection, every response of a protected route (pages, files, their
  metadata, the JSON API, the console; answers to anonymous and wrong callers too, 304s and
  ranges) is ``Cache-Control: private`` (never ``public``) and ``Vary: Authorization``
  (the console's also ``Cookie``): a shared cache must not hand it to someone else.
* ``X-Content-Type-Options: nosniff`` on every response, read protection or not.
* The console's pages: a Content-Security-Policy with ``frame-ancestors 'none'`` (and
  ``X-Frame-Options: DENY``), whose nonce is the one every inline script carries.
* With reading open, pages and files stay cacheable by shared caches (``public``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from index_server.app import create_app
from index_server.auth import create_token
from index_server.config import Settings
from index_server.services import Services
from tests.conftest import ADMIN_TOKEN
from tests.factory import make_sdist, make_wheel
from tests.http_helpers import PLATFORM, basic_auth, bearer, fast_services, sha256_of, upload_ok

UNPROTECTED = ("/health", "/api/openapi.json", "/static/<path:filename>")


@dataclasses.dataclass
class Site:
    app: Flask
    services: Services
    admin: FlaskClient  # logged in to the console as the admin
    values: dict[str, str]
    csrf: str

    def urls(self) -> list[tuple[str, str]]:
        """(rule, URL) of every GET route, with values that reach real objects."""
        found = []
        for rule in sorted(self.app.url_map.iter_rules(), key=lambda r: r.rule):
            if "GET" not in (rule.methods or ()) or rule.rule in UNPROTECTED:
                continue
            url = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda m: self.values[m.group(1)], rule.rule)
            found.append((rule.rule, url))
            if rule.rule.endswith("<filename>"):
                found.append((rule.rule, url + ".metadata"))
        return found


def _site(settings: Settings, tmp_path: Path) -> Iterator[Site]:
    services = fast_services(settings)
    app = create_app(services=services)
    client = app.test_client()
    upload = create_token(services.engine, "uploader", "upload")[1]
    wheel = make_wheel(tmp_path, "demo", "1.0")
    upload_ok(client, wheel, upload)
    upload_ok(client, make_sdist(tmp_path, "demo", "1.0"), upload)
    queued = client.post(
        "/api/builds",
        json={"project": "demo", "version": "2.0", "platforms": [PLATFORM]},
        headers=bearer(upload),
    )
    assert queued.status_code == 200, queued.get_data(as_text=True)
    job_id = queued.get_json()["requests"][0]["job_id"]
    files = client.get("/api/projects/demo", headers=basic_auth(ADMIN_TOKEN)).get_json()
    file_id = next(f["id"] for f in files["files"] if f["filename"] == wheel.name)
    admin = app.test_client()
    page = admin.get("/console/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf
    response = admin.post(
        "/console/login", data={"csrf_token": csrf.group(1), "token": ADMIN_TOKEN}
    )
    assert response.status_code == 302
    token = re.search(
        r'name="csrf_token" value="([^"]+)"', admin.get("/console/").get_data(as_text=True)
    )
    assert token
    values = {
        "platform": PLATFORM,
        "file_id": str(file_id),
        "token_id": "1",
        "job_id": str(job_id),
        "project": "demo",
        "name": "demo",
        "sha256": sha256_of(wheel),
        "filename": wheel.name,
    }
    try:
        yield Site(app, services, admin, values, token.group(1))
    finally:
        services.engine.dispose()


@pytest.fixture
def protected(settings: Settings, tmp_path: Path) -> Iterator[Site]:
    yield from _site(dataclasses.replace(settings, read_requires_token=True), tmp_path)


@pytest.fixture
def open_site(settings: Settings, tmp_path: Path) -> Iterator[Site]:
    yield from _site(dataclasses.replace(settings, read_requires_token=False), tmp_path)


def directives(response: TestResponse) -> list[str]:
    return [p.strip().split("=")[0] for p in response.headers.get("Cache-Control", "").split(",")]


def assert_private(response: TestResponse, where: str, console: bool = False) -> None:
    cache = directives(response)
    assert "private" in cache, (where, response.status_code, response.headers.get("Cache-Control"))
    assert "public" not in cache, (where, response.headers.get("Cache-Control"))
    vary = [v.strip() for v in response.headers.get("Vary", "").split(",")]
    assert "Authorization" in vary, (where, response.status_code, vary)
    if console:
        assert "Cookie" in vary, (where, vary)
    assert response.headers.get("X-Content-Type-Options") == "nosniff", where


def assert_console_policy(response: TestResponse, where: str) -> None:
    csp = response.headers.get("Content-Security-Policy", "")
    assert "frame-ancestors 'none'" in csp, (where, csp)
    assert "object-src 'none'" in csp and "default-src 'self'" in csp, where
    assert response.headers.get("X-Frame-Options") == "DENY", where
    nonce = re.search(r"'nonce-([^']+)'", csp)
    assert nonce, (where, csp)
    for script in re.findall(r"<script[^>]*>", response.get_data(as_text=True)):
        assert f'nonce="{nonce.group(1)}"' in script, (where, script)


def test_every_protected_response_is_private_and_varies_by_authorization(
    protected: Site,
) -> None:
    anonymous = protected.app.test_client()
    reader_secret = create_token(protected.services.engine, "reader", "read")[1]
    checked = 0
    for rule, url in protected.urls():
        console = url.startswith("/console")
        callers: list[tuple[str, FlaskClient, dict[str, str]]] = [
            ("anonymous", anonymous, {}),
            ("wrong token", anonymous, bearer("wf_wrong-token-0123456789")),
            ("reader", anonymous, basic_auth(reader_secret)),
            ("admin", anonymous, basic_auth(ADMIN_TOKEN)),
        ]
        if console:
            callers.append(("admin session", protected.admin, {}))
        for who, client, headers in callers:
            for method in ("GET", "HEAD"):
                response = client.open(url, method=method, headers=headers)
                where = f"{method} {url} as {who} ({rule})"
                assert_private(response, where, console)
                checked += 1
        if console and not url.endswith(".json"):
            page = protected.admin.get(url)
            assert page.status_code == 200, (url, page.status_code)
            assert_console_policy(page, url)
    assert checked > 200
    # The answers that are no plain 200: a 304, a range, a redirect, a 404, JSON pages.
    admin = basic_auth(ADMIN_TOKEN)
    wheel = f"/files/{protected.values['sha256']}/{protected.values['filename']}"
    first = anonymous.get(wheel, headers=admin)
    assert first.status_code == 200 and first.headers["ETag"]
    cases = {
        "304": anonymous.get(wheel, headers={**admin, "If-None-Match": first.headers["ETag"]}),
        "206": anonymous.get(wheel, headers={**admin, "Range": "bytes=0-9"}),
        "redirect": anonymous.get(f"/{PLATFORM}/simple/Demo/", headers=admin),
        "404": anonymous.get(f"/{PLATFORM}/simple/no-such-project/", headers=admin),
        "404 route": anonymous.get("/no/such/route", headers=admin),
        "json page": anonymous.get(
            f"/{PLATFORM}/simple/demo/",
            headers={**admin, "Accept": "application/vnd.pypi.simple.v1+json"},
        ),
        "log": protected.admin.get(f"/console/builds/{protected.values['job_id']}/log.json"),
    }
    assert cases["304"].status_code == 304
    assert cases["206"].status_code == 206
    assert cases["redirect"].status_code in (301, 302, 308)
    assert cases["json page"].content_type.startswith("application/vnd.pypi.simple.v1+json")
    for name, response in cases.items():
        assert_private(response, name, console=name == "log")
    assert "no-store" in directives(cases["log"])  # private beside no-store


def test_writes_and_refusals_are_private_too(protected: Site) -> None:
    client = protected.app.test_client()
    responses = {
        "refused upload": client.post(f"/{PLATFORM}/legacy/", data={":action": "file_upload"}),
        "skip": client.post(
            "/api/skips",
            json={"project": "x", "reason": "r"},
            headers=basic_auth(ADMIN_TOKEN),
        ),
        "console form": protected.admin.post(
            f"/console/builds/{protected.values['job_id']}/cancel",
            data={"csrf_token": protected.csrf, "reason": "r"},
        ),
    }
    assert responses["skip"].status_code == 201
    assert responses["console form"].status_code == 302
    for name, response in responses.items():
        assert_private(response, name, console=name.startswith("console"))


def test_nosniff_everywhere_and_the_console_policy_with_reading_open(open_site: Site) -> None:
    anonymous = open_site.app.test_client()
    urls = [url for _rule, url in open_site.urls()] + ["/health", "/api/openapi.json", "/x/y"]
    for url in urls:
        for headers in ({}, basic_auth(ADMIN_TOKEN)):
            response = anonymous.get(url, headers=headers)
            assert response.headers.get("X-Content-Type-Options") == "nosniff", url
            if url.startswith("/console") and not url.endswith(".json"):
                assert_console_policy(response, url)
    for _rule, url in open_site.urls():
        if url.startswith("/console"):
            page = open_site.admin.get(url)
            assert page.status_code == 200, url
            if not url.endswith(".json"):
                assert_console_policy(page, url)
    # Open reading: a shared cache may keep pages and files; the API is not marked private.
    page = anonymous.get(f"/{PLATFORM}/simple/demo/")
    wheel = anonymous.get(f"/files/{open_site.values['sha256']}/{open_site.values['filename']}")
    for response in (page, wheel):
        assert response.status_code == 200
        assert "public" in directives(response) and "private" not in directives(response)
    assert "immutable" in directives(wheel)
    assert "Authorization" not in anonymous.get("/api/projects").headers.get("Vary", "")
