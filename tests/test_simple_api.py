"""The Simple Repository API as pip and uv see it: formats, negotiation, HTTP caching."""

from __future__ import annotations

import gzip
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from flask.testing import FlaskClient

from index_server.app import create_app
from index_server.auth import create_token
from index_server.config import Settings
from index_server.services import Services, build_services
from tests.conftest import ADMIN_TOKEN
from tests.factory import make_sdist, make_wheel
from tests.http_helpers import (
    PIP_ACCEPT,
    PLATFORM,
    PY310_X86,
    PY312_ARM,
    PY312_X86,
    UPLOAD_TIME_RE,
    UV_ACCEPT,
    V1_HTML,
    V1_JSON,
    admin_headers,
    api_files,
    app_with,
    json_page,
    parse_html,
    project_url,
    services_fixture,
    sha256_of,
    upload,
    upload_ok,
    wheel_metadata,
)


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    """The conftest fixture, from a copy of a migrated database (see http_helpers)."""
    yield from services_fixture(settings)


HTML_UTF8 = "text/html; charset=utf-8"
PAGE = project_url("demo-pkg")
ROOT = f"/{PLATFORM}/simple/"


@dataclass
class Index:
    """A small index: Demo.Pkg with a pure wheel, an sdist, a binary wheel, two yanked."""

    client: FlaskClient
    token: str
    pure: Path
    sdist: Path
    binary: Path
    yanked_reason: Path
    yanked_plain: Path
    ids: dict[str, int]


def _populate(client: FlaskClient, token: str, tmp_path: Path) -> Index:
    pure = make_wheel(tmp_path, "Demo.Pkg", "1.0", requires_python="<4,>=3.8")
    sdist = make_sdist(tmp_path, "Demo.Pkg", "1.0", requires_python="<4,>=3.8")
    binary = make_wheel(tmp_path, "Demo.Pkg", "1.1", tag="cp311-cp311-linux_x86_64")
    yanked_reason = make_wheel(tmp_path, "Demo.Pkg", "0.9")
    yanked_plain = make_wheel(tmp_path, "Demo.Pkg", "0.8")
    for path in (pure, sdist, binary, yanked_reason, yanked_plain):
        upload_ok(client, path, token)
    ids = {f["filename"]: f["id"] for f in api_files(client, "demo-pkg")}
    response = client.post(
        f"/api/files/{ids[yanked_reason.name]}/yank",
        json={"reason": "broken <build> & worse"},
        headers=admin_headers(),
    )
    assert response.status_code == 200
    response = client.post(f"/api/files/{ids[yanked_plain.name]}/yank", headers=admin_headers())
    assert response.status_code == 200
    return Index(client, token, pure, sdist, binary, yanked_reason, yanked_plain, ids)


@pytest.fixture
def index(client: FlaskClient, upload_token: str, tmp_path: Path) -> Index:
    """An index of its own, for tests that write."""
    return _populate(client, upload_token, tmp_path)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Index]:
    """One index for the read-only tests of this module (they must not change it)."""
    tmp = tmp_path_factory.mktemp("simple-shared")
    settings = Settings.from_env(
        {}, data_dir=tmp / "data", admin_token=ADMIN_TOKEN, upstream_urls=()
    )
    svc = build_services(settings)
    try:
        client = create_app(services=svc).test_client()
        yield _populate(client, create_token(svc.engine, "tests", "upload")[1], tmp)
    finally:
        svc.engine.dispose()


def _all(index: Index) -> list[Path]:
    return [index.pure, index.sdist, index.binary, index.yanked_reason, index.yanked_plain]


# --- formats ---------------------------------------------------------------------------------


def test_root_list_html_and_json(shared: Index) -> None:
    html = shared.client.get(ROOT)
    assert html.status_code == 200
    assert html.content_type == HTML_UTF8
    page = parse_html(html.get_data(as_text=True))
    assert [(a["attrs"]["href"], a["text"]) for a in page.anchors] == [("demo-pkg/", "Demo.Pkg")]
    assert {"name": "pypi:repository-version", "content": "1.1"} in page.metas
    data = json_page(shared.client, ROOT)
    assert data["meta"]["api-version"] == "1.1"
    assert data["projects"] == [{"name": "Demo.Pkg"}]


