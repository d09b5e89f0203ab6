"""Tokens: creation, hashed storage, revocation, the ways clients present them, read protection."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from index_server.auth import (
    PREFIX,
    authenticate,
    create_token,
    hash_token,
    list_tokens,
    revoke_token,
)
from index_server.config import Settings
from index_server.services import Services
from tests.conftest import ADMIN_TOKEN, sqlite_only
from tests.factory import make_sdist, make_wheel
from tests.http_helpers import (
    PLATFORM,
    V1_JSON,
    admin_headers,
    app_with,
    basic_auth,
    bearer,
    project_url,
    services_fixture,
    sha256_of,
    upload_ok,
    username_only_auth,
)


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    """The conftest fixture, from a copy of a migrated database (see http_helpers)."""
    yield from services_fixture(settings)


def test_create_list_revoke(services: Services) -> None:
    engine = services.engine
    id1, secret1 = create_token(engine, "ci", "upload")
    id2, secret2 = create_token(engine, "reader", "read")
    assert secret1.startswith(PREFIX) and len(secret1) == len(PREFIX) + 43
    assert secret1 != secret2
    listed = list_tokens(engine)
    assert [(t["id"], t["name"], t["scope"], t["revoked"]) for t in listed] == [
        (id1, "ci", "upload", False),
        (id2, "reader", "read", False),
    ]
    assert listed[0]["prefix"] == secret1[:10]
    assert all(secret1 not in str(v) and secret2 not in str(v) for t in listed for v in t.values())
    who = authenticate(engine, secret1, None)
    assert who is not None and who.scope == "upload" and who.name == "token:ci"
    assert who.token_id == id1
    assert revoke_token(engine, id1)
    assert not revoke_token(engine, id1)  # already revoked
    assert not revoke_token(engine, 9999)
    assert authenticate(engine, secret1, None) is None
    assert authenticate(engine, secret2, None) is not None
    assert [t["revoked"] for t in list_tokens(engine)] == [True, False]


def test_unknown_scope_refused(services: Services) -> None:
    with pytest.raises(ValueError, match="unknown scope 'root'"):
        create_token(services.engine, "x", "root")


def test_scopes(services: Services) -> None:
    implied = {
        "read": {"read"},
        "upload": {"read", "upload"},
        "build": {"read", "build"},
        "admin": {"read", "upload", "build", "admin"},
    }
    for scope, allowed in implied.items():
        who = authenticate(services.engine, create_token(services.engine, scope, scope)[1], None)
        assert who is not None
        assert {s for s in implied if who.allows(s)} == allowed


@sqlite_only
def test_secret_is_stored_hashed(services: Services, settings: Settings) -> None:
    _id, secret = create_token(services.engine, "ci", "admin")
    services.engine.dispose()  # close connections; the WAL may still hold the pages
    stored = b"".join(
        p.read_bytes() for p in settings.data_dir.iterdir() if p.name.startswith("wheelfarm.sqlite")
    )
    assert hash_token(secret).encode() in stored  # we are looking at the right bytes
    assert hash_token(secret) == hashlib.sha256(secret.encode()).hexdigest()
    assert secret.encode() not in stored
    assert secret[10:].encode() not in stored  # beyond the shown prefix, nothing of it


def test_authenticate_edge_cases(services: Services) -> None:
    assert authenticate(services.engine, "", ADMIN_TOKEN) is None
    assert authenticate(services.engine, "wf_unknown", ADMIN_TOKEN) is None
    admin = authenticate(services.engine, ADMIN_TOKEN, ADMIN_TOKEN)
    assert admin is not None and admin.scope == "admin"
    assert authenticate(services.engine, ADMIN_TOKEN, None) is None  # no admin token configured
    assert authenticate(services.engine, ADMIN_TOKEN + "x", ADMIN_TOKEN) is None


# --- how clients present a token: checked against the admin API (needs a valid token) ---------


@pytest.mark.parametrize(
    "headers",
    [
        lambda s: basic_auth(s),  # pip/twine: __token__:<secret>
        lambda s: basic_auth(s, username="anything"),
        lambda s: username_only_auth(s),  # <secret>: (username only, as in https://tok@host/)
        lambda s: bearer(s),
        lambda s: {"Authorization": f"bearer {s}"},
    ],
    ids=["basic-__token__", "basic-user", "basic-username-only", "bearer", "bearer-lowercase"],
)
def test_token_presentations(client: FlaskClient, services: Services, headers) -> None:  # type: ignore[no-untyped-def]
    secret = create_token(services.engine, "admin2", "admin")[1]
    response = client.get("/api/tokens", headers=headers(secret))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert client.get("/api/tokens").status_code == 401


def test_revoked_token_refused_over_http(client: FlaskClient, services: Services) -> None:
    token_id, secret = create_token(services.engine, "temp", "admin")
    assert client.get("/api/tokens", headers=basic_auth(secret)).status_code == 200
    response = client.delete(f"/api/tokens/{token_id}", headers=admin_headers())
    assert response.status_code == 200
    refused = client.get("/api/tokens", headers=basic_auth(secret))
    assert refused.status_code == 403
    assert refused.get_json()["error"] == "invalid or revoked token"


def test_token_api(client: FlaskClient) -> None:
    created = client.post(
        "/api/tokens", json={"scope": "read", "name": "ro"}, headers=admin_headers()
    )
    assert created.status_code == 201
    body = created.get_json()
    assert body["scope"] == "read" and body["name"] == "ro" and body["token"].startswith(PREFIX)
    listed = client.get("/api/tokens", headers=admin_headers()).get_json()["tokens"]
    assert [(t["id"], t["name"], t["revoked"]) for t in listed] == [(body["id"], "ro", False)]
    assert "token" not in listed[0] and "token_hash" not in listed[0]
    bad = client.post("/api/tokens", json={"scope": "god"}, headers=admin_headers())
    assert bad.status_code == 400
    assert "'scope' must be one of" in bad.get_json()["error"]
    # a read token may not make tokens
    denied = client.post("/api/tokens", json={"scope": "admin"}, headers=basic_auth(body["token"]))
    assert denied.status_code == 403
    assert client.delete("/api/tokens/999", headers=admin_headers()).status_code == 404


def test_admin_token_from_environment(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"WHEELFARM_DATA_DIR": str(tmp_path / "d"), "WHEELFARM_ADMIN_TOKEN": "wf_env-admin-secret"},
        upstream_urls=(),
    )
    assert settings.admin_token == "wf_env-admin-secret"
    with app_with(settings) as (app, _svc):
        client = app.test_client()
        assert (
            client.get("/api/tokens", headers=basic_auth("wf_env-admin-secret")).status_code == 200
        )
        assert client.get("/api/tokens", headers=basic_auth(ADMIN_TOKEN)).status_code == 403
        created = client.post(
            "/api/tokens", json={"scope": "upload"}, headers=bearer("wf_env-admin-secret")
        )
        assert created.status_code == 201


def test_empty_admin_token_disables_it(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"WHEELFARM_DATA_DIR": str(tmp_path / "d"), "WHEELFARM_ADMIN_TOKEN": ""}, upstream_urls=()
    )
    assert settings.admin_token is None
    with app_with(settings) as (app, _svc):
        client = app.test_client()
        assert client.get("/api/tokens", headers=bearer("")).status_code == 401
        assert client.get("/api/tokens", headers=basic_auth("", username="")).status_code == 401


# --- read protection -------------------------------------------------------------------------


@pytest.fixture
def protected(settings: Settings, tmp_path: Path) -> Iterator[tuple[FlaskClient, dict[str, str]]]:
    """A server that wants a token for reading, with one wheel and one sdist; and read URLs."""
    with app_with(settings, read_requires_token=True) as (app, svc):
        client = app.test_client()
        token = create_token(svc.engine, "up", "upload")[1]
        wheel = make_wheel(tmp_path, "demo", "1.0")
        sdist = make_sdist(tmp_path, "demo", "1.0")
        upload_ok(client, wheel, token)
        upload_ok(client, sdist, token)
        urls = {
            "root": f"/{PLATFORM}/simple/",
            "page": project_url("demo"),
            "missing page": project_url("no-such-project"),
            "wheel": f"/files/{sha256_of(wheel)}/{wheel.name}",
            "sdist": f"/files/{sha256_of(sdist)}/{sdist.name}",
            "metadata": f"/files/{sha256_of(wheel)}/{wheel.name}.metadata",
        }
        yield client, urls


def test_read_protection_refuses_anonymous(
    protected: tuple[FlaskClient, dict[str, str]],
) -> None:
    client, urls = protected
    for name, url in urls.items():
        for accept in ("text/html", V1_JSON):
            response = client.get(url, headers={"Accept": accept})
            assert response.status_code == 401, name
            assert response.headers["WWW-Authenticate"].startswith("Basic"), name
            assert b"Links for" not in response.data and b"demo" not in response.data
        bad = client.get(url, headers=basic_auth("wf_wrong"))
        assert bad.status_code == 403, name


def test_read_protection_lets_tokens_in(
    protected: tuple[FlaskClient, dict[str, str]], services: Services
) -> None:
    client, urls = protected
    read = create_token(services.engine, "reader", "read")[1]
    for headers in (basic_auth(read), username_only_auth(read), bearer(read), admin_headers()):
        for name, url in urls.items():
            response = client.get(url, headers=headers)
            expected = 404 if name == "missing page" else 200
            assert response.status_code == expected, (name, response.get_data(as_text=True))
    page = client.get(urls["page"], headers={**basic_auth(read), "Accept": V1_JSON})
    assert len(page.get_json()["files"]) == 2


def test_read_is_open_by_default(client: FlaskClient, upload_token: str, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "demo", "1.0")
    upload_ok(client, wheel, upload_token)
    assert client.get(project_url("demo")).status_code == 200
    assert client.get(f"/files/{sha256_of(wheel)}/{wheel.name}.metadata").status_code == 200
    # Reads of the JSON API follow the same setting; admin-only views never are open.
    assert client.get("/api/projects").status_code == 200
    assert client.get("/api/builds").status_code == 200
    assert client.get("/api/events").status_code == 401
    assert client.get("/api/tokens").status_code == 401
