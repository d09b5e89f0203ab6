"""The upstream proxy, against a local upstream the tests serve and count."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin

import pytest
from sqlalchemy import func, select

from index_server.app import create_app
from index_server.db.schema import build_jobs, upstream_files
from index_server.ingest import ingest_file
from index_server.services import Services, build_services
from tests.conftest import ADMIN_TOKEN
from tests.factory import make_sdist, make_wheel
from tests.upstream_server import FakeUpstream, proxy_services

PLATFORM = "debian-12-py3.11-x86_64"
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(params=["json", "html"])
def upstream(request: pytest.FixtureRequest) -> Iterator[FakeUpstream]:
    fake = FakeUpstream(mode=request.param)
    yield fake
    fake.close()


def make_proxy(tmp_path: Path, upstream: FakeUpstream, **overrides: object) -> Services:
    return proxy_services(tmp_path, upstream, **{"upstream_timeout": 2.0, **overrides})


@pytest.fixture
def proxy(tmp_path: Path, upstream: FakeUpstream) -> Services:
    return make_proxy(tmp_path, upstream)


def page(client, project: str = "libup") -> dict:  # type: ignore[no-untyped-def]
    response = client.get(f"/{PLATFORM}/simple/{project}/", headers=JSON)
    assert response.status_code == 200, response.text
    return json.loads(response.data)


def file_path(entry: dict, project: str = "libup") -> str:
    """The server path a page's (relative) file URL points to."""
    return urljoin(f"/{PLATFORM}/simple/{project}/", entry["url"])


def filenames(data: dict) -> list[str]:
    return [f["filename"] for f in data["files"]]


def fill_upstream(upstream: FakeUpstream, tmp_path: Path) -> None:
    dist = tmp_path / "upstream-dists"
    dist.mkdir(exist_ok=True)
    upstream.add(make_sdist(dist, "libup", "1.0"))
    upstream.add(make_wheel(dist, "libup", "1.0"), requires_python=">=3.8")
    upstream.add(make_wheel(dist, "libup", "1.0", tag="cp311-cp311-linux_x86_64"))
    upstream.add(make_wheel(dist, "libup", "1.0", tag="cp312-cp312-linux_x86_64"))
    upstream.add(make_wheel(dist, "libup", "1.0", tag="cp311-cp311-manylinux_2_39_x86_64"))
    upstream.add(make_wheel(dist, "libup", "1.0", tag="cp311-cp311-linux_aarch64"))
    upstream.add(make_sdist(dist, "libup", "0.9"), yanked="broken build")


def test_merged_page_keeps_upstream_data_and_drops_uninstallable_wheels(
    proxy: Services, upstream: FakeUpstream, tmp_path: Path
) -> None:
    fill_upstream(upstream, tmp_path)
    client = create_app(services=proxy).test_client()
    data = page(client)
    assert sorted(filenames(data)) == sorted(
        [
            "libup-1.0.tar.gz",
            "libup-1.0-py3-none-any.whl",
            "libup-1.0-cp311-cp311-linux_x86_64.whl",
            "libup-0.9.tar.gz",
        ]
    )
    by_name = {f["filename"]: f for f in data["files"]}
    wheel = by_name["libup-1.0-py3-none-any.whl"]
    original = next(f for f in upstream.projects["libup"] if f.filename == wheel["filename"])
    assert wheel["hashes"] == {"sha256": original.sha256}
    assert wheel["requires-python"] == ">=3.8"
    assert wheel["core-metadata"] == {"sha256": hashlib.sha256(original.metadata).hexdigest()}
    assert wheel["url"].startswith("../../files/libup/")
    assert by_name["libup-0.9.tar.gz"]["yanked"] == "broken build"
    if upstream.mode == "json":  # HTML pages carry no size or upload time
        assert wheel["size"] == len(original.data)
        assert wheel["upload-time"] == "2024-01-02T03:04:05.000000Z"
    assert data["versions"] == ["0.9", "1.0"]
    assert data["meta"]["tracks"] == [upstream.url + "libup/"]
    html = client.get(f"/{PLATFORM}/simple/libup/").text
    assert 'data-requires-python="&gt;=3.8"' in html
    assert 'data-yanked="broken build"' in html
    assert f'<meta name="pypi:tracks" content="{upstream.url}libup/">' in html