def test_empty_root_list(client: FlaskClient) -> None:
    assert json_page(client, ROOT)["projects"] == []
    assert parse_html(client.get(ROOT).get_data(as_text=True)).anchors == []


def test_html_and_json_list_the_same_files(shared: Index) -> None:
    html = parse_html(shared.client.get(PAGE).get_data(as_text=True))
    data = json_page(shared.client, PAGE)
    from_html = {}
    for anchor in html.anchors:
        attrs = anchor["attrs"]
        url, _, fragment = attrs["href"].partition("#")
        from_html[anchor["text"]] = (
            url,
            fragment,
            attrs.get("data-requires-python"),
            attrs.get("data-core-metadata"),
            attrs.get("data-yanked"),
        )
    from_json = {}
    for f in data["files"]:
        meta = f["core-metadata"]
        yanked = f["yanked"]
        from_json[f["filename"]] = (
            f["url"],
            f"sha256={f['hashes']['sha256']}",
            f.get("requires-python"),
            f"sha256={meta['sha256']}" if meta else None,
            None if yanked is False else ("" if yanked is True else yanked),
        )
    assert from_html == from_json
    assert sorted(from_json) == sorted(p.name for p in _all(shared))


def test_hrefs_carry_sha256_and_resolve_to_the_file(shared: Index) -> None:
    page = parse_html(shared.client.get(PAGE).get_data(as_text=True))
    for path in _all(shared):
        href = page.anchor(path.name)["href"]
        url, _, fragment = href.partition("#")
        assert fragment == f"sha256={sha256_of(path)}"
        assert url.rsplit("/", 1)[1] == path.name  # anchor text is the last path segment
        absolute = urljoin(f"http://shared.test{PAGE}", url)
        response = shared.client.get(urlsplit(absolute).path)
        assert response.status_code == 200, absolute
        assert response.data == path.read_bytes()


def test_requires_python_escaped(shared: Index) -> None:
    body = shared.client.get(PAGE).get_data(as_text=True)
    assert 'data-requires-python="&lt;4,&gt;=3.8"' in body
    assert "<4,>=3.8" not in body
    files = {f["filename"]: f for f in json_page(shared.client, PAGE)["files"]}
    assert files[shared.pure.name]["requires-python"] == "<4,>=3.8"
    assert "requires-python" not in files[shared.binary.name]


def test_yanked_markers(shared: Index) -> None:
    body = shared.client.get(PAGE).get_data(as_text=True)
    page = parse_html(body)
    assert page.anchor(shared.yanked_reason.name)["data-yanked"] == "broken <build> & worse"
    assert 'data-yanked="broken &lt;build&gt; &amp; worse"' in body
    assert page.anchor(shared.yanked_plain.name)["data-yanked"] is not None
    assert re.search(r'data-yanked=""[^>]*>' + re.escape(shared.yanked_plain.name), body)
    assert "data-yanked" not in page.anchor(shared.pure.name)
    files = {f["filename"]: f for f in json_page(shared.client, PAGE)["files"]}
    assert files[shared.yanked_reason.name]["yanked"] == "broken <build> & worse"
    assert files[shared.yanked_plain.name]["yanked"] is True
    assert files[shared.pure.name]["yanked"] is False


def test_core_metadata(shared: Index) -> None:
    page = parse_html(shared.client.get(PAGE).get_data(as_text=True))
    files = {f["filename"]: f for f in json_page(shared.client, PAGE)["files"]}
    for wheel in (shared.pure, shared.binary):
        raw = wheel_metadata(wheel)
        digest = hashlib.sha256(raw).hexdigest()
        anchor = page.anchor(wheel.name)
        assert anchor["data-core-metadata"] == f"sha256={digest}"
        assert anchor["data-dist-info-metadata"] == f"sha256={digest}"
        assert files[wheel.name]["core-metadata"] == {"sha256": digest}
        assert files[wheel.name]["dist-info-metadata"] == {"sha256": digest}
        url = anchor["href"].partition("#")[0] + ".metadata"
        path = urlsplit(urljoin(f"http://x{PAGE}", url)).path
        for _ in range(2):  # read from storage, then from the process's memory
            response = shared.client.get(path)
            assert response.status_code == 200
            assert response.data == raw
            assert hashlib.sha256(response.data).hexdigest() == digest
            assert response.headers["ETag"] == f'"{digest}"'
            assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
            assert response.headers["Content-Length"] == str(len(raw))
            assert "immutable" in response.headers["Cache-Control"]
        again = shared.client.get(path, headers={"If-None-Match": f'"{digest}"'})
        assert again.status_code == 304 and again.data == b""
        part = shared.client.get(path, headers={"Range": "bytes=0-9"})
        assert part.status_code == 206 and part.data == raw[:10]
        assert part.headers["Content-Range"] == f"bytes 0-9/{len(raw)}"
    sdist = page.anchor(shared.sdist.name)
    assert "data-core-metadata" not in sdist
    assert "data-dist-info-metadata" not in sdist
    assert files[shared.sdist.name]["core-metadata"] is False
    missing = shared.client.get(f"/files/{sha256_of(shared.sdist)}/{shared.sdist.name}.metadata")
    assert missing.status_code == 404


