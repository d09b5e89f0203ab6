"""Project owners: who may upload a hosted project (issue 15, High 1 and 2).

A real (local) upstream index; real tokens through the HTTP API; the refusals are 403s that
leave the pages as they were.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from index_server.app import create_app
from index_server.services import Services
from tests.factory import make_sdist, make_wheel
from tests.http_helpers import (
    PLATFORM,
    admin_headers,
    api_files,
    basic_auth,
    json_page,
    project_url,
    upload,
)
from tests.upstream_server import FakeUpstream, proxy_services

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    (tmp_path / "up").mkdir()
    for version in ("1.0", "1.1"):
        fake.add(make_wheel(tmp_path / "up", "libup", version))
        fake.add(make_sdist(tmp_path / "up", "libup", version))
    yield fake
    fake.close()


@pytest.fixture
def proxy(tmp_path: Path, upstream: FakeUpstream) -> Iterator[Services]:
    svc = proxy_services(tmp_path, upstream)
    yield svc
    svc.engine.dispose()


@pytest.fixture
def app(proxy: Services) -> Flask:
    return create_app(services=proxy)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def new_token(client: FlaskClient, name: str, scope: str = "upload", **options: object) -> str:
    response = client.post(
        "/api/tokens", json={"name": name, "scope": scope, **options}, headers=admin_headers()
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()["token"]


def wheel(tmp_path: Path, name: str, version: str, sub: str) -> Path:
    (tmp_path / sub).mkdir(exist_ok=True)
    return make_wheel(tmp_path / sub, name, version, modules={f"{sub}.py": f"W = {sub!r}\n"})


def owners(client: FlaskClient, project: str) -> list[str]:
    response = client.get(f"/api/projects/{project}/owners", headers=admin_headers())
    assert response.status_code == 200
    return [o["owner"] for o in response.get_json()["owners"]]


def test_first_upload_makes_the_tokens_owner_the_owner(client: FlaskClient, tmp_path: Path) -> None:
    alice = new_token(client, "alice-ci", owner="team-a")
    mallory = new_token(client, "mallory")
    first = upload(client, wheel(tmp_path, "ours", "1.0", "a"), alice)
    assert first.status_code == 201, first.get_data(as_text=True)
    assert owners(client, "ours") == ["team-a"]
    # A second token of the same team may upload; another token may not (any spelling).
    teammate = new_token(client, "alice-laptop", owner="team-a")
    assert upload(client, wheel(tmp_path, "ours", "1.1", "b"), teammate).status_code == 201
    for name, version, sub in (("ours", "1.2", "c"), ("Ours", "1.0", "d")):
        path = wheel(tmp_path, name, version, sub)
        if name != "ours":
            path = path.rename(path.with_name(f"Ours-{version}-py3-none-any.whl"))
        refused = upload(client, path, mallory)
        assert refused.status_code == 403, refused.get_data(as_text=True)
        assert "belongs to team-a" in refused.get_data(as_text=True)
    assert sorted(f["filename"] for f in api_files(client, "ours")) == [
        "ours-1.0-py3-none-any.whl",
        "ours-1.1-py3-none-any.whl",
    ]


def test_an_upstream_name_cannot_be_claimed_by_an_upload(
    client: FlaskClient, tmp_path: Path
) -> None:
    before = json_page(client, project_url("libup"))
    assert len(before["files"]) == 4
    mallory = new_token(client, "mallory")
    for path in (wheel(tmp_path, "libup", "9.0", "a"), make_sdist(tmp_path / "a", "libup", "9.0")):
        refused = upload(client, path, mallory)
        assert refused.status_code == 403, refused.get_data(as_text=True)
        assert "exists upstream" in refused.get_data(as_text=True)
    after = json_page(client, project_url("libup"))
    assert [f["filename"] for f in after["files"]] == [f["filename"] for f in before["files"]]
    assert owners(client, "libup") == []


def test_an_admin_lets_an_owner_host_an_upstream_name(client: FlaskClient, tmp_path: Path) -> None:
    token = new_token(client, "acme-ci", owner="acme")
    added = client.post(
        "/api/projects/LibUp/owners", json={"owner": "acme"}, headers=admin_headers()
    )
    assert added.status_code == 201, added.get_data(as_text=True)
    assert added.get_json()["project"] == "libup"
    again = client.post(
        "/api/projects/libup/owners", json={"owner": "acme"}, headers=admin_headers()
    )
    assert again.status_code == 200 and again.get_json()["added"] is False
    response = upload(client, wheel(tmp_path, "libup", "9.0", "a"), token)
    assert response.status_code == 201, response.get_data(as_text=True)
    page = json_page(client, project_url("libup"))
    assert [f["filename"] for f in page["files"]] == ["libup-9.0-py3-none-any.whl"]
    removed = client.delete("/api/projects/libup/owners/acme", headers=admin_headers())
    assert removed.status_code == 200
    refused = upload(client, wheel(tmp_path, "libup", "9.1", "b"), token)
    assert refused.status_code == 403
    assert (
        client.delete("/api/projects/libup/owners/acme", headers=admin_headers()).status_code == 404
    )


def test_private_projects_setting_allows_the_claim(tmp_path: Path, upstream: FakeUpstream) -> None:
    svc = proxy_services(tmp_path, upstream, private_projects=("libup",))
    try:
        client = create_app(services=svc).test_client()
        token = new_token(client, "acme-ci", owner="acme")
        response = upload(client, wheel(tmp_path, "libup", "9.0", "a"), token)
        assert response.status_code == 201, response.get_data(as_text=True)
        assert owners(client, "libup") == ["acme"]
    finally:
        svc.engine.dispose()


def test_an_unreachable_upstream_refuses_the_claim_for_now(
    client: FlaskClient, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.down = True
    token = new_token(client, "new")
    response = upload(client, wheel(tmp_path, "fresh-name", "1.0", "a"), token)
    assert response.status_code == 503, response.get_data(as_text=True)
    assert api_files(client, "fresh-name") == []


def test_project_scoped_token_writes_only_its_projects(client: FlaskClient, tmp_path: Path) -> None:
    scoped = new_token(client, "scoped", projects=["acme-*", "Tools"])
    for name, sub in (("acme-core", "a"), ("tools", "b")):
        response = upload(client, wheel(tmp_path, name, "1.0", sub), scoped)
        assert response.status_code == 201, response.get_data(as_text=True)
    refused = upload(client, wheel(tmp_path, "other", "1.0", "c"), scoped)
    assert refused.status_code == 403
    assert "project scope" in refused.get_data(as_text=True)
    build = client.post(
        "/api/builds",
        json={"project": "other", "version": "1.0", "platforms": [PLATFORM]},
        headers=basic_auth(scoped),
    )
    assert build.status_code == 403


def test_owner_rights_need_an_admin(client: FlaskClient) -> None:
    token = new_token(client, "someone")
    for method, url in (
        ("post", "/api/projects/x/owners"),
        ("delete", "/api/projects/x/owners/someone"),
    ):
        response = getattr(client, method)(
            url, json={"owner": "someone"}, headers=basic_auth(token)
        )
        assert response.status_code == 403
    assert owners(client, "x") == []


def test_token_names_are_unique(client: FlaskClient) -> None:
    new_token(client, "ci")
    again = client.post(
        "/api/tokens", json={"name": "ci", "scope": "read"}, headers=admin_headers()
    )
    assert again.status_code == 409
    assert "unique" in again.get_data(as_text=True)


def test_identical_copy_by_another_token_is_refused_too(
    client: FlaskClient, tmp_path: Path
) -> None:
    """Byte-identical is no pass for a non-owner: it must not even learn more than a 403."""
    alice = new_token(client, "alice")
    original = wheel(tmp_path, "ours", "1.0", "a")
    assert upload(client, original, alice).status_code == 201
    copy = tmp_path / "copy" / original.name
    copy.parent.mkdir()
    shutil.copyfile(original, copy)
    assert upload(client, copy, new_token(client, "bob")).status_code == 403
