"""The static export (index_server/export): byte-identical pages, files, drift repair, S3."""

from __future__ import annotations

import gzip
import json
import posixpath
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from index_server.app import create_app
from index_server.config import Settings
from index_server.export.exporter import Exporter, ReadProtected
from index_server.export.targets import FolderTarget, S3Target
from index_server.services import Services
from tests.factory import make_sdist, make_wheel
from tests.http_helpers import (
    ALL_PLATFORMS,
    PLATFORM,
    PY312_ARM,
    V1_JSON,
    admin_headers,
    api_files,
    services_fixture,
    upload_ok,
)
from tests.s3_helpers import MotoServer


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    yield from services_fixture(settings)


@pytest.fixture
def client(services: Services) -> FlaskClient:
    return create_app(services=services).test_client()


@pytest.fixture
def token(services: Services) -> str:
    from index_server.auth import create_token

    return create_token(services.engine, "tests", "upload")[1]


@pytest.fixture
def folder(tmp_path: Path) -> FolderTarget:
    return FolderTarget(tmp_path / "export")


def _served(client: FlaskClient, url: str, accept: str) -> tuple[bytes, str]:
    response = client.get(url, headers={"Accept": accept})
    assert response.status_code == 200, url
    return response.get_data(), response.content_type


def _upload_pair(client: FlaskClient, token: str, tmp_path: Path, version: str = "1.0") -> None:
    upload_ok(client, make_wheel(tmp_path, "Demo.Pkg", version), token)
    upload_ok(client, make_sdist(tmp_path, "Demo.Pkg", version), token)


def test_full_export_matches_what_the_server_serves(
    services: Services, client: FlaskClient, token: str, folder: FolderTarget, tmp_path: Path
) -> None:
    _upload_pair(client, token, tmp_path)
    binary = make_wheel(tmp_path, "demo-pkg", "1.0", tag="cp311-cp311-linux_x86_64")
    upload_ok(client, binary, token)  # this platform's only
    upload_ok(client, make_sdist(tmp_path, "Demo.Pkg", "2.0"), token)
    _, stats = Exporter(services, folder).full_export()
    assert stats.pages_written == 2 * 2 * len(ALL_PLATFORMS)  # root and project, 2 formats
    root = folder.root
    for platform in ALL_PLATFORMS:
        for accept, name, ctype in (
            ("text/html", "index.html", "text/html; charset=utf-8"),
            (V1_JSON, "index.json", V1_JSON),
        ):
            for url in (f"/{platform}/simple/", f"/{platform}/simple/demo-pkg/"):
                body, served_type = _served(client, url, accept)
                exported = root / url.strip("/") / name
                assert exported.read_bytes() == body, exported
                assert served_type == ctype
                assert gzip.decompress((root / (str(exported) + ".gz")).read_bytes()) == body
    page = json.loads((root / PLATFORM / "simple/demo-pkg/index.json").read_bytes())
    names = {f["filename"] for f in page["files"]}
    assert "demo_pkg-1.0-cp311-cp311-linux_x86_64.whl" in names
    arm = json.loads((root / PY312_ARM / "simple/demo-pkg/index.json").read_bytes())
    assert "demo_pkg-1.0-cp311-cp311-linux_x86_64.whl" not in {f["filename"] for f in arm["files"]}
    for entry in page["files"]:
        url = posixpath.normpath(f"/{PLATFORM}/simple/demo-pkg/{entry['url']}")
        path = root / url.lstrip("/")
        if entry["filename"] == "demo_pkg-2.0.tar.gz":
            # No wheel of 2.0 here: its download queues a first-sight build, so the export
            # leaves it to the server.
            assert not path.exists()
            continue
        assert path.read_bytes() == client.get(url).get_data()
        metadata = Path(str(path) + ".metadata")
        if entry["core-metadata"]:
            assert metadata.read_bytes() == client.get(url + ".metadata").get_data()
        else:
            assert not metadata.exists()