def test_json_project_fields(shared: Index) -> None:
    data = json_page(shared.client, PAGE)
    assert data["meta"] == {"api-version": "1.1"}
    assert data["name"] == "demo-pkg"
    assert data["versions"] == ["0.8", "0.9", "1.0", "1.1"]
    for path in _all(shared):
        (entry,) = [f for f in data["files"] if f["filename"] == path.name]
        assert entry["size"] == path.stat().st_size
        assert entry["hashes"] == {"sha256": sha256_of(path)}
        assert re.fullmatch(UPLOAD_TIME_RE, entry["upload-time"]), entry["upload-time"]


def test_html_meta_and_title(shared: Index) -> None:
    page = parse_html(shared.client.get(PAGE).get_data(as_text=True))
    assert {"name": "pypi:repository-version", "content": "1.1"} in page.metas
    assert len(page.anchors) == 5


# --- redirects -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "location"),
    [
        (f"/{PLATFORM}/simple", f"/{PLATFORM}/simple/"),
        (f"/{PLATFORM}/simple?format=json", f"/{PLATFORM}/simple/?format=json"),
        (f"/{PLATFORM}/simple/demo-pkg", f"/{PLATFORM}/simple/demo-pkg/"),
        (f"/{PLATFORM}/simple/Demo.Pkg/", f"/{PLATFORM}/simple/demo-pkg/"),
        (f"/{PLATFORM}/simple/Demo_Pkg", f"/{PLATFORM}/simple/demo-pkg/"),
        (f"/{PLATFORM}/simple/DEMO--pkg/?a=1&b=2", f"/{PLATFORM}/simple/demo-pkg/?a=1&b=2"),
        (f"/{PLATFORM}/simple/demo.pkg?format=json", f"/{PLATFORM}/simple/demo-pkg/?format=json"),
    ],
)
def test_redirects(shared: Index, url: str, location: str) -> None:
    response = shared.client.get(url)
    assert response.status_code == 301
    assert response.headers["Location"] == location
    followed = shared.client.get(location)
    assert followed.status_code == 200


def test_unknown_project_404(client: FlaskClient) -> None:
    response = client.get(project_url("nothing-here"))
    assert response.status_code == 404
    assert "nothing-here" in response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain")


# --- negotiation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (PIP_ACCEPT, V1_JSON),
        (UV_ACCEPT, V1_JSON),
        (None, HTML_UTF8),
        ("", HTML_UTF8),
        ("*/*", HTML_UTF8),
        ("text/html", HTML_UTF8),
        ("text/*", HTML_UTF8),
        (V1_HTML, V1_HTML),
        (V1_JSON, V1_JSON),
        ("application/vnd.pypi.simple.latest+json", V1_JSON),
        ("application/vnd.pypi.simple.latest+html", V1_HTML),
        (f"{V1_JSON};q=0.5, {V1_HTML};q=0.9", V1_HTML),
        (f"{V1_HTML};q=0.9, {V1_JSON};q=0.5", V1_HTML),
        (f"text/html;q=0.1, {V1_JSON}", V1_JSON),
        (f"{V1_JSON};q=0, text/html;q=0.2", HTML_UTF8),
        ("application/json, */*;q=0.1", HTML_UTF8),
    ],
)
@pytest.mark.parametrize("url", [PAGE, ROOT])
def test_negotiation(shared: Index, url: str, accept: str | None, expected: str) -> None:
    headers = {"Accept": accept} if accept is not None else {}
    response = shared.client.get(url, headers=headers)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == expected
    body = response.get_data(as_text=True)
    if expected == V1_JSON:
        assert response.get_json()["meta"]["api-version"] == "1.1"
    else:
        assert body.startswith("<!DOCTYPE html>")
        assert 'content="1.1"' in body


