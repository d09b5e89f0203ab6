"""Helpers for the in-process HTTP tests: uploads as twine sends them, auth headers, parsing."""

from __future__ import annotations

import atexit
import base64
import dataclasses
import hashlib
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from index_server.app import create_app
from index_server.config import Settings
from index_server.db.migrate import upgrade
from index_server.services import Services, build_services
from tests.conftest import ADMIN_TOKEN

# The platform matching this machine, and others with other Pythons/architectures.
PLATFORM = "debian-12-py3.11-x86_64"
PY312_X86 = "ubuntu-24.04-py3.12-x86_64"
PY310_X86 = "ubuntu-22.04-py3.10-x86_64"
PY312_ARM = "ubuntu-24.04-py3.12-aarch64"
PY313_X86 = "debian-13-py3.13-x86_64"
PY311_ARM = "debian-12-py3.11-aarch64"  # emulated on this repository's (x86_64) CI
ALL_PLATFORMS = (PLATFORM, PY310_X86, PY312_ARM, PY312_X86, PY313_X86, PY311_ARM)

V1_JSON = "application/vnd.pypi.simple.v1+json"
V1_HTML = "application/vnd.pypi.simple.v1+html"
# What the clients send, byte for byte.
PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)
UV_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.01"
)
UPLOAD_TIME_RE = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$"


def basic_auth(secret: str, username: str = "__token__") -> dict[str, str]:
    """HTTP basic auth as pip and twine send it (``__token__:<secret>``)."""
    raw = f"{username}:{secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def username_only_auth(secret: str) -> dict[str, str]:
    """``<secret>:`` — pip's form when the index URL carries only a username."""
    return {"Authorization": "Basic " + base64.b64encode(f"{secret}:".encode()).decode()}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def admin_headers() -> dict[str, str]:
    return basic_auth(ADMIN_TOKEN)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wheel_metadata(path: Path) -> bytes:
    """The METADATA member of a wheel, byte for byte."""
    with zipfile.ZipFile(path) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return archive.read(name)


def upload_form(path: Path, *, filename: str | None = None, **overrides: Any) -> dict[str, Any]:
    """The multipart fields twine sends for one file (legacy API, protocol 1)."""
    filename = filename or path.name
    is_wheel = path.name.endswith(".whl")
    parts = path.name.split("-")
    form: dict[str, Any] = {
        ":action": "file_upload",
        "protocol_version": "1",
        "metadata_version": "2.1",
        "name": parts[0],
        "version": parts[1].removesuffix(".tar.gz").removesuffix(".zip"),
        "filetype": "bdist_wheel" if is_wheel else "sdist",
        "pyversion": parts[2] if is_wheel else "source",
        "sha256_digest": sha256_of(path),
        "content": (path.open("rb"), filename, "application/octet-stream"),
    }
    for key, value in overrides.items():
        if value is None:
            form.pop(key, None)
        else:
            form[key] = value
    return form


def upload(
    client: FlaskClient,
    path: Path,
    token: str | None,
    platform: str = PLATFORM,
    *,
    filename: str | None = None,
    **overrides: Any,
) -> TestResponse:
    headers = basic_auth(token) if token else {}
    form = upload_form(path, filename=filename, **overrides)
    try:
        return client.post(
            f"/{platform}/legacy/",
            data=form,
            headers=headers,
            content_type="multipart/form-data",
        )
    finally:
        content = form.get("content")
        if isinstance(content, tuple):
            content[0].close()


def upload_ok(client: FlaskClient, path: Path, token: str, platform: str = PLATFORM) -> dict:
    response = upload(client, path, token, platform)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def stored_blobs(settings: Settings) -> set[str]:
    """Every file (blobs and any leftover temporary file) below the storage folder."""
    root = settings.data_dir / "files"
    if not root.exists():
        return set()
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def api_files(client: FlaskClient, project: str) -> list[dict[str, Any]]:
    """A project's files as the admin API lists them ([] if the project is unknown)."""
    response = client.get(f"/api/projects/{project}", headers=admin_headers())
    if response.status_code == 404:
        return []
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["files"]


def json_page(client: FlaskClient, url: str, **headers: str) -> dict[str, Any]:
    response = client.get(url, headers={"Accept": V1_JSON, **headers})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type == V1_JSON
    return response.get_json()


def project_url(project: str, platform: str = PLATFORM) -> str:
    return f"/{platform}/simple/{project}/"


class _AnchorParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[dict[str, Any]] = []
        self.metas: list[dict[str, str | None]] = []
        self._current: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._current = {"attrs": dict(attrs), "text": ""}
            self.anchors.append(self._current)
        elif tag == "meta":
            self.metas.append(dict(attrs))

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._current["text"] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._current = None


@dataclasses.dataclass
class ParsedPage:
    anchors: list[dict[str, Any]]
    metas: list[dict[str, str | None]]

    def anchor(self, filename: str) -> dict[str, str | None]:
        found = [a["attrs"] for a in self.anchors if a["text"] == filename]
        assert len(found) == 1, f"{filename} listed {len(found)} times"
        return found[0]

    @property
    def texts(self) -> list[str]:
        return [a["text"] for a in self.anchors]


def parse_html(body: str) -> ParsedPage:
    """Anchors (attributes unescaped, as a client sees them) and meta tags of a page."""
    parser = _AnchorParser()
    parser.feed(body)
    parser.close()
    return ParsedPage(parser.anchors, parser.metas)


_template: list[Path] = []


def _migrated_template() -> Path:
    """A SQLite database migrated to head, once per test process."""
    if not _template:
        directory = Path(tempfile.mkdtemp(prefix="wheelfarm-template-"))
        atexit.register(shutil.rmtree, directory, True)
        path = directory / "wheelfarm.sqlite3"
        upgrade(f"sqlite:///{path}")
        _template.append(path)
    return _template[0]


def fast_services(settings: Settings) -> Services:
    """``build_services`` as a server worker does it (no migration run), on a copy of a
    database migrated once: Alembic per test would cost more than most tests."""
    if not settings.resolved_database_url.startswith("sqlite"):
        return build_services(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    target = settings.data_dir / "wheelfarm.sqlite3"
    if not target.exists():
        shutil.copyfile(_migrated_template(), target)
    return build_services(settings, migrate=False)


def services_fixture(settings: Settings) -> Iterator[Services]:
    """Body of the modules' ``services`` fixture (overrides the conftest one, same result)."""
    svc = fast_services(settings)
    try:
        yield svc
    finally:
        svc.engine.dispose()


@contextmanager
def app_with(settings: Settings, **overrides: Any) -> Iterator[tuple[Flask, Services]]:
    """A separate app (own engine, own page cache) over ``settings`` with some changes."""
    svc = fast_services(dataclasses.replace(settings, **overrides))
    try:
        yield create_app(services=svc), svc
    finally:
        svc.engine.dispose()