def test_changes_are_followed_and_removed(
    services: Services, client: FlaskClient, token: str, folder: FolderTarget, tmp_path: Path
) -> None:
    exporter = Exporter(services, folder)
    cursor, _ = exporter.full_export()
    page = folder.root / PLATFORM / "simple/demo-pkg/index.html"
    assert not page.exists()
    _upload_pair(client, token, tmp_path)
    stats = exporter.step(cursor)
    assert stats.projects == 1 and page.exists()
    wheel = next(f for f in api_files(client, "demo-pkg") if f["filename"].endswith(".whl"))
    response = client.post(
        f"/api/files/{wheel['id']}/yank", json={"reason": "bad"}, headers=admin_headers()
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    exporter.step(cursor)
    assert b'data-yanked="bad"' in page.read_bytes()
    assert exporter.step(cursor).projects == 0  # nothing changed since
    for entry in api_files(client, "demo-pkg"):
        assert client.delete(f"/api/files/{entry['id']}", headers=admin_headers()).status_code in (
            200,
            204,
        )
    exporter.step(cursor)
    assert not page.exists()
    assert not (folder.root / PLATFORM / "files/demo-pkg").exists()
    listed = json.loads((folder.root / PLATFORM / "simple/index.json").read_bytes())
    assert listed["projects"] == []


def test_full_export_repairs_drift_and_removes_temporaries(
    services: Services, client: FlaskClient, token: str, folder: FolderTarget, tmp_path: Path
) -> None:
    _upload_pair(client, token, tmp_path)
    Exporter(services, folder).full_export()
    page = folder.root / PLATFORM / "simple/demo-pkg/index.json"
    good = page.read_bytes()
    page.write_bytes(b'{"broken":')
    stray = folder.root / PLATFORM / "simple/not-a-project/index.html"
    stray.parent.mkdir()
    stray.write_text("old")
    junk = folder.root / "junk.txt"
    junk.write_text("x")
    leftover = folder.temp / "page-half"
    leftover.write_bytes(b"<!DOCTYPE")
    _, stats = Exporter(services, folder).full_export()
    assert page.read_bytes() == good
    assert not stray.exists() and not stray.parent.exists() and not junk.exists()
    assert not leftover.exists()
    assert stats.pages_written == 1 and stats.removed == 2


def test_rewritten_page_gets_a_later_mtime(folder: FolderTarget) -> None:
    """nginx's ETag is mtime-size: same-size versions written in one second must differ."""
    folder.write_page("p/simple/x/index.html", b"aaaa", gzip.compress(b"aaaa"), "text/html")
    first = (folder.root / "p/simple/x/index.html").stat().st_mtime
    folder.write_page("p/simple/x/index.html", b"bbbb", gzip.compress(b"bbbb"), "text/html")
    assert int((folder.root / "p/simple/x/index.html").stat().st_mtime) > int(first)
    assert not folder.write_page(
        "p/simple/x/index.html", b"bbbb", gzip.compress(b"bbbb"), "text/html"
    )


def test_read_protected_index_is_refused(settings: Settings, folder: FolderTarget) -> None:
    import dataclasses

    from tests.http_helpers import fast_services

    svc = fast_services(dataclasses.replace(settings, read_requires_token=True))
    try:
        with pytest.raises(ReadProtected, match="open-read"):
            Exporter(svc, folder)
    finally:
        svc.engine.dispose()


def test_s3_target(
    moto: MotoServer,
    aws: None,
    services: Services,
    client: FlaskClient,
    token: str,
    tmp_path: Path,
) -> None:
    bucket = moto.new_bucket()
    target = S3Target(f"s3://{bucket}/export?endpoint_url={moto.endpoint}", page_max_age=30)
    exporter = Exporter(services, target)
    cursor, _ = exporter.full_export()
    _upload_pair(client, token, tmp_path)
    exporter.step(cursor)
    s3 = moto.client()
    key = f"export/{PLATFORM}/simple/demo-pkg/index.json"
    obj = s3.get_object(Bucket=bucket, Key=key)
    body, _ = _served(client, f"/{PLATFORM}/simple/demo-pkg/", V1_JSON)
    assert obj["Body"].read() == body
    assert obj["ContentType"] == V1_JSON
    assert obj["CacheControl"] == "max-age=30, public"
    twin = s3.get_object(Bucket=bucket, Key=key + ".gz")
    assert twin["ContentEncoding"] == "gzip"
    assert gzip.decompress(twin["Body"].read()) == body
    wheel = next(f for f in json.loads(body)["files"] if f["filename"].endswith(".whl"))
    file_key = f"export/{PLATFORM}/files/demo-pkg/{wheel['hashes']['sha256']}/{wheel['filename']}"
    stored = s3.get_object(Bucket=bucket, Key=file_key)
    assert stored["ContentType"] == "application/zip"
    url = posixpath.normpath(f"/{PLATFORM}/simple/demo-pkg/{wheel['url']}")
    assert stored["Body"].read() == client.get(url).get_data()
    # A yank rewrites the page object whole; a delete removes the objects.
    client.post(f"/api/files/{wheel_id(client)}/yank", json={}, headers=admin_headers())
    exporter.step(cursor)
    yanked = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert any(f["yanked"] for f in yanked["files"])
    for entry in api_files(client, "demo-pkg"):
        client.delete(f"/api/files/{entry['id']}", headers=admin_headers())
    exporter.step(cursor)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert not any("demo-pkg" in k for k in keys), keys
    assert f"export/{PLATFORM}/simple/index.html" in keys
    # A fresh exporter over the same bucket finds nothing to rewrite.
    _, stats = Exporter(
        services, S3Target(f"s3://{bucket}/export?endpoint_url={moto.endpoint}")
    ).full_export()
    assert stats.pages_written == 0 and stats.removed == 0


def wheel_id(client: FlaskClient) -> int:
    return next(f["id"] for f in api_files(client, "demo-pkg") if f["filename"].endswith(".whl"))


def test_compose_runs_an_exporter_and_nginx_on_the_shipped_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    import subprocess

    import yaml

    from tests.export_helpers import SHIPPED, SHIPPED_FILES, nginx_binary
    from tests.test_image import COMPOSE_FILE, DOTENV, _environment, _interpolated, accepts

    compose = _interpolated(yaml.safe_load(COMPOSE_FILE.read_text()), DOTENV)
    services = compose["services"]
    exporter, nginx = services["exporter"], services["nginx"]
    assert _environment(exporter) == _environment(services["server"])
    accepts(exporter["command"], _environment(exporter), monkeypatch)
    target = exporter["command"][exporter["command"].index("--target") + 1]
    assert f"wheelfarm-export:{target}" in exporter["volumes"]
    assert f"wheelfarm-export:{target}:ro" in nginx["volumes"]
    conf = (SHIPPED / "nginx.conf").read_text()
    assert f"root {target};" in conf and "server server:8080;" in conf
    for name in (*SHIPPED_FILES, "nginx.conf"):
        inside = "/etc/nginx/" + name
        assert f"./deploy/nginx/{name}:{inside}:ro" in nginx["volumes"]
    # The whole shipped config is one nginx accepts (with a host name that resolves here).
    for name in SHIPPED_FILES:
        shutil.copy(SHIPPED / name, tmp_path / name)
    (tmp_path / "nginx.conf").write_text(conf.replace("server server:8080;", "server 127.0.0.1:9;"))
    check = subprocess.run(
        [nginx_binary(), "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
         "-e", str(tmp_path / "error.log")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr


def test_one_exporter_per_folder(folder: FolderTarget) -> None:
    from index_server.export.targets import ExportBusy

    second = FolderTarget(folder.root)
    with folder.hold(wait=False), pytest.raises(ExportBusy, match="another exporter"):
        second.hold(wait=False).__enter__()
    with FolderTarget(folder.root).hold(wait=False):  # free again
        pass


def test_merged_upstream_pages_follow_the_ttl(tmp_path: Path) -> None:
    """A page seen through the server is exported; when its upstream page goes stale it is
    withdrawn (so the next request reaches the server, which revalidates), and written back
    once the server has refetched it. The exporter itself never asks the upstream."""
    import time

    from tests.upstream_server import FakeUpstream, proxy_services

    upstream = FakeUpstream()
    upstream.add(make_wheel(tmp_path, "up-proj", "1.0"))
    svc = proxy_services(tmp_path, upstream, upstream_ttl=2)
    try:
        client = create_app(services=svc).test_client()
        folder = FolderTarget(tmp_path / "export")
        exporter = Exporter(svc, folder)
        cursor, _ = exporter.full_export()
        page = folder.root / PLATFORM / "simple/up-proj/index.json"
        assert not page.exists()  # never seen: cannot be exported, nginx passes it on
        body, _ = _served(client, f"/{PLATFORM}/simple/up-proj/", V1_JSON)
        fetches = upstream.count("/simple/up-proj/")
        assert exporter.step(cursor).projects == 1
        assert page.read_bytes() == body
        assert json.loads(body)["meta"]["tracks"]  # merged: PEP 708 tracks the upstream
        time.sleep(2.1)
        exporter.step(cursor)
        assert not page.exists()  # stale: withdrawn, not refetched by the exporter
        assert upstream.count("/simple/up-proj/") == fetches
        upstream.add(make_wheel(tmp_path, "up-proj", "2.0"))
        body, _ = _served(client, f"/{PLATFORM}/simple/up-proj/", V1_JSON)  # the server refetches
        assert exporter.step(cursor).projects == 1
        assert page.read_bytes() == body
        assert "up_proj-2.0-py3-none-any.whl" in body.decode()
    finally:
        svc.engine.dispose()
        upstream.close()