@pytest.mark.parametrize(
    "accept", ["application/json", "application/xml, text/plain", f"{V1_JSON};q=0"]
)
@pytest.mark.parametrize("url", [PAGE, ROOT])
def test_unacceptable_406(shared: Index, url: str, accept: str) -> None:
    response = shared.client.get(url, headers={"Accept": accept})
    assert response.status_code == 406
    assert response.headers["Content-Type"]
    assert V1_JSON in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("fmt", "expected", "status"),
    [("json", V1_JSON, 200), ("html", V1_HTML, 200), ("JSON", V1_JSON, 200), ("xml", None, 406)],
)
def test_format_query_parameter(shared: Index, fmt: str, expected: str | None, status: int) -> None:
    # ?format= wins over Accept
    response = shared.client.get(f"{PAGE}?format={fmt}", headers={"Accept": "text/html"})
    assert response.status_code == status
    if expected:
        assert response.headers["Content-Type"] == expected


# --- platforms -------------------------------------------------------------------------------


def test_binary_wheel_only_on_its_platform(index: Index, tmp_path: Path) -> None:
    arm = make_wheel(tmp_path, "Demo.Pkg", "1.1", tag="cp312-cp312-manylinux_2_17_aarch64")
    upload_ok(index.client, arm, index.token, PY312_ARM)
    listed = {}
    for platform in (PLATFORM, PY312_ARM, PY312_X86, PY310_X86):
        response = index.client.get(project_url("demo-pkg", platform))
        names = set(parse_html(response.get_data(as_text=True)).texts)
        json_names = {
            f["filename"]
            for f in json_page(index.client, project_url("demo-pkg", platform))["files"]
        }
        assert names == json_names
        listed[platform] = names
    everywhere = {
        p.name for p in (index.pure, index.sdist, index.yanked_reason, index.yanked_plain)
    }
    assert listed[PLATFORM] == everywhere | {index.binary.name}
    assert listed[PY312_ARM] == everywhere | {arm.name}
    assert listed[PY312_X86] == everywhere
    assert listed[PY310_X86] == everywhere


def test_root_list_per_platform(client: FlaskClient, upload_token: str, tmp_path: Path) -> None:
    upload_ok(client, make_wheel(tmp_path, "everywhere", "1.0"), upload_token)
    upload_ok(client, make_sdist(tmp_path, "source-only", "1.0"), upload_token, PY310_X86)
    binary = make_wheel(tmp_path, "native", "1.0", tag="cp311-cp311-manylinux_2_17_x86_64")
    upload_ok(client, binary, upload_token)
    arm = make_wheel(tmp_path, "arm-only", "1.0", tag="cp312-cp312-linux_aarch64")
    upload_ok(client, arm, upload_token, PY312_ARM)

    def names(platform: str) -> list[str]:
        data = json_page(client, f"/{platform}/simple/")
        html = parse_html(client.get(f"/{platform}/simple/").get_data(as_text=True))
        assert html.texts == [p["name"] for p in data["projects"]]
        return html.texts

    assert names(PLATFORM) == ["everywhere", "native", "source-only"]
    assert names(PY312_ARM) == ["arm-only", "everywhere", "source-only"]
    assert names(PY312_X86) == ["everywhere", "source-only"]
    assert names(PY310_X86) == ["everywhere", "source-only"]
    # A project with nothing for a platform is not found there (so uv tries its next index).
    assert client.get(project_url("native", PY312_X86)).status_code == 404


# --- HTTP: validators, compression, ranges, cache headers ------------------------------------


