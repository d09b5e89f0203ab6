"""Admin actions over the JSON API: yank, unyank, delete, and the audit log."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from index_server.auth import create_token
from index_server.config import Settings
from index_server.services import Services
from storage import blob_key
from tests.factory import make_sdist, make_wheel
from tests.http_helpers import (
    PLATFORM,
    PY312_X86,
    admin_headers,
    api_files,
    basic_auth,
    json_page,
    project_url,
    services_fixture,
    sha256_of,
    upload_ok,
    wheel_metadata,
)


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    """The conftest fixture, from a copy of a migrated database (see http_helpers)."""
    yield from services_fixture(settings)


ADMIN_ACTOR = "admin (WHEELFARM_ADMIN_TOKEN)"


def _file_id(client: FlaskClient, filename: str, platform: str | None = None) -> int:
    (found,) = [
        f
        for f in api_files(client, filename.split("-")[0])
        if f["filename"] == filename and (platform is None or f["platform"] == platform)
    ]
    return int(found["id"])


def _events(client: FlaskClient) -> list[dict]:
    response = client.get("/api/events", headers=admin_headers())
    assert response.status_code == 200
    return response.get_json()["events"]


def test_yank_unyank_delete(client: FlaskClient, upload_token: str, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "demo", "1.0")
    upload_ok(client, wheel, upload_token)
    file_id = _file_id(client, wheel.name)
    start = datetime.now(UTC) - timedelta(seconds=1)

    yanked = client.post(
        f"/api/files/{file_id}/yank", json={"reason": "security"}, headers=admin_headers()
    )
    assert yanked.status_code == 200
    assert yanked.get_json()["yanked"] is True
    assert yanked.get_json()["yanked_reason"] == "security"
    assert api_files(client, "demo")[0]["yanked_reason"] == "security"
    assert json_page(client, project_url("demo"))["files"][0]["yanked"] == "security"

    unyanked = client.post(f"/api/files/{file_id}/unyank", headers=admin_headers())
    assert unyanked.status_code == 200
    assert unyanked.get_json()["yanked"] is False
    assert unyanked.get_json()["yanked_reason"] is None
    assert json_page(client, project_url("demo"))["files"][0]["yanked"] is False

    deleted = client.delete(f"/api/files/{file_id}", headers=admin_headers())
    assert deleted.status_code == 200
    assert deleted.get_json()["deleted"]["filename"] == wheel.name
    assert api_files(client, "demo") == []
    # Nothing left to list on the platform: the project page is a 404, as for unknown names.
    assert client.get(project_url("demo")).status_code == 404
    assert client.get(f"/files/{sha256_of(wheel)}/{wheel.name}").status_code == 404
    assert json_page(client, f"/{PLATFORM}/simple/")["projects"] == []  # no files left
    # Deleted means gone: a second delete is a 404.
    assert client.delete(f"/api/files/{file_id}", headers=admin_headers()).status_code == 404

    events = _events(client)
    actions = [(e["action"], e["actor"], e["project"], e["filename"]) for e in events]
    assert actions[:4] == [  # newest first
        ("delete", ADMIN_ACTOR, "demo", wheel.name),
        ("unyank", ADMIN_ACTOR, "demo", wheel.name),
        ("yank", ADMIN_ACTOR, "demo", wheel.name),
        ("add (upload)", "token:tests", "demo", wheel.name),
    ]
    assert events[2]["detail"] == "security"
    end = datetime.now(UTC) + timedelta(seconds=1)
    for event in events[:3]:
        at = datetime.fromisoformat(event["at"])
        assert at.tzinfo is not None
        assert start <= at <= end


def test_yank_without_reason(client: FlaskClient, upload_token: str, tmp_path: Path) -> None:
    sdist = make_sdist(tmp_path, "demo", "1.0")
    upload_ok(client, sdist, upload_token)
    file_id = _file_id(client, sdist.name)
    response = client.post(f"/api/files/{file_id}/yank", headers=admin_headers())
    assert response.status_code == 200
    assert response.get_json()["yanked"] is True
    assert json_page(client, project_url("demo"))["files"][0]["yanked"] is True
    bad = client.post(f"/api/files/{file_id}/yank", json={"reason": 5}, headers=admin_headers())
    assert bad.status_code == 400
    assert "'reason' must be a string" in bad.get_json()["error"]


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("post", "/api/files/999/yank"),
        ("post", "/api/files/999/unyank"),
        ("delete", "/api/files/999"),
    ],
)
def test_missing_file_404(client: FlaskClient, method: str, url: str) -> None:
    response = getattr(client, method)(url, headers=admin_headers())
    assert response.status_code == 404
    assert response.content_type == "application/json"
    assert response.get_json() == {"error": "no file with id 999", "status": 404}
    assert all(e["action"] not in ("yank", "unyank", "delete") for e in _events(client))


@pytest.mark.parametrize("scope", ["read", "upload", "build"])
def test_admin_scope_required(
    client: FlaskClient, services: Services, upload_token: str, tmp_path: Path, scope: str
) -> None:
    wheel = make_wheel(tmp_path, "demo", "1.0")
    upload_ok(client, wheel, upload_token)
    file_id = _file_id(client, wheel.name)
    headers = basic_auth(create_token(services.engine, "weak", scope)[1])
    for method, url in (
        ("post", f"/api/files/{file_id}/yank"),
        ("post", f"/api/files/{file_id}/unyank"),
        ("delete", f"/api/files/{file_id}"),
        ("get", "/api/events"),
        ("get", "/api/tokens"),
    ):
        response = getattr(client, method)(url, headers=headers)
        assert response.status_code == 403, url
        assert f"token scope '{scope}' does not allow 'admin'" in response.get_json()["error"]
        anonymous = getattr(client, method)(url)
        assert anonymous.status_code == 401
    (row,) = api_files(client, "demo")
    assert row["yanked"] is False


def test_project_api(client: FlaskClient, upload_token: str, tmp_path: Path) -> None:
    upload_ok(client, make_wheel(tmp_path, "Demo.Pkg", "1.0"), upload_token)
    upload_ok(client, make_sdist(tmp_path, "Demo.Pkg", "1.0"), upload_token)
    projects = client.get("/api/projects", headers=admin_headers()).get_json()["projects"]
    assert projects == [{"name": "demo-pkg", "display_name": "Demo.Pkg", "files": 2}]
    read = client.get("/api/projects/Demo_Pkg", headers=admin_headers())
    assert read.status_code == 200
    assert read.get_json()["name"] == "demo-pkg"
    missing = client.get("/api/projects/nope", headers=admin_headers())
    assert missing.status_code == 404
    assert "not found" in missing.get_json()["error"]


def _blob_exists(services: Services, digest: str) -> bool:
    return services.storage.exists(blob_key(digest))


def test_delete_removes_unshared_bytes(
    client: FlaskClient, services: Services, upload_token: str, tmp_path: Path
) -> None:
    wheel = make_wheel(tmp_path, "demo", "1.0")
    upload_ok(client, wheel, upload_token)
    digest, meta = sha256_of(wheel), hashlib.sha256(wheel_metadata(wheel)).hexdigest()
    assert _blob_exists(services, digest) and _blob_exists(services, meta)
    client.delete(f"/api/files/{_file_id(client, wheel.name)}", headers=admin_headers())
    assert not _blob_exists(services, digest)
    assert not _blob_exists(services, meta)


def test_delete_keeps_shared_bytes(
    client: FlaskClient, services: Services, upload_token: str, tmp_path: Path
) -> None:
    # The same bytes on two platforms: two rows, one blob.
    wheel = make_wheel(tmp_path, "demo", "1.0", tag="py3-none-linux_x86_64")
    upload_ok(client, wheel, upload_token, PLATFORM)
    upload_ok(client, wheel, upload_token, PY312_X86)
    # Another wheel with the very same METADATA shares the .metadata blob.
    pure = make_wheel(tmp_path, "demo", "1.0")
    upload_ok(client, pure, upload_token)
    digest = sha256_of(wheel)
    meta = hashlib.sha256(wheel_metadata(wheel)).hexdigest()
    assert meta == hashlib.sha256(wheel_metadata(pure)).hexdigest()

    first = _file_id(client, wheel.name, PLATFORM)
    assert client.delete(f"/api/files/{first}", headers=admin_headers()).status_code == 200
    assert _blob_exists(services, digest)  # still used on the other platform
    remaining = client.get(f"/files/{digest}/{wheel.name}")
    assert remaining.status_code == 200 and remaining.data == wheel.read_bytes()
    assert wheel.name not in str(json_page(client, project_url("demo", PLATFORM)))
    assert wheel.name in str(json_page(client, project_url("demo", PY312_X86)))

    second = _file_id(client, wheel.name, PY312_X86)
    assert client.delete(f"/api/files/{second}", headers=admin_headers()).status_code == 200
    assert not _blob_exists(services, digest)
    assert _blob_exists(services, meta)  # the pure wheel still needs it
    served = client.get(f"/files/{sha256_of(pure)}/{pure.name}.metadata")
    assert served.status_code == 200 and served.data == wheel_metadata(pure)

    client.delete(f"/api/files/{_file_id(client, pure.name)}", headers=admin_headers())
    assert not _blob_exists(services, meta)
    assert not _blob_exists(services, sha256_of(pure))


def test_reupload_after_delete(client: FlaskClient, upload_token: str, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "demo", "1.0")
    upload_ok(client, wheel, upload_token)
    client.delete(f"/api/files/{_file_id(client, wheel.name)}", headers=admin_headers())
    upload_ok(client, wheel, upload_token)
    response = client.get(f"/files/{sha256_of(wheel)}/{wheel.name}")
    assert response.status_code == 200 and response.data == wheel.read_bytes()
