"""The OpenAPI document of /api/: valid, complete, and true of the server (schemathesis)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import jsonschema
import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from index_server import admin, jobs
from index_server.auth import create_token
from index_server.config import Settings
from index_server.openapi import openapi_document
from index_server.services import Services
from index_server.views import api, builds_api, platforms_api, worker_api
from platforms import load_platforms
from tests.conftest import ADMIN_TOKEN
from tests.factory import make_sdist, make_wheel
from tests.http_helpers import PLATFORM, api_files, app_with, services_fixture, upload_ok

DOCUMENT = "/api/openapi.json"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# Per operation and generation mode; the whole run stays well under a minute on one core.
MAX_EXAMPLES = 15


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    """The conftest fixture, from a copy of a migrated database (see http_helpers)."""
    yield from services_fixture(settings)


def _flask_path(rule: str) -> str:
    """A werkzeug rule as an OpenAPI path: ``/files/<int:file_id>`` -> ``/files/{file_id}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _app_operations(app: Flask) -> set[tuple[str, str]]:
    return {
        (_flask_path(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/")
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }


def _document_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    return {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method in methods
    }


def test_document_is_valid_openapi_31(client: FlaskClient) -> None:
    response = client.get(DOCUMENT)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    document = response.get_json()
    assert document["openapi"].startswith("3.1.")
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema
    # The configured platforms are what the document offers for platform names.
    claim = document["components"]["schemas"]["Claim"]
    assert claim["required"] == ["worker", "platforms"]
    request = document["paths"]["/api/builds"]["post"]["requestBody"]
    platforms = request["content"]["application/json"]["schema"]["properties"]["platforms"]
    assert PLATFORM in platforms["items"]["enum"]


def test_every_api_route_is_documented_and_nothing_else(app: Flask, client: FlaskClient) -> None:
    document = client.get(DOCUMENT).get_json()
    in_app, in_document = _app_operations(app), _document_operations(document)
    assert in_app - in_document == set(), "routes under /api/ missing from the document"
    assert in_document - in_app == set(), "documented operations the app does not have"
    assert len(in_app) >= 28  # the listing itself works


def test_every_operation_says_its_scope_and_errors(client: FlaskClient) -> None:
    document = client.get(DOCUMENT).get_json()
    scopes = {None, "read", "upload", "build", "admin"}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            scope = operation["x-wheelfarm-scope"]
            assert scope in scopes, where
            if scope is None:
                assert operation["security"] == [], where
                continue
            assert {"bearerAuth": [scope]} in operation["security"], where
            assert {"basicAuth": [scope]} in operation["security"], where
            assert {"401", "403"} <= set(operation["responses"]), where
            assert f"`{scope}`" in operation["description"], where


def test_documented_scopes_are_the_enforced_ones(client: FlaskClient, services: Services) -> None:
    """Each operation answers as its documented scope says: public, 401 without a token,
    403 with a token whose scope falls short, and past auth with one that suffices."""
    tokens = {s: create_token(services.engine, s, s)[1] for s in ("read", "upload", "build")}
    short_of = {"upload": "build", "build": "upload", "admin": "upload"}
    document = client.get(DOCUMENT).get_json()
    checked = 0
    for path, item in document["paths"].items():
        url = re.sub(r"{[^}]+}", "1", path)
        for method, operation in item.items():
            scope, where = operation["x-wheelfarm-scope"], f"{method.upper()} {path}"

            def send(token: str | None) -> int:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                return client.open(url, method=method, json={}, headers=headers).status_code  # noqa: B023

            if scope in (None, "read"):  # reads are public unless the server says otherwise
                assert send(None) not in (401, 403), where
            else:
                assert send(None) == 401, where
                assert send(tokens[short_of[scope]]) == 403, where
                enough = ADMIN_TOKEN if scope == "admin" else tokens[scope]
                assert send(enough) not in (401, 403), where
            checked += 1
    assert checked == len(_document_operations(document))


def test_read_operations_need_a_token_when_the_server_says_so(settings: Settings) -> None:
    with app_with(settings, read_requires_token=True) as (app, services):
        client = app.test_client()
        reader = create_token(services.engine, "reader", "read")[1]
        document = client.get(DOCUMENT).get_json()  # the document itself stays public
        reads = [
            (re.sub(r"{[^}]+}", "1", path), method)
            for path, item in document["paths"].items()
            for method, operation in item.items()
            if operation["x-wheelfarm-scope"] == "read"
        ]
        assert len(reads) >= 8
        public = {
            path
            for path, item in document["paths"].items()
            for operation in item.values()
            if operation["x-wheelfarm-scope"] is None
        }
        assert public == {DOCUMENT}  # it tells a client how to authenticate
        for url, method in reads:
            assert client.open(url, method=method).status_code == 401, url
            answer = client.open(url, method=method, headers={"Authorization": f"Bearer {reader}"})
            assert answer.status_code not in (401, 403), url


def test_errors_match_the_documented_error_format(client: FlaskClient) -> None:
    """401, 403, 404 and 400 answers from the app are the documented Error object."""
    document = client.get(DOCUMENT).get_json()
    error_schema = document["components"]["schemas"]["Error"]
    answers = [
        client.get("/api/tokens"),
        client.get("/api/tokens", headers={"Authorization": "Bearer wrong"}),
        client.get("/api/projects/no-such-project"),
        client.post("/api/tokens", json={"scope": "nope"}, headers=ADMIN),
    ]
    assert [a.status_code for a in answers] == [401, 403, 404, 400]
    for answer in answers:
        assert answer.mimetype == "application/json"
        body = answer.get_json()
        jsonschema.validate(body, error_schema)
        assert body["status"] == answer.status_code
    assert answers[0].headers["WWW-Authenticate"].startswith("Basic")


# --- schemathesis: the server against its own document --------------------------------------


def _api_app() -> Flask:
    """The /api/ blueprints alone, without services: enough to make the document."""
    app = Flask("openapi")
    for blueprint in (api.bp, builds_api.bp, platforms_api.bp, worker_api.bp):
        app.register_blueprint(blueprint)
    return app


# The document as the server serves it (test_served_document_is_the_built_one), loaded at
# import so that each operation becomes its own test; the app is a fixture, given per call.
SCHEMA = schemathesis.openapi.from_dict(
    openapi_document(_api_app(), load_platforms()),
    config=SchemathesisConfig.from_dict(
        {
            "headers": ADMIN,
            "generation": {
                "mode": "all",
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
            },
            "phases": {"stateful": {"enabled": False}},
        }
    ),
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def test_served_document_is_the_built_one(client: FlaskClient) -> None:
    assert client.get(DOCUMENT).get_json() == SCHEMA.raw_schema


@pytest.fixture
def data_app(app: Flask, services: Services, tmp_path: Path) -> Flask:
    """The app with something of everything: files (one yanked), builds in every state a
    worker leaves them, a worker, a skip, build settings, a token, audit events."""
    client = app.test_client()
    uploaded = [
        upload_ok(client, dist, ADMIN_TOKEN)
        for dist in (
            make_wheel(tmp_path, "alpha", "1.0"),
            make_wheel(tmp_path, "alpha", "1.1", tag="cp311-cp311-linux_x86_64"),
            make_sdist(tmp_path, "beta", "2.0"),
        )
    ]
    (alpha,) = [f for f in api_files(client, "alpha") if f["filename"] == uploaded[0]["filename"]]
    admin.yank_file(services, alpha["id"], "broken", "tests")
    create_token(services.engine, "reader", "read")
    for project, version in (("alpha", "2.0"), ("beta", "2.0"), ("gamma", "0.1")):
        jobs.request_build(services, project, version, PLATFORM, "request", "tests")
    failed = jobs.claim(services, "worker-1", [PLATFORM])
    assert failed is not None
    report = {"lease": failed["lease"], "outcome": "failed", "error_category": "compiler_error"}
    jobs.finish(services, failed["id"], report)
    assert jobs.claim(services, "worker-1", [PLATFORM]) is not None  # one running, one queued
    jobs.add_skip(services, "delta", "", "never", "tests")
    jobs.set_project_settings(services, "alpha", {"env": {"CFLAGS": "-O2"}}, "tests")
    return app


@pytest.fixture(scope="module")
def case_counts() -> Iterator[dict[str, int]]:
    """Cases run, by operation; the total is printed at the end of the module (-s shows it)."""
    counts: dict[str, int] = {}
    yield counts
    print(f"\nschemathesis: {sum(counts.values())} cases over {len(counts)} operations")


def _conformance_test(operation_id: str) -> Any:
    """The schemathesis test of one operation, as its own test function.

    One function per operation rather than one ``@SCHEMA.parametrize()`` test: schemathesis
    4.32 names every item of such a test alike under pytest 9.2, which xdist cannot tell apart.
    """

    # One app per operation, kept across its examples: what a case changes, later cases see.
    @hypothesis.settings(suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
    def test(case: Any, data_app: Flask, case_counts: dict[str, int]) -> None:
        label = f"{case.operation.method.upper()} {case.operation.path}"
        case_counts[label] = case_counts.get(label, 0) + 1
        case.call_and_validate(app=data_app, headers=ADMIN, checks=CHECKS)

    test.__name__ = f"test_conforms_{operation_id}"
    return SCHEMA.include(operation_id=operation_id).parametrize()(test)


for _operation_id in sorted(
    operation["operationId"]
    for item in SCHEMA.raw_schema["paths"].values()
    for operation in item.values()
):
    globals()[f"test_conforms_{_operation_id}"] = _conformance_test(_operation_id)


def test_schemathesis_covers_every_operation() -> None:
    """There is a schemathesis test for each documented operation (so for each /api/ route)."""
    operations = list(SCHEMA.get_all_operations())
    labels = {f"{m.upper()} {p}" for p, m in _document_operations(SCHEMA.raw_schema)}
    assert {op.ok().label for op in operations} == labels
    tests = {f"test_conforms_{op.ok().definition.raw['operationId']}" for op in operations}
    assert tests <= set(globals())