def test_etag_and_304_on_pages(shared: Index) -> None:
    for url in (PAGE, ROOT):
        for accept in (PIP_ACCEPT, "text/html"):
            first = shared.client.get(url, headers={"Accept": accept})
            etag = first.headers["ETag"]
            assert re.fullmatch(r'"[^"]+"', etag)
            again = shared.client.get(url, headers={"Accept": accept, "If-None-Match": etag})
            assert again.status_code == 304
            assert again.data == b""
            assert again.headers["ETag"] == etag
            weak = shared.client.get(url, headers={"Accept": accept, "If-None-Match": f"W/{etag}"})
            assert weak.status_code == 304
            other = shared.client.get(url, headers={"Accept": accept, "If-None-Match": '"nope"'})
            assert other.status_code == 200
    html = shared.client.get(PAGE, headers={"Accept": "text/html"}).headers["ETag"]
    js = shared.client.get(PAGE, headers={"Accept": V1_JSON})
    assert js.headers["ETag"] != html
    crossed = shared.client.get(PAGE, headers={"Accept": V1_JSON, "If-None-Match": html})
    assert crossed.status_code == 200  # one format's ETag does not validate the other


def test_etag_and_304_on_files(shared: Index) -> None:
    for path in (shared.pure, shared.sdist):
        url = f"/files/{sha256_of(path)}/{path.name}"
        for suffix in ("", ".metadata") if path.suffix == ".whl" else ("",):
            first = shared.client.get(url + suffix)
            assert first.status_code == 200
            etag = first.headers["ETag"]
            assert etag
            again = shared.client.get(url + suffix, headers={"If-None-Match": etag})
            assert again.status_code == 304
            assert again.data == b""


def test_file_download_headers(shared: Index) -> None:
    for path, content_type in (
        (shared.pure, "application/zip"),
        (shared.sdist, "application/gzip"),
    ):
        response = shared.client.get(f"/files/{sha256_of(path)}/{path.name}")
        assert response.status_code == 200
        assert response.data == path.read_bytes()
        assert response.headers["Content-Type"] == content_type
        assert response.headers["Content-Length"] == str(path.stat().st_size)
        assert response.headers["Content-Disposition"] == f"attachment; filename={path.name}"
        assert response.headers["ETag"] == f'"{sha256_of(path)}"'
        assert "immutable" in response.headers["Cache-Control"]
        assert "Content-Encoding" not in response.headers


def test_gzip_only_when_accepted(shared: Index) -> None:
    for url, accept in ((PAGE, "text/html"), (PAGE, V1_JSON)):
        plain = shared.client.get(url, headers={"Accept": accept})
        assert len(plain.data) >= 1024  # large enough to be worth compressing
        assert "Content-Encoding" not in plain.headers
        zipped = shared.client.get(url, headers={"Accept": accept, "Accept-Encoding": "gzip"})
        assert zipped.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(zipped.data) == plain.data
        assert zipped.headers["ETag"] != plain.headers["ETag"]
        assert "Accept-Encoding" in zipped.headers["Vary"]
        assert "Accept" in [v.strip() for v in zipped.headers["Vary"].split(",")]
        assert zipped.headers["Content-Type"] == plain.headers["Content-Type"]
        # the compressed representation revalidates too
        etag = zipped.headers["ETag"]
        again = shared.client.get(
            url, headers={"Accept": accept, "Accept-Encoding": "gzip", "If-None-Match": etag}
        )
        assert again.status_code == 304
        identity = shared.client.get(url, headers={"Accept": accept, "Accept-Encoding": "identity"})
        assert "Content-Encoding" not in identity.headers


def test_files_are_not_compressed(shared: Index) -> None:
    response = shared.client.get(
        f"/files/{sha256_of(shared.sdist)}/{shared.sdist.name}", headers={"Accept-Encoding": "gzip"}
    )
    assert "Content-Encoding" not in response.headers
    assert response.data == shared.sdist.read_bytes()


def test_range_requests(shared: Index) -> None:
    data = shared.pure.read_bytes()
    size = len(data)
    url = f"/files/{sha256_of(shared.pure)}/{shared.pure.name}"
    head = shared.client.head(url)
    assert head.status_code == 200
    assert head.headers["Accept-Ranges"] == "bytes"
    assert int(head.headers["Content-Length"]) == size
    part = shared.client.get(url, headers={"Range": "bytes=10-109"})
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 10-109/{size}"
    assert part.data == data[10:110]
    tail = shared.client.get(url, headers={"Range": "bytes=-100"})
    assert tail.status_code == 206
    assert tail.headers["Content-Range"] == f"bytes {size - 100}-{size - 1}/{size}"
    assert tail.data == data[-100:]
    open_ended = shared.client.get(url, headers={"Range": f"bytes={size - 5}-"})
    assert open_ended.status_code == 206
    assert open_ended.data == data[-5:]
    beyond = shared.client.get(url, headers={"Range": f"bytes={size + 10}-"})
    assert beyond.status_code == 416
    assert beyond.headers.get("Content-Range") == f"bytes */{size}"