def test_other_platform_gets_its_own_wheels(
    proxy: Services, upstream: FakeUpstream, tmp_path: Path
) -> None:
    fill_upstream(upstream, tmp_path)
    client = create_app(services=proxy).test_client()
    response = client.get("/ubuntu-24.04-py3.12-aarch64/simple/libup/", headers=JSON)
    names = filenames(json.loads(response.data))
    assert "libup-1.0-cp311-cp311-linux_aarch64.whl" not in names  # wrong Python
    assert "libup-1.0-cp312-cp312-linux_x86_64.whl" not in names  # wrong architecture
    assert "libup-1.0-py3-none-any.whl" in names


def test_our_file_wins_over_the_upstream_file_of_the_same_name(
    proxy: Services, upstream: FakeUpstream, tmp_path: Path
) -> None:
    fill_upstream(upstream, tmp_path)
    ours_dir = tmp_path / "ours"
    ours_dir.mkdir()
    ours = make_wheel(
        ours_dir,
        "libup",
        "1.0",
        tag="cp311-cp311-linux_x86_64",
        modules={"libup/__init__.py": "BUILT_HERE = True\n"},
    )
    platform = proxy.platforms[PLATFORM]
    ingest_file(proxy, platform, ours, ours.name, actor="builder", origin="build")
    client = create_app(services=proxy).test_client()
    data = page(client)
    entries = [f for f in data["files"] if f["filename"] == ours.name]
    assert len(entries) == 1
    assert entries[0]["hashes"]["sha256"] == hashlib.sha256(ours.read_bytes()).hexdigest()
    assert "libup-1.0.tar.gz" in filenames(data)  # built wheels don't hide the upstream


def test_cached_page_not_refetched_within_ttl(
    proxy: Services, upstream: FakeUpstream, tmp_path: Path
) -> None:
    fill_upstream(upstream, tmp_path)
    client = create_app(services=proxy).test_client()
    first = page(client)
    # A second process (another app on the same database) shares the cache.
    other = create_app(services=build_services(proxy.settings, migrate=False)).test_client()
    for _ in range(3):
        assert page(client) == first
        assert page(other) == first
    assert upstream.count("/simple/libup/") == 1


