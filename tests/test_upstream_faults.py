"""The upstream proxy against an upstream that misbehaves (tests/fault_helpers.py).

Slow past the timeout, connections reset mid-answer, HTTP 500, bodies cut short of their
Content-Length, bodies trickling past the timeout, pages that are not pages (cut-short JSON,
bytes that are not text, a line of text, a foreign Content-Type), an unasked 304,
files whose bytes do not match the page, and pages that change while a file is fetched:
each is served stale or refused cleanly (502/503 and a one-line reason), nothing is stored
under a wrong hash, the cached page is never replaced by a bad one, and once the upstream
answers well again its answer is served.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from index_server.app import create_app
from index_server.db.schema import upstream_files, upstream_pages
from index_server.locks import named_lock
from index_server.services import Services
from tests.factory import make_sdist, make_wheel
from tests.fault_helpers import (
    ERROR_500,
    GARBLED,
    GARBLED_HTML,
    NO_MARKUP,
    NOT_MODIFIED,
    RESET,
    SLOW,
    TRICKLE,
    TRUNCATE,
    WRONG_TYPE,
    FaultyUpstream,
    scan_blobs,
)
from tests.upstream_server import proxy_services

PLATFORM = "debian-12-py3.11-x86_64"
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}
PROJECT = "libfault"
TIMEOUT = 0.5  # the proxy's upstream timeout; the upstream stalls for STALL
STALL = 3.0
QUICK = 2.5  # a refusal or a stale page comes within this, long before the stall ends
PAGE = f"/simple/{PROJECT}/"
# What each fault says in the one-line reason (requests' exception names, or the status).
REASONS = {
    SLOW: "Timeout",
    RESET: "Error",  # ConnectionError / ChunkedEncodingError
    TRUNCATE: "Error",
    ERROR_500: "HTTP 500",
    GARBLED: "invalid JSON project page",
    TRICKLE: "Timeout",
    NOT_MODIFIED: "304",
    GARBLED_HTML: "invalid HTML project page",
    NO_MARKUP: "no HTML markup",
    WRONG_TYPE: "Content-Type 'application/octet-stream'",
}


@pytest.fixture(params=["json", "html"])
def upstream(request: pytest.FixtureRequest) -> Iterator[FaultyUpstream]:
    fake = FaultyUpstream(mode=request.param, stall=STALL)
    yield fake
    fake.close()


@pytest.fixture
def json_upstream() -> Iterator[FaultyUpstream]:
    fake = FaultyUpstream(mode="json", stall=STALL)
    yield fake
    fake.close()


def make_proxy(tmp_path: Path, upstream: FaultyUpstream, **overrides: object) -> Services:
    values: dict[str, object] = {
        "upstream_timeout": TIMEOUT,
        "upstream_ttl": 0,  # every page request revalidates: each one meets the fault
        "upstream_retry_after": 0,  # and after a failure, the next request tries again
        **overrides,
    }
    return proxy_services(tmp_path, upstream, **values)


@pytest.fixture
def proxy(tmp_path: Path, upstream: FaultyUpstream) -> Iterator[Services]:
    services = make_proxy(tmp_path, upstream)
    yield services
    services.engine.dispose()


def fill(upstream: FaultyUpstream, directory: Path) -> None:
    directory.mkdir(exist_ok=True)
    upstream.add(make_sdist(directory, PROJECT, "1.0"))
    upstream.add(make_wheel(directory, PROJECT, "1.0"))


def get_page(client: FlaskClient, project: str = PROJECT):  # type: ignore[no-untyped-def]
    return client.get(f"/{PLATFORM}/simple/{project}/", headers=JSON)


def page_data(client: FlaskClient) -> dict:  # type: ignore[type-arg]
    response = get_page(client)
    assert response.status_code == 200, response.text
    return json.loads(response.data)


def entry_for(data: dict, suffix: str) -> dict:  # type: ignore[type-arg]
    return next(f for f in data["files"] if f["filename"].endswith(suffix))


def file_path(entry: dict) -> str:  # type: ignore[type-arg]
    return urljoin(f"/{PLATFORM}/simple/{PROJECT}/", entry["url"])


def assert_refused(response, *words: str, statuses: tuple[int, ...] = (502, 503)) -> None:  # type: ignore[no-untyped-def]
    """A clean refusal: 502/503, one line of reason in the body and the status line."""
    assert response.status_code in statuses, (response.status_code, response.text)
    body = response.get_data(as_text=True)
    assert body.endswith("\n") and "\n" not in body[:-1], repr(body)
    assert 10 < len(body) <= 501
    assert response.status.split(" ", 1)[1].strip(), response.status
    for word in words:
        assert word in body, (word, body)


def cached_page(services: Services) -> tuple[str, str, int] | None:
    """(content_hash, files JSON, status) of the cached upstream page, or None."""
    with services.engine.connect() as conn:
        row = conn.execute(
            select(upstream_pages.c.content_hash, upstream_pages.c.files, upstream_pages.c.status)
        ).first()
    return None if row is None else (row[0], row[1], row[2])


def assert_store_holds_only(services: Services, *sha256s: str) -> None:
    """Storage holds exactly these blobs, each with the bytes its key names; the database
    records exactly these pulled files; no temporary file is left."""
    scan = scan_blobs(services.settings.data_dir / "files")
    assert scan.bad == [], scan.bad
    assert scan.temp_files == []
    assert sorted(scan.blobs) == sorted(sha256s)
    with services.engine.connect() as conn:
        recorded = sorted(r[0] for r in conn.execute(select(upstream_files.c.sha256)))
    assert recorded == sorted(sha256s)


# --- pages --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [SLOW, RESET, TRUNCATE, ERROR_500, TRICKLE, GARBLED, GARBLED_HTML, NO_MARKUP, WRONG_TYPE],
)
def test_a_failing_page_refresh_serves_the_cached_page_stale(
    proxy: Services, upstream: FaultyUpstream, tmp_path: Path, fault: str
) -> None:
    fill(upstream, tmp_path / "dists")
    client = create_app(services=proxy).test_client()
    before = page_data(client)
    cached = cached_page(proxy)
    upstream.fail_next(PAGE, fault)
    started = time.monotonic()
    response = get_page(client)
    assert response.status_code == 200, response.text
    assert json.loads(response.data) == before
    assert response.headers["Warning"].startswith("110")
    stale = response.headers["X-Wheelfarm-Upstream-Stale"]
    assert REASONS[fault] in stale and "\n" not in stale
    assert time.monotonic() - started < QUICK
    assert cached_page(proxy) == cached, "a bad answer replaced the cached page"
    assert upstream.pending(PAGE) == []
    # The upstream is well again and has a new release: the next request shows it.
    upstream.add(make_sdist(tmp_path / "dists", PROJECT, "2.0"))
    asked = upstream.count(PAGE)
    response = get_page(client)
    assert response.status_code == 200 and "Warning" not in response.headers
    assert "libfault-2.0.tar.gz" in [f["filename"] for f in json.loads(response.data)["files"]]
    assert upstream.count(PAGE) == asked + 1


@pytest.mark.parametrize(
    "fault",
    [
        SLOW,
        RESET,
        TRUNCATE,
        ERROR_500,
        TRICKLE,
        GARBLED,
        GARBLED_HTML,
        NO_MARKUP,
        WRONG_TYPE,
        NOT_MODIFIED,
    ],
)
def test_a_failing_first_fetch_is_refused_and_not_cached(
    proxy: Services, upstream: FaultyUpstream, tmp_path: Path, fault: str
) -> None:
    fill(upstream, tmp_path / "dists")
    client = create_app(services=proxy).test_client()
    upstream.fail_next(PAGE, fault)
    started = time.monotonic()
    response = get_page(client)
    assert_refused(response, "upstream is unavailable", REASONS[fault])
    assert time.monotonic() - started < QUICK
    assert cached_page(proxy) is None
    html = client.get(f"/{PLATFORM}/simple/{PROJECT}/")  # the next request asks again
    assert html.status_code == 200
    assert "libfault-1.0.tar.gz" in html.text
    assert upstream.count(PAGE) == 2


def test_a_page_fetch_held_elsewhere_past_the_lock_wait_is_answered_cleanly(
    tmp_path: Path, json_upstream: FaultyUpstream
) -> None:
    """Another process stuck on a page (a trickling upstream, before the page deadline) must
    not turn waiting requests into 500s: the cached page is served stale, else a 502."""
    upstream = json_upstream
    proxy = make_proxy(tmp_path, upstream, upstream_timeout=0.1)  # lock wait: 2 * 0.1 + 5 s
    fill(upstream, tmp_path / "dists")
    upstream.add(make_sdist(tmp_path / "dists", "newcomer", "1.0"))
    app = create_app(services=proxy)
    before = page_data(app.test_client())
    answers: dict[str, object] = {}

    def ask(project: str) -> None:
        answers[project] = get_page(app.test_client(), project)

    locks = proxy.settings.data_dir / "locks"
    with (
        named_lock(proxy.engine, locks, f"page:{upstream.url}:{PROJECT}", 5),
        named_lock(proxy.engine, locks, f"page:{upstream.url}:newcomer", 5),
    ):
        threads = [threading.Thread(target=ask, args=(p,)) for p in (PROJECT, "newcomer")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    stale, new = answers[PROJECT], answers["newcomer"]
    assert stale.status_code == 200, stale.text  # type: ignore[attr-defined]
    assert json.loads(stale.data) == before  # type: ignore[attr-defined]
    assert "another request" in stale.headers["X-Wheelfarm-Upstream-Stale"]  # type: ignore[attr-defined]
    assert_refused(new, "upstream is unavailable", "another request")
    assert upstream.count("/simple/newcomer/") == 0
    assert get_page(app.test_client(), "newcomer").status_code == 200  # the lock is free
    proxy.engine.dispose()


# --- files --------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", [SLOW, RESET, TRUNCATE, ERROR_500, "wrong-hash"])
@pytest.mark.parametrize("what", ["wheel", "metadata"])
def test_a_failing_file_download_is_refused_and_nothing_is_stored(
    json_upstream: FaultyUpstream, tmp_path: Path, fault: str, what: str
) -> None:
    upstream = json_upstream  # files are fetched alike whatever the page's format
    proxy = make_proxy(tmp_path, upstream)
    fill(upstream, tmp_path / "dists")
    client = create_app(services=proxy).test_client()
    entry = entry_for(page_data(client), ".whl")
    original = next(f for f in upstream.projects[PROJECT] if f.filename == entry["filename"])
    url = file_path(entry)
    if what == "metadata":
        url += ".metadata"
        expected, data = entry["core-metadata"]["sha256"], original.metadata
        upstream_path = f"/files/{entry['filename']}.metadata"
    else:
        expected, data = entry["hashes"]["sha256"], original.data
        upstream_path = f"/files/{entry['filename']}"
    assert data is not None and hashlib.sha256(data).hexdigest() == expected
    if fault == "wrong-hash":
        upstream.on_file = lambda name: data[:-1] + bytes([data[-1] ^ 1]) if name else None
        word = "does not match"
    else:
        upstream.fail_next(upstream_path, fault)
        word = REASONS[fault]
    started = time.monotonic()
    response = client.get(url)
    assert_refused(response, word)
    assert time.monotonic() - started < QUICK
    assert_store_holds_only(proxy)
    upstream.on_file = None
    response = client.get(url)
    assert response.status_code == 200, response.text
    assert hashlib.sha256(response.data).hexdigest() == expected
    assert_store_holds_only(proxy, expected)
    assert upstream.count(upstream_path) == 2
    proxy.engine.dispose()


def test_file_bytes_changed_after_the_page_was_fetched(
    proxy: Services, upstream: FaultyUpstream, tmp_path: Path
) -> None:
    fill(upstream, tmp_path / "dists")
    client = create_app(services=proxy).test_client()  # TTL 0: refetches the page
    proxy_ttl = make_proxy(tmp_path / "fresh", upstream, upstream_ttl=600)
    fresh = create_app(services=proxy_ttl).test_client()  # keeps its page for the test
    old = entry_for(page_data(fresh), ".whl")
    (tmp_path / "rebuilt").mkdir()
    changed = make_wheel(
        tmp_path / "rebuilt", PROJECT, "1.0", modules={"libfault/__init__.py": "NEW = 1\n"}
    )
    metadata = b"Metadata-Version: 2.1\nName: libfault\nVersion: 1.0\nSummary: new\n\n"
    upstream.replace_file(old["filename"], changed.read_bytes(), metadata)
    # The cached page still announces the old hashes: the new bytes are refused.
    assert_refused(fresh.get(file_path(old)), "does not match")
    assert_refused(fresh.get(file_path(old) + ".metadata"), "does not match")
    assert_store_holds_only(proxy_ttl)
    # A refreshed page announces the new hashes: they are served; the old URL is gone.
    new = entry_for(page_data(client), ".whl")
    assert new["hashes"]["sha256"] == hashlib.sha256(changed.read_bytes()).hexdigest()
    assert new["core-metadata"]["sha256"] == hashlib.sha256(metadata).hexdigest()
    got = client.get(file_path(new))
    assert got.status_code == 200 and got.data == changed.read_bytes()
    assert client.get(file_path(new) + ".metadata").data == metadata
    assert client.get(file_path(old)).status_code == 404
    assert_store_holds_only(proxy, new["hashes"]["sha256"], new["core-metadata"]["sha256"])
    proxy_ttl.engine.dispose()


@pytest.mark.parametrize("answer", ["old bytes", "new bytes"])
def test_page_changes_while_a_file_is_being_fetched(
    json_upstream: FaultyUpstream, tmp_path: Path, answer: str
) -> None:
    """While the upstream answers a file request, the file is replaced and the page is
    refetched (announcing the new hash). The answer in flight carries the old bytes (kept,
    under their own hash) or the new ones (refused: not the hash that was asked for)."""
    upstream = json_upstream
    proxy = make_proxy(tmp_path, upstream, upstream_timeout=5)
    fill(upstream, tmp_path / "dists")
    app = create_app(services=proxy)
    old = entry_for(page_data(app.test_client()), ".whl")
    original = next(f for f in upstream.projects[PROJECT] if f.filename == old["filename"])
    old_bytes = original.data
    new_bytes = make_wheel(
        tmp_path, PROJECT, "1.0", modules={"libfault/__init__.py": "CHANGED = True\n"}
    ).read_bytes()
    changed, refreshed = threading.Event(), threading.Event()

    def on_file(name: str) -> bytes | None:
        if name != old["filename"]:
            return None
        upstream.replace_file(name, new_bytes)
        changed.set()
        assert refreshed.wait(5)
        return old_bytes if answer == "old bytes" else new_bytes

    upstream.on_file = on_file
    results: dict[str, object] = {}

    def download() -> None:
        response = app.test_client().get(file_path(old))
        results["status"], results["data"], results["text"] = (
            response.status_code,
            response.data,
            response.data.decode(errors="replace"),
        )

    thread = threading.Thread(target=download)
    thread.start()
    assert changed.wait(5)
    new = entry_for(page_data(app.test_client()), ".whl")  # refetched mid-download
    refreshed.set()
    thread.join(10)
    upstream.on_file = None
    new_sha = hashlib.sha256(new_bytes).hexdigest()
    assert new["hashes"]["sha256"] == new_sha
    metadata_sha = old["core-metadata"]["sha256"]
    if answer == "old bytes":
        assert results["status"] == 200 and results["data"] == old_bytes
        assert_store_holds_only(proxy, old["hashes"]["sha256"])
    else:
        assert results["status"] == 502 and "does not match" in str(results["text"])
        assert_store_holds_only(proxy)
    client = app.test_client()
    assert client.get(file_path(old)).status_code == 404  # no longer announced
    got = client.get(file_path(new))
    assert got.status_code == 200 and got.data == new_bytes
    assert hashlib.sha256(client.get(file_path(new) + ".metadata").data).hexdigest() == (
        metadata_sha
    )
    expected = [new_sha, metadata_sha]
    if answer == "old bytes":
        expected.append(old["hashes"]["sha256"])
    assert_store_holds_only(proxy, *expected)
    with proxy.engine.connect() as conn:
        pulled = conn.execute(select(func.count()).select_from(upstream_files)).scalar()
    assert pulled == len(expected)
    proxy.engine.dispose()