def test_cache_control(shared: Index, settings: Settings) -> None:
    for url in (PAGE, ROOT):
        for accept in (PIP_ACCEPT, "text/html"):
            cc = shared.client.get(url, headers={"Accept": accept}).headers["Cache-Control"]
            assert f"max-age={settings.page_max_age}" in cc
            assert "immutable" not in cc
    url = f"/files/{sha256_of(shared.pure)}/{shared.pure.name}"
    for suffix in ("", ".metadata"):
        cc = shared.client.get(url + suffix).headers["Cache-Control"]
        assert "immutable" in cc
        assert re.search(r"max-age=\d{7,}", cc)


def test_page_max_age_setting(settings: Settings) -> None:
    with app_with(settings, page_max_age=7) as (app, _svc):
        response = app.test_client().get(ROOT)
        assert re.search(r"\bmax-age=7\b", response.headers["Cache-Control"])


def test_content_type_on_every_simple_response(shared: Index) -> None:
    urls = [ROOT, PAGE, project_url("missing"), f"/{PLATFORM}/simple/Demo.Pkg/", "/nope/simple/"]
    for url in urls:
        for accept in (PIP_ACCEPT, UV_ACCEPT, "application/json"):
            response = shared.client.get(url, headers={"Accept": accept})
            assert response.headers.get("Content-Type"), (url, accept, response.status)


# --- freshness: no stale page after a write --------------------------------------------------


def _snapshot(client: FlaskClient, accept: str = V1_JSON) -> tuple[str, dict]:
    response = client.get(PAGE, headers={"Accept": accept})
    assert response.status_code == 200
    data = response.get_json() if accept == V1_JSON else response.get_data(as_text=True)
    return response.headers["ETag"], data


def _yanked(data: dict, filename: str) -> object:
    return next(f["yanked"] for f in data["files"] if f["filename"] == filename)


def test_pages_change_at_once_after_writes(index: Index, tmp_path: Path) -> None:
    client = index.client
    etag0, _ = _snapshot(client)
    html0, _ = _snapshot(client, "text/html")
    new = make_wheel(tmp_path, "Demo.Pkg", "2.0")
    upload_ok(client, new, index.token)
    etag1, data1 = _snapshot(client)
    html1, body1 = _snapshot(client, "text/html")
    assert etag1 != etag0 and html1 != html0
    assert new.name in [f["filename"] for f in data1["files"]]
    assert new.name in body1
    assert "2.0" in data1["versions"]
    stale = client.get(PAGE, headers={"Accept": V1_JSON, "If-None-Match": etag0})
    assert stale.status_code == 200

    new_id = next(f["id"] for f in api_files(client, "demo-pkg") if f["filename"] == new.name)
    r = client.post(f"/api/files/{new_id}/yank", json={"reason": "oops"}, headers=admin_headers())
    assert r.status_code == 200
    etag2, data2 = _snapshot(client)
    assert etag2 != etag1
    assert _yanked(data2, new.name) == "oops"

    assert client.post(f"/api/files/{new_id}/unyank", headers=admin_headers()).status_code == 200
    etag3, data3 = _snapshot(client)
    assert etag3 == etag1  # the same content as before the yank
    assert _yanked(data3, new.name) is False

    assert client.delete(f"/api/files/{new_id}", headers=admin_headers()).status_code == 200
    etag4, data4 = _snapshot(client)
    assert etag4 != etag3
    assert new.name not in [f["filename"] for f in data4["files"]]
    assert "2.0" not in data4["versions"]
    assert etag4 == etag0  # back to the very first content


def test_root_list_changes_at_once(client: FlaskClient, upload_token: str, tmp_path: Path) -> None:
    before = client.get(ROOT)
    assert parse_html(before.get_data(as_text=True)).texts == []
    upload_ok(client, make_wheel(tmp_path, "fresh", "1.0"), upload_token)
    after = client.get(ROOT, headers={"If-None-Match": before.headers["ETag"]})
    assert after.status_code == 200
    assert parse_html(after.get_data(as_text=True)).texts == ["fresh"]