def test_stale_page_is_revalidated_and_new_release_shows(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    proxy = make_proxy(tmp_path, upstream, upstream_ttl=0)
    fill_upstream(upstream, tmp_path)
    client = create_app(services=proxy).test_client()
    before = page(client)
    page(client)  # stale at once (TTL 0): revalidated, the upstream answers 304
    assert upstream.count("/simple/libup/") == 2
    assert page(client) == before
    upstream.add(make_sdist(tmp_path, "libup", "2.0"))
    assert "libup-2.0.tar.gz" in filenames(page(client))


def test_refresh_forces_a_refetch_within_ttl(
    proxy: Services, upstream: FakeUpstream, tmp_path: Path
) -> None:
    fill_upstream(upstream, tmp_path)
    client = create_app(services=proxy).test_client()
    page(client)
    upstream.add(make_sdist(tmp_path, "libup", "2.0"))
    assert "libup-2.0.tar.gz" not in filenames(page(client))  # fresh within the TTL
    from click.testing import CliRunner

    from client.cli import main

    result = CliRunner().invoke(
        main,
        [
            "--data-dir",
            str(proxy.settings.data_dir),
            "--upstream-url",
            upstream.url,
            "refresh",
            "LibUp",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "libup: " in result.output and "found" in result.output
    assert "libup-2.0.tar.gz" in filenames(page(client))


def test_local_write_invalidates_the_merged_page_at_once(
    proxy: Services, upstream: FakeUpstream, tmp_path: Path
) -> None:
    fill_upstream(upstream, tmp_path)
    client = create_app(services=proxy).test_client()
    page(client)
    built = make_wheel(tmp_path, "libup", "1.0", tag="cp311-cp311-manylinux_2_36_x86_64")
    ingest_file(proxy, proxy.platforms[PLATFORM], built, built.name, actor="b", origin="build")
    assert built.name in filenames(page(client))


def test_upstream_file_is_pulled_once_and_checked(
    proxy: Services, upstream: FakeUpstream, tmp_path: Path
) -> None:
    fill_upstream(upstream, tmp_path)
    client = create_app(services=proxy).test_client()
    entry = next(f for f in page(client)["files"] if f["filename"].endswith("none-any.whl"))
    url = file_path(entry)
    for _ in range(3):
        response = client.get(url)
        assert response.status_code == 200
        assert hashlib.sha256(response.data).hexdigest() == entry["hashes"]["sha256"]
    assert upstream.count("/files/" + entry["filename"]) == 1
    metadata = client.get(url + ".metadata")
    assert metadata.status_code == 200
    assert hashlib.sha256(metadata.data).hexdigest() == entry["core-metadata"]["sha256"]
    client.get(url + ".metadata")
    assert upstream.count(f"/files/{entry['filename']}.metadata") == 1


def test_a_file_the_upstream_no_longer_lists_is_no_longer_served(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """Files are served while a cached page announces them: once the refreshed page drops
    one, its URL answers 404 (even in a process that served it before)."""
    proxy = make_proxy(tmp_path, upstream, upstream_ttl=0)
    fill_upstream(upstream, tmp_path)
    client = create_app(services=proxy).test_client()
    entry = next(f for f in page(client)["files"] if f["filename"].endswith("none-any.whl"))
    assert client.get(file_path(entry)).status_code == 200
    assert client.get(file_path(entry)).status_code == 200
    with upstream._lock:
        upstream.projects["libup"] = [
            f for f in upstream.projects["libup"] if f.filename != entry["filename"]
        ]
    assert entry["filename"] not in filenames(page(client))  # the page is fetched again
    gone = client.get(file_path(entry))
    assert gone.status_code == 404 and entry["filename"] in gone.text


def test_tampered_upstream_file_is_refused_and_not_stored(
    proxy: Services, upstream: FakeUpstream, tmp_path: Path
) -> None:
    fill_upstream(upstream, tmp_path)
    upstream.tampered.add("libup-1.0.tar.gz")
    client = create_app(services=proxy).test_client()
    entry = next(f for f in page(client)["files"] if f["filename"] == "libup-1.0.tar.gz")
    url = file_path(entry)
    response = client.get(url)
    assert response.status_code == 502
    assert "does not match" in response.text
    blobs = [p for p in (proxy.settings.data_dir / "files").rglob("*") if p.is_file()]
    assert blobs == []
    with proxy.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(upstream_files)).scalar() == 0
    assert client.get(url).status_code == 502  # refused again, never cached
    assert upstream.count("/files/libup-1.0.tar.gz") == 2


def test_outage_serves_stale_pages_and_our_files(tmp_path: Path, upstream: FakeUpstream) -> None:
    proxy = make_proxy(tmp_path, upstream, upstream_ttl=0)
    fill_upstream(upstream, tmp_path)
    client = create_app(services=proxy).test_client()
    before = page(client)
    upstream.down = True
    response = client.get(f"/{PLATFORM}/simple/libup/", headers=JSON)
    assert response.status_code == 200
    assert json.loads(response.data) == before
    assert response.headers["Warning"].startswith("110")
    assert "HTTP 503" in response.headers["X-Wheelfarm-Upstream-Stale"]
    never_seen = client.get(f"/{PLATFORM}/simple/never-seen/")
    assert never_seen.status_code == 502
    assert "upstream is unavailable" in never_seen.text


def test_stopped_upstream_still_serves_cached_projects(tmp_path: Path) -> None:
    upstream = FakeUpstream()
    proxy = make_proxy(tmp_path, upstream, upstream_ttl=0)
    fill_upstream(upstream, tmp_path)
    client = create_app(services=proxy).test_client()
    before = page(client)
    upstream.close()
    assert page(client) == before
    assert client.get(f"/{PLATFORM}/simple/other/").status_code == 502


def test_slow_upstream_times_out_cleanly(tmp_path: Path, upstream: FakeUpstream) -> None:
    proxy = make_proxy(tmp_path, upstream, upstream_timeout=0.3)
    upstream.delay = 2
    client = create_app(services=proxy).test_client()
    started = time.monotonic()
    response = client.get(f"/{PLATFORM}/simple/slowpoke/")
    assert response.status_code == 502
    assert time.monotonic() - started < 1.5
    assert "Timeout" in response.text


def test_upstream_404_is_cached_briefly(tmp_path: Path, upstream: FakeUpstream) -> None:
    proxy = make_proxy(tmp_path, upstream)
    client = create_app(services=proxy).test_client()
    for _ in range(3):
        assert client.get(f"/{PLATFORM}/simple/nothing-here/").status_code == 404
    assert upstream.count("/simple/nothing-here/") == 1
    expiring = make_proxy(tmp_path / "second", upstream, upstream_404_ttl=0)
    client = create_app(services=expiring).test_client()
    client.get(f"/{PLATFORM}/simple/nothing-here/")
    client.get(f"/{PLATFORM}/simple/nothing-here/")
    assert upstream.count("/simple/nothing-here/") == 3


def test_uploaded_project_never_shows_upstream_files(
    proxy: Services, upstream: FakeUpstream, tmp_path: Path
) -> None:
    fill_upstream(upstream, tmp_path)
    ours = (
        make_sdist(tmp_path / "ours", "libup", "0.1")
        if (tmp_path / "ours").mkdir() is None
        else None
    )
    assert ours is not None
    client = create_app(services=proxy).test_client()
    with ours.open("rb") as fh:
        response = client.post(
            f"/{PLATFORM}/legacy/",
            data={
                ":action": "file_upload",
                "name": "libup",
                "version": "0.1",
                "sha256_digest": hashlib.sha256(ours.read_bytes()).hexdigest(),
                "content": (fh, ours.name),
            },
            headers=AUTH,
        )
    assert response.status_code == 201, response.text
    data = page(client)
    assert filenames(data) == ["libup-0.1.tar.gz"]
    assert "tracks" not in data["meta"]
    assert upstream.count("/simple/libup/") == 0


def test_private_names_are_never_asked_upstream(tmp_path: Path, upstream: FakeUpstream) -> None:
    fill_upstream(upstream, tmp_path)
    proxy = make_proxy(tmp_path, upstream, private_projects=("libup", "acme-*"))
    client = create_app(services=proxy).test_client()
    assert client.get(f"/{PLATFORM}/simple/libup/").status_code == 404
    assert client.get(f"/{PLATFORM}/simple/acme-tools/").status_code == 404
    assert upstream.count("/simple/") == 0


def test_sdist_download_records_one_build_request(
    proxy: Services, upstream: FakeUpstream, tmp_path: Path
) -> None:
    fill_upstream(upstream, tmp_path)
    client = create_app(services=proxy).test_client()
    data = page(client)
    sdist = next(f for f in data["files"] if f["filename"] == "libup-1.0.tar.gz")
    for _ in range(2):
        assert client.get(file_path(sdist)).status_code == 200
    wheel = next(f for f in data["files"] if f["filename"].endswith("none-any.whl"))
    client.get(file_path(wheel))
    with proxy.engine.connect() as conn:
        rows = conn.execute(
            select(
                build_jobs.c.project,
                build_jobs.c.version,
                build_jobs.c.platform,
                build_jobs.c.state,
                build_jobs.c.source,
            )
        ).all()
    assert [tuple(r) for r in rows] == [("libup", "1.0", PLATFORM, "queued", "first-sight")]


def test_no_build_request_when_the_platform_has_a_wheel(
    proxy: Services, upstream: FakeUpstream, tmp_path: Path
) -> None:
    fill_upstream(upstream, tmp_path)
    built = make_wheel(tmp_path, "libup", "1.0", tag="cp311-cp311-manylinux_2_36_x86_64")
    ingest_file(proxy, proxy.platforms[PLATFORM], built, built.name, actor="b", origin="build")
    client = create_app(services=proxy).test_client()
    sdist = next(f for f in page(client)["files"] if f["filename"] == "libup-1.0.tar.gz")
    assert client.get(file_path(sdist)).status_code == 200
    with proxy.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(build_jobs)).scalar() == 0
