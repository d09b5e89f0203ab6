"""Uploads through the legacy API, as twine sends them: what is accepted, what is refused."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from index_server.auth import create_token, revoke_token
from index_server.config import Settings
from index_server.services import Services
from storage import blob_key
from tests.factory import core_metadata, make_sdist, make_wheel
from tests.http_helpers import (
    PLATFORM,
    PY310_X86,
    PY312_ARM,
    PY312_X86,
    admin_headers,
    api_files,
    app_with,
    basic_auth,
    bearer,
    json_page,
    project_url,
    services_fixture,
    sha256_of,
    stored_blobs,
    upload,
    upload_form,
    upload_ok,
    wheel_metadata,
)


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    """The conftest fixture, from a copy of a migrated database (see http_helpers)."""
    yield from services_fixture(settings)


def _state(client: FlaskClient, settings: Settings) -> tuple[object, ...]:
    """Everything an upload could change: rows (via the API), pages, blobs, temp files."""
    projects = client.get("/api/projects", headers=admin_headers()).get_json()["projects"]
    page = client.get(
        project_url("demo"), headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    leftovers = sorted(p.name for p in settings.data_dir.iterdir() if p.name.startswith("upload"))
    return (
        projects,
        api_files(client, "demo"),
        page.status_code,
        page.data,
        stored_blobs(settings),
        leftovers,
    )


def test_upload_wheel(client: FlaskClient, upload_token: str, services: Services, tmp_path: Path):
    wheel = make_wheel(tmp_path, "Demo", "1.0", requires_python=">=3.8")
    response = upload(client, wheel, upload_token)
    assert response.status_code == 201
    assert response.get_json() == {
        "filename": wheel.name,
        "sha256": sha256_of(wheel),
        "created": True,
        "platform": None,
    }
    (row,) = api_files(client, "demo")
    assert row["filename"] == wheel.name
    assert row["size"] == wheel.stat().st_size
    assert row["platform"] is None
    assert row["uploaded_by"] == "token:tests"
    assert row["requires_python"] == ">=3.8"
    with services.storage.open(blob_key(sha256_of(wheel))) as fh:
        assert fh.read() == wheel.read_bytes()
    meta_digest = hashlib.sha256(wheel_metadata(wheel)).hexdigest()
    assert services.storage.exists(blob_key(meta_digest))


def test_upload_sdist_and_binary(client: FlaskClient, upload_token: str, tmp_path: Path) -> None:
    sdist = make_sdist(tmp_path, "demo", "1.0")
    assert upload_ok(client, sdist, upload_token, PY310_X86)["platform"] is None
    binary = make_wheel(tmp_path, "demo", "1.0", tag="cp311-cp311-manylinux_2_17_x86_64")
    assert upload_ok(client, binary, upload_token)["platform"] == PLATFORM
    rows = {f["filename"]: f for f in api_files(client, "demo")}
    assert rows[sdist.name]["packagetype"] == "sdist"
    assert rows[binary.name]["packagetype"] == "bdist_wheel"
    assert rows[binary.name]["platform"] == PLATFORM


def test_upload_with_all_twine_digests_and_bearer(
    client: FlaskClient, upload_token: str, tmp_path: Path
) -> None:
    wheel = make_wheel(tmp_path, "demo", "1.0")
    data = wheel.read_bytes()
    form = upload_form(
        wheel,
        md5_digest=hashlib.md5(data, usedforsecurity=False).hexdigest(),
        blake2_256_digest=hashlib.blake2b(data, digest_size=32).hexdigest(),
    )
    try:
        response = client.post(
            f"/{PLATFORM}/legacy",  # twine may leave out the trailing slash
            data=form,
            headers=bearer(upload_token),
            content_type="multipart/form-data",
        )
    finally:
        form["content"][0].close()
    assert response.status_code == 201, response.get_data(as_text=True)


def test_same_file_again_is_a_noop(
    client: FlaskClient, upload_token: str, settings: Settings, tmp_path: Path
) -> None:
    wheel = make_wheel(tmp_path, "demo", "1.0")
    upload_ok(client, wheel, upload_token)
    before = _state(client, settings)
    again = upload(client, wheel, upload_token)
    assert again.status_code == 200
    assert again.get_json()["created"] is False
    # A pure wheel belongs to every platform: sending it to another is the same file.
    elsewhere = upload(client, wheel, upload_token, PY312_X86)
    assert elsewhere.status_code == 200
    assert _state(client, settings) == before


def test_same_filename_other_content_conflicts(
    client: FlaskClient, upload_token: str, settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "a").mkdir()
    first = make_wheel(tmp_path / "a", "demo", "1.0")
    upload_ok(client, first, upload_token)
    before = _state(client, settings)
    (tmp_path / "b").mkdir()
    second = make_wheel(tmp_path / "b", "demo", "1.0", modules={"demo.py": "x = 2\n"})
    assert second.name == first.name and second.read_bytes() != first.read_bytes()
    response = upload(client, second, upload_token)
    assert response.status_code == 409
    text = response.get_data(as_text=True).strip()
    assert "already exists with different content" in text
    assert "\n" not in text
    assert _state(client, settings) == before


def test_same_binary_filename_on_two_platforms(
    client: FlaskClient, upload_token: str, tmp_path: Path
) -> None:
    wheel = make_wheel(tmp_path, "demo", "1.0", tag="py3-none-linux_x86_64")
    assert upload_ok(client, wheel, upload_token, PLATFORM)["platform"] == PLATFORM
    assert upload_ok(client, wheel, upload_token, PY312_X86)["platform"] == PY312_X86
    assert sorted(f["platform"] for f in api_files(client, "demo")) == [PLATFORM, PY312_X86]


Mutation = Callable[[Path, Path], tuple[Path, dict[str, Any]]]


def _plain(name: str = "demo", version: str = "1.0", **kw: Any) -> Mutation:
    def build(tmp: Path, _base: Path) -> tuple[Path, dict[str, Any]]:
        return make_wheel(tmp, name, version, **kw), {}

    return build


def _renamed(filename: str) -> Mutation:
    def build(tmp: Path, _base: Path) -> tuple[Path, dict[str, Any]]:
        return make_wheel(tmp, "demo", "2.0"), {"filename": filename}

    return build


def _garbage_wheel(tmp: Path, _base: Path) -> tuple[Path, dict[str, Any]]:
    path = tmp / "demo-2.0-py3-none-any.whl"
    path.write_bytes(b"this is not a zip archive\n" * 50)
    return path, {}


def _metadata_mismatch(tmp: Path, _base: Path) -> tuple[Path, dict[str, Any]]:
    return make_wheel(tmp, "demo", "2.0", metadata=core_metadata("demo", "2.1")), {}


def _metadata_other_name(tmp: Path, _base: Path) -> tuple[Path, dict[str, Any]]:
    return make_wheel(tmp, "demo", "2.0", metadata=core_metadata("other", "2.0")), {}


def _wrong_digest(tmp: Path, _base: Path) -> tuple[Path, dict[str, Any]]:
    return make_wheel(tmp, "demo", "2.0"), {"sha256_digest": "0" * 64}


def _wrong_md5(tmp: Path, _base: Path) -> tuple[Path, dict[str, Any]]:
    return make_wheel(tmp, "demo", "2.0"), {"md5_digest": "0" * 32}


def _form(**fields: Any) -> Mutation:
    def build(tmp: Path, _base: Path) -> tuple[Path, dict[str, Any]]:
        return make_wheel(tmp, "demo", "2.0"), fields

    return build


def _sdist_mismatch(tmp: Path, _base: Path) -> tuple[Path, dict[str, Any]]:
    return make_sdist(tmp, "demo", "2.0", pkg_info=core_metadata("demo", "3.0")), {}


def _egg(tmp: Path, base: Path) -> tuple[Path, dict[str, Any]]:
    path = tmp / "demo-2.0-py3.11.egg"
    path.write_bytes(make_wheel(tmp, "demo", "2.0").read_bytes())
    return path, {"filetype": "bdist_egg"}


BAD_UPLOADS: dict[str, tuple[Mutation, int, str]] = {
    "malformed filename": (_renamed("demo-2.0.whl"), 400, "invalid filename"),
    "bad version in filename": (
        _renamed("demo-two-py3-none-any.whl"),
        400,
        "invalid filename",
    ),
    "path traversal": (_renamed("../demo-2.0-py3-none-any.whl"), 400, "invalid filename"),
    "absolute path": (_renamed("/tmp/demo-2.0-py3-none-any.whl"), 400, "invalid filename"),
    "subdirectory": (_renamed("sub/demo-2.0-py3-none-any.whl"), 400, "invalid filename"),
    "backslash": (_renamed("..\\demo-2.0-py3-none-any.whl"), 400, "invalid filename"),
    "egg": (_egg, 400, "unsupported file type"),
    "not a zip": (_garbage_wheel, 400, "not a valid zip archive"),
    "metadata version": (_metadata_mismatch, 400, "does not match filename version"),
    "metadata name": (_metadata_other_name, 400, "does not match filename project"),
    "sdist metadata": (_sdist_mismatch, 400, "does not match filename version"),
    "wrong sha256": (_wrong_digest, 400, "sha256 digest does not match"),
    "wrong md5": (_wrong_md5, 400, "md5 digest does not match"),
    "no digest": (_form(sha256_digest=None), 400, "missing digest"),
    "no content": (_form(content=None), 400, "missing 'content'"),
    "form name": (_form(name="other"), 400, "form name 'other' does not match"),
    "form version": (_form(version="9.9"), 400, "form version '9.9' does not match"),
    "action": (_form(**{":action": "remove_pkg"}), 400, "unsupported :action"),
    "arm wheel on x86": (
        _plain(tag="cp311-cp311-manylinux_2_17_aarch64"),
        400,
        f"cannot be installed on platform {PLATFORM}",
    ),
    "glibc too new": (
        _plain(tag="cp311-cp311-manylinux_2_39_x86_64"),
        400,
        f"cannot be installed on platform {PLATFORM}",
    ),
    "other python": (
        _plain(tag="cp312-cp312-manylinux_2_17_x86_64"),
        400,
        "best tag is cp311-cp311-linux_x86_64",
    ),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_upload_refused_and_nothing_stored(
    client: FlaskClient, upload_token: str, settings: Settings, tmp_path: Path, case: str
) -> None:
    upload_ok(client, make_wheel(tmp_path, "demo", "1.0"), upload_token)  # something to keep
    before = _state(client, settings)
    build, status, message = BAD_UPLOADS[case]
    work = tmp_path / "bad"
    work.mkdir()
    path, overrides = build(work, tmp_path)
    response = upload(client, path, upload_token, **overrides)
    assert response.status_code == status, response.get_data(as_text=True)
    text = response.get_data(as_text=True)
    assert message in text
    assert text.count("\n") == 1 and text.endswith("\n")  # one line
    assert response.content_type.startswith("text/plain")
    assert message in response.status  # twine shows the reason phrase
    assert _state(client, settings) == before


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({}, 401, "authentication required"),
        (basic_auth("wf_not-a-real-token"), 403, "invalid or revoked token"),
        (bearer("wf_not-a-real-token"), 403, "invalid or revoked token"),
        ({"Authorization": "Basic !!!notbase64"}, 401, "authentication required"),
    ],
)
def test_upload_auth_refused(
    client: FlaskClient,
    settings: Settings,
    tmp_path: Path,
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    before = _state(client, settings)
    wheel = make_wheel(tmp_path, "demo", "1.0")
    form = upload_form(wheel)
    try:
        response = client.post(
            f"/{PLATFORM}/legacy/", data=form, headers=headers, content_type="multipart/form-data"
        )
    finally:
        form["content"][0].close()
    assert response.status_code == status
    assert message in response.get_data(as_text=True)
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert _state(client, settings) == before


@pytest.mark.parametrize("scope", ["read", "build"])
def test_upload_needs_upload_scope(
    client: FlaskClient, services: Services, settings: Settings, tmp_path: Path, scope: str
) -> None:
    token = create_token(services.engine, "weak", scope)[1]
    before = _state(client, settings)
    response = upload(client, make_wheel(tmp_path, "demo", "1.0"), token)
    assert response.status_code == 403
    assert f"token scope '{scope}' does not allow 'upload'" in response.get_data(as_text=True)
    assert _state(client, settings) == before


def test_revoked_token_cannot_upload(
    client: FlaskClient, services: Services, settings: Settings, tmp_path: Path
) -> None:
    token_id, token = create_token(services.engine, "gone", "upload")
    assert revoke_token(services.engine, token_id)
    response = upload(client, make_wheel(tmp_path, "demo", "1.0"), token)
    assert response.status_code == 403
    assert api_files(client, "demo") == []


def test_admin_token_can_upload(client: FlaskClient, tmp_path: Path) -> None:
    from tests.conftest import ADMIN_TOKEN

    response = upload(client, make_wheel(tmp_path, "demo", "1.0"), ADMIN_TOKEN)
    assert response.status_code == 201
    assert api_files(client, "demo")[0]["uploaded_by"] == "admin (WHEELFARM_ADMIN_TOKEN)"


def test_unknown_platform_upload(
    client: FlaskClient, upload_token: str, settings: Settings, tmp_path: Path
) -> None:
    before = _state(client, settings)
    response = upload(client, make_wheel(tmp_path, "demo", "1.0"), upload_token, "no-such-os")
    assert response.status_code == 404
    assert "unknown platform 'no-such-os'" in response.get_data(as_text=True)
    assert _state(client, settings) == before


def test_upload_over_size_limit(settings: Settings, services: Services, tmp_path: Path) -> None:
    token = create_token(services.engine, "tests", "upload")[1]
    wheel = make_wheel(tmp_path, "demo", "1.0", modules={"demo.py": os.urandom(8000).hex()})
    assert wheel.stat().st_size > 6000
    with app_with(settings, max_upload_bytes=4000) as (app, _svc):
        client = app.test_client()
        before = _state(client, settings)
        response = upload(client, wheel, token)
        assert response.status_code == 413
        assert "\n" not in response.get_data(as_text=True).strip()
        assert _state(client, settings) == before
        small = make_wheel(tmp_path, "demo", "1.1")
        assert small.stat().st_size < 3000
        assert upload(client, small, token).status_code == 201


def test_uploaded_files_show_on_pages(
    client: FlaskClient, upload_token: str, tmp_path: Path
) -> None:
    sdist = make_sdist(tmp_path, "demo", "1.0")
    upload_ok(client, sdist, upload_token, PY312_ARM)
    for platform in (PLATFORM, PY312_ARM, PY310_X86, PY312_X86):
        files = json_page(client, project_url("demo", platform))["files"]
        assert [f["filename"] for f in files] == [sdist.name]