def test_no_stale_pages_across_processes(
    index: Index, settings: Settings, services: Services, tmp_path: Path
) -> None:
    """Two app instances over one database (two workers): a write in one shows in the other."""
    reader = index.client
    with app_with(settings) as (app2, svc2):
        assert svc2.pages is not services.pages
        writer = app2.test_client()
        # Both have rendered (and cached) the page.
        assert _snapshot(reader) == _snapshot(writer)
        etag0, _ = _snapshot(reader)

        new = make_wheel(tmp_path, "Demo.Pkg", "3.0")
        upload_ok(writer, new, index.token)
        etag1, data1 = _snapshot(reader)
        assert etag1 != etag0
        assert new.name in [f["filename"] for f in data1["files"]]
        assert "fresh" not in parse_html(reader.get(ROOT).get_data(as_text=True)).texts

        file_id = next(f["id"] for f in api_files(writer, "demo-pkg") if f["filename"] == new.name)
        writer.post(f"/api/files/{file_id}/yank", json={"reason": "bad"}, headers=admin_headers())
        etag2, data2 = _snapshot(reader)
        assert etag2 != etag1
        assert _yanked(data2, new.name) == "bad"

        writer.post(f"/api/files/{file_id}/unyank", headers=admin_headers())
        etag3, data3 = _snapshot(reader)
        assert etag3 != etag2
        assert _yanked(data3, new.name) is False

        writer.delete(f"/api/files/{file_id}", headers=admin_headers())
        etag4, data4 = _snapshot(reader)
        assert etag4 != etag3
        assert new.name not in [f["filename"] for f in data4["files"]]
        gone = reader.get(f"/files/{sha256_of(new)}/{new.name}")
        assert gone.status_code == 404

        # And the other way round: a write through the first app shows in the second.
        upload_ok(reader, make_wheel(tmp_path, "fresh", "1.0"), index.token)
        assert "fresh" in parse_html(writer.get(ROOT).get_data(as_text=True)).texts
        # (the reader had cached the root list without it)
        assert "fresh" in parse_html(reader.get(ROOT).get_data(as_text=True)).texts


def test_upload_response_does_not_go_stale(index: Index, tmp_path: Path) -> None:
    """A 409 conflict or refused upload does not change the page."""
    etag0, _ = _snapshot(index.client)
    bad = tmp_path / "bad"
    bad.mkdir()
    other = make_wheel(bad, "Demo.Pkg", "1.0", modules={"x.py": "# different\n"})
    assert other.name == index.pure.name
    response = upload(index.client, other, index.token)
    assert response.status_code == 409
    assert _snapshot(index.client)[0] == etag0


def test_file_urls_need_the_matching_name(shared: Index) -> None:
    """A blob is served only under a filename listed with that digest."""
    digest = sha256_of(shared.pure)
    assert shared.client.get(f"/files/{digest}/{shared.pure.name}").status_code == 200
    assert shared.client.get(f"/files/{digest.upper()}/{shared.pure.name}").status_code == 200
    for wrong in (shared.sdist.name, "anything.whl", "x.metadata"):
        response = shared.client.get(f"/files/{digest}/{wrong}")
        assert response.status_code == 404, wrong
    other = sha256_of(shared.sdist)
    assert shared.client.get(f"/files/{other}/{shared.pure.name}").status_code == 404


def test_special_characters_in_filenames(
    client: FlaskClient, upload_token: str, tmp_path: Path
) -> None:
    """Local versions (+) and epochs (!) survive the round trip from href to download."""
    wheels = [make_wheel(tmp_path, "demo", "1.0+local.1"), make_wheel(tmp_path, "demo", "1!2.0")]
    for wheel in wheels:
        upload_ok(client, wheel, upload_token)
    page = parse_html(client.get(project_url("demo")).get_data(as_text=True))
    data = json_page(client, project_url("demo"))
    assert data["versions"] == ["1.0+local.1", "1!2.0"]
    for wheel in wheels:
        href = page.anchor(wheel.name)["href"].partition("#")[0]
        response = client.get(urlsplit(urljoin(f"http://x{project_url('demo')}", href)).path)
        assert response.status_code == 200, href
        assert response.data == wheel.read_bytes()


def test_wrong_method_405_says_what_is_allowed(client: FlaskClient) -> None:
    response = client.post(ROOT)
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]
    assert response.content_type.startswith("text/plain")
